"""Time the profile summarizer: seconds per user for `TransformersSummarizer` (by default the embedded SmolLM2-135M).

Run it from the repository root (a few minutes on 2 CPU cores; run it on a quiet machine):

    .venv/bin/python benchmarks/summarizer.py --device cpu

What it does: builds `--users` synthetic movie-tagging users (LaMP-2M style) with `--items` short history items each
(drawn with a fixed seed from a pool of short plot lines), then runs `ProfileBuilder(mode="summary")` with
`TransformersSummarizer(batch_size=--batch-size, max_new_tokens=--max-new-tokens)` against a fresh SQLite cache in a
temporary folder. One untimed warm-up call (one prompt, 4 new tokens) comes first. Reported: model load time, the
summarization wall time and seconds per user, prompt and answer lengths in tokens, the time of an identical rerun
(served by the cache, no LLM call), and two of the summaries. The numbers also go to JSON (`--out`, default
`benchmarks/results/summarizer-<device>.json`) with versions, threads, CPU name, date and the command line.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import transformers
from datasets import Dataset

from hyperpeft.data.tasks import LAMP_2M_TAGS
from hyperpeft.profiles import ProfileBuilder, TransformersSummarizer

PLOTS = [
    "A crew repairs a failing space station far from Earth.",
    "Two chefs fall in love while running a bakery.",
    "A detective hunts a killer through a rainy city.",
    "A robot learns to paint after its factory closes.",
    "A comedian moves back in with her parents.",
    "Pilots fight alien machines over a mining colony.",
    "A boy discovers his grandfather was a famous wizard.",
    "A journalist uncovers corruption in a small town.",
    "Survivors rebuild society after a global flood.",
    "A heist goes wrong when the getaway driver vanishes.",
    "An old boxer trains his estranged daughter.",
    "A family inherits a haunted vineyard.",
    "Teenagers form a band to win a school contest.",
    "A scientist clones herself to meet a deadline.",
    "Soldiers are trapped behind enemy lines for a week.",
    "A con artist falls for the woman he is scamming.",
    "A chess prodigy battles addiction.",
    "An AI assistant starts rewriting its owner's emails.",
    "A king loses his memory on the eve of a war.",
    "Neighbours feud over a prize-winning pumpkin.",
]


def make_users(n_users: int, n_items: int, seed: int) -> list[dict]:
    """One query row per user; each user favours a few tags, so the histories differ."""
    rng = random.Random(seed)
    rows = []
    for u in range(n_users):
        favourite_tags = rng.sample(LAMP_2M_TAGS, 3)
        history = [{"input": plot, "output": rng.choice(favourite_tags)} for plot in rng.sample(PLOTS, n_items)]
        rows.append(dict(id=f"u{u}-q0", user_id=f"u{u}", task="LaMP-2M", input=rng.choice(PLOTS), history=history,
                         profile_text=None))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    summarizer = TransformersSummarizer(
        args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, device=args.device
    )
    model, tokenizer = summarizer.load()
    load_s = time.perf_counter() - start
    warm = TransformersSummarizer(args.model, max_new_tokens=4, model=model, tokenizer=tokenizer)
    warm.summarize(["Say hello."])  # untimed warm-up

    rows = make_users(args.users, args.items, args.seed)
    dataset = Dataset.from_list(rows)
    with tempfile.TemporaryDirectory() as folder:
        builder = ProfileBuilder(summarizer, cache_path=Path(folder) / "summaries.sqlite", mode="summary")
        prompts = [builder.summary_prompt(row["task"], row["history"]) for row in rows]
        chats = [
            tokenizer.apply_chat_template(
                [{"role": "system", "content": summarizer.system_prompt}, {"role": "user", "content": prompt}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for prompt in prompts
        ]
        prompt_tokens = [len(tokenizer(chat, add_special_tokens=False).input_ids) for chat in chats]
        start = time.perf_counter()
        out = builder.build(dataset)
        summarize_s = time.perf_counter() - start
        start = time.perf_counter()
        again = builder.build(dataset, show_progress=False)
        rerun_s = time.perf_counter() - start
        assert again["summary"] == out["summary"]
    answer_tokens = [len(tokenizer(s, add_special_tokens=False).input_ids) for s in out["summary"]]

    result = {
        "model": args.model,
        "device": args.device,
        "users": args.users,
        "items_per_user": args.items,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "model_load_s": round(load_s, 2),
        "summarize_s": round(summarize_s, 2),
        "seconds_per_user": round(summarize_s / args.users, 3),
        "rerun_from_cache_s": round(rerun_s, 3),
        "prompt_tokens_mean": round(sum(prompt_tokens) / len(prompt_tokens), 1),
        "summary_tokens_mean": round(sum(answer_tokens) / len(answer_tokens), 1),
        "examples": out["summary"][:2],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
    }
    print("| users | items | batch | max_new_tokens | load s | summarize s | s/user | rerun (cache) s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {args.users} | {args.items} | {args.batch_size} | {args.max_new_tokens} | {result['model_load_s']} | "
          f"{result['summarize_s']} | {result['seconds_per_user']} | {result['rerun_from_cache_s']} |")  # fmt: skip
    print(
        f"prompt tokens (mean) {result['prompt_tokens_mean']}, summary tokens (mean) {result['summary_tokens_mean']}"
    )
    for example in result["examples"]:
        print("example:", example)
    out_path = Path(args.out or f"benchmarks/results/summarizer-{args.device.split(':')[0]}.json")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
