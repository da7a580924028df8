"""Training step time: HyperSFTTrainer (per-row generated LoRA) ÷ TRL's SFTTrainer with a plain PEFT LoRA.

Same base (SmolLM2-135M-Instruct by default), same rank (r=8, lora_alpha=16, q_proj + v_proj), same rows, same batch,
same TRL preparation (prompt-completion, loss on the completion), gradient checkpointing off for both. Each trainer
runs `--steps` optimizer steps; the first `--warmup` are dropped and the median of the rest is reported.

    .venv/bin/python benchmarks/trainer.py                      # CPU, batch 8, ~70-token rows
    .venv/bin/python benchmarks/trainer.py --steps 6 --batch 2  # a quick look

Prints a markdown table and writes JSON (`--out`, default benchmarks/results/trainer-<device>.json).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import TrainerCallback
from trl import SFTConfig, SFTTrainer

from hyperpeft import HyperLoraConfig, HyperPeftModel, load_base_model, load_tokenizer
from hyperpeft.training import HyperSFTConfig, HyperSFTTrainer


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def rows(n: int) -> Dataset:
    words = "film story quiet loud funny dark hero city night river song winter dream road".split()
    data = []
    for i in range(n):
        prompt = " ".join(words[(i + j) % len(words)] for j in range(40))
        data.append(
            {
                "prompt": [{"role": "user", "content": f"Tag this movie: {prompt}"}],
                "completion": [{"role": "assistant", "content": ["action", "comedy", "drama"][i % 3]}],
                "profile": f"user {i % 16} tags films by their {words[i % len(words)]} scenes",
                "task": ["a", "b", "c", "d"][i % 4],
            }
        )
    return Dataset.from_list(data)


def run(trainer) -> list[float]:
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    tokenizer = load_tokenizer(args.base)
    base = load_base_model(args.base)
    data = rows(args.batch * args.steps)
    common = dict(
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        logging_steps=args.steps,
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        bf16=False,
        max_length=256,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
    )
    hyper = HyperPeftModel(copy.deepcopy(base), HyperLoraConfig())
    hyper_trainer = HyperSFTTrainer(
        model=hyper, args=HyperSFTConfig("/tmp/bench-hyper", **common), train_dataset=data, processing_class=tokenizer
    )
    lora_trainer = SFTTrainer(
        model=copy.deepcopy(base),
        args=SFTConfig("/tmp/bench-lora", **common),
        train_dataset=data.remove_columns(["profile", "task"]),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    times = {"peft_lora_sft": run(lora_trainer), "hyper_sft": run(hyper_trainer)}
    medians = {name: statistics.median(t[args.warmup :]) for name, t in times.items()}
    ratio = medians["hyper_sft"] / medians["peft_lora_sft"]
    tokens = sum(len(x) for x in hyper_trainer.train_dataset["input_ids"]) / len(hyper_trainer.train_dataset)

    threads = torch.get_num_threads()
    print(f"\n{args.base}, {device}, {threads} threads, batch {args.batch}, ~{tokens:.0f} tokens/row\n")
    print("| trainer | median step | ratio | target |")
    print("| --- | --- | --- | --- |")
    print(f"| TRL SFTTrainer + PEFT LoRA r=8 | {medians['peft_lora_sft']:.2f} s | 1.000 | |")
    print(f"| HyperSFTTrainer (per-row LoRA) | {medians['hyper_sft']:.2f} s | {ratio:.3f} | ≤ 1.10 |")
    out = Path(args.out or f"benchmarks/results/trainer-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join([sys.executable, *sys.argv]),
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "mean_tokens_per_row": tokens,
        "step_times_s": times,
        "median_step_s": medians,
        "ratio": ratio,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
