"""Adapter preparation per user: P2P (encode the profile + generate the LoRA) against OPPU (train a LoRA on the user's
history), for users 1...N, on the embedded SmolLM2-135M-Instruct.

Run it from the repository root:

    .venv/bin/python benchmarks/adapter_prep.py                       # 32 P2P users, 6 OPPU users (minutes on 2 cores)
    .venv/bin/python benchmarks/adapter_prep.py --p2p-users 4 --oppu-users 1 --out /tmp/adapter-prep.json   # smoke

The users are held-out synthetic users (random split), each with 10 history items and a profile of summary + the 2
BM25 items closest to their first query. P2P: one user at a time, `model.base_model.generate_lora(profile_text)`
under `torch.no_grad()` (the MiniLM encoder and the hypernetwork; no adapter cache), after one untimed warm-up user;
then all users in one call (per user: that time / users).
Its cost does not depend on the hypernetwork's weights, so an untrained one of the default shape is timed unless
`--checkpoint` names a trained one. OPPU: a fresh PEFT LoRA (r = 8, alpha 16, q_proj and v_proj: the paper's
adapter) trained with TRL on that user's history only, `--epochs` epochs at batch `--batch-size`, lr 1e-3 (the
epochs are not in the paper; 1 is the cheapest choice, so the ratio is a lower bound), then unloaded. Each OPPU time
includes building the trainer (tokenizing ten rows), as a deployment would pay it.

Prints a table and writes JSON (`--out`, default `benchmarks/results/adapter-prep-cpu.json`) and the cumulative-time
plot next to it (`.png`). The machine is shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.data.sources import DataArguments, load_source
from hyperpeft.embedded import load_base_model, load_tokenizer
from hyperpeft.evaluation.methods.mt_lora import train_lora
from hyperpeft.evaluation.methods.oppu import user_history_rows
from hyperpeft.evaluation.plots import cumulative_prep_plot
from hyperpeft.profiles import ProfileArguments, build_profiles
from hyperpeft.training.recipes import trainer_config


def held_out_users(n: int, workdir: str):
    """The first query row of `n` held-out synthetic users (all three tasks, in turn)."""
    synthetic = {"train_users": 3, "test_random_users": max(n, 3), "test_ood_users": 1}
    splits = load_source(DataArguments(source="synthetic", synthetic=synthetic), workdir)
    rows = build_profiles(splits, ProfileArguments(k=2), workdir)
    test = rows["test_random"]
    firsts, seen = [], set()
    for i, user in enumerate(test["user_id"]):
        if user not in seen:
            seen.add(user)
            firsts.append(i)
    by_task: dict[str, list[int]] = {}
    for i in firsts:
        by_task.setdefault(test[i]["task"], []).append(i)
    order = [i for group in zip(*by_task.values()) for i in group]  # tasks in turn
    return test.select(order[:n])


def time_p2p(rows, checkpoint: str | None) -> tuple[list[float], float]:
    base = load_base_model()
    model = HyperPeftModel.from_pretrained(base, checkpoint) if checkpoint else HyperPeftModel(base, HyperLoraConfig())
    tuner = model.eval().base_model
    if getattr(tuner, "adapter_cache", None) is not None:
        tuner.adapter_cache = None  # time the work, not a cache hit
    seconds = []
    with torch.no_grad():
        tuner.generate_lora("warm-up: loads the encoder")
        for profile in rows["profile"]:
            start = time.perf_counter()
            tuner.generate_lora(profile)
            seconds.append(time.perf_counter() - start)
        start = time.perf_counter()  # all users in one call, as a server preparing many adapters at once would
        tuner.generate_lora(list(rows["profile"]))
        batched = (time.perf_counter() - start) / len(rows)
    return seconds, batched


def time_oppu(rows, epochs: float, batch_size: int, workdir: str) -> tuple[list[float], list[int]]:
    model, tokenizer = load_base_model(), load_tokenizer()
    args = trainer_config(
        workdir, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=1e-3,
        max_length=192, disable_tqdm=True, logging_strategy="no",
    )  # fmt: skip
    seconds, sizes = [], []
    for i, user in enumerate(rows["user_id"]):  # one row per user
        start = time.perf_counter()
        train = user_history_rows(rows.select([i]), user)
        personal = train_lora(model, tokenizer, train, args)
        seconds.append(time.perf_counter() - start)
        sizes.append(len(train))
        model = personal.unload()
    return seconds, sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--p2p-users", type=int, default=32)
    parser.add_argument("--oppu-users", type=int, default=6)
    parser.add_argument("--epochs", type=float, default=1.0, help="OPPU epochs over the user's history")
    parser.add_argument("--batch-size", type=int, default=4, help="OPPU batch size")
    parser.add_argument("--checkpoint", help="a trained HyperPeftModel folder (timing does not depend on it)")
    parser.add_argument("--out", default="benchmarks/results/adapter-prep-cpu.json")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as workdir:
        rows = held_out_users(max(args.p2p_users, args.oppu_users), workdir)
        p2p, p2p_batched = time_p2p(rows.select(range(args.p2p_users)), args.checkpoint)
        oppu, sizes = time_oppu(rows.select(range(args.oppu_users)), args.epochs, args.batch_size, workdir)
    p2p_mean, oppu_mean = statistics.mean(p2p), statistics.mean(oppu)
    result = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads (shared with other jobs)",
        "load_average_before_after": [load_before, os.getloadavg()],
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "oppu_settings": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": 1e-3, "r": 8,
                          "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "history_rows": sizes},
        "p2p_seconds_per_user": p2p,
        "oppu_seconds_per_user": oppu,
        "p2p_mean_s": p2p_mean,
        "p2p_batched_s_per_user": p2p_batched,
        "speedup_batched": oppu_mean / p2p_batched,
        "oppu_mean_s": oppu_mean,
        "speedup_mean": oppu_mean / p2p_mean,
        "goal": ">= 1000x faster per user",
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot = cumulative_prep_plot(
        {"P2P (encode + generate)": p2p, "OPPU (train a LoRA)": oppu}, out.parent, out.stem + ".png"
    )
    print("| users | P2P cumulative (s) | OPPU cumulative (s) |\n| ---: | ---: | ---: |")
    for n in sorted({1, 2, 4, 8, 16, 32, args.p2p_users, args.oppu_users}):
        p = f"{sum(p2p[:n]):.3f}" if n <= len(p2p) else "-"
        o = f"{sum(oppu[:n]):.1f}" if n <= len(oppu) else "-"
        print(f"| {n} | {p} | {o} |")
    print(
        f"\nper user: P2P {1000 * p2p_mean:.1f} ms (median {1000 * statistics.median(p2p):.1f}), "
        f"OPPU {oppu_mean:.1f} s -> {oppu_mean / p2p_mean:.0f}x faster (goal >= 1000x)"
        f"; all {len(p2p)} users in one call: {1000 * p2p_batched:.1f} ms/user -> {oppu_mean / p2p_batched:.0f}x"
        f"; load average {load_before} -> {os.getloadavg()}"
    )
    print(f"wrote {out} and {plot}")


if __name__ == "__main__":
    main()
