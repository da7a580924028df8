"""What several loaders share: reading .json, .jsonl and .parquet record files, the `task_name` argument, progress
bars, and the warning about keys a loader ignores."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers.utils import logging

from ..tasks import get_task

logger = logging.get_logger(__name__)

PathLike = str | os.PathLike


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}).") from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    records = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}).") from None
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path} line {line_number} is not valid JSON: {error.msg} at column {error.colno}."
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {line_number} should be a JSON object but is {type(record).__name__}.")
        records.append(record)
    return records


def _read_parquet(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    # A throw-away cache folder: reading a file once should not leave Arrow copies in the user's HF cache.
    with tempfile.TemporaryDirectory(prefix="hyperpeft-parquet-") as cache_dir:
        try:
            table = Dataset.from_parquet(str(path), cache_dir=cache_dir, keep_in_memory=True)
        except Exception as error:  # pyarrow and datasets raise several unrelated types for an unreadable file
            raise ValueError(f"{path} could not be read as Parquet: {error}") from None
        return table.to_list()


_RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_records(path: PathLike) -> tuple[Path, list[dict]]:
    """Rows of a .jsonl, .json (a list of objects) or .parquet file, as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return path, _read_jsonl(path)
    if suffix == ".parquet":
        return path, _read_parquet(path)
    if suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, list):
            raise ValueError(f"{path} should hold a JSON list of rows but holds a {type(data).__name__}.")
        return path, data
    raise ValueError(f"Cannot read {path}: the file name should end with one of {list(_RECORD_SUFFIXES)}.")


def _resolve_task_name(task_name: str | None, default: str) -> str:
    name = default if task_name is None else task_name
    get_task(name)  # a ValueError listing the known tasks when unknown
    return name


# Below this many items a loop is quick and a progress bar would only be noise; above it, the bar appears only once
# the loop has run for a second, so a fast loop never leaves a 0% bar in a log.
_PROGRESS_MIN_ITEMS = 500


def _progress(items: list, desc: str):
    return logging.tqdm(items, desc=desc, leave=False, delay=1.0, disable=len(items) < _PROGRESS_MIN_ITEMS)


def _warn_unused_keys(path: Path, unused: Counter) -> None:
    if unused:
        logger.warning(
            f"{path}: ignored keys outside the row schema (with the number of rows that had each): {dict(unused)}."
        )
