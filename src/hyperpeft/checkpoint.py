"""Checkpoint files: names, atomic writes, local-or-Hub resolution, and reading them back with clear errors.

A hyperpeft checkpoint is a folder with `adapter_config.json` (the `HyperLoraConfig`, `peft_type` `"HYPER_LORA"`),
`adapter_model.safetensors` (the hypernetwork's weights only) and a `README.md` model card. Nothing here ever loads a
pickle.
"""

from __future__ import annotations

import hashlib
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
from transformers.utils import logging

CONFIG_NAME = "adapter_config.json"
# journals of writes in progress (see `write_files_atomically`): `.hyperpeft-journal-<the written names' hash>.json`
JOURNAL_PATTERN = ".hyperpeft-journal*.json"
WEIGHTS_NAME = "adapter_model.safetensors"
MODEL_CARD_NAME = "README.md"

logger = logging.get_logger(__name__)


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
    """Write `files` (name -> content) into `directory` so that what it holds is the old version or the new one.

    Every file is first written and flushed to a temporary file in the same folder. A journal then names the staged
    files and the sha256 of their content, and only then are they moved into place with `os.replace`, one by one; the
    journal goes last. A process killed before the journal leaves the old version (its temporary files are removed
    by the next write); one killed after it leaves a journal that the next read of the folder, or the next write of
    the same files, completes (`recover_interrupted_write`): every file of the new version is moved in. Other files
    are left alone, so processes may write different files into one folder at once (a trainer's ranks, each its RNG
    state); completing a journal twice (a reader and the writer at once) does no harm.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    journal_path = directory / _journal_name(files)
    recover_interrupted_write(directory, journal_path.name)
    for name in files:  # left by a write that was killed before its journal
        for stale in directory.glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
    staged: dict[str, Path] = {}
    try:
        for name, content in files.items():
            staged[name] = _stage(directory, f".{name}.", content)
        journal = {
            name: {"staged": tmp.name, "sha256": hashlib.sha256(files[name]).hexdigest()}
            for name, tmp in staged.items()
        }
        _write_journal(journal_path, journal)
        for name, tmp in staged.items():
            _move_in(tmp, directory / name, journal[name]["sha256"])
        _fsync_folder(directory)
        journal_path.unlink(missing_ok=True)
    finally:
        if not journal_path.exists():  # a journal still needs its staged files to complete the write
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
    return directory


def _journal_name(files: dict[str, bytes]) -> str:
    names = hashlib.sha256("\0".join(sorted(files)).encode()).hexdigest()[:12]
    return f".hyperpeft-journal-{names}.json"


def _stage(directory: Path, prefix: str, content: bytes) -> Path:
    """`content` in a new temporary file of `directory`, flushed to disk (removed again if writing fails)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, FILE_MODE)  # mkstemp makes 0600 files; a server running as another user must read them
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _write_journal(path: Path, journal: dict) -> None:
    os.replace(_stage(path.parent, f"{path.name}.", json.dumps(journal).encode()), path)
    _fsync_folder(path.parent)


def _holds(path: Path, sha256: str) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except (FileNotFoundError, IsADirectoryError):
        return False


def _move_in(staged: Path, target: Path, sha256: str) -> None:
    """`os.replace(staged, target)`, or nothing if another process completing the same journal moved it already."""
    try:
        os.replace(staged, target)
    except FileNotFoundError:
        if not _holds(target, sha256):
            raise


def recover_interrupted_write(directory: str | os.PathLike, journal_name: str | None = None) -> None:
    """
    Complete every `write_files_atomically` that was killed after its journal (or only the one of `journal_name`):
    move in every staged file that is not in place yet, then remove the journal. A folder without one is left as it is.
    """
    directory = Path(directory)
    paths = [directory / journal_name] if journal_name else sorted(directory.glob(JOURNAL_PATTERN))
    for path in paths:
        if path.is_file():
            _complete(directory, path)


def _complete(directory: Path, path: Path) -> None:
    try:
        journal = json.loads(path.read_text())
        for name, entry in journal.items():
            staged_name, sha256 = entry["staged"], entry["sha256"]
            # a journal is read from disk: it may only name files of this folder, as `write_files_atomically` does
            plain = _is_file_name(name) and _is_file_name(staged_name)
            if not (plain and staged_name.startswith(f".{name}.") and staged_name.endswith(".tmp")):
                raise ValueError(f"it names files outside the folder ({name!r}, {staged_name!r})")
            target, staged = directory / name, directory / staged_name
            if _holds(target, sha256):
                continue
            if _holds(staged, sha256):
                _move_in(staged, target, sha256)
            elif not _holds(target, sha256):  # (looked at again: another process may have just moved it in)
                raise ValueError(f"the staged file for {name} is missing or changed")
        _fsync_folder(directory)
        path.unlink(missing_ok=True)
    except FileNotFoundError as error:
        if path.exists():
            raise ValueError(f"{directory}: an interrupted save could not be completed ({error}).") from None
        return  # another process completed this journal meanwhile
    except OSError as error:
        raise ValueError(
            f"{directory} holds an interrupted save that could not be completed ({error}); make the folder writable "
            "and load it again."
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ValueError(
            f"{directory} holds a broken save journal {path.name} ({error}); save the folder again."
        ) from None
    logger.warning("%s: completed a save that had been interrupted.", directory)


def _is_file_name(name: object) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and Path(name).name == name


def _fsync_folder(directory: Path) -> None:
    """Make the folder's renames durable (a crash after a rename then finds the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def lora_folder_files(lora_config: Any, tensors: dict[str, torch.Tensor], card: str | None = None) -> dict[str, bytes]:
    """The files of a PEFT LoRA folder: `adapter_config.json` from a `peft.LoraConfig`, the weights, and a card."""
    files = {
        CONFIG_NAME: serialize_json(lora_config.to_dict()),
        WEIGHTS_NAME: serialize_tensors(tensors, metadata={"format": "pt"}),
    }
    if card is not None:
        files[MODEL_CARD_NAME] = card.encode()
    return files


def write_lora_folder(
    directory: str | os.PathLike, lora_config: Any, tensors: dict[str, torch.Tensor], card: str | None = None
) -> Path:
    """Write a PEFT LoRA folder (`adapter_config.json`, `adapter_model.safetensors`, a `README.md` card) atomically."""
    return write_files_atomically(directory, lora_folder_files(lora_config, tensors, card))


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
    recover_interrupted_write(folder)
    file = folder / CONFIG_NAME
    if not file.is_file():
        raise ValueError(
            f"{folder} has no {CONFIG_NAME}; expected a folder written by `HyperPeftModel.save_pretrained`."
        )
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"{file} is not valid JSON ({type(error).__name__}); the checkpoint is corrupt.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file} should hold a JSON object, not {type(data).__name__}; the checkpoint is corrupt.")
    return data


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (safetensors only), or a `ValueError` for a missing, broken or non-finite file."""
    recover_interrupted_write(folder)
    file = folder / WEIGHTS_NAME
    if not file.is_file():
        raise ValueError(
            f"{folder} has no {WEIGHTS_NAME}; expected a folder written by `HyperPeftModel.save_pretrained`."
        )
    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{file} could not be read as safetensors ({error}); the checkpoint is corrupt.") from error
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{file}: the tensor `{name}` holds NaN or inf values; the checkpoint is broken.")
    return tensors
