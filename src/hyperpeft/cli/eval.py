"""`hyperpeft eval`: compare personalization methods on the same users from a YAML file and `--flags`.

hyperpeft eval --config examples/configs/eval_synthetic.yaml [--users_per_task 4 --p2p_checkpoint DIR ...]
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None):
    """The command line read into an `EvalConfig` (`SystemExit` naming a bad key, flag or value)."""
    from ..evaluation.config import SECTIONS, EvalConfig
    from .arguments import parse_config

    return EvalConfig.from_sections(parse_config(SECTIONS, argv, "hyperpeft eval", (__doc__ or "").split("\n\n")[0]))


def main(argv: list[str] | None = None) -> int:
    from ..evaluation.context import SkipRun
    from ..evaluation.run import evaluate

    argv = sys.argv[2:] if argv is None else argv
    config = parse_args(argv)
    try:
        report = evaluate(config, command=shlex.join(["hyperpeft", "eval", *argv]))
    except SkipRun as reason:
        print(f"Skipped: {reason}; nothing to evaluate.")
        return 0
    print((Path(config.run.out) / "report.md").read_text())
    print(f"wrote {config.run.out}/report.md, report.json and {len(report['plots'])} plots")
    return 0
