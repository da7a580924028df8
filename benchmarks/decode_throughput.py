"""Benchmark 2: multi-user decode throughput, hyperpeft per-row LoRA vs PEFT mixed-adapter batches vs the base model.

Run it from the repository root:

    # CPU, the embedded SmolLM2-135M-Instruct base (a few minutes on 2 cores)
    .venv/bin/python benchmarks/decode_throughput.py --device cpu

    # smoke run, under a minute
    .venv/bin/python benchmarks/decode_throughput.py --device cpu --quick --out /tmp/decode-quick.json

    # GPU, a Llama-3-8B-shaped base built from a config (random bf16 weights, no download)
    python benchmarks/decode_throughput.py --device cuda --base-config realistic --tokenizer .bench-assets/tokenizer

For every user count U (default 1, 8 and 32) one batch has U rows, each row a different user, and each method
greedily generates exactly `--new-tokens` tokens (min_new_tokens = max_new_tokens) after left-padded prompts of up to
`--prompt-tokens` tokens. Throughput = U x new tokens / median wall time of one `generate` call (prefill included).

  base        the base model alone (no adapter): the ceiling.
  hyperpeft   `HyperPeftModel.generate(profile=<U profile embeddings>)`: the hypernetwork runs once per call (included
              in the time), then every wrapped layer adds each row's LoRA with two batched matmuls.
  peft_mixed  the same U adapters exported with `export_lora`, loaded into one `PeftModel` (`load_adapter`), and
              generated with PEFT's mixed-adapter batches, `generate(adapter_names=[one name per row])`.

The three methods' repeats are interleaved (alternating order) in one run, so machine load affects them alike; the
ratios are more robust than the absolute numbers. The table gives the ratios of medians and, because contention only
adds time, also the ratios of the fastest repeats. The JSON also records whether hyperpeft's and PEFT's generated
tokens agree (they compute the same adapters; low-precision rounding may flip a few greedy choices).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers
from core import (
    LORA_ALPHA,
    RANK,
    REALISTIC_SHAPES,
    TARGET_MODULES,
    build_realistic_base,
    clone_base,
    count_parameters,
    environment,
    fixed,
    greedy_exactly,
    log,
    make_prompts,
    measure,
    summarize,
    write_report,
)
from peft import PeftModel

import hyperpeft
from hyperpeft import HyperLoraConfig, HyperPeftModel, load_base_model, load_tokenizer

PROFILE_DIM = 384  # all-MiniLM-L6-v2's width; the benchmark feeds embeddings, so no encoder runs
GOAL_BASE_RATIO = 1.10  # hyperpeft time / base time at the largest user count
GOAL_GPU_SPEEDUP = 2.0  # PEFT mixed time / hyperpeft time at the largest user count, on a GPU


def build_models(base, share_weights: bool, max_users: int, device: torch.device, folder: Path):
    """hyperpeft on one copy of `base`; PEFT with `max_users` exported adapters on another; profile embeddings."""
    config = HyperLoraConfig(r=RANK, lora_alpha=LORA_ALPHA, target_modules=TARGET_MODULES, profile_dim=PROFILE_DIM)
    hyper = HyperPeftModel(clone_base(base, share_weights), config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B, so the adapters really change the outputs (B starts at zero)
        for head in hyper.hypernetwork.heads.values():
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator) * 0.2)
    embeddings = torch.randn(max_users, PROFILE_DIM, generator=generator).to(device)
    for user in range(max_users):
        hyper.export_lora(embeddings[user], folder / f"user{user}")
    peft_model = PeftModel.from_pretrained(clone_base(base, share_weights), folder / "user0", adapter_name="user0")
    for user in range(1, max_users):
        peft_model.load_adapter(folder / f"user{user}", adapter_name=f"user{user}")
    return hyper, peft_model.to(device).eval(), embeddings


def bench_users(
    users: int, base, hyper, peft_model, embeddings, tokenizer, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    config = greedy_exactly(tokenizer, args.new_tokens)
    prompts = make_prompts(tokenizer, users, args.prompt_tokens, device)
    names = [f"user{u}" for u in range(users)]
    calls = {
        "base": functools.partial(base.generate, **prompts, generation_config=config),
        "hyperpeft": functools.partial(
            hyper.generate, **prompts, generation_config=config, profile=embeddings[:users]
        ),
        "peft_mixed": functools.partial(peft_model.generate, **prompts, generation_config=config, adapter_names=names),
    }
    with torch.inference_mode():
        hyper_tokens, peft_tokens = calls["hyperpeft"](), calls["peft_mixed"]()
        label = f"{users} user(s)"
        times = measure({n: fixed(c) for n, c in calls.items()}, args.warmup, args.repeats, device, label)
    new_tokens = users * args.new_tokens
    result: dict[str, Any] = {"users": users, "prompt_tokens": prompts["input_ids"].shape[1], "new_tokens": new_tokens}
    for name, values in times.items():
        result[name] = {**summarize(values), "tokens_per_s": new_tokens / summarize(values)["median_s"]}
    start = prompts["input_ids"].shape[1]
    result["hyperpeft_over_base"] = result["hyperpeft"]["median_s"] / result["base"]["median_s"]
    result["peft_mixed_over_hyperpeft"] = result["peft_mixed"]["median_s"] / result["hyperpeft"]["median_s"]
    # contention only ever adds time, so on a shared machine the fastest repeats are the least distorted
    result["hyperpeft_over_base_min"] = result["hyperpeft"]["min_s"] / result["base"]["min_s"]
    result["peft_mixed_over_hyperpeft_min"] = result["peft_mixed"]["min_s"] / result["hyperpeft"]["min_s"]
    result["tokens_agree_with_peft"] = (hyper_tokens[:, start:] == peft_tokens[:, start:]).float().mean().item()
    return result


def markdown_table(results: list[dict[str, Any]], gpu: bool) -> str:
    lines = [
        "| users/batch | base tok/s | hyperpeft tok/s | PEFT mixed tok/s | hyperpeft time ÷ base "
        "| PEFT time ÷ hyperpeft | same, fastest repeats | tokens = PEFT's |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['users']} | {r['base']['tokens_per_s']:.1f} | {r['hyperpeft']['tokens_per_s']:.1f} | "
            f"{r['peft_mixed']['tokens_per_s']:.1f} | {r['hyperpeft_over_base']:.3f} | "
            f"{r['peft_mixed_over_hyperpeft']:.2f}x | {r['hyperpeft_over_base_min']:.3f}, "
            f"{r['peft_mixed_over_hyperpeft_min']:.2f}x | {r['tokens_agree_with_peft']:.0%} |"
        )
    return "\n".join(lines)


def goals(results: list[dict[str, Any]], gpu: bool) -> dict[str, bool]:
    largest = max(results, key=lambda r: r["users"])
    met = {
        f"hyperpeft within {GOAL_BASE_RATIO}x of the base at {largest['users']} users": largest["hyperpeft_over_base"]
        <= GOAL_BASE_RATIO,
        "hyperpeft faster than PEFT mixed batches at every user count": all(
            r["peft_mixed_over_hyperpeft"] > 1 for r in results
        ),
    }
    if gpu:
        key = f"hyperpeft >= {GOAL_GPU_SPEEDUP}x PEFT mixed batches at {largest['users']} users (GPU)"
        met[key] = largest["peft_mixed_over_hyperpeft"] >= GOAL_GPU_SPEEDUP
    return met


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", choices=["cpu", "cuda"], default="cpu")
    add("--quick", action="store_true", help="a smoke run: users 1 and 4, short prompts, 4 new tokens, 1 repeat")
    add("--base-config", choices=["embedded", "realistic"], default="embedded")
    add("--realistic-shape", choices=sorted(REALISTIC_SHAPES), default="llama3-8b")
    add("--realistic-layers", type=int, default=None, help="decoder layers of the realistic base (default: all)")
    add("--dtype", choices=["auto", "float32", "bfloat16"], default="auto", help="auto: bf16 realistic, else fp32")
    add("--tokenizer", default=hyperpeft.EMBEDDED_BASE_MODEL, help="tokenizer name or folder")
    add("--users", type=int, nargs="+", default=[1, 8, 32], help="distinct users per batch (one row each)")
    add("--prompt-tokens", type=int, default=32)
    add("--new-tokens", type=int, default=32)
    add("--warmup", type=int, default=1)
    add("--repeats", type=int, default=3)
    add("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    add("--out", type=Path, default=None, help="JSON (default: benchmarks/results/decode-throughput-<device>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.prompt_tokens, args.new_tokens, args.warmup, args.repeats = [1, 4], 8, 4, 1, 1
    if min(args.users) <= 0 or args.prompt_tokens <= 0 or args.new_tokens <= 0 or args.repeats <= 0:
        parser.error("--users, --prompt-tokens, --new-tokens and --repeats should be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    realistic = args.base_config == "realistic"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype)
    dtype = dtype or (torch.bfloat16 if realistic else torch.float32)
    out = args.out or Path(__file__).resolve().parent / "results" / f"decode-throughput-{args.device}.json"

    tokenizer = load_tokenizer(args.tokenizer)
    tokenizer.padding_side = "left"
    if realistic:
        log(f"building a random {args.realistic_shape}-shaped base ({args.realistic_layers or 'all'} layers, {dtype})")
        base = build_realistic_base(args.realistic_shape, args.realistic_layers, dtype, device)
    else:
        log("loading the embedded SmolLM2-135M-Instruct base")
        base = load_base_model(hyperpeft.EMBEDDED_BASE_MODEL, dtype=dtype).to(device).eval()
    report: dict[str, Any] = {
        "environment": {**environment(args, device), "loadavg_start": os.getloadavg()},
        "settings": {
            "base": base.name_or_path,
            "base_parameters": count_parameters(base, trainable_only=False),
            "dtype": str(dtype),
            "r": RANK,
            "lora_alpha": LORA_ALPHA,
            "target_modules": TARGET_MODULES,
            **{k: v for k, v in vars(args).items() if k not in ("out",)},
        },
        "results": [],
    }
    report["settings"]["out"] = str(out)
    with tempfile.TemporaryDirectory(prefix="hyperpeft-decode-") as folder:
        log(f"exporting {max(args.users)} adapters and loading them into one PeftModel")
        hyper, peft_model, embeddings = build_models(base, realistic, max(args.users), device, Path(folder))
        for users in args.users:
            report["results"].append(bench_users(users, base, hyper, peft_model, embeddings, tokenizer, args, device))
            report["environment"]["loadavg_end"] = os.getloadavg()
            if device.type == "cuda":
                report["environment"]["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            report["goals"] = goals(report["results"], device.type == "cuda")
            write_report(report, out)  # after every user count: a cut-off run keeps them
    env = report["environment"]
    print(
        f"\n{report['settings']['base']} ({dtype}), {env.get('gpu', env['cpu'])}, {env['threads']} threads, "
        f"prompt <= {args.prompt_tokens} + {args.new_tokens} new tokens, load average "
        f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}\n"
    )
    print(markdown_table(report["results"], device.type == "cuda"))
    print()
    for goal, met in report["goals"].items():
        print(f"- {goal}: {'yes' if met else 'no'}")
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
