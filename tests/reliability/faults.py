"""Fault injection: run an action in a child that SIGKILLs itself just before its n-th file-system step.

The steps counted are the calls that change what is on disk or make it durable: `os.fsync`, `os.replace`,
`os.rename`, `os.unlink` and `shutil.rmtree` (which unlinks). Killing before step 1, 2, ... until an action completes
covers every point at which a crash can leave a folder.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable

import torch

STEPS = [(os, "fsync"), (os, "replace"), (os, "rename"), (os, "unlink"), (shutil, "rmtree")]


def arm(step: int) -> None:
    """In this process, SIGKILL ourselves just before the `step`-th file-system step."""
    count = [0]

    def counted(function):
        def wrapper(*args, **kwargs):
            count[0] += 1
            if count[0] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)

        return wrapper

    for module, name in STEPS:
        setattr(module, name, counted(getattr(module, name)))


def killed_at(step: int, action: Callable[[], None]) -> bool:
    """Run `action` in a forked child armed at `step`; True if it was killed, False if it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: no test framework, no cleanup, just the action
        try:
            # torch's OpenMP threads did not survive the fork: a parallel region would wait for them forever
            torch.set_num_threads(1)
            arm(step)
            action()
            os._exit(0)
        except BaseException:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, f"the action failed in the child (exit status {os.WEXITSTATUS(status)})"
    return False
