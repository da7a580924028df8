"""The `hyperpeft` command: thin, hands off to the modules that do the work.

    hyperpeft train --config examples/configs/synthetic.yaml [training.max_steps=20 data.synthetic.train_users=60]
    hyperpeft demo [--smoke] [--out out/demo]
    hyperpeft eval --config examples/configs/eval_synthetic.yaml [key=value ...]
    hyperpeft serve --model CHECKPOINT [--port 8000]
    hyperpeft export --model CHECKPOINT --profiles users.jsonl --out adapters/

`train` reads a YAML file (`base_model`, `hyper`, `data`, `profiles`, `training`, `num_processes`,
`accelerate_config`), applies `dotted.key=value` overrides, and runs under `accelerate launch` when asked for
several processes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

CONFIG_SECTIONS = ("base_model", "hyper", "data", "profiles", "training", "num_processes", "accelerate_config")


def apply_overrides(
    config: dict[str, Any], overrides: list[str], sections: tuple[str, ...] = CONFIG_SECTIONS
) -> dict[str, Any]:
    """Set `a.b.c=value` entries (values parsed as YAML: `3`, `1e-3`, `true`, `[q_proj, v_proj]`)."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise ValueError(
                f"Override {override!r} should look like `section.key=value`, e.g. training.max_steps=20."
            )
        parts = key.split(".")
        if parts[0] not in sections:
            raise ValueError(f"Override {override!r}: unknown section {parts[0]!r}; known: {sections}.")
        node = config
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {override!r}: {part!r} is not a section.")
        node[parts[-1]] = _parse_value(raw)
    return config


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw)
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` as text; users mean the number
        try:
            return float(value)
        except ValueError:
            pass
    return value


def read_config(
    path: str | os.PathLike, overrides: list[str], sections: tuple[str, ...] = CONFIG_SECTIONS
) -> dict[str, Any]:
    """A YAML file of `sections` (those of `hyperpeft train` by default) with `section.key=value` overrides applied."""
    try:
        config = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"No config file at {str(path)!r}; see examples/configs/ for examples.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} should hold a mapping of sections, not {type(config).__name__}.")
    unknown = sorted(set(config) - set(sections))
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; known: {sections}.")
    return apply_overrides(config, overrides, sections)


def launch_command(config_path: str, overrides: list[str], num_processes: int, accelerate_config: str | None) -> list:
    """The `accelerate launch` command that reruns this training in `num_processes` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", accelerate_config]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--num_processes", str(num_processes), "-m", "hyperpeft.cli", "train", "--config", config_path]
    return command + overrides


def _inside_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def train(config: dict[str, Any]) -> str:
    """Train a hypernetwork as the config says; returns the output folder (a HyperPeftModel checkpoint)."""
    from .config import HyperLoraConfig
    from .embedded import EMBEDDED_BASE_MODEL, load_base_model, load_tokenizer
    from .peft_model import HyperPeftModel
    from .pipeline import add_profiles, load_source, sft_rows
    from .trainer import HyperSFTConfig, HyperSFTTrainer

    training = dict(config.get("training", {}))
    output_dir = training.setdefault("output_dir", "out/train")
    base_model = config.get("base_model", EMBEDDED_BASE_MODEL)
    splits = add_profiles(load_source(config.get("data", {}), output_dir), config.get("profiles", {}), output_dir)
    if "train" not in splits:
        raise ValueError(f"The data has no `train` split (it has {sorted(splits)}).")
    args = HyperSFTConfig(**training)
    model = HyperPeftModel(load_base_model(base_model), HyperLoraConfig(**config.get("hyper", {})))
    eval_split = next((s for s in ("dev", "test_random") if s in splits), None)
    trainer = HyperSFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_rows(splits["train"]),
        eval_dataset=sft_rows(splits[eval_split]) if eval_split and args.eval_strategy != "no" else None,
        processing_class=load_tokenizer(base_model),
    )
    trainer.train(resume_from_checkpoint=training.get("resume_from_checkpoint"))
    trainer.save_model(output_dir)
    if args.push_to_hub:
        trainer.push_to_hub()
    return output_dir


# Commands whose options live in their own module (`hyperpeft <command> --help`): name -> (module, help).
DELEGATED_COMMANDS = {
    "demo": ("hyperpeft.demo", "the main job on the embedded defaults and synthetic users"),
    "eval": ("hyperpeft.evaluation.run", "compare personalization methods from a YAML config; writes reports"),
    "serve": ("hyperpeft.serving.server", "an HTTP server that batches requests from many users"),
    "export": ("hyperpeft.serving.export", "write one PEFT LoRA folder per user in a JSONL file of profiles"),
    "vllm": ("hyperpeft.integrations.vllm_launch", "start vLLM with hyperpeft's resolver (model=<user_id>)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DELEGATED_COMMANDS:
        import importlib

        module = importlib.import_module(DELEGATED_COMMANDS[argv[0]][0])
        return module.main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="hyperpeft", description="Profile-to-PEFT: personal LoRA adapters.")
    commands = parser.add_subparsers(dest="command", required=True)
    train_parser = commands.add_parser("train", help="train a hypernetwork from a YAML config")
    train_parser.add_argument("--config", required=True, help="YAML file; see examples/configs/")
    train_parser.add_argument("overrides", nargs="*", help="section.key=value entries that override the file")
    save_base = commands.add_parser("save-base", help="write a base model (the embedded one) as a transformers folder")
    save_base.add_argument("name", nargs="?", default="smollm2-135m-instruct", help="base model name or path")
    save_base.add_argument("--out", required=True, help="the new folder (serve it with vLLM, load it anywhere)")
    for name, (_, help_text) in DELEGATED_COMMANDS.items():
        commands.add_parser(name, help=f"{help_text} (see `hyperpeft {name} --help`)")
    args = parser.parse_args(argv)
    if args.command == "save-base":
        from .embedded import save_base_model

        try:
            print(f"wrote {save_base_model(args.name, args.out)}")
        except ValueError as error:
            parser.error(str(error))
        return 0
    try:
        config = read_config(args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    processes = int(config.get("num_processes", 1))
    if processes > 1 and not _inside_launcher():
        command = launch_command(args.config, args.overrides, processes, config.get("accelerate_config"))
        return subprocess.call(command)
    print(f"trained hypernetwork saved to {train(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
