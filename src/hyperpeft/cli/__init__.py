"""The `hyperpeft` command: thin, each command handed to the module that does the work, imported only when run.

hyperpeft train --config examples/configs/synthetic.yaml [--max_steps 20 ...]
hyperpeft demo [--smoke] [--out out/demo]
hyperpeft eval --config examples/configs/eval_synthetic.yaml [--users_per_task 4 ...]
hyperpeft serve --model CHECKPOINT [--port 8000]
hyperpeft vllm --model CHECKPOINT --users users.jsonl [--port 8000]
hyperpeft export --model CHECKPOINT --profiles users.jsonl --out adapters/
hyperpeft save-base [smollm2-135m-instruct] --out models/smollm2-135m-instruct
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__

# command -> (module with `main(argv)` and `parse_args(argv)`, which reads the command line and runs nothing; help)
COMMANDS = {
    "train": ("hyperpeft.cli.train", "train a hypernetwork from a YAML file and --flags"),
    "demo": ("hyperpeft.cli.demo", "the main job on the embedded defaults and synthetic users"),
    "eval": ("hyperpeft.cli.eval", "compare personalization methods on the same users; writes reports"),
    "serve": ("hyperpeft.serving.server", "hyperpeft's OpenAI-compatible server, one adapter per user"),
    "vllm": ("hyperpeft.integrations.vllm_launch", "start vLLM with hyperpeft's LoRA resolver (model=<user_id>)"),
    "export": ("hyperpeft.serving.export", "write one PEFT LoRA folder per user of a JSONL file of profiles"),
    "save-base": ("hyperpeft.cli.save_base", "write a base model (the embedded one) as a transformers folder"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in COMMANDS:
        module = importlib.import_module(COMMANDS[argv[0]][0])
        return module.main(argv[1:]) or 0
    parser = argparse.ArgumentParser(
        prog="hyperpeft", description="Profile-to-PEFT: a personal LoRA adapter for every user, from their profile."
    )
    parser.add_argument("--version", action="version", version=f"hyperpeft {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=f"{help_text} (`hyperpeft {name} --help`)")
    parser.parse_args(argv)
    return 0
