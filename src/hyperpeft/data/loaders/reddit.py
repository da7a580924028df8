"""Personal-Reddit-style rows: a user's textual profile, a message and the user's reply."""

from __future__ import annotations

from collections import Counter

from datasets import Dataset

from ..schema import _history_item, _needs_context, _optional_text, _require, _text, _to_dataset
from ..tasks import TASKS
from .common import PathLike, _read_records, _resolve_task_name, _warn_unused_keys


def load_reddit_style(path: PathLike, task_name: str = "reddit") -> Dataset:
    """
    Load rows `{"user_id", "profile_text", "input", "output"}` (optional `"id"`, `"history"`) from a .jsonl file.

    This is the shape of Personal-Reddit-style data: each row has the user's textual profile (e.g. a description of the
    author's attributes), a message and the user's reply. `history` items are `{"input", "output"}` objects or bare
    strings (output-only items). Ids default to `"<task_name>-<row>"`. A `.json` list or `.parquet` file works too.

    Args:
        path (`str` or `os.PathLike`): the file.
        task_name (`str`, *optional*, defaults to `"reddit"`): the rows' `task` value, a registered task.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `ValueError`: invalid JSON (with the line), a missing key, a row with neither history nor profile text, or a
            repeated id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_reddit_style
    >>> rows = load_reddit_style("personal_reddit.jsonl")  # doctest: +SKIP
    ```
    """
    name = _resolve_task_name(task_name, "reddit")
    path, records = _read_records(path)
    expected, optional = ["user_id", "profile_text", "input", "output"], ["id", "history"]
    rows, unused = [], Counter()
    for index, record in enumerate(records):
        where = f"{path}: row {index}"
        _require(record, expected, where, expected, optional)
        unused.update(key for key in record if key not in {*expected, *optional})
        history = record.get("history") or []
        if not isinstance(history, list):
            raise ValueError(f"{where}: `history` should be a list but is {type(history).__name__}.")
        row = {
            "id": _optional_text(record, "id", where) or f"{name}-{index}",
            "user_id": _text(record["user_id"], where, "user_id"),
            "task": name,
            "metric": TASKS[name].metric,
            "input": _text(record["input"], where, "input"),
            "output": _text(record["output"], where, "output"),
            "history": [_history_item(item, f"{where}, history item {i}") for i, item in enumerate(history)],
            "profile_text": _optional_text(record, "profile_text", where),
        }
        _needs_context(row, where)
        rows.append(row)
    _warn_unused_keys(path, unused)
    return _to_dataset(rows, str(path))
