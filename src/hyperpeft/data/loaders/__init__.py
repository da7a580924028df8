"""Loaders that read personalization data sets into one row schema, as `datasets.Dataset`s with `ROW_FEATURES`.

Every loader returns one row per query with the columns of `ROW_COLUMNS`, in that order:

- `id` (`str`): unique within the returned dataset.
- `user_id` (`str`): who asked; unique within a task (use `(task, user_id)` to tell people apart across sources).
- `task` (`str`): a key of `hyperpeft.data.TASKS`; `metric` (`str`) is that task's metric.
- `input` (`str`) / `output` (`str`): the query as given by the data (no task instruction added) and the gold answer.
- `history` (`list[{"input": str, "output": str}]`): the user's earlier items, what they saw and what they produced.
- `profile_text` (`str | None`): a profile the data already has (e.g. demographics), used as the summary when present.

Because every loader uses the same `datasets.Features`, datasets from different sources concatenate with
`datasets.concatenate_datasets`. Bad files raise a `ValueError` that names the file, the row and what was expected;
nothing is dropped silently.
"""

from __future__ import annotations

# `..schema` comes first: it reports a missing `datasets` (and `pandas`, which it brings) with an install hint.
from ..schema import ROW_FEATURES
from .empathic import EC_ARTICLES_FILE, EC_ESSAYS_FILE, load_empathic_conversations
from .lamp import load_lamp, load_oppu
from .longlamp import load_longlamp
from .reddit import load_reddit_style
from .rows import load_rows

__all__ = [
    "EC_ARTICLES_FILE",
    "EC_ESSAYS_FILE",
    "ROW_FEATURES",
    "load_empathic_conversations",
    "load_lamp",
    "load_longlamp",
    "load_oppu",
    "load_reddit_style",
    "load_rows",
]
