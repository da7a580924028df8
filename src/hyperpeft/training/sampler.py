"""`TaskBalancedSampler`: batches that mix several tasks, each task's share of a batch set by its weight."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Sampler


class TaskBalancedSampler(Sampler[int]):
    """
    Yields dataset indices in consecutive groups of `batch_size`; each group mixes up to `tasks_per_batch` tasks,
    drawn without replacement with probability proportional to their weights. Without `task_weights` the weights are
    the square roots of the tasks' sizes and the group's rows are split evenly; with them, the rows are split in
    proportion to the weights (largest remainder, at least one row per drawn task). Rows within a task are drawn
    without replacement, reshuffled when a task runs out.

    Args:
        tasks (`Sequence[str]`): the task of every row.
        batch_size (`int`): rows per group (the per-device batch size).
        tasks_per_batch (`int`): tasks mixed in each group.
        seed (`int`): the random seed; `set_epoch` varies it per epoch.
        task_weights (`dict[str, float]`, *optional*): weights by task name, 1 for tasks it does not name.

    Example:

    ```python
    >>> from hyperpeft.training.sampler import TaskBalancedSampler
    >>> sampler = TaskBalancedSampler(["a", "a", "b", "b", "c", "c"], batch_size=2, tasks_per_batch=2, seed=0)
    >>> len(list(sampler))
    6
    ```
    """

    def __init__(
        self,
        tasks: Sequence[str],
        batch_size: int,
        tasks_per_batch: int = 4,
        seed: int = 0,
        task_weights: dict[str, float] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` should be at least 1 but is {batch_size}.")
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0
        self.rows_by_task: dict[str, list[int]] = {}
        for index, task in enumerate(tasks):
            self.rows_by_task.setdefault(task, []).append(index)
        self.task_names = sorted(self.rows_by_task)
        self.tasks_per_batch = min(tasks_per_batch, len(self.task_names), batch_size)
        check_task_weights(task_weights, self.task_names)
        if task_weights is None:
            weights = sqrt_task_weights({t: len(rows) for t, rows in self.rows_by_task.items()})
        else:
            weights = {t: task_weights.get(t, 1.0) for t in self.task_names}
        self.task_weights = torch.tensor([weights[t] for t in self.task_names], dtype=torch.float64)
        self.split_by_weight = task_weights is not None
        self.num_rows = len(tasks)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        queues: dict[str, list[int]] = {t: [] for t in self.task_names}

        def next_row(task: str) -> int:
            if not queues[task]:
                rows = self.rows_by_task[task]
                queues[task] = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
            return queues[task].pop()

        produced = 0
        while produced < self.num_rows:
            chosen = torch.multinomial(self.task_weights, self.tasks_per_batch, replacement=False, generator=generator)
            size = min(self.batch_size, self.num_rows - produced)
            weights = self.task_weights[chosen].tolist() if self.split_by_weight else [1.0] * len(chosen)
            counts = _split_rows(size, weights)
            for index, count in zip(chosen.tolist(), counts):
                for _ in range(count):
                    yield next_row(self.task_names[index])
            produced += size


def _split_rows(size: int, weights: list[float]) -> list[int]:
    """
    `size` rows split in proportion to `weights` by largest remainder (ties in draw order), then topped up so that
    every task gets a row when there are enough rows (taken from the largest count).
    """
    quotas = [size * w / sum(weights) for w in weights]
    counts = [math.floor(q) for q in quotas]
    for i in sorted(range(len(weights)), key=lambda i: counts[i] - quotas[i])[: size - sum(counts)]:
        counts[i] += 1
    for i in range(min(size, len(weights))):
        if counts[i] == 0:
            counts[max(range(len(counts)), key=counts.__getitem__)] -= 1
            counts[i] = 1
    return counts


def check_task_weights(task_weights: dict[str, float] | None, tasks: Iterable[str] | None = None) -> None:
    """
    `ValueError` unless `task_weights` is None or maps task names to positive, finite numbers, and, when the data's
    `tasks` are given, names only those.
    """
    if task_weights is None:
        return
    if not isinstance(task_weights, dict):
        raise ValueError(f"`task_weights` should be a dict of task name to weight but is {task_weights!r}.")
    for task, weight in task_weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise ValueError(f"`task_weights[{task!r}]` should be a positive number but is {weight!r}.")
    if tasks is not None:
        present = sorted(set(tasks))
        unknown = sorted(set(task_weights) - set(present))
        if unknown:
            raise ValueError(f"`task_weights` names {unknown}, which no row has; the tasks are {present}.")


def sqrt_task_weights(sizes: dict[str, int]) -> dict[str, float]:
    """The probability of drawing each task: proportional to the square root of its number of rows."""
    total = sum(math.sqrt(n) for n in sizes.values())
    return {task: math.sqrt(n) / total for task, n in sizes.items()}
