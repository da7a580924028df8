"""LongLaMP (the public release's rows with a per-row profile), from .jsonl, .json or .parquet."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from datasets import Dataset

from ..schema import _optional_text, _require, _text, _to_dataset
from ..tasks import TASKS
from .common import PathLike, _progress, _read_records, _resolve_task_name, _warn_unused_keys


@dataclass(frozen=True)
class _LongLampLayout:
    task_name: str
    item_keys: tuple[str, ...]  # keys every profile item must have
    input_key: str  # the item key holding what the user saw
    output_key: str  # the item key holding what the user wrote
    rating_key: str | None = None  # a star rating that belongs with the input (reviews)

    def history_item(self, item: Mapping, where: str) -> dict[str, str]:
        history_input = _text(item[self.input_key], where, self.input_key)
        if self.rating_key is not None:
            history_input += f" (rated {_text(item[self.rating_key], where, self.rating_key)} out of 5)"
        return {"input": history_input, "output": _text(item[self.output_key], where, self.output_key)}


# Field names as in the public LongLaMP release (Hugging Face `LongLaMP/LongLaMP`, configs `*_user` / `*_temporal`).
_LONGLAMP_LAYOUTS = {
    "abstract": _LongLampLayout("LongLaMP-abstract", ("title", "abstract"), "title", "abstract"),
    "topic": _LongLampLayout("LongLaMP-topic", ("summary", "content"), "summary", "content"),
    "review": _LongLampLayout(
        "LongLaMP-review", ("overall", "summary", "reviewText"), "summary", "reviewText", rating_key="overall"
    ),
}
_LONGLAMP_ALIASES = {"abstract_generation": "abstract", "topic_writing": "topic", "product_review": "review"}
# The user-id field differs per LongLaMP task; any of them (or a plain `user_id`) is used when present.
_LONGLAMP_USER_KEYS = ("user_id", "name", "author", "reviewerId")
_LONGLAMP_ROW_KEYS = {"id", "input", "output", "profile", *_LONGLAMP_USER_KEYS}


def _longlamp_task(task: str) -> str:
    name = str(task).strip().lower()
    name = re.sub(r"^longlamp[-_ ]?", "", name)
    name = re.sub(r"_(user|temporal)$", "", name)
    name = _LONGLAMP_ALIASES.get(name, name)
    if name not in _LONGLAMP_LAYOUTS:
        raise ValueError(
            f"Unknown LongLaMP task {task!r}; supported: {list(_LONGLAMP_LAYOUTS)} "
            f"(or the release's names {[f'{alias}_user' for alias in _LONGLAMP_ALIASES]})."
        )
    return name


def load_longlamp(path: PathLike, task: str, task_name: str | None = None) -> Dataset:
    """
    Load LongLaMP rows `{"input", "output", "profile": [item, ...]}` (+ a user id) from .jsonl, .json or .parquet.

    The user is the row's `user_id`, `name` (abstract generation), `author` (topic writing) or `reviewerId` (review
    writing), whichever it has; without one every row is its own user, `"<task_name>-user-<row>"`. The row id is the
    row's `id` when present, else `"<task_name>-<row>"` (stable for a given file). Profile items become history items:

    | task | item keys | history input | history output |
    | --- | --- | --- | --- |
    | abstract | title, abstract | title | abstract |
    | topic | summary, content | summary | content |
    | review | overall, summary, reviewText (description) | "<summary> (rated <overall> out of 5)" | reviewText |

    Args:
        path (`str` or `os.PathLike`): a `.jsonl`, `.json` (a list of rows) or `.parquet` file.
        task (`str`): `"abstract"`, `"topic"` or `"review"` (the release's names such as `"product_review_user"` work
            too).
        task_name (`str`, *optional*): the rows' `task` value, a registered task; defaults to `"LongLaMP-<task>"`.

    Returns:
        `datasets.Dataset`: one row per input row, with `ROW_FEATURES`.

    Raises:
        `ValueError`: unknown task or file type, an unreadable file, a missing key, an empty profile or a repeated id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_longlamp
    >>> rows = load_longlamp("product_review_user/train.parquet", "review")  # doctest: +SKIP
    ```
    """
    layout = _LONGLAMP_LAYOUTS[_longlamp_task(task)]
    name = _resolve_task_name(task_name, layout.task_name)
    path, records = _read_records(path)
    metric = TASKS[name].metric
    expected = ["input", "output", "profile"]
    optional = ["id", *_LONGLAMP_USER_KEYS]
    rows, unused = [], Counter()
    for index, record in enumerate(_progress(records, name)):
        where = f"{path}: row {index}"
        _require(record, expected, where, expected, optional)
        unused.update(key for key in record if key not in _LONGLAMP_ROW_KEYS)
        row_id = _optional_text(record, "id", where) or f"{name}-{index}"
        user_id = next((record[key] for key in _LONGLAMP_USER_KEYS if record.get(key) is not None), None)
        user_id = f"{name}-user-{index}" if user_id is None else _text(user_id, where, "user id")
        profile = record["profile"]
        if not isinstance(profile, list):
            raise ValueError(f"{where}: `profile` should be a list of items but is {type(profile).__name__}.")
        if not profile:
            raise ValueError(f"{where} (id {row_id!r}) has an empty `profile`; every query needs a history.")
        history = []
        for item_index, item in enumerate(profile):
            item_where = f"{where}, profile item {item_index}"
            _require(item, layout.item_keys, item_where, expected=layout.item_keys)
            history.append(layout.history_item(item, item_where))
        rows.append(
            {
                "id": row_id,
                "user_id": user_id,
                "task": name,
                "metric": metric,
                "input": _text(record["input"], where, "input"),
                "output": _text(record["output"], where, "output"),
                "history": history,
                "profile_text": None,
            }
        )
    _warn_unused_keys(path, unused)
    return _to_dataset(rows, str(path))
