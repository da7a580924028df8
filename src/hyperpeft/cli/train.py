"""`hyperpeft train`: train a hypernetwork from a YAML file and `--flags` (`HyperSFTConfig`, `HyperLoraConfig`, data
and profile settings), in one process or, with `num_processes`, several under `accelerate launch`.

    hyperpeft train --config examples/configs/synthetic.yaml [--max_steps 20 --learning_rate 3e-4 --r 8 ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field


@dataclass
class TrainArguments:
    """The run's own settings (the top level of the YAML file)."""

    base_model: str = field(default="smollm2-135m-instruct", metadata={"help": "The base model (name or folder)."})
    num_processes: int = field(default=1, metadata={"help": "Processes to train in (accelerate launch when > 1)."})
    accelerate_config: str | None = field(
        default=None, metadata={"help": "An accelerate config file for several processes (default: DDP flags)."}
    )

    def __post_init__(self) -> None:
        from .._validation import check_int

        check_int("num_processes", self.num_processes)


def sections() -> dict:
    """YAML section -> dataclass of `hyperpeft train` (`None`: the top level)."""
    from ..config import HyperLoraConfig
    from ..data.sources import DataArguments
    from ..profiles.builder import ProfileArguments
    from ..training import HyperSFTConfig

    return {None: TrainArguments, "hyper": HyperLoraConfig, "data": DataArguments, "profiles": ProfileArguments,
            "training": HyperSFTConfig}  # fmt: skip


def train(parsed: dict) -> str:
    """Train a hypernetwork as the parsed sections say; returns the output folder (a HyperPeftModel checkpoint)."""
    from ..data.sources import load_splits
    from ..embedded import load_base_model, load_tokenizer
    from ..peft_model import HyperPeftModel
    from ..profiles.builder import build_profiles
    from ..training import HyperSFTTrainer
    from ..training.recipes import sft_rows

    run, hyper, args = parsed[None], parsed["hyper"], parsed["training"]
    splits = load_splits(parsed["data"], args.output_dir, hyper.profile_encoder, args.seed)
    if "train" not in splits:
        raise ValueError(f"The data has no `train` split (it has {sorted(splits)}).")
    splits = build_profiles(splits, parsed["profiles"], args.output_dir, args.seed)
    model = HyperPeftModel(load_base_model(run.base_model), hyper)
    eval_split = next((s for s in ("dev", "test_random") if s in splits), None)
    trainer = HyperSFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_rows(splits["train"]),
        eval_dataset=sft_rows(splits[eval_split]) if eval_split and args.eval_strategy != "no" else None,
        processing_class=load_tokenizer(run.base_model),
    )
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if args.push_to_hub:
        trainer.push_to_hub()
    return args.output_dir


def launch_command(argv: list[str], num_processes: int, accelerate_config: str | None) -> list[str]:
    """The `accelerate launch` command that reruns this training (`argv`) in `num_processes` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", accelerate_config]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return command + ["--num_processes", str(num_processes), "-m", "hyperpeft.cli", "train", *argv]


def _inside_launcher() -> bool:
    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def main(argv: list[str] | None = None) -> int:
    from .arguments import parse_config

    argv = sys.argv[2:] if argv is None else argv
    parsed = parse_config(sections(), argv, "hyperpeft train", (__doc__ or "").split("\n\n")[0])
    run = parsed[None]
    if run.num_processes > 1 and not _inside_launcher():
        return subprocess.call(launch_command(argv, run.num_processes, run.accelerate_config))
    print(f"trained hypernetwork saved to {train(parsed)}")
    return 0
