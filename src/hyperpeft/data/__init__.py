"""Personalization data: tasks and prompts, loaders into one row schema, user splits, and synthetic users.

`hyperpeft.data.loaders`, `.schema`, `.splits` and `.synthetic` need the `datasets` and `scikit-learn` extras;
importing this package registers the synthetic tasks so that their names load like any other.
"""

from . import synthetic as _synthetic  # noqa: F401  (registers the synthetic tasks)
from .tasks import CLASSIFICATION, GENERATION, METRIC_KINDS, RATING, ROW_COLUMNS, TASKS, Task, get_task, register_task

__all__ = [
    "CLASSIFICATION",
    "GENERATION",
    "METRIC_KINDS",
    "RATING",
    "ROW_COLUMNS",
    "TASKS",
    "Task",
    "get_task",
    "register_task",
]
