"""Checkpoint files: names, atomic writes, local-or-Hub resolution, and reading them back with clear errors.

A hyperpeft checkpoint is a folder with `adapter_config.json` (the `HyperLoraConfig`, `peft_type` `"HYPER_LORA"`),
`adapter_model.safetensors` (the hypernetwork's weights only) and a `README.md` model card. Nothing here ever loads a
pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MODEL_CARD_NAME = "README.md"


FILE_MODE = 0o644
FOLDER_MODE = 0o755


def write_new_folder(directory: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write `files` into the folder `directory`, which appears complete in one rename or not at all.

    The files are written and flushed in a hidden sibling folder that is then renamed to `directory`. When `directory`
    exists already (for content-addressed folders: another writer got there first with the same content) it is left
    as it is and the staged copy is dropped.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        for name, content in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(staging / name, FILE_MODE)
        os.chmod(staging, FOLDER_MODE)
        try:
            os.rename(staging, directory)
        except OSError:
            if not directory.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def write_files_atomically(directory: str | os.PathLike, files: dict[str, bytes]) -> Path:
    """Write `files` (name -> content) into `directory` so that a failure leaves what was there intact.

    Every file is first written and flushed to a temporary file in the same folder; only when all of them are on disk
    are they moved into place with `os.replace`, which is atomic. Other files in the folder are left alone.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staged: list[tuple[str, Path]] = []
    try:
        for name, content in files.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            staged.append((name, Path(tmp)))
            os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 files; a server running as another user must read them
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for name, tmp in staged:
            os.replace(tmp, directory / name)
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
    return directory


def lora_folder_files(lora_config: Any, tensors: dict[str, torch.Tensor]) -> dict[str, bytes]:
    """The two files of a PEFT LoRA folder: `adapter_config.json` from a `peft.LoraConfig`, and the weights."""
    return {
        CONFIG_NAME: serialize_json(lora_config.to_dict()),
        WEIGHTS_NAME: serialize_tensors(tensors, metadata={"format": "pt"}),
    }


def write_lora_folder(directory: str | os.PathLike, lora_config: Any, tensors: dict[str, torch.Tensor]) -> Path:
    """Write a PEFT LoRA folder (`adapter_config.json` + `adapter_model.safetensors`) atomically."""
    return write_files_atomically(directory, lora_folder_files(lora_config, tensors))


def serialize_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """safetensors bytes of `tensors` (made contiguous and moved to the CPU)."""
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)


def serialize_json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def _json_default(value: object) -> object:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def resolve_checkpoint(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Return a local folder holding the checkpoint: `name_or_path` itself, or a Hub repo's files from the HF cache.

    Offline (`HF_HUB_OFFLINE=1`) a repo id resolves from the local HF cache only.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise ValueError(f"No checkpoint folder at {name!r}: the path is not a directory.")
    try:
        folder = snapshot_download(
            name,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME],
        )
    except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as error:
        raise ValueError(
            f"Could not find the checkpoint {name!r}: it is not a local folder, and the Hub repo could not be "
            f"resolved ({type(error).__name__}). Check the name, log in for a private repo, or, offline, download "
            "it first (it is then read from the local HF cache)."
        ) from error
    return Path(folder)


def read_config_dict(folder: Path) -> dict:
    """The checkpoint's config as a dict, or a `ValueError` that says what is missing or broken."""
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ValueError(
            f"{folder} has no {CONFIG_NAME}; expected a folder written by `HyperPeftModel.save_pretrained`."
        )
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON ({error}); the checkpoint is corrupt.") from error
    if not isinstance(data, dict):
        raise ValueError(f"{file} should hold a JSON object, not {type(data).__name__}; the checkpoint is corrupt.")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (safetensors only), or a `ValueError` that says what is missing or broken."""
    file = folder / WEIGHTS_NAME
    if not file.is_file():
        raise ValueError(
            f"{folder} has no {WEIGHTS_NAME}; expected a folder written by `HyperPeftModel.save_pretrained`."
        )
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{file} could not be read as safetensors ({error}); the checkpoint is corrupt.") from error
