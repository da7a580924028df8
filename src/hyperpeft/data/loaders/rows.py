"""Rows already in the common schema (your own data), from a file or from Python."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset

from ..schema import _check_label, _needs_context, _to_dataset, check_row
from ..tasks import get_task
from .common import PathLike, _read_records


def load_rows(path_or_rows: PathLike | Iterable[Mapping[str, Any]], task: str | None = None) -> Dataset:
    """
    Check rows that are already in the schema (your own data) and turn them into a dataset with `ROW_FEATURES`.

    Each row needs `id`, `user_id`, `input`, `output` and `task` (or pass `task` for rows without one); `history`
    (default `[]`), `profile_text` (default `None`) and `metric` (default: the task's) are optional. A row needs a
    history or a profile text. History items are `{"input", "output"}` objects or bare strings (output-only items).
    Keys outside the schema are refused, so that a misspelt column is not dropped unnoticed. Each row is checked by
    [`~hyperpeft.data.schema.check_row`].

    Args:
        path_or_rows (`str`, `os.PathLike` or an iterable of mappings): a .jsonl/.json/.parquet file, or the rows.
        task (`str`, *optional*): the task of rows that do not name one; a row naming another task is refused.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `TypeError`: `path_or_rows` is neither a path nor an iterable of mappings.
        `ValueError`: a missing or unknown key, an unknown task, a `metric` that is not the task's, a row with neither
            history nor profile text, a classification gold outside the task's labels, or a repeated id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_rows
    >>> row = {"id": "q1", "user_id": "ann", "input": "Hi!", "output": "Hey :)", "history": ["yo", "sup"]}
    >>> rows = load_rows([row], task="reddit")
    >>> rows[0]["history"]
    [{'input': '', 'output': 'yo'}, {'input': '', 'output': 'sup'}]
    ```
    """
    if isinstance(path_or_rows, (str, os.PathLike)):
        path, records = _read_records(path_or_rows)
        source = str(path)
    elif isinstance(path_or_rows, Iterable) and not isinstance(path_or_rows, (bytes, Mapping)):
        records, source = list(path_or_rows), "rows"
    else:
        raise TypeError(
            f"`path_or_rows` should be a file path or an iterable of row dicts but is {type(path_or_rows).__name__}."
        )
    if task is not None:
        get_task(task)  # refused before any row, also when there are none
    rows = []
    for index, record in enumerate(records):
        where = f"{source}: row {index}"
        row = check_row(record, where, task=task)
        _needs_context(row, where)
        _check_label(row["task"], row["output"], where)
        rows.append(row)
    return _to_dataset(rows, source)
