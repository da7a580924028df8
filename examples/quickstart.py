"""Quick start on the embedded defaults: SmolLM2-135M-Instruct + all-MiniLM-L6-v2, fully offline.

Wraps the base model with a (untrained) Profile-to-PEFT hypernetwork, generates for two contrasting users in one
batch, exports one user's adapter as a plain PEFT LoRA folder and checks that PEFT reproduces it.

    python examples/quickstart.py [--out out/quickstart]

Until a hypernetwork is trained (see the training docs), the generated adapters start as an exact no-op (ΔW = 0),
so both users get the base model's answer; `--random-heads` perturbs the heads to show that each row of a batch
really gets its own adapter.
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
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--random-heads", action="store_true", help="perturb the untrained heads (shows per-row LoRA)")
    args = parser.parse_args()

    start = time.perf_counter()
    tokenizer = load_tokenizer()
    base = load_base_model()
    model = HyperPeftModel(base, HyperLoraConfig()).eval()
    print(f"loaded SmolLM2-135M-Instruct + hypernetwork in {time.perf_counter() - start:.1f} s")
    model.print_trainable_parameters()
    if args.random_heads:
        torch.manual_seed(0)
        with torch.no_grad():
            for head in model.hypernetwork.heads.values():
                head.weight.normal_(std=0.04)

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
    print(
        f"\nexported user 1's adapter to {folder}; PEFT reproduces the logits (max |diff| "
        f"{(got - expected).abs().max().item():.2e})"
    )


if __name__ == "__main__":
    main()
