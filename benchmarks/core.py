"""Benchmark of the hyperpeft core against plain PEFT LoRA (r=8, lora_alpha=16, q_proj + v_proj).

Run it from the repository root:

    # CPU, the embedded SmolLM2-135M-Instruct base (several minutes on 2 cores; run it on a quiet machine)
    .venv/bin/python benchmarks/core.py --device cpu

    # smoke run: tiny batches and iteration counts, under a minute on CPU
    .venv/bin/python benchmarks/core.py --device cpu --quick --out /tmp/bench-quick.json

    # GPU, a base of realistic size built from a config in code (random bf16 weights, no download)
    python benchmarks/core.py --device cuda --base-config realistic --realistic-shape llama3-8b --realistic-layers 32

What it measures (medians over timed repeats after untimed warm-up runs; `torch.cuda.synchronize()` around every
timed call on CUDA; the hyperpeft and PEFT cases of a measurement are interleaved, alternating their order):

  (a) adapter generation per user: the hypernetwork forward alone (`model.base_model.generate_lora(embeddings)`), and
      with the profile encoder encoding distinct, never-seen texts first, at 1 and 64 users.
      Target: <= 2 ms per user at 64 users without the encoder.
  (b) training step: forward + backward (loss on labels = input_ids) of `HyperPeftModel` with one profile embedding per
      row (8 distinct users), divided by the same for a plain PEFT LoRA model. Target: ratio <= 1.10.
  (c) generation: greedy generation of 32 new tokens (min_new_tokens = max_new_tokens) with a profile per row, divided
      by PEFT LoRA generation, batch 1 and 8, ~64-token left-padded prompts. Target: ratio <= 1.05.
  (d) time to first token for a user never seen before: hyperpeft encodes the new profile text, generates the adapter
      and prefills (generate with max_new_tokens=1); PEFT loads that user's exported adapter from disk with
      `PeftModel.from_pretrained` onto a fresh copy of the base (the copy itself is not timed) and prefills.
      Target: hyperpeft faster (ratio < 1).

Both models wrap separate copies of one base model loaded once (`copy.deepcopy`; for the realistic base the copies
share the frozen weight tensors, so an 8B-shaped model fits once in GPU memory). The results are printed as a
markdown table and written as JSON (`--out`, default `benchmarks/results/core-<device>.json`) together with the
versions, thread count, CPU/GPU name, date and the exact command line.

On a machine without the embedded model packages (e.g. a GPU box), `--save-device-assets DIR` writes the SmolLM2
tokenizer and an fp16 copy of the MiniLM encoder (about 50 MB) to DIR; pass them with `--tokenizer DIR/tokenizer
--encoder DIR/encoder` there.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import gc
import itertools
import json
import os
import platform
import random
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

import hyperpeft
from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder, load_base_model, load_tokenizer

RANK, LORA_ALPHA, TARGET_MODULES = 8, 16, ["q_proj", "v_proj"]

# Shapes of real 7-8B models; the weights are random, so only the timings mean anything.
REALISTIC_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3-8b": (
        "llama",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        ),
    ),
    "qwen2.5-7b": (
        "qwen2",
        dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
            max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            tie_word_embeddings=False,
        ),
    ),
}

# Words for synthetic profile texts; every text also carries a unique user number, so none is ever cached.
_TRAITS = (
    "prefers short answers, writes in lowercase, tags films by their mood, likes formal English, asks about "
    "vegetarian cooking, uses British spelling, loves hard science fiction, writes long reviews, rates thrillers "
    "harshly, quotes poetry, follows European football, reads history books, dislikes spoilers, uses many emojis, "
    "works as a nurse, collects vinyl records"
).split(", ")


# ---- settings ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """Batch sizes and iteration counts of every measurement."""

    users: tuple[int, ...] = (1, 64)
    adapter_warmup: int = 3
    adapter_repeats: int = 20
    encoder_repeats: int = 5
    train_batch: int = 8
    train_tokens: int = 256
    train_warmup: int = 1
    train_repeats: int = 3
    generate_batches: tuple[int, ...] = (1, 8)
    prompt_tokens: int = 64
    new_tokens: int = 32
    generate_warmup: int = 1
    generate_repeats: int = 3
    first_token_warmup: int = 1
    first_token_repeats: int = 5


def make_settings(device: torch.device, quick: bool) -> Settings:
    if quick:
        return Settings(
            adapter_warmup=1,
            adapter_repeats=3,
            encoder_repeats=2,
            train_batch=2,
            train_tokens=32,
            train_warmup=1,
            train_repeats=1,
            generate_batches=(1, 2),
            prompt_tokens=16,
            new_tokens=4,
            generate_warmup=1,
            generate_repeats=1,
            first_token_warmup=1,
            first_token_repeats=2,
        )
    if device.type == "cuda":
        return Settings(
            adapter_warmup=5,
            adapter_repeats=50,
            encoder_repeats=10,
            train_warmup=3,
            train_repeats=10,
            generate_warmup=2,
            generate_repeats=10,
            first_token_warmup=2,
            first_token_repeats=10,
        )
    return Settings()  # CPU: one forward + backward at 8 x 256 takes ~20 s here, so few repeats


# ---- timing helpers ------------------------------------------------------------------------------------------------

_START = time.perf_counter()

# A case is called untimed to set up one repeat (fresh texts, a fresh base copy, cleared gradients) and returns the
# zero-argument callable that is timed.
Case = Callable[[], Callable[[], Any]]


def write_report(report: dict[str, Any], out: Path) -> None:
    """The benchmark's JSON report (every repeat, settings, environment), creating the folder."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def log(message: str) -> None:
    elapsed = int(time.perf_counter() - _START)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fixed(run: Callable[[], Any]) -> Case:
    """A case whose repeats need no setup."""
    return lambda: run


def measure(
    cases: dict[str, Case], warmup: int, repeats: int, device: torch.device, label: str
) -> dict[str, list[float]]:
    """Run every case `warmup` times untimed, then `repeats` times timed; the order of the cases alternates."""
    for i in range(warmup):
        for case in cases.values():
            run = case()
            synchronize(device)
            run()
            synchronize(device)
        log(f"{label}: warm-up {i + 1}/{warmup} done")
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            run = cases[name]()
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
        log(f"{label}: repeat {i + 1}/{repeats}: " + ", ".join(f"{n} {format_seconds(times[n][-1])}" for n in names))
    return times


def summarize(times: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "times_s": times}


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


# ---- models and inputs ---------------------------------------------------------------------------------------------


def build_realistic_base(shape: str, layers: int | None, dtype: torch.dtype, device: torch.device):
    """A causal LM shaped like a real 7-8B model, with random weights, built directly on `device`."""
    model_type, kwargs = REALISTIC_SHAPES[shape]
    kwargs = dict(kwargs, num_hidden_layers=layers or kwargs["num_hidden_layers"])
    config = AutoConfig.for_model(model_type, **kwargs)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.name_or_path = f"random-{shape}-{kwargs['num_hidden_layers']}-layers"
    return model.eval()


def clone_base(base: torch.nn.Module, share_weights: bool) -> torch.nn.Module:
    """A copy of `base` that can be wrapped in place; with `share_weights` the copy reuses base's frozen tensors."""
    if not share_weights:
        return copy.deepcopy(base)
    memo = {id(t): t for t in itertools.chain(base.parameters(), base.buffers())}
    return copy.deepcopy(base, memo)


_user_numbers = itertools.count()


def new_profile_texts(n: int) -> list[str]:
    """`n` profile texts that were never produced before in this process (so no encoder cache can hold them)."""
    texts = []
    for _ in range(n):
        user = next(_user_numbers)
        traits = random.Random(user).sample(_TRAITS, 4)
        texts.append(f"User {user} {', '.join(traits)}; recently reviewed item {user * 7919 % 100003} warmly.")
    return texts


def make_prompts(tokenizer, batch: int, tokens: int, device: torch.device) -> dict[str, torch.Tensor]:
    """`batch` prompts of `tokens` down to `tokens - 2 * (batch - 1)` tokens, left padded by the tokenizer."""
    paragraph = (
        "Write a short, friendly review of the film that the user watched last week. The film follows a retired "
        "lighthouse keeper who finds a stranded robot on the beach and teaches it to fish, to cook and to read the "
        "weather. Mention the acting, the music, the pace of the story and whether the ending works, and say who "
        "would enjoy it. Keep the review under one hundred words and match the user's usual tone and vocabulary. "
    ) * 4
    ids = tokenizer(paragraph, add_special_tokens=False)["input_ids"]
    rows = [ids[2 * i : 2 * i + max(tokens - 2 * i, 1)] for i in range(batch)]
    encoded = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"].to(device), "attention_mask": encoded["attention_mask"].to(device)}


def count_parameters(module: torch.nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---- (a) adapter generation ----------------------------------------------------------------------------------------


def bench_adapter_generation(
    hyper: HyperPeftModel, encoder: ProfileEncoder, settings: Settings, device: torch.device
) -> list[dict[str, Any]]:
    """Hypernetwork forward alone, and encoder + hypernetwork on new texts, per user, at each user count."""
    tuner = hyper.base_model
    profile_dim = hyper.hypernetwork.profile_dim
    results = []
    with torch.inference_mode():
        for users in settings.users:
            embeddings = torch.randn(users, profile_dim, device=device)
            hypernetwork_only = fixed(functools.partial(tuner.generate_lora, embeddings))
            with_encoder = functools.partial(_encode_and_generate_case, tuner, encoder, users)
            for name, case, repeats in [
                ("hypernetwork", hypernetwork_only, settings.adapter_repeats),
                ("encoder+hypernetwork", with_encoder, settings.encoder_repeats),
            ]:
                label = f"(a) adapter generation, {users} user(s), {name}"
                times = measure({name: case}, settings.adapter_warmup, repeats, device, label)[name]
                result = {"users": users, "includes_encoder": name != "hypernetwork", **summarize(times)}
                result["per_user_ms"] = result["median_s"] / users * 1e3
                results.append(result)
    return results


def _encode_and_generate_case(tuner, encoder: ProfileEncoder, users: int) -> Callable[[], Any]:
    texts = new_profile_texts(users)  # never seen before, so the encoder's cache cannot answer
    return lambda: tuner.generate_lora(encoder.encode(texts))


# ---- (b) forward + backward ----------------------------------------------------------------------------------------


def bench_train_step(
    hyper: HyperPeftModel, lora: PeftModel, vocab_size: int, settings: Settings, device: torch.device
) -> dict[str, Any]:
    """Forward + backward with loss on labels = input_ids; one distinct profile embedding per row for hyperpeft."""
    batch, tokens = settings.train_batch, settings.train_tokens
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (batch, tokens), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    embeddings = torch.randn(batch, hyper.hypernetwork.profile_dim, generator=generator).to(device)
    hyper.train()
    lora.train()

    def hyper_case() -> Callable[[], Any]:
        hyper.zero_grad(set_to_none=True)
        hyper.base_model.release_profile()  # weights kept for backward by the previous step
        return lambda: hyper(
            input_ids=input_ids, attention_mask=attention_mask, labels=input_ids, profile_embeddings=embeddings
        ).loss.backward()

    def lora_case() -> Callable[[], Any]:
        lora.zero_grad(set_to_none=True)
        return lambda: lora(input_ids=input_ids, attention_mask=attention_mask, labels=input_ids).loss.backward()

    cases = {"hyperpeft": hyper_case, "peft_lora": lora_case}
    label = f"(b) forward+backward {batch}x{tokens}"
    times = measure(cases, settings.train_warmup, settings.train_repeats, device, label)
    # The profiles must really reach the layers: B's head gets a gradient through every wrapped layer.
    grads = [p.grad for p in hyper.hypernetwork.parameters() if p.grad is not None]
    hypernetwork_got_gradients = bool(grads) and any(bool(g.abs().sum() > 0) for g in grads)
    hyper.zero_grad(set_to_none=True)
    hyper.base_model.release_profile()
    lora.zero_grad(set_to_none=True)
    hyper.eval()
    lora.eval()
    result = {
        "batch": batch,
        "tokens": tokens,
        "hyperpeft": summarize(times["hyperpeft"]),
        "peft_lora": summarize(times["peft_lora"]),
        "hypernetwork_got_gradients": hypernetwork_got_gradients,
    }
    result["ratio"] = result["hyperpeft"]["median_s"] / result["peft_lora"]["median_s"]
    return result


# ---- (c) generation ------------------------------------------------------------------------------------------------


def greedy_exactly(tokenizer, new_tokens: int) -> GenerationConfig:
    """Greedy decoding of exactly `new_tokens` tokens, so every method generates the same amount."""
    return GenerationConfig(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def bench_generate(
    hyper: HyperPeftModel, lora: PeftModel, tokenizer, settings: Settings, device: torch.device
) -> list[dict[str, Any]]:
    """Greedy generation of exactly `new_tokens` tokens; hyperpeft gets one distinct user per row."""
    config = greedy_exactly(tokenizer, settings.new_tokens)
    results = []
    with torch.inference_mode():
        for batch in settings.generate_batches:
            prompts = make_prompts(tokenizer, batch, settings.prompt_tokens, device)
            embeddings = torch.randn(batch, hyper.hypernetwork.profile_dim, device=device)
            generate = functools.partial(_generate_checked, prompts=prompts, config=config)
            cases = {
                "hyperpeft": fixed(functools.partial(generate, hyper, profile=embeddings)),
                "peft_lora": fixed(functools.partial(generate, lora)),
            }
            label = f"(c) generate {settings.new_tokens} tokens, batch {batch}"
            times = measure(cases, settings.generate_warmup, settings.generate_repeats, device, label)
            result = {
                "batch": batch,
                "prompt_tokens": prompts["input_ids"].shape[1],
                "new_tokens": settings.new_tokens,
                "hyperpeft": summarize(times["hyperpeft"]),
                "peft_lora": summarize(times["peft_lora"]),
            }
            result["ratio"] = result["hyperpeft"]["median_s"] / result["peft_lora"]["median_s"]
            results.append(result)
    return results


def _generate_checked(model, prompts: dict[str, torch.Tensor], config: GenerationConfig, **kwargs: Any) -> None:
    ids = model.generate(**prompts, generation_config=config, **kwargs)
    expected = (prompts["input_ids"].shape[0], prompts["input_ids"].shape[1] + config.max_new_tokens)
    if tuple(ids.shape) != expected:
        raise RuntimeError(f"{type(model).__name__} generated shape {tuple(ids.shape)}, not {expected}.")


# ---- (d) time to first token for a new user ------------------------------------------------------------------------


def bench_first_token(
    hyper: HyperPeftModel,
    lora: PeftModel,
    base: torch.nn.Module,
    tokenizer,
    settings: Settings,
    device: torch.device,
    share_weights: bool,
) -> dict[str, Any]:
    """New user -> first token. hyperpeft: encode + hypernetwork + prefill; PEFT: load the adapter + prefill."""
    prompts = make_prompts(tokenizer, 1, settings.prompt_tokens, device)
    config = GenerationConfig(max_new_tokens=1, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    workdir = tempfile.TemporaryDirectory(prefix="hyperpeft-bench-")
    folder = Path(workdir.name)
    exported = itertools.count()

    def hyper_case() -> Callable[[], Any]:
        (text,) = new_profile_texts(1)
        return lambda: hyper.generate(**prompts, profile=text, generation_config=config)

    def lora_load_case() -> Callable[[], Any]:
        (text,) = new_profile_texts(1)
        adapter = hyper.export_lora(text, folder / f"user-{next(exported)}")
        fresh_base = clone_base(base, share_weights)  # untimed: a server keeps its base model loaded
        gc.collect()
        return lambda: PeftModel.from_pretrained(fresh_base, adapter).generate(**prompts, generation_config=config)

    def lora_prefill_case() -> Callable[[], Any]:  # the adapter already loaded: prefill alone, for the breakdown
        return lambda: lora.generate(**prompts, generation_config=config)

    cases = {"hyperpeft": hyper_case, "peft_lora_load": lora_load_case, "peft_lora_prefill_only": lora_prefill_case}
    with workdir, torch.inference_mode():
        times = measure(cases, settings.first_token_warmup, settings.first_token_repeats, device, "(d) first token")
        adapter_bytes = sum(f.stat().st_size for f in (folder / "user-0").iterdir())
    result = {
        "prompt_tokens": prompts["input_ids"].shape[1],
        "adapter_folder_bytes": adapter_bytes,
        **{name: summarize(values) for name, values in times.items()},
    }
    result["ratio"] = result["hyperpeft"]["median_s"] / result["peft_lora_load"]["median_s"]
    return result


# ---- reporting -----------------------------------------------------------------------------------------------------


def environment(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "argv": sys.argv,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "hyperpeft": hyperpeft.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per headline number: what, hyperpeft, PEFT LoRA, ratio, target, met."""
    rows = []
    for r in results.get("adapter_generation", []):
        what = f"(a) adapter generation per user, {r['users']} user(s), " + (
            "encoder + hypernetwork" if r["includes_encoder"] else "hypernetwork only"
        )
        row = _row(what, hyperpeft=format_seconds(r["per_user_ms"] / 1e3))
        if r["users"] == 64 and not r["includes_encoder"]:
            row.update(target="≤ 2 ms/user", met=r["per_user_ms"] <= 2.0)
        rows.append(row)
    if "train_step" in results:
        r = results["train_step"]
        rows.append(_ratio_row(f"(b) forward+backward {r['batch']}×{r['tokens']}", r, "peft_lora", 1.10))
    for r in results.get("generate", []):
        what = f"(c) generate {r['new_tokens']} tokens, batch {r['batch']}, prompt {r['prompt_tokens']}"
        rows.append(_ratio_row(what, r, "peft_lora", 1.05))
    if "first_token" in results:
        r = results["first_token"]
        row = _ratio_row(f"(d) first token, new user, prompt {r['prompt_tokens']}", r, "peft_lora_load", None)
        row.update(target="hyperpeft faster (< 1)", met=r["ratio"] < 1.0)
        rows.append(row)
        prefill = format_seconds(r["peft_lora_prefill_only"]["median_s"])
        rows.append(_row("(d) of which PEFT prefill alone (adapter already loaded)", peft_lora=prefill))
    return rows


def _row(what: str, hyperpeft: str = "", peft_lora: str = "") -> dict[str, Any]:
    return {
        "measurement": what,
        "hyperpeft": hyperpeft,
        "peft_lora": peft_lora,
        "ratio": None,
        "target": "",
        "met": None,
    }


def _ratio_row(what: str, result: dict[str, Any], baseline: str, limit: float | None) -> dict[str, Any]:
    row = _row(what, format_seconds(result["hyperpeft"]["median_s"]), format_seconds(result[baseline]["median_s"]))
    row["ratio"] = round(result["ratio"], 3)
    if limit is not None:
        row.update(target=f"≤ {limit:.2f}", met=result["ratio"] <= limit)
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| measurement | hyperpeft | PEFT LoRA | ratio | target | met |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.3f}"
        met = "" if row["met"] is None else ("yes" if row["met"] else "no")
        cells = [row["measurement"], row["hyperpeft"], row["peft_lora"], ratio, row["target"], met]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------------------------


def save_device_assets(folder: Path, tokenizer_name: str, encoder_name: str) -> None:
    """Write the tokenizer and an fp16 copy of the encoder, small enough to carry to a machine without them."""
    load_tokenizer(tokenizer_name).save_pretrained(folder / "tokenizer")
    encoder = ProfileEncoder(encoder_name).model
    encoder.half().save(str(folder / "encoder"))
    log(f"wrote {folder / 'tokenizer'} and {folder / 'encoder'}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--device", choices=["cpu", "cuda"], default="cpu")
    add("--quick", action="store_true", help="tiny batches and iteration counts (a smoke run)")
    add(
        "--base-config",
        choices=["embedded", "realistic"],
        default="embedded",
        help="embedded: SmolLM2-135M-Instruct; realistic: a 7-8B-shaped model with random weights",
    )
    add("--realistic-shape", choices=sorted(REALISTIC_SHAPES), default="llama3-8b")
    add("--realistic-layers", type=int, default=None, help="decoder layers of the realistic base (default: all)")
    add(
        "--dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="base model dtype; auto: bfloat16 for the realistic base, float32 otherwise",
    )
    add("--tokenizer", default=hyperpeft.EMBEDDED_BASE_MODEL, help="tokenizer name or folder")
    add("--encoder", default=hyperpeft.EMBEDDED_PROFILE_ENCODER, help="profile encoder name or folder")
    add("--only", default="abcd", help="which measurements to run, e.g. 'ac' (default: abcd)")
    add("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    add("--out", type=Path, default=None, help="JSON output (default: benchmarks/results/core-<device>.json)")
    add(
        "--save-device-assets",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the tokenizer and an fp16 encoder copy to DIR, then exit",
    )
    args = parser.parse_args(argv)
    if set(args.only) - set("abcd") or not args.only:
        parser.error(f"--only takes letters from 'abcd', not {args.only!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    if args.realistic_layers is not None and args.realistic_layers <= 0:
        parser.error("--realistic-layers should be a positive integer")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.save_device_assets:
        save_device_assets(args.save_device_assets, args.tokenizer, args.encoder)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    transformers.logging.set_verbosity_error()  # generation-config chatter would bury the progress lines
    device = torch.device(args.device)
    realistic = args.base_config == "realistic"
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(args.dtype)
    dtype = dtype or (torch.bfloat16 if realistic else torch.float32)
    settings = make_settings(device, args.quick)
    out = args.out or Path(__file__).resolve().parent / "results" / f"core-{args.device}.json"

    log(f"loading tokenizer {args.tokenizer!r} and encoder {args.encoder!r}")
    tokenizer = load_tokenizer(args.tokenizer)
    encoder = ProfileEncoder(args.encoder, device=args.device)
    encoder.encode(new_profile_texts(1))  # loads the model
    if realistic:
        log(f"building a random {args.realistic_shape}-shaped base ({args.realistic_layers or 'all'} layers, {dtype})")
        base = build_realistic_base(args.realistic_shape, args.realistic_layers, dtype, device)
    else:
        log("loading the embedded SmolLM2-135M-Instruct base")
        base = load_base_model(hyperpeft.EMBEDDED_BASE_MODEL, dtype=dtype).to(device).eval()
    share_weights = realistic  # two full copies of an 8B model would not leave room for activations

    hyper_config = HyperLoraConfig(
        r=RANK,
        lora_alpha=LORA_ALPHA,
        target_modules=TARGET_MODULES,
        profile_encoder=args.encoder,
        profile_dim=encoder.dim,
    )
    hyper = HyperPeftModel(clone_base(base, share_weights), hyper_config, profile_encoder=encoder).eval()
    lora_config = LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, target_modules=TARGET_MODULES, task_type="CAUSAL_LM")
    lora = get_peft_model(clone_base(base, share_weights), lora_config).eval()

    report: dict[str, Any] = {
        "environment": environment(args, device),
        "settings": {
            "base": base.name_or_path,
            "base_parameters": count_parameters(base, trainable_only=False),
            "base_layers": base.config.num_hidden_layers,
            "dtype": str(dtype),
            "quick": args.quick,
            "r": RANK,
            "lora_alpha": LORA_ALPHA,
            "target_modules": TARGET_MODULES,
            "hypernetwork_parameters": count_parameters(hyper.hypernetwork, trainable_only=False),
            "peft_lora_parameters": count_parameters(lora),
            "copies_share_base_weights": share_weights,
            **dataclasses.asdict(settings),
        },
        "results": {},
    }
    results = report["results"]
    if "a" in args.only:
        results["adapter_generation"] = bench_adapter_generation(hyper, encoder, settings, device)
    if "b" in args.only:
        results["train_step"] = bench_train_step(hyper, lora, base.config.vocab_size, settings, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if "c" in args.only:
        results["generate"] = bench_generate(hyper, lora, tokenizer, settings, device)
    if "d" in args.only:
        results["first_token"] = bench_first_token(hyper, lora, base, tokenizer, settings, device, share_weights)
    if device.type == "cuda":
        report["environment"]["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30

    report["summary"] = summary_rows(results)
    env = report["environment"]
    hardware = env.get("gpu", env["cpu"])
    print(
        f"\n{report['settings']['base']} ({dtype}), {hardware}, {env['threads']} threads, torch {env['torch']}"
        f"{', quick run' if args.quick else ''}\n"
    )
    print(markdown_table(report["summary"]))
    write_report(report, out)
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
