"""`hyperpeft vllm`: start vLLM's OpenAI server with hyperpeft's LoRA resolver, so `model="<user_id>"` personalises.

    hyperpeft vllm --model CHECKPOINT --users users.jsonl [--base-model FOLDER] [--port 8000] [-- VLLM ARGS...]

vLLM runs in its own virtual environment (`scripts/setup-vllm.sh` makes `.venv-vllm`, with hyperpeft installed
for the plugin): this command builds the command line and the `HYPERPEFT_VLLM_*` settings, prints them, and replaces
itself with `python -m vllm.entrypoints.openai.api_server ...` in that environment. Arguments after `--` go to vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# vLLM accepts these LoRA ranks for --max-lora-rank.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
DEFAULT_VLLM_PYTHON = ".venv-vllm/bin/python"


@dataclass(frozen=True)
class ResolverSettings:
    """The resolver's settings, read from the `HYPERPEFT_VLLM_*` environment variables (see the module docstring)."""

    checkpoint: str
    users: str
    adapter_dir: str
    zero_adapter_name: str | None = "base"
    device: str = "cpu"
    base_model: str | None = None

    @classmethod
    def from_environment(cls, environ: os._Environ | dict[str, str] = os.environ) -> ResolverSettings | None:
        """The settings, or `None` when `HYPERPEFT_VLLM_CHECKPOINT` is unset; bad values raise a `ValueError`."""
        checkpoint = environ.get("HYPERPEFT_VLLM_CHECKPOINT")
        if not checkpoint:
            return None
        if not Path(checkpoint).is_dir():
            raise ValueError(f"HYPERPEFT_VLLM_CHECKPOINT={checkpoint!r} is not a folder; name a hyperpeft checkpoint.")
        users = environ.get("HYPERPEFT_VLLM_USERS")
        if not users or not Path(users).is_file():
            raise ValueError(
                f"HYPERPEFT_VLLM_USERS={users!r} is not a file; name a JSONL file of "
                '{"user_id": ..., "profile": ...} lines.'
            )
        from ..embedded import cache_dir

        return cls(
            checkpoint=checkpoint,
            users=users,
            adapter_dir=environ.get("HYPERPEFT_VLLM_ADAPTER_DIR") or str(cache_dir() / "vllm-adapters"),
            zero_adapter_name=environ.get("HYPERPEFT_VLLM_ZERO_ADAPTER", "base") or None,
            device=environ.get("HYPERPEFT_VLLM_DEVICE", "cpu"),
            base_model=environ.get("HYPERPEFT_VLLM_BASE_MODEL") or None,
        )


def vllm_lora_rank(r: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that fits rank `r`."""
    for rank in VLLM_LORA_RANKS:
        if rank >= r:
            return rank
    raise ValueError(f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}; this checkpoint has r={r}.")


def vllm_command(
    checkpoint: str | os.PathLike,
    users: str | os.PathLike,
    base_model: str | None = None,
    adapter_dir: str | os.PathLike | None = None,
    python: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    dtype: str | None = None,
    max_loras: int = 4,
    max_model_len: int = 2048,
    zero_adapter_name: str | None = "base",
    extra_args: list[str] | tuple[str, ...] = (),
    environ: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """
    The command line and environment that start vLLM's OpenAI server on `base_model` with hyperpeft's resolver.

    Args:
        checkpoint (`str`): the hyperpeft checkpoint folder.
        users (`str`): the JSONL users file the resolver reads.
        base_model (`str`, *optional*): the folder or Hub id vLLM serves (default: the checkpoint's base; the
            embedded short name becomes its converted folder). Generated adapters record it as their base.
        adapter_dir (`str`, *optional*): where the resolver writes adapter folders.
        python (`str`, *optional*): the interpreter of vLLM's environment (default: `.venv-vllm/bin/python` when it
            exists, else this one).
        host (`str`), port (`int`): where vLLM listens (default: loopback only).
        dtype (`str`, *optional*): vLLM's `--dtype` (default: `float32` on a CPU, `auto` on a GPU).
        max_loras (`int`), max_model_len (`int`): vLLM's `--max-loras` and `--max-model-len`.
        zero_adapter_name (`str`, *optional*): the name of the all-zero adapter (`None`: none).
        extra_args (`list[str]`): more vLLM arguments, appended last.
        environ (`dict`, *optional*): the environment to extend (default: this process's).

    Returns:
        `(argv, env)`, for `subprocess.Popen(argv, env=env)` or `os.execvpe`.
    """
    from ..checkpoint import read_config_dict, resolve_checkpoint
    from ..embedded import resolve_base_model

    folder = resolve_checkpoint(checkpoint)
    config = read_config_dict(folder)
    base = resolve_base_model(base_model or config.get("base_model_name_or_path") or "")
    if not base:
        raise ValueError(f"The checkpoint {str(checkpoint)!r} names no base model; pass `--base-model`.")
    if python is None:
        python = DEFAULT_VLLM_PYTHON if Path(DEFAULT_VLLM_PYTHON).exists() else sys.executable
    gpu = shutil.which("nvidia-smi") is not None
    env = dict(os.environ if environ is None else environ)
    env.update(
        {
            "HYPERPEFT_VLLM_CHECKPOINT": str(Path(folder).resolve()),
            "HYPERPEFT_VLLM_USERS": str(Path(users).resolve()),
            "HYPERPEFT_VLLM_ZERO_ADAPTER": zero_adapter_name or "",
            "HYPERPEFT_VLLM_BASE_MODEL": base,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        }
    )
    if adapter_dir is not None:
        env["HYPERPEFT_VLLM_ADAPTER_DIR"] = str(Path(adapter_dir).resolve())
    if not gpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache; vLLM's CPU default takes far more
    argv = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", base,
        "--dtype", dtype or ("auto" if gpu else "float32"),
        "--enable-lora",
        "--max-lora-rank", str(vllm_lora_rank(int(config.get("r", 8)))),
        "--max-loras", str(max_loras),
        "--max-model-len", str(max_model_len),
        "--host", host,
        "--port", str(port),
        *extra_args,
    ]  # fmt: skip
    return argv, env


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(prog="hyperpeft vllm", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="hyperpeft checkpoint folder (from `save_pretrained` or training)")
    add("--users", required=True, help='JSONL file of {"user_id": ..., "profile": ...} lines, read when it changes')
    add("--base-model", default=None, help="folder or Hub id for vLLM to serve (default: the checkpoint's base)")
    add("--adapter-dir", default=None, help="where generated adapter folders go (default: the hyperpeft cache)")
    add("--python", default=None, help=f"the vLLM environment's python (default: {DEFAULT_VLLM_PYTHON} if present)")
    add("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    add("--port", type=int, default=8000, help="port to listen on")
    add("--dtype", default=None, help="vLLM --dtype (default: float32 on a CPU, auto on a GPU)")
    add("--max-loras", type=int, default=4, help="adapters in one batch (vLLM --max-loras)")
    add("--max-model-len", type=int, default=2048, help="prompt + answer tokens (vLLM --max-model-len)")
    add("--zero-adapter", default="base", help="model name answered by an all-zero adapter; '' for none")
    add("--print-only", action="store_true", help="print the command and settings, do not start vLLM")
    return parser.parse_args(argv), extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        command, env = vllm_command(
            args.model, args.users, base_model=args.base_model, adapter_dir=args.adapter_dir, python=args.python,
            host=args.host, port=args.port, dtype=args.dtype, max_loras=args.max_loras,
            max_model_len=args.max_model_len, zero_adapter_name=args.zero_adapter or None, extra_args=extra,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"hyperpeft vllm: {error}") from None
    settings = {k: v for k, v in env.items() if k.startswith(("HYPERPEFT_VLLM_", "VLLM_"))}
    print(json.dumps(settings, indent=2))
    print(shlex.join(command), flush=True)
    if args.print_only:
        return 0
    os.execvpe(command[0], command, env)
    return 0  # not reached
