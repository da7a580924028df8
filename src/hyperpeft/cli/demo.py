"""`hyperpeft demo`: the main job, a preset of `hyperpeft eval` on the embedded defaults and the synthetic users.

    hyperpeft demo                   # the full run (11-16 minutes on 2 CPU cores)
    hyperpeft demo --smoke           # a tiny configuration (a minute or two), for tests
    hyperpeft demo --steps 50 --seed 1 [any `hyperpeft eval` flag, e.g. --eval_batch_size 16]

It is `hyperpeft eval` with the settings of `DEMO` below: the synthetic users (LaMP layout, read back by the LaMP
loader), profiles (summary + BM25 top-2), P2P (HyperSFTTrainer) and a multi-task LoRA (TRL SFTTrainer + PEFT LoRA)
trained with the same steps, batches and per-row loss, every held-out user of the random and OOD splits answered by
the base model, MT-LoRA, P2P and P2P given another user's profile. Then its epilogue: one held-out user's adapter
exported as a PEFT LoRA folder, and one input answered as two contrasting users.

Its defaults differ from the paper's on purpose: a hundred CPU steps need a learning rate far above the paper's 2e-5
(set for 20k GPU steps). The frozen base trains in bfloat16 where the processor computes it natively (AMX or
AVX512-BF16; float32 elsewhere) and with eager attention on a CPU (SDPA's backward costs more than the rest of these
short rows' layers); both models return to float32 and SDPA to be evaluated.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
from pathlib import Path
from typing import Any

from .._validation import check_int

# Both methods: 100 steps of 8 rows; a rating answer is one digit, the least to learn from per row, so rating gets
# twice the rows (4 of 8) to be learnt in 100 steps.
_TRAINING = {
    "max_steps": 100, "per_device_train_batch_size": 8, "warmup_steps": 10, "logging_steps": 10, "max_length": 192,
    "task_weights": {"synthetic-rating": 2.0},
}  # fmt: skip

DEMO: dict[str, Any] = {
    "out": "out/demo",
    "workdir": "out/demo",
    "seed": 0,
    "base_model": "smollm2-135m-instruct",
    "methods": ["base", "mt_lora", "p2p", "p2p_other_user"],
    "train_dtype": "auto",
    "train_attention": "eager",  # "sdpa" on a GPU: see `demo_settings`
    "data": {"source": "synthetic", "synthetic": {}},
    "profiles": {"k": 2},
    "eval": {"splits": ["test_random", "test_ood"], "users_per_task": None, "queries_per_user": 2, "batch_size": 36},
    "p2p": {"profile_encoder": "all-minilm-l6-v2", "training": {**_TRAINING, "learning_rate": 3e-4}},
    "mt_lora": {"training": {**_TRAINING, "learning_rate": 1e-3}},
    "sweeps": {"activity_buckets": 0},
}
SMOKE = {
    "data": {"source": "synthetic",
             "synthetic": {"train_users": 12, "test_random_users": 3, "test_ood_users": 3, "history_items": 4,
                           "queries": 1}},
    "eval": {"batch_size": 8},
    "training": {"max_steps": 2, "per_device_train_batch_size": 2, "warmup_steps": 0},
}  # fmt: skip


def demo_settings(smoke: bool = False, steps: int | None = None) -> dict[str, Any]:
    """The preset: `DEMO`, made tiny with `smoke`, with `steps` training steps for both methods."""
    import torch

    settings = copy.deepcopy(DEMO)
    if torch.cuda.is_available():
        settings["train_attention"] = "sdpa"
    changes = dict(SMOKE["training"]) if smoke else {}
    if smoke:
        settings["data"] = SMOKE["data"]
        settings["eval"].update(SMOKE["eval"])
    if steps is not None:
        changes["max_steps"] = check_int("steps", steps)
    for method in ("p2p", "mt_lora"):
        settings[method]["training"].update(changes)
    return settings


def show_two_users(splits, p2p, tokenizer, out: Path) -> dict[str, Any]:
    """Export one new user's adapter as a PEFT folder; answer one style prompt as two contrasting held-out users.

    The two users are picked by their histories, not by the model's answers: one who writes only in lowercase and
    one who uses exclamation marks.
    """
    from ..evaluation.generation import generate_answers

    style = splits["test_random"].filter(lambda row: row["task"] == "synthetic-style")

    def writes(row, habit) -> bool:
        return all(habit(item["output"]) for item in row["history"])

    quiet = next((r for r in style if writes(r, lambda text: text == text.lower())), style[0])
    loud = next((r for r in style if writes(r, lambda text: "!" in text) and r["user_id"] != quiet["user_id"]), None)
    loud = loud or next(r for r in style if r["user_id"] != quiet["user_id"])
    folder = p2p.export_lora(quiet["profile"], out / "adapters" / quiet["user_id"])
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


def run(config, command: str | None = None) -> dict[str, Any]:
    """The main job for an `EvalConfig` (e.g. from `parse_args`): the evaluation, then the two-users epilogue."""
    from ..checkpoint import write_files_atomically
    from ..evaluation.context import RunContext
    from ..evaluation.report import headline_table, markdown_report, write_report
    from ..evaluation.run import evaluate

    context = RunContext(config)
    report = evaluate(config, command=command, run=context)
    p2p, _ = context.p2p_model()
    report["two_users"] = show_two_users(context.splits, p2p, context.tokenizer, Path(config.run.out))
    write_report(report, markdown_report(report), config.run.out)
    report["table"] = headline_table(report)
    write_files_atomically(config.run.out, {"results.md": report["table"].encode()})
    return report


def parse_args(argv: list[str] | None = None):
    """The `EvalConfig` that `hyperpeft demo [--smoke] [--steps N] [--out DIR] [eval flags]` runs."""
    from ..evaluation.config import SECTIONS, EvalConfig
    from .arguments import parse_config

    parser = argparse.ArgumentParser(prog="hyperpeft demo", add_help=False)
    parser.add_argument("--smoke", action="store_true", help="a tiny configuration that runs in a minute or two")
    parser.add_argument("--steps", type=int, default=None, help="training steps of both trained methods")
    parser.add_argument("--out", default=None, help="where the reports go (and, without --workdir, the models)")
    own, rest = parser.parse_known_args(argv)
    try:
        preset = demo_settings(own.smoke, own.steps)
    except ValueError as error:
        parser.error(str(error))
    if own.out is not None:
        preset["out"] = own.out
        if "--workdir" not in rest:
            preset["workdir"] = own.out
    description = (__doc__ or "").split("\n\n")[0] + " Flags: --smoke, --steps N, and every `hyperpeft eval` flag."
    return EvalConfig.from_sections(parse_config(SECTIONS, rest, "hyperpeft demo", description, preset=preset))


def main(argv: list[str] | None = None) -> int:
    import sys

    config = parse_args(argv)
    command = shlex.join(["hyperpeft", "demo", *(sys.argv[2:] if argv is None else argv)])
    report = run(config, command=command)
    print(report["table"])
    print(f"One input, two held-out users: {report['two_users']['input']!r}")
    for user in report["two_users"]["users"]:
        print(f"[{user['user_id']}] {user['profile']}\n  -> {user['answer']}")
    print(f"\nexported adapter: {report['two_users']['exported_adapter']}")
    print(f"timings: {json.dumps({k: round(v, 1) for k, v in report['timings'].items()})}")
    print(f"wrote {Path(config.run.out) / 'report.md'}, report.json and results.md")
    return 0
