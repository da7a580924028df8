"""Benchmark 3: `hyperpeft serve` under concurrent clients of distinct users, on loopback.

Run it from the repository root:

    .venv/bin/python benchmarks/server.py                       # 50 clients, 10 users, 100 requests per setting
    .venv/bin/python benchmarks/server.py --quick --out /tmp/server-quick.json

The server runs in this process (uvicorn in a thread on 127.0.0.1, a free port) around the embedded
SmolLM2-135M-Instruct with a hypernetwork of random weights (timings do not depend on training), the embedded MiniLM
profile encoder and the adapter cache. `--clients` concurrent HTTP clients (httpx, one asyncio task each) send
`/v1/completions` requests (a short prompt, `--max-tokens` greedy tokens) for `--users` distinct users by `user_id`,
until `--requests` requests are answered or `--max-seconds` pass. Each user is first asked once, untimed, so the
adapter cache is warm, as it is for returning users.

Two settings are measured one after the other in the same process: dynamic batching (`--max-batch-size`, window
`--batch-window-ms`) and no batching (`max_batch_size=1`, every request its own `generate`). Reported: requests/s
(answered / wall time), p50 and p95 latency, and the batch sizes the server formed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import torch
import transformers
from core import LORA_ALPHA, RANK, TARGET_MODULES, environment, log, write_report

import hyperpeft
from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder, load_base_model, load_tokenizer
from hyperpeft.serving.server import create_app, serve_in_background

PROMPT = "Recommend one film for a quiet evening and say why in one sentence."
TRAITS = [
    "prefers short answers",
    "loves hard science fiction",
    "writes in lowercase",
    "follows European football",
    "reads history books",
    "asks about vegetarian cooking",
    "quotes poetry",
    "dislikes spoilers",
    "uses British spelling",
    "collects vinyl records",
]


def build_model(encoder_name: str, device: torch.device) -> tuple[HyperPeftModel, Any]:
    encoder = ProfileEncoder(encoder_name, device=str(device))
    config = HyperLoraConfig(
        r=RANK, lora_alpha=LORA_ALPHA, target_modules=TARGET_MODULES, profile_encoder=encoder_name, profile_dim=384
    )
    model = HyperPeftModel(load_base_model(hyperpeft.EMBEDDED_BASE_MODEL), config, profile_encoder=encoder)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero B, so every user's adapter really changes the answers
        for head in model.hypernetwork.heads.values():
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator) * 0.2)
    return model.to(device).eval(), load_tokenizer(hyperpeft.EMBEDDED_BASE_MODEL)


async def run_clients(url: str, users: list[str], args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    start = time.perf_counter()
    deadline = start + args.max_seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal issued
        while issued < args.requests and time.perf_counter() < deadline:
            user = users[(issued + number) % len(users)]
            issued += 1
            body = {"prompt": PROMPT, "user_id": user, "max_tokens": args.max_tokens, "temperature": 0}
            sent = time.perf_counter()
            response = await http.post("/v1/completions", json=body)
            if response.status_code == 200:
                latencies.append(time.perf_counter() - sent)
            else:
                errors.append(f"{response.status_code}: {response.text[:200]}")

    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.max_seconds + 600, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(args.clients)))
    wall = time.perf_counter() - start
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    return {
        "answered": len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
        "wall_s": wall,
        "requests_per_s": len(latencies) / wall,
        "latency_p50_s": statistics.median(latencies) if latencies else float("nan"),
        "latency_p95_s": quantiles[18],
        "latency_max_s": max(latencies, default=float("nan")),
        "latencies_s": latencies,
    }


def bench_setting(model, tokenizer, users: dict[str, str], max_batch_size: int, args) -> dict[str, Any]:
    app = create_app(
        model, tokenizer, users=users, max_batch_size=max_batch_size, batch_window_ms=args.batch_window_ms
    )
    with serve_in_background(app) as url:
        with httpx.Client(base_url=url, timeout=600) as http:  # warm-up: one request per user fills the cache
            for user in users:
                body = {"prompt": PROMPT, "user_id": user, "max_tokens": args.max_tokens}
                http.post("/v1/completions", json=body).raise_for_status()
        warmup_batches = len(app.state.batcher.batch_sizes)
        label = f"max_batch_size={max_batch_size}"
        log(f"{label}: {args.clients} clients, {len(users)} users, up to {args.requests} requests")
        result = asyncio.run(run_clients(url, list(users), args))
        sizes = app.state.batcher.batch_sizes[warmup_batches:]
    result.update(
        max_batch_size=max_batch_size,
        batches=len(sizes),
        mean_batch_size=statistics.mean(sizes) if sizes else 0,
        largest_batch=max(sizes, default=0),
    )
    log(
        f"{label}: {result['answered']} answered in {result['wall_s']:.1f} s, {result['requests_per_s']:.2f} req/s, "
        f"p50 {result['latency_p50_s']:.2f} s, p95 {result['latency_p95_s']:.2f} s"
    )
    return result


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| server | answered | requests/s | p50 latency | p95 latency | batches (mean size) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        name = "no batching" if r["max_batch_size"] == 1 else f"dynamic batching (≤ {r['max_batch_size']})"
        lines.append(
            f"| {name} | {r['answered']} | {r['requests_per_s']:.2f} | {r['latency_p50_s']:.2f} s | "
            f"{r['latency_p95_s']:.2f} s | {r['batches']} ({r['mean_batch_size']:.1f}) |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a smoke run: 10 clients, 4 users, 12 requests, 4 tokens")
    add("--device", choices=["cpu", "cuda"], default="cpu")
    add("--encoder", default=hyperpeft.EMBEDDED_PROFILE_ENCODER, help="profile encoder name or folder")
    add("--clients", type=int, default=50)
    add("--users", type=int, default=10, help="distinct users (at most 10)")
    add("--requests", type=int, default=100, help="requests per setting")
    add("--max-seconds", type=float, default=300, help="stop issuing requests after this long (per setting)")
    add("--max-tokens", type=int, default=8)
    add("--max-batch-size", type=int, default=32)
    add("--batch-window-ms", type=float, default=20)
    add("--skip-unbatched", action="store_true", help="measure dynamic batching only")
    add("--threads", type=int, default=None)
    add("--out", type=Path, default=None, help="JSON (default: benchmarks/results/server-<device>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.users, args.requests, args.max_tokens = 10, 4, 12, 4
    if not 1 <= args.users <= len(TRAITS):
        parser.error(f"--users should be between 1 and {len(TRAITS)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device(args.device)
    out = args.out or Path(__file__).resolve().parent / "results" / f"server-{args.device}.json"
    log("loading SmolLM2-135M-Instruct, MiniLM and a random hypernetwork")
    model, tokenizer = build_model(args.encoder, device)
    model.enable_adapter_cache(max_bytes=256 * 2**20)
    users = {f"user{i}": f"User {i} {TRAITS[i]} and {TRAITS[(i + 3) % len(TRAITS)]}." for i in range(args.users)}
    report: dict[str, Any] = {
        "environment": {**environment(args, device), "loadavg_start": os.getloadavg()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": [],
    }
    settings = [args.max_batch_size] + ([] if args.skip_unbatched else [1])
    for max_batch_size in settings:
        report["results"].append(bench_setting(model, tokenizer, users, max_batch_size, args))
    report["environment"]["loadavg_end"] = os.getloadavg()
    report["adapter_cache"] = vars(model.adapter_cache.stats)
    env = report["environment"]
    print(
        f"\n{hyperpeft.EMBEDDED_BASE_MODEL} (float32), {env.get('gpu', env['cpu'])}, {env['threads']} threads, "
        f"{args.clients} clients, {args.users} users, {args.max_tokens} new tokens per request, load average "
        f"{env['loadavg_start'][0]:.2f} -> {env['loadavg_end'][0]:.2f}\n"
    )
    print(markdown_table(report["results"]))
    write_report(report, out)
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
