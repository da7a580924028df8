"""`hyperpeft train`: train a hypernetwork from a YAML file and `--flags` (`HyperSFTConfig`, `HyperLoraConfig`, data
and profile settings), in one process or, with `num_processes`, several under `accelerate launch`.

    hyperpeft train --config examples/configs/synthetic.yaml [--max_steps 20 --learning_rate 3e-4 --r 8 ...]
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainArguments:
    """The run's own settings (the top level of the YAML file)."""

    base_model: str = field(default="smollm2-135m-instruct", metadata={"help": "The base model (name or folder)."})
    train_dtype: str = field(
        default="auto",
        metadata={"help": "The frozen base's dtype: 'auto' (bfloat16 where the GPU or CPU computes it natively), "
                  "'float32' or 'bfloat16'."},
    )  # fmt: skip
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "The base's attention, e.g. 'eager' (faster than SDPA for short rows on a CPU)."},
    )
    num_processes: int = field(default=1, metadata={"help": "Processes to train in (accelerate launch when > 1)."})
    accelerate_config: str | None = field(
        default=None, metadata={"help": "An accelerate config file for several processes (default: DDP flags)."}
    )

    def __post_init__(self) -> None:
        from .._validation import check_int

        check_int("num_processes", self.num_processes)
        if self.train_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"`train_dtype` should be 'auto', 'float32' or 'bfloat16', not {self.train_dtype!r}.")


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
    from ..embedded import load_tokenizer
    from ..peft_model import HyperPeftModel
    from ..profiles.builder import build_profiles
    from ..training import HyperSFTTrainer
    from ..training.recipes import load_training_base, sft_rows

    run, hyper, args, data = parsed[None], parsed["hyper"], parsed["training"], parsed["data"]
    # Generated rows and the summary cache go to `_work`: the Trainer's Hub uploads skip names that start with `_`,
    # so pushing the output folder uploads the checkpoint, never the data.
    workdir = Path(args.output_dir) / "_work"
    splits = load_splits(data, workdir, hyper.profile_encoder, args.seed)
    if "train" not in splits:
        raise ValueError(f"The data has no `train` split (it has {sorted(splits)}).")
    splits = build_profiles(splits, parsed["profiles"], workdir, args.seed)
    if args.dataset_description is None:
        where = "hyperpeft's synthetic users" if data.source == "synthetic" else f"`{data.path}`"
        users = len(set(splits["train"]["user_id"]))
        args.dataset_description = f"{data.source} data from {where}: {len(splits['train'])} rows of {users} users"
    model = HyperPeftModel(load_training_base(run.base_model, run.train_dtype, run.attn_implementation), hyper)
    eval_split = next((s for s in ("dev", "test_random", "test_kfold", "test_ood") if s in splits), None)
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


def parse_args(argv: list[str] | None = None) -> dict:
    """The command line read into one dataclass per section (`SystemExit` naming a bad key, flag or value)."""
    from .arguments import parse_config

    return parse_config(sections(), argv, "hyperpeft train", (__doc__ or "").split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[2:] if argv is None else argv
    parsed = parse_args(argv)
    run = parsed[None]
    if run.num_processes > 1 and not _inside_launcher():
        return subprocess.call(launch_command(argv, run.num_processes, run.accelerate_config))
    print(f"trained hypernetwork saved to {train(parsed)}")
    return 0
