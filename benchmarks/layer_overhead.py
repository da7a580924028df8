"""Fixed cost of one wrapped layer at a decoding step: what a LoRA wrapper adds on top of its `nn.Linear`.

At batch 32 and one new token per row, an 8B model's decoding step on a GPU is short enough that the time spent
launching kernels and running Python in every wrapped layer shows up in the step time. This benchmark isolates that
cost on any device: one `q_proj` of a narrow model (so the arithmetic is negligible), input `(users, 1, hidden)`, timed
per call for

- the bare `nn.Linear`,
- hyperpeft's `HyperLoraLinear` with one generated adapter per row (`users` distinct users),
- PEFT's `lora.Linear` with one adapter (its fastest path; mixed adapters per row cost more).

The overhead column is the wrapper's time minus the bare layer's. Medians of `--repeats` timings of `--calls` calls
each, after one untimed warm-up, the three layers interleaved in alternating order (`core.measure`).

    .venv/bin/python benchmarks/layer_overhead.py --device cpu --users 1 32
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from pathlib import Path

import torch
from core import LORA_ALPHA, RANK, TARGET_MODULES, environment, fixed, measure, write_report
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from hyperpeft import HyperLoraConfig, HyperPeftModel

HIDDEN = 64


def narrow_base(device: torch.device) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=128, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device).eval()


def calls_of(layer: torch.nn.Module, x: torch.Tensor, calls: int):
    def run() -> None:
        for _ in range(calls):
            layer(x)

    return run


def bench(users: int, args: argparse.Namespace, device: torch.device) -> dict:
    base = narrow_base(device)
    hyper_config = HyperLoraConfig(profile_dim=16, r=RANK, lora_alpha=LORA_ALPHA)
    hyper = HyperPeftModel(copy.deepcopy(base), hyper_config).to(device).eval()
    lora_config = LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, target_modules=list(TARGET_MODULES))
    peft_model = get_peft_model(copy.deepcopy(base), lora_config)
    peft_model.eval()
    layers = {
        "nn.Linear": base.model.layers[0].self_attn.q_proj,
        "hyperpeft per-row LoRA": hyper.base_model.model.model.layers[0].self_attn.q_proj,
        "PEFT LoRA (one adapter)": peft_model.base_model.model.model.layers[0].self_attn.q_proj,
    }
    x = torch.randn(users, 1, HIDDEN, device=device)
    cases = {name: fixed(calls_of(layer, x, args.calls)) for name, layer in layers.items()}
    with torch.no_grad(), hyper.base_model.use_profile(torch.randn(users, 16, device=device)):
        seconds = measure(cases, warmup=1, repeats=args.repeats, device=device, label=f"{users} users")
    timings = {name: [t / args.calls * 1e6 for t in values] for name, values in seconds.items()}  # µs per call
    medians = {name: statistics.median(values) for name, values in timings.items()}
    bare = medians["nn.Linear"]
    return {
        "users": users,
        "us_per_call": medians,
        "overhead_us": {name: value - bare for name, value in medians.items() if name != "nn.Linear"},
        "repeats_us": timings,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    results = [bench(users, args, device) for users in args.users]
    lines = ["| users | layer | µs per call | overhead over nn.Linear (µs) |", "| --- | --- | --- | --- |"]
    for result in results:
        for name, value in result["us_per_call"].items():
            overhead = result["overhead_us"].get(name)
            lines.append(
                f"| {result['users']} | {name} | {value:.1f} | {'' if overhead is None else f'{overhead:.1f}'} |"
            )
    table = "\n".join(lines)
    print(table)
    report = {"results": results, "environment": {**environment(args, device), "loadavg_start": os.getloadavg()}}
    write_report(report, Path(args.out or f"benchmarks/results/layer-overhead-{device.type}.json"))
    return report


if __name__ == "__main__":
    main()
