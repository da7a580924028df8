"""How sure a score is: 95% bootstrap intervals over users, and paired bootstraps of the difference between methods.

Rows of one user are not independent (same history, same style), so the unit resampled is the user: each resample
draws as many users as were evaluated, with replacement, and takes all their rows. Paired comparisons draw the same
users for both methods, so what the users share cancels out of the difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Metrics that are not scores of the answers, never given an interval.
COUNTS = ("n", "unparseable", "judged", "judge_unparseable")


def user_resamples(users: Sequence[str], samples: int, seed: int) -> list[np.ndarray]:
    """`samples` draws of row indices: each draws `len(set(users))` users with replacement and keeps all their rows."""
    groups: dict[str, list[int]] = {}
    for i, user in enumerate(users):
        groups.setdefault(user, []).append(i)
    members = [np.asarray(rows) for rows in groups.values()]
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, len(members), size=(samples, len(members)))
    return [np.concatenate([members[g] for g in draw]) for draw in draws]


def _interval(values: Sequence[float], level: float) -> list[float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def bootstrap_intervals(
    rows: Sequence[dict],
    aggregate: Callable[[list[dict]], dict[str, float]],
    resamples: list[np.ndarray],
    level: float = 0.95,
) -> dict[str, list[float]]:
    """
    The percentile interval of every metric `aggregate` computes from `rows`, over the `resamples`.

    Example:

    ```python
    >>> from hyperpeft.evaluation.uncertainty import bootstrap_intervals, user_resamples
    >>> rows = [{"x": 1.0}, {"x": 0.0}, {"x": 1.0}, {"x": 0.0}]
    >>> mean = lambda rs: {"x": sum(r["x"] for r in rs) / len(rs)}
    >>> low, high = bootstrap_intervals(rows, mean, user_resamples(["a", "a", "b", "c"], 1000, seed=0))["x"]
    >>> 0.0 <= low < 0.5 < high <= 1.0
    True
    ```
    """
    draws = [aggregate([rows[i] for i in index]) for index in resamples]
    metrics = [m for m, v in aggregate(list(rows)).items() if m not in COUNTS and isinstance(v, (int, float))]
    return {m: _interval([d[m] for d in draws if m in d], level) for m in metrics}


def paired_difference(
    rows: Sequence[dict],
    reference: Sequence[dict],
    aggregate: Callable[[list[dict]], dict[str, float]],
    metric: str,
    resamples: list[np.ndarray],
    level: float = 0.95,
) -> dict[str, float | list[float]]:
    """
    `metric` of `rows` minus `metric` of `reference` (the same evaluated rows, answered by another method), with its
    paired bootstrap interval and a two-sided bootstrap p-value (twice the share of resamples on the far side of 0).
    """
    if len(rows) != len(reference):
        raise ValueError(f"A paired comparison needs the same rows: got {len(rows)} and {len(reference)}.")

    def difference(index: Sequence[int]) -> float:
        return aggregate([rows[i] for i in index])[metric] - aggregate([reference[i] for i in index])[metric]

    observed = difference(range(len(rows)))
    differences = np.asarray([difference(index) for index in resamples])
    p = min(1.0, 2 * min(float(np.mean(differences <= 0)), float(np.mean(differences >= 0))))
    return {"difference": float(observed), "interval": _interval(differences, level), "p": p}


__all__ = ["bootstrap_intervals", "paired_difference", "user_resamples"]
