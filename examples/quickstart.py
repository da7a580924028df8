"""Quick start on the embedded defaults: SmolLM2-135M-Instruct + all-MiniLM-L6-v2, fully offline.

Wraps the base model with a Profile-to-PEFT hypernetwork, generates for two contrasting users in one batch, exports
one user's adapter as a plain PEFT LoRA folder and checks that PEFT reproduces its logits.

    python examples/quickstart.py [--out out/quickstart] [--untrained]

A hypernetwork starts with zero heads, so until it is trained (`hyperpeft train`) every adapter is ΔW = 0 and every
user gets the base model's answer. This script gives the heads small random weights, so that each user's adapter is
non-zero and different: the two answers differ (they do not follow the profiles: only training teaches that), and the
PEFT check compares a real adapter. `--untrained` keeps the zero heads.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import PeftModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, load_base_model, load_tokenizer

PROFILES = [
    "Writes very short, lowercase replies with no punctuation and often signs off with 'cheers'.",
    "Writes long, formal answers in complete sentences and always explains the reasoning step by step.",
]
QUESTION = "What is a good way to spend a rainy Sunday afternoon?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/quickstart", help="where the exported PEFT adapter is written")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate per user")
    parser.add_argument("--untrained", action="store_true", help="keep the zero heads: every user gets ΔW = 0")
    args = parser.parse_args()

    start = time.perf_counter()
    tokenizer = load_tokenizer()
    base = load_base_model()
    model = HyperPeftModel(base, HyperLoraConfig()).eval()
    print(f"loaded SmolLM2-135M-Instruct + hypernetwork in {time.perf_counter() - start:.1f} s")
    model.print_trainable_parameters()
    if not args.untrained:  # a stand-in for training: small random heads make every user's adapter non-zero
        torch.manual_seed(0)
        with torch.no_grad():
            for head in model.hypernetwork.heads.values():
                head.weight.normal_(std=0.06)

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    batch = tokenizer([prompt, prompt], return_tensors="pt", padding=True)
    start = time.perf_counter()
    with torch.inference_mode():
        ids = model.generate(**batch, profile=PROFILES, max_new_tokens=args.max_new_tokens, do_sample=False)
    print(f"generated for two users in one batch in {time.perf_counter() - start:.1f} s")
    for profile, row in zip(PROFILES, ids):
        answer = tokenizer.decode(row[batch["input_ids"].shape[1] :], skip_special_tokens=True)
        print(f"\n[profile] {profile}\n[answer]  {answer.strip()}")

    folder = model.export_lora(PROFILES[0], args.out)
    plain = PeftModel.from_pretrained(load_base_model(), folder).eval()
    with torch.inference_mode():
        expected = model(**batch, profile=PROFILES[0]).logits
        got = plain(**batch).logits
        with model.disable_adapter():
            base_logits = model(**batch).logits
    print(
        f"\nexported user 1's adapter to {folder}: it moves the logits from the base model's by up to "
        f"{(expected - base_logits).abs().max().item():.2e}, and PEFT reproduces them (max |diff| "
        f"{(got - expected).abs().max().item():.2e})"
    )


if __name__ == "__main__":
    main()
