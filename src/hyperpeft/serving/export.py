"""`hyperpeft export`: one plain PEFT LoRA folder per user, for servers with multi-LoRA batching such as vLLM.

    hyperpeft export --model CHECKPOINT --profiles users.jsonl --out adapters/ [--base-model NAME]

`users.jsonl` holds lines `{"user_id": "u1", "profile": "..."}`. The hypernetwork runs over the users in batches;
`adapters/<user_id>/` gets `adapter_config.json` + `adapter_model.safetensors` (each folder written atomically), and
`adapters/manifest.json` (written last) maps every user id to its folder and the sha256 of the profile it came from.
See docs/serving.md for serving the folders with vLLM.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._validation import check_int
from .._version import __version__
from ..adapter_cache import profile_key
from ..checkpoint import serialize_json, write_files_atomically, write_lora_folder
from .users import read_user_profiles

MANIFEST_NAME = "manifest.json"


def export_adapters(
    model,
    users: dict[str, str],
    out: str | os.PathLike,
    batch_size: int = 32,
    base_model_name_or_path: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """
    Write every user's generated adapter as a PEFT LoRA folder under `out`, then `out/manifest.json`.

    Args:
        model ([`HyperPeftModel`]): the model whose hypernetwork generates the adapters.
        users (`dict[str, str]`): user id (a safe folder name, see `serving.users.check_user_id`) -> profile text.
        out (`str`): the output folder (created if needed; existing user folders are replaced).
        batch_size (`int`, defaults to 32): users per encoder + hypernetwork pass.
        base_model_name_or_path (`str`, *optional*): the base model recorded in every adapter config (default: the
            one in the hyperpeft config); vLLM and PEFT load the adapters onto it.
        source (`str`, *optional*): the checkpoint the adapters came from, recorded in the manifest.

    Returns:
        `dict`: the manifest.

    Example:

    ```python
    >>> from hyperpeft.serving.export import export_adapters
    >>> manifest = export_adapters(model, {"u1": "likes short answers", "u2": "writes formally"}, "adapters")
    >>> sorted(manifest["users"])
    ['u1', 'u2']
    ```
    """
    check_int("batch_size", batch_size)
    out = Path(out)
    if out.is_file():
        raise ValueError(f"`--out` {str(out)!r} is a file; pass a folder.")
    lora_config = model.peft_lora_config(base_model_name_or_path)
    ids = list(users)
    entries: dict[str, dict[str, str]] = {}
    model.eval()
    with tqdm(total=len(ids), desc="exporting adapters", unit="user") as progress:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start : start + batch_size]
            with torch.no_grad():
                states = model.lora_state_dicts([users[u] for u in chunk])
            for user_id, state in zip(chunk, states):
                write_lora_folder(out / user_id, lora_config, state)
                entries[user_id] = {"folder": user_id, "profile_sha256": profile_key(users[user_id])}
            progress.update(len(chunk))
    config = model.hyper_config
    manifest = {
        "hyperpeft_version": __version__,
        "source_checkpoint": source,
        "base_model": lora_config.base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
        "profile_encoder": config.profile_encoder,
        "users": entries,
    }
    write_files_atomically(out, {MANIFEST_NAME: serialize_json(manifest)})
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hyperpeft export", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="hyperpeft checkpoint folder or Hub repo (from `save_pretrained`)")
    add("--profiles", required=True, help='JSONL file of {"user_id": ..., "profile": ...} lines')
    add("--out", required=True, help="output folder: one PEFT LoRA folder per user and manifest.json")
    add("--base-model", default=None, help="base model to load and record (default: the one in the checkpoint)")
    add("--batch-size", type=int, default=32, help="users per encoder + hypernetwork pass")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size should be a positive integer, not {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..embedded import load_base_model
    from ..peft_model import HyperPeftModel

    try:
        users = read_user_profiles(args.profiles)
    except ValueError as error:
        raise SystemExit(f"hyperpeft export: {error}") from None
    if args.base_model:
        model = HyperPeftModel.from_pretrained(load_base_model(args.base_model), args.model)
    else:
        model = HyperPeftModel.from_pretrained(args.model)
    model.to(args.device)
    manifest = export_adapters(model, users, args.out, args.batch_size, args.base_model, source=str(args.model))
    print(f"wrote {len(manifest['users'])} PEFT LoRA adapters and {MANIFEST_NAME} to {args.out}")
    return 0
