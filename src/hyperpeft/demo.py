"""The main job: Profile-to-PEFT end to end on the embedded defaults and the synthetic users, on a CPU.

synthetic users (LaMP layout) -> profiles (summary + BM25 top-k) -> train the hypernetwork (HyperSFTTrainer) and a
multi-task LoRA on the same rows without profiles (TRL SFTTrainer) -> evaluate on held-out users of the random and
OOD splits against the base model, with profile ablations -> markdown + JSON table -> export one new user's adapter
as a PEFT LoRA folder and show two contrasting users' answers.

    hyperpeft demo                   # the full run (11-14 minutes on 2 CPU cores)
    hyperpeft demo --smoke           # a tiny configuration (a minute or two), for tests

Its defaults differ from the paper's on purpose: a few dozen CPU steps need a learning rate far above the paper's
2e-5 (set for 20k GPU steps), and the hypernetwork's input is z-scored with training-profile statistics. Both methods
train with the frozen base in bfloat16 where the processor computes it natively (AMX or AVX512-BF16) and with eager
attention (on a CPU, SDPA's backward costs more than the rest of these short rows' layers): a training step takes
1.8-2.6 s instead of 3.6 s on the project's 2-core machine. The hypernetwork and the LoRA weights stay float32, and
both models return to float32 and SDPA for evaluation, where that decodes faster.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from transformers.utils import logging

from .config import HyperLoraConfig
from .data.synthetic import SyntheticConfig
from .data.tasks import get_task
from .embedded import EMBEDDED_BASE_MODEL, EMBEDDED_PROFILE_ENCODER, load_base_model, load_tokenizer
from .evaluation.generation import generate_answers
from .evaluation.metrics import HEADLINE, score_task
from .evaluation.mt_lora import train_mt_lora as evaluation_mt_lora
from .evaluation.mt_lora import training_defaults
from .peft_model import HyperPeftModel
from .pipeline import add_profiles, load_source, sft_rows
from .trainer import HyperSFTConfig, HyperSFTTrainer

logger = logging.get_logger(__name__)

SPLITS = ("test_random", "test_ood")
SHUFFLED = "P2P, another user's profile"


@dataclass
class DemoConfig:
    """Everything the main job does, with its CPU-sized defaults."""

    out: str = "out/demo"
    base_model: str = EMBEDDED_BASE_MODEL
    profile_encoder: str = EMBEDDED_PROFILE_ENCODER
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    k: int = 2
    steps: int = 100
    batch_size: int = 8
    p2p_learning_rate: float = 3e-4
    mt_lora_learning_rate: float = 1e-3
    warmup_steps: int = 10
    # a rating answer is one digit, the least to learn from per row: twice the rows let P2P learn it in 100 steps
    task_weights: dict[str, float] = field(default_factory=lambda: {"synthetic-rating": 2.0})
    eval_queries_per_user: int = 2
    eval_batch_size: int = 36
    base_dtype: str = "auto"  # "auto": bfloat16 where the CPU or GPU computes it natively, else float32
    seed: int = 0

    @classmethod
    def smoke(cls, out: str) -> DemoConfig:
        return cls(
            out=out,
            synthetic=SyntheticConfig(
                train_users=12, test_random_users=3, test_ood_users=3, history_items=4, queries=1
            ),
            steps=2,
            batch_size=2,
            warmup_steps=0,
            eval_batch_size=8,
        )


def base_dtype(config: DemoConfig) -> torch.dtype:
    """The frozen base model's dtype: `config.base_dtype`, or for "auto" bfloat16 where it is native."""
    if config.base_dtype != "auto":
        dtype = getattr(torch, config.base_dtype, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"`base_dtype` should be 'auto', 'float32' or 'bfloat16', not {config.base_dtype!r}.")
        return dtype
    native = torch.cuda.is_available() or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else torch.float32


def load_demo_base(config: DemoConfig):
    """The base model for training (see the module docstring for the dtype and attention choices)."""
    attention = "sdpa" if torch.cuda.is_available() else "eager"
    return load_base_model(config.base_model, dtype=base_dtype(config), attn_implementation=attention)


def ready_for_evaluation(model) -> None:
    """Back to float32 and SDPA attention after training on a CPU: batched greedy decoding is faster that way there."""
    if next(model.parameters()).device.type == "cpu":
        model.float()
        model.get_base_model().set_attn_implementation("sdpa")


def build_data(config: DemoConfig) -> dict[str, Dataset]:
    """Synthetic users written in the LaMP layout and read back through the LaMP loader, with profiles."""
    splits = load_source({"source": "synthetic", "synthetic": asdict(config.synthetic)}, config.out)
    return add_profiles(splits, {"k": config.k}, config.out)


def _training_args(config: DemoConfig, folder: Path, learning_rate: float) -> HyperSFTConfig:
    """
    Both methods' settings. MT-LoRA takes a `HyperSFTConfig` too, for its batching and loss fields only: the same
    task-balanced batches and per-row loss as P2P.
    """
    # short rows fit in memory: no gradient checkpointing (recomputation would cost a third more time)
    fields = training_defaults(
        str(folder),
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=learning_rate,
        warmup_steps=config.warmup_steps,
        logging_steps=max(config.steps // 10, 1),
        seed=config.seed,
        max_length=192,
    )
    return HyperSFTConfig(**fields, loss_per_row=True, task_weights=config.task_weights)


def train_p2p(config: DemoConfig, train: Dataset, tokenizer) -> HyperPeftModel:
    torch.manual_seed(config.seed)
    model = HyperPeftModel(load_demo_base(config), HyperLoraConfig(profile_encoder=config.profile_encoder))
    folder = Path(config.out) / "p2p"
    args = _training_args(config, folder, config.p2p_learning_rate)
    trainer = HyperSFTTrainer(model=model, args=args, train_dataset=sft_rows(train), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(folder))
    return model.eval()


def train_mt_lora(config: DemoConfig, train: Dataset, tokenizer) -> PeftModel:
    """The multi-task LoRA baseline of `hyperpeft eval`, with the same steps, batches and per-row loss as P2P here."""
    folder = Path(config.out) / "mt-lora"
    args = _training_args(config, folder, config.mt_lora_learning_rate)
    model = evaluation_mt_lora(load_demo_base(config), tokenizer, train, args)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return model


def eval_rows(dataset: Dataset, per_user: int) -> Dataset:
    """The first `per_user` queries of each (user, task): every held-out user counts, at a bounded cost."""
    seen: dict[tuple[str, str], int] = {}
    keep = []
    for i, (user, task) in enumerate(zip(dataset["user_id"], dataset["task"])):
        seen[(user, task)] = seen.get((user, task), 0) + 1
        if seen[(user, task)] <= per_user:
            keep.append(i)
    return dataset.select(keep)


def ablation_profiles(config: DemoConfig, rows: Dataset, mode: str) -> list[str]:
    profiles = {"k": config.k, "mode": mode, "seed": config.seed}
    return add_profiles({"eval": rows}, profiles, config.out)["eval"]["profile"]


def evaluate(config: DemoConfig, splits: dict[str, Dataset], p2p: HyperPeftModel, mt_lora: PeftModel, tokenizer):
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for split in SPLITS:
        rows = eval_rows(splits[split], config.eval_queries_per_user)
        tasks, inputs, golds = rows["task"], rows["input"], rows["output"]
        answer = dict(tokenizer=tokenizer, tasks=tasks, inputs=inputs, batch_size=config.eval_batch_size)
        with p2p.disable_adapter():
            runs = {"base": generate_answers(p2p, desc=f"{split}: base", **answer)}
        runs["MT-LoRA"] = generate_answers(mt_lora, desc=f"{split}: MT-LoRA", **answer)
        runs["P2P"] = generate_answers(p2p, profiles=rows["profile"], desc=f"{split}: P2P", **answer)
        # The shuffled-profile ablation: each query gets another held-out user's profile of the same task.
        profiles = ablation_profiles(config, rows, "random_user")
        runs[SHUFFLED] = generate_answers(p2p, profiles=profiles, desc=f"{split}: {SHUFFLED}", **answer)
        results[split] = {}
        for method, answers in runs.items():
            results[split][method] = {}
            for task in sorted(set(tasks)):
                index = [i for i, t in enumerate(tasks) if t == task]
                results[split][method][task] = score_task(task, [answers[i] for i in index], [golds[i] for i in index])
        results[split]["_examples"] = [
            {"task": t, "input": x, "gold": g, **{m: a[i] for m, a in runs.items()}}
            for i, (t, x, g) in enumerate(zip(tasks, inputs, golds))
            if i < 6
        ]
    return results


def markdown_table(results: dict) -> str:
    """One table per split: methods x tasks, each task's headline metric, the best of the three methods in bold."""
    lines = []
    for split, by_method in results.items():
        methods = [m for m in by_method if not m.startswith("_")]
        tasks = sorted(by_method[methods[0]])
        headline = {t: HEADLINE[get_task(t).metric] for t in tasks}
        best = {}
        for task, (metric, higher) in headline.items():
            compared = [by_method[m][task][metric] for m in ("base", "MT-LoRA", "P2P")]
            best[task] = max(compared) if higher else min(compared)
        queries = by_method[methods[0]][tasks[0]]["n"]
        lines += [
            f"\n**{split}** ({queries} queries per task; "
            + ", ".join(f"{t}: {m} {'higher' if h else 'lower'} is better" for t, (m, h) in headline.items())
            + ")\n"
        ]
        lines += ["| method | " + " | ".join(tasks) + " |", "| --- |" + " --- |" * len(tasks)]
        for method in methods:
            cells = []
            for task, (metric, _) in headline.items():
                value = by_method[method][task][metric]
                bold = method in ("base", "MT-LoRA", "P2P") and value == best[task]
                cells.append(f"**{value:.3f}**" if bold else f"{value:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def show_two_users(config: DemoConfig, splits: dict[str, Dataset], p2p: HyperPeftModel, tokenizer) -> dict:
    """Export one new user's adapter as a PEFT folder; answer one style prompt as two contrasting held-out users.

    The two users are picked by their histories, not by the model's answers: one who writes only in lowercase and
    one who uses exclamation marks.
    """
    style = splits["test_random"].filter(lambda row: row["task"] == "synthetic-style")

    def writes(row, habit) -> bool:
        return all(habit(item["output"]) for item in row["history"])

    quiet = next((r for r in style if writes(r, lambda text: text == text.lower())), style[0])
    loud = next((r for r in style if writes(r, lambda text: "!" in text) and r["user_id"] != quiet["user_id"]), None)
    loud = loud or next(r for r in style if r["user_id"] != quiet["user_id"])
    folder = p2p.export_lora(quiet["profile"], Path(config.out) / "adapters" / quiet["user_id"])
    text = quiet["input"]
    answers = generate_answers(
        p2p, tokenizer, ["synthetic-style"] * 2, [text, text], profiles=[quiet["profile"], loud["profile"]]
    )
    return {
        "exported_adapter": str(folder),
        "input": text,
        "users": [
            {"user_id": row["user_id"], "profile": row["profile_text"], "answer": answer}
            for row, answer in zip((quiet, loud), answers)
        ],
    }


def run(config: DemoConfig) -> dict:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    timings, start = {}, time.perf_counter()
    tokenizer = load_tokenizer(config.base_model)
    splits = build_data(config)
    timings["data_and_profiles_s"] = time.perf_counter() - start
    logger.warning("Training the hypernetwork (%d steps) ...", config.steps)
    mark = time.perf_counter()
    p2p = train_p2p(config, splits["train"], tokenizer)
    timings["p2p_training_s"] = time.perf_counter() - mark
    logger.warning("Training the multi-task LoRA baseline (%d steps) ...", config.steps)
    mark = time.perf_counter()
    mt_lora = train_mt_lora(config, splits["train"], tokenizer)
    timings["mt_lora_training_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    for model in (p2p, mt_lora):
        ready_for_evaluation(model)
    results = evaluate(config, splits, p2p, mt_lora, tokenizer)
    timings["evaluation_s"] = time.perf_counter() - mark
    two_users = show_two_users(config, splits, p2p, tokenizer)
    timings["total_s"] = time.perf_counter() - start
    table = markdown_table(results)
    report = {
        "config": asdict(config),
        "rows": {split: len(data) for split, data in splits.items()},
        "results": results,
        "two_users": two_users,
        "timings": timings,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(table)
    return {"table": table, **report}


def config_from_args(argv: list[str] | None = None) -> DemoConfig:
    """The `DemoConfig` that `hyperpeft demo [--out DIR] [--smoke] [--steps N] [--seed S]` runs."""
    parser = argparse.ArgumentParser(prog="hyperpeft demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--smoke", action="store_true", help="a tiny configuration that runs in a minute or two")
    parser.add_argument("--steps", type=int, help="training steps for each trained method")
    parser.add_argument(
        "--seed", type=int, help="seed of both trainings and of the ablation's profile draw (same users)"
    )
    args = parser.parse_args(argv)
    config = DemoConfig.smoke(args.out) if args.smoke else DemoConfig(out=args.out)
    if args.steps is not None:
        if args.steps < 1:
            parser.error(f"--steps should be at least 1, not {args.steps}")
        config.steps = args.steps
    if args.seed is not None:
        if args.seed < 0:
            parser.error(f"--seed should be 0 or more, not {args.seed}")
        config.seed = args.seed
    return config


def main(argv: list[str] | None = None) -> None:
    config = config_from_args(argv)
    report = run(config)
    print(report["table"])
    print(f"One input, two held-out users: {report['two_users']['input']!r}")
    for user in report["two_users"]["users"]:
        print(f"[{user['user_id']}] {user['profile']}\n  -> {user['answer']}")
    print(f"\nexported adapter: {report['two_users']['exported_adapter']}")
    print(f"timings: { {k: round(v, 1) for k, v in report['timings'].items()} }")
    print(f"wrote {Path(config.out) / 'results.md'} and results.json")


if __name__ == "__main__":
    main()
