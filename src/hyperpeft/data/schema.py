"""The common row schema: its `datasets.Features`, the check of one row, and the conversion of rows to a dataset.

The columns are those of `hyperpeft.data.ROW_COLUMNS`, described in `hyperpeft.data.loaders`. `ROW_FEATURES` and
[`check_row`] are public; the `_`-prefixed helpers (how a value becomes a schema string, the key check of a record,
history items, the label check, `_to_dataset`) are shared with the loaders of `hyperpeft.data.loaders` and are not
part of the API.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from transformers.utils import logging

from .._validation import check_text
from .tasks import GENERATION, ROW_COLUMNS, TASKS, get_task

try:
    from datasets import Dataset, Features, List, Value
except ImportError as error:  # `datasets` (which brings `pandas`) is an optional extra
    raise ImportError(
        "hyperpeft.data.schema and hyperpeft.data.loaders need the `datasets` package: "
        "`pip install 'hyperpeft[training]'`."
    ) from error

logger = logging.get_logger(__name__)

_COLUMN_FEATURES = {
    "id": Value("string"),
    "user_id": Value("string"),
    "task": Value("string"),
    "metric": Value("string"),
    "input": Value("string"),
    "output": Value("string"),
    "history": List({"input": Value("string"), "output": Value("string")}),
    "profile_text": Value("string"),  # Arrow strings are nullable: None when the data has no profile
}
# Built from ROW_COLUMNS so that the column order is the schema's and a new column cannot be forgotten here.
ROW_FEATURES = Features({name: _COLUMN_FEATURES[name] for name in ROW_COLUMNS})


# --- Values and records ---


def _text(value: Any, where: str, key: str) -> str:
    """`value` as a string: strings as they are, numbers written plainly (5.0 -> "5"), anything else refused."""
    if isinstance(value, str):
        try:
            return check_text(value, key)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: `{key}` should be a string but is {value!r} ({type(value).__name__}).")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _optional_text(record: Mapping, key: str, where: str) -> str | None:
    value = record.get(key)
    return None if value is None else _text(value, where, key)


def _require(record: Any, keys: Iterable[str], where: str, expected: Iterable[str], optional: Iterable[str] = ()):
    """Refuse a record that is not a JSON object or lacks one of `keys`, naming what a record should hold."""
    expected, optional = list(expected), list(optional)
    described = f"{expected}" + (f" (optional: {optional})" if optional else "")
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} should be a JSON object with the keys {described} but is {type(record).__name__}.")
    for key in keys:
        if key not in record:
            raise ValueError(f"{where} has no key {key!r}; expected the keys {described}, found {sorted(record)}.")


def _history_item(item: Any, where: str) -> dict[str, str]:
    """A history item given as `{"input", "output"}` (input optional) or as a bare string (an output-only item)."""
    if isinstance(item, str):
        return {"input": "", "output": _text(item, where, "output")}
    _require(item, ["output"], where, expected=["output"], optional=["input"])
    return {"input": _text(item.get("input", ""), where, "input"), "output": _text(item["output"], where, "output")}


# --- Rows ---


def check_row(record: Any, where: str, task: str | None = None, require_output: bool = True) -> dict[str, Any]:
    """
    Check one row of the common schema and return it normalized, with the columns of `ROW_COLUMNS` in that order.

    A row is a mapping with `id`, `user_id`, `input`, `output` and `task` (a registered task; it may be left out
    when `task` is given); `history` (default `[]`), `profile_text` (default `None`) and `metric` (default: the
    task's) are optional. The text columns are strings; a number is accepted and written plainly (`5.0` -> `"5"`).
    History items are `{"input", "output"}` objects (input optional) or bare strings (output-only items). Keys
    outside the schema are refused, so that a misspelt column is not dropped unnoticed. Nothing else is changed:
    texts are not stripped and an empty `profile_text` stays `""`.

    What a row needs beyond its own shape is left to the caller: a history or a profile text (the loaders refuse a
    row with neither; the profile builder's need depends on its mode), a classification gold among the task's labels,
    unique ids.

    Args:
        record (`Any`): the row, e.g. a line of a .jsonl file (of a `datasets.Dataset` with more columns, select
            the schema's first).
        where (`str`): where the row is, the start of every error message, e.g. `"rows.jsonl: row 3"`.
        task (`str`, *optional*): the task of a row that names none (also when its `task` is `None`); a row naming
            another task is refused.
        require_output (`bool`, *optional*, defaults to `True`): when `False`, a row without an `output` key (e.g.
            rows that only need a profile) is accepted with `output = ""`.

    Returns:
        `dict`: the row with every column of `ROW_COLUMNS`: `id`, `user_id`, `task`, `metric`, `input` and `output`
        as strings, `history` as a list of `{"input": str, "output": str}`, `profile_text` as a string or `None`.

    Raises:
        `ValueError`: the row is not a mapping, lacks a key or has one outside the schema, names an unknown task or
            another task than `task`, has a `metric` that is not the task's, or a value of the wrong type (the
            message names the row, the key and the value).

    Example:

    ```python
    >>> from hyperpeft.data.schema import check_row
    >>> record = {"id": 1, "user_id": "ann", "input": "Hi!", "output": "Hey :)", "history": ["yo"]}
    >>> row = check_row(record, "my rows: row 0", task="reddit")
    >>> row["id"], row["metric"], row["history"], row["profile_text"]
    ('1', 'generation', [{'input': '', 'output': 'yo'}], None)
    ```
    """
    required = ["id", "user_id", "input", "output"] if require_output else ["id", "user_id", "input"]
    if task is None:
        required.append("task")
    _require(record, required, where, required, optional=[c for c in ROW_COLUMNS if c not in required])
    unknown = sorted(set(record) - set(ROW_COLUMNS))
    if unknown:
        raise ValueError(f"{where} has keys outside the row schema {unknown}; the columns are {list(ROW_COLUMNS)}.")
    name = task if record.get("task") is None else _text(record["task"], where, "task")
    if task is not None and name != task:
        raise ValueError(f"{where} has the task {name!r} but `task={task!r}` was asked for.")
    metric = get_task(name).metric
    if record.get("metric") is not None and record["metric"] != metric:
        raise ValueError(f"{where}: `metric` is {record['metric']!r} but the task {name!r} is scored as {metric!r}.")
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ValueError(f"{where}: `history` should be a list but is {type(history).__name__}.")
    return {
        "id": _text(record["id"], where, "id"),
        "user_id": _text(record["user_id"], where, "user_id"),
        "task": name,
        "metric": metric,
        "input": _text(record["input"], where, "input"),
        "output": _text(record["output"], where, "output") if "output" in record or require_output else "",
        "history": [_history_item(item, f"{where}, history item {i}") for i, item in enumerate(history)],
        "profile_text": _optional_text(record, "profile_text", where),
    }


def _needs_context(row: Mapping, where: str) -> None:
    if not row["history"] and not row["profile_text"]:
        raise ValueError(f"{where} has neither a history nor a profile_text; a personalized row needs one of them.")


def _check_label(task_name: str, output: str, where: str) -> None:
    """A classification or rating gold must be one of the task's labels, or prompts and metrics would disagree."""
    task = TASKS[task_name]
    if task.metric != GENERATION and output != "" and output not in task.labels:
        raise ValueError(
            f"{where}: the gold output {output!r} is not a label of the task {task_name!r} ({list(task.labels)}). "
            "Is this the right task for this file?"
        )


def _to_dataset(rows: list[dict], source: str) -> Dataset:
    """Build the dataset with `ROW_FEATURES` after checking that ids are unique."""
    counts = Counter(row["id"] for row in rows)
    duplicated = [row_id for row_id, count in counts.items() if count > 1]
    if duplicated:
        raise ValueError(f"{source}: ids must be unique but {len(duplicated)} repeat, e.g. {duplicated[:5]}.")
    columns = {name: [row[name] for row in rows] for name in ROW_COLUMNS}
    dataset = Dataset.from_dict(columns, features=ROW_FEATURES)
    logger.info(f"Loaded {len(rows)} rows of {len({r['user_id'] for r in rows})} users from {source}.")
    return dataset


__all__ = ["ROW_FEATURES", "check_row"]
