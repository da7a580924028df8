"""`hyperpeft export`: one plain PEFT LoRA folder per user, for servers with multi-LoRA batching such as vLLM.

    hyperpeft export --model CHECKPOINT --profiles users.jsonl --out adapters/ [--base-model NAME]

`users.jsonl` holds lines `{"user_id": "u1", "profile": "..."}`. The hypernetwork runs over the users in batches (the
base model's weights are not read: its architecture is built on the meta device); every user gets a folder
`adapters/<user_id>-<content hash>/` with `adapter_config.json` + `adapter_model.safetensors`, and
`adapters/manifest.json` (written last) maps every user id to its folder and the sha256 of the profile it came from.
See docs/serving.md for serving the folders with vLLM.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._validation import check_int
from .._version import __version__
from ..adapter_cache import profile_key
from ..cards import adapter_card
from ..checkpoint import (
    WEIGHTS_NAME,
    lora_folder_files,
    read_config_dict,
    resolve_checkpoint,
    serialize_json,
    write_files_atomically,
    write_new_folder,
)
from .users import check_profile_text, check_user_id, read_user_profiles

MANIFEST_NAME = "manifest.json"


def hypernetwork_fingerprint(model, base_model_name_or_path: str | None = None) -> str:
    """The sha256 of everything an exported adapter depends on: the hypernetwork's tensors, its config, the base."""
    digest = hashlib.sha256(serialize_json(dataclasses.asdict(model.hyper_config)))
    digest.update(str(base_model_name_or_path).encode())
    for name, tensor in sorted(model.hypernetwork.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def adapter_folder_name(user_id: str, fingerprint: str, profile: str) -> str:
    """`<user_id>-<16 hex digits>`: the folder of one user's adapter, named by everything it depends on."""
    digest = hashlib.sha256(f"{fingerprint}\n{profile}".encode()).hexdigest()
    return f"{user_id}-{digest[:16]}"


def export_adapters(
    model,
    users: dict[str, str],
    out: str | os.PathLike,
    batch_size: int = 32,
    base_model_name_or_path: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """
    Write every user's generated adapter as a PEFT LoRA folder under `out`, then `out/manifest.json`, which maps
    each user id to its folder.

    A folder is named by its user and everything its adapter depends on (`<user_id>-<16 hex digits>`), and appears
    complete in one rename; `manifest.json` is written last, in one rename too, so an export that is interrupted
    leaves the previous manifest pointing at the previous, complete folders. Folders the new manifest no longer
    names are removed after it is written.

    Args:
        model ([`HyperPeftModel`]): the model whose hypernetwork generates the adapters (its base may be on the
            meta device: no base weights are needed).
        users (`dict[str, str]`): user id (1-128 letters, digits, `.`, `_`, `-`; see `serving.users.check_user_id`)
            -> profile text.
        out (`str`): the output folder (created if needed).
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
    if not isinstance(users, dict):
        raise TypeError(f"`users` should be a dict of user id -> profile text, not {type(users).__name__}.")
    folded: dict[str, str] = {}
    for user_id, profile in users.items():  # the Python API checks ids as the users file does: no path escapes
        check_user_id(user_id)
        check_profile_text(profile, f"profile of {user_id!r}")
        other = folded.setdefault(user_id.lower(), user_id)
        if other != user_id:  # their folders would be one folder on a case-insensitive file system
            raise ValueError(
                f"User ids {other!r} and {user_id!r} differ only in case; ids must be unique ignoring case."
            )
    out = Path(out)
    if out.is_file():
        raise ValueError(f"`out` {str(out)!r} is a file; pass a folder.")
    out.mkdir(parents=True, exist_ok=True)
    for staging in out.glob(".*.tmp"):  # left by an export that was killed
        shutil.rmtree(staging, ignore_errors=True)
    lora_config = model.peft_lora_config(base_model_name_or_path)
    fingerprint = hypernetwork_fingerprint(model, lora_config.base_model_name_or_path)
    folders = {u: adapter_folder_name(u, fingerprint, p) for u, p in users.items()}
    todo = [u for u in users if not (out / folders[u] / WEIGHTS_NAME).is_file()]
    model.eval()
    with tqdm(total=len(users), initial=len(users) - len(todo), desc="exporting adapters", unit="user") as progress:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with torch.no_grad():
                states = model.lora_state_dicts([users[u] for u in chunk])
            for user_id, state in zip(chunk, states):
                card = str(adapter_card(lora_config, user_id, source))
                write_new_folder(out / folders[user_id], lora_folder_files(lora_config, state, card))
            progress.update(len(chunk))
    previous = _read_manifest(out)
    config = model.hyper_config
    manifest = {
        "hyperpeft_version": __version__,
        "source_checkpoint": source,
        "base_model": lora_config.base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
        "profile_encoder": config.profile_encoder,
        "users": {u: {"folder": folders[u], "profile_sha256": profile_key(p)} for u, p in users.items()},
    }
    write_files_atomically(out, {MANIFEST_NAME: serialize_json(manifest)})
    kept = {entry["folder"] for entry in manifest["users"].values()}
    for entry in previous.get("users", {}).values():  # only folders an earlier manifest of this export named
        if entry.get("folder") not in kept and USER_FOLDER.fullmatch(str(entry.get("folder"))):
            shutil.rmtree(out / entry["folder"], ignore_errors=True)
    return manifest


USER_FOLDER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}-[0-9a-f]{16}")


def _read_manifest(out: Path) -> dict:
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        return manifest if isinstance(manifest, dict) else {}
    except (OSError, ValueError):
        return {}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hyperpeft export", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="hyperpeft checkpoint folder or Hub repo (from `save_pretrained`)")
    add("--profiles", required=True, help='JSONL file of {"user_id": ..., "profile": ...} lines')
    add("--out", required=True, help="output folder: one PEFT LoRA folder per user and manifest.json")
    add("--base-model", default=None, help="base model to load and record (default: the one in the checkpoint)")
    add("--batch-size", type=int, default=32, help="users per encoder + hypernetwork pass")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the hypernetwork runs")
    args = parser.parse_args(argv)
    if args.batch_size <= 0:
        parser.error(f"--batch-size should be a positive integer, not {args.batch_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from ..embedded import load_base_model, resolve_base_model
    from ..peft_model import HyperPeftModel

    try:
        users = read_user_profiles(args.profiles)
    except ValueError as error:
        raise SystemExit(f"hyperpeft export: {error}") from None

    base = args.base_model or read_config_dict(resolve_checkpoint(args.model)).get("base_model_name_or_path")
    if not base:
        raise SystemExit(f"hyperpeft export: the checkpoint {args.model!r} names no base model; pass --base-model.")
    base = resolve_base_model(base)  # what vLLM and PEFT load: the embedded short name becomes its folder
    model = HyperPeftModel.from_pretrained(load_base_model(base, weights=False), args.model)
    model.hypernetwork.to(args.device)
    manifest = export_adapters(model, users, args.out, args.batch_size, base, source=str(args.model))
    print(f"wrote {len(manifest['users'])} PEFT LoRA adapters and {MANIFEST_NAME} to {args.out}")
    return 0
