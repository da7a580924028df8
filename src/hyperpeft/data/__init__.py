"""Personalization data: tasks and prompts, loaders into one row schema, user splits, and synthetic users."""

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
