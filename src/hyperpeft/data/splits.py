"""
User-level train/test splits, as in appendix H of the P2P paper: a representative "random" split and an
out-of-distribution ("ood") split, both chosen from one embedding per user.

Splits are made over users, never over rows: every row of a user lands on the same side, so a test user's history was
never seen in training. Both methods work on the L2-normalised user embeddings (e.g. the profile encoder's embedding of
each user's profile text):

- `"random"`: k-means groups the users; each group gives test users in proportion to its size, drawn at random inside
  the group, so the test users mirror the population while the draw still varies with the seed.
- `"ood"`: k-means with the number of clusters that maximises the silhouette score; small, isolated clusters go to the
  test side whole, so the test users are the ones least like the training population.

Test sizes default to the paper's table 8 (`PAPER_TEST_USERS`) when the data is large enough, else to 20% of the users.

k-means runs on scikit-learn's OpenMP threads. On a machine whose cores are busy with other work, those threads mostly
wait for each other: with 2 busy cores, one thread ran k-means 4 to 30 times faster than two (20,000 and 1,000 users,
384-d). Limit them with `threadpoolctl.threadpool_limits(1)` or `OMP_NUM_THREADS=1` there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from sklearn.cluster import KMeans
from sklearn.metrics import pairwise_distances, silhouette_score
from sklearn.preprocessing import normalize
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPLIT_METHODS = ("random", "ood")

# Test users per task in the paper's table 8 (the paper's own splits). The paper's random test sets hold 200 users, or
# 20% of the users for its smaller tasks, where the random and OOD test sets together make up about 20%.
PAPER_TEST_USERS: dict[str, dict[str, int]] = {
    "LaMP-1": {"random": 200, "ood": 200},
    "LaMP-2N": {"random": 32, "ood": 32},
    "LaMP-2M": {"random": 92, "ood": 93},
    "LaMP-3": {"random": 200, "ood": 200},
    "LaMP-4": {"random": 100, "ood": 100},
    "LaMP-5": {"random": 200, "ood": 200},
    "LaMP-7": {"random": 200, "ood": 200},
    "LongLaMP-abstract": {"random": 200, "ood": 200},
    "LongLaMP-topic": {"random": 200, "ood": 200},
    "LongLaMP-review": {"random": 200, "ood": 200},
    "reddit": {"random": 52, "ood": 53},
    "EC": {"random": 10, "ood": 10},
}

# The paper's count is used only when the data has at least this many times as many users (the paper's own data
# always does); smaller data gets `test_fraction` of its users instead.
PAPER_COUNT_MIN_RATIO = 5

# "random": k = round(sqrt(n_users / 2)), clipped to [RANDOM_MIN_CLUSTERS, RANDOM_MAX_CLUSTERS] and to at most
# `n_test` clusters, so clusters hold about sqrt(2 * n_users) users each and each can expect at least one test user.
RANDOM_MIN_CLUSTERS = 2
RANDOM_MAX_CLUSTERS = 50
# "ood": the silhouette search tries k = 2 .. OOD_MAX_CLUSTERS.
OOD_MAX_CLUSTERS = 20
# The silhouette score is quadratic in the number of users; above this many it is computed on a seeded sample.
SILHOUETTE_SAMPLE_SIZE = 4000
# k-means restarts (k-means++ initialisations); the best of them is kept.
KMEANS_N_INIT = 4


def default_test_users(task: str | None, n_users: int, method: str = "random", test_fraction: float = 0.2) -> int:
    """
    The number of test users a task gets when none is asked for.

    The paper's table 8 count (`PAPER_TEST_USERS[task][method]`) when the data has at least `PAPER_COUNT_MIN_RATIO`
    (5) times that many users; otherwise (smaller data, or a task the paper did not use) `test_fraction` of the users,
    rounded, and at least 1.

    Args:
        task (`str` or `None`): the task name (a key of `hyperpeft.data.TASKS`), or `None` when unknown.
        n_users (`int`): how many users the task has.
        method (`str`, defaults to `"random"`): `"random"` or `"ood"`.
        test_fraction (`float`, defaults to 0.2): the share of users to test on when the paper's count does not apply.

    Returns:
        `int`: the number of test users.

    Example:

    ```python
    >>> from hyperpeft.data.splits import default_test_users
    >>> default_test_users("LaMP-2M", 918, "ood"), default_test_users("LaMP-2M", 300, "ood")
    (93, 60)
    ```
    """
    _check_method(method)
    _check_fraction(test_fraction)
    paper = PAPER_TEST_USERS.get(task, {}).get(method) if task is not None else None
    if paper is not None and n_users >= PAPER_COUNT_MIN_RATIO * paper:
        return paper
    return max(1, round(test_fraction * n_users))


def select_test_users(
    user_ids: Sequence[str],
    embeddings: Mapping[str, Any] | np.ndarray | torch.Tensor,
    method: str = "random",
    n_test: int = 1,
    seed: int = 0,
    n_clusters: int | None = None,
) -> list[str]:
    """
    Choose which users go to the test side.

    Users are handled in sorted order of their ids, so the result depends only on the set of users, their embeddings
    and the seed, not on the order they are given in.

    `"random"`: k-means on the L2-normalised embeddings with k = round(sqrt(n_users / 2)) clusters, kept between
    `RANDOM_MIN_CLUSTERS` (2) and `RANDOM_MAX_CLUSTERS` (50) and at most `n_test`. Each cluster's share of the test
    users is `n_test * size / n_users`; every cluster gets that share rounded down, and the users left over go one each
    to the clusters with the largest remainders (largest-remainder rounding), so the count is exact and each cluster's
    count is within 1 of its share. Inside a cluster, users are drawn at random.

    `"ood"`: k-means with the k in 2 .. `OOD_MAX_CLUSTERS` (20) that has the highest silhouette score. Each cluster
    scores (mean distance from its centroid to the other centroids) / (1 + its size), favouring small, isolated
    clusters. Going down that ranking, a cluster that fits in the test users still to choose goes to the test side
    whole; the first one that does not fit gives its users farthest from its centroid to fill the rest, and the search
    stops there. The partly taken cluster's other users stay in training: the strict separation (no training user
    comes from a test cluster) holds for the clusters taken whole.

    Args:
        user_ids (`Sequence[str]`): distinct user ids.
        embeddings (`Mapping[str, vector]`, or a 2-D `np.ndarray`/`torch.Tensor`): one 1-D vector per user, either a
            mapping from user id or a matrix whose rows follow `user_ids`.
        method (`str`, defaults to `"random"`): `"random"` or `"ood"`.
        n_test (`int`, defaults to 1): how many test users; between 1 and `len(user_ids) - 1`.
        seed (`int`, defaults to 0): seeds k-means, the silhouette sample and the draws inside clusters.
        n_clusters (`int`, *optional*): use this many k-means clusters instead of the rule above (`"random"`) or the
            silhouette search (`"ood"`).

    Returns:
        `list[str]`: the `n_test` test user ids, sorted.

    Example:

    ```python
    >>> import numpy as np
    >>> from hyperpeft.data.splits import select_test_users
    >>> rng = np.random.default_rng(0)
    >>> ids = [f"u{i}" for i in range(45)]
    >>> # three groups of users (20, 20 and 5) around three directions
    >>> vectors = np.repeat(np.eye(8)[:3], [20, 20, 5], axis=0) + 0.05 * rng.normal(size=(45, 8))
    >>> select_test_users(ids, vectors, method="ood", n_test=5)  # the small group, whole
    ['u40', 'u41', 'u42', 'u43', 'u44']
    >>> len(select_test_users(ids, vectors, method="random", n_test=9))  # 4, 4 and 1 from the three groups
    9
    ```
    """
    _check_method(method)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"`seed` should be an int but is {type(seed).__name__}: {seed!r}.")
    ids, matrix = _embedding_matrix(user_ids, embeddings)
    _check_n_test(n_test, len(ids))
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or n_clusters < 1):
        raise ValueError(f"`n_clusters` should be a positive int or None but is {n_clusters!r}.")
    # Duplicate vectors cannot form more clusters than there are distinct points.
    n_distinct = len(np.unique(matrix, axis=0))
    if method == "random":
        chosen = _select_random(matrix, n_test, seed, n_clusters, n_distinct)
    else:
        chosen = _select_ood(matrix, n_test, seed, n_clusters, n_distinct)
    return sorted(ids[i] for i in chosen)


def split_users(
    dataset: Dataset,
    user_embeddings: Mapping[str, Any],
    method: str = "random",
    test_users: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    by_task: bool = True,
    n_clusters: int | None = None,
) -> tuple[Dataset, Dataset]:
    """
    Split rows into a training and a test set by user (see [`select_test_users`] for the two methods).

    With `by_task=True` (the default, as in the paper, whose table 8 has a test set per task) each task's users are
    split on their own, each task with its own test size; a user id then may not appear in two tasks. With
    `by_task=False` all users are split at once, whatever their tasks.

    Args:
        dataset (`datasets.Dataset`): rows with a `user_id` column (and a `task` column to split per task).
        user_embeddings (`Mapping[str, vector]`): user id -> one 1-D `np.ndarray`/`torch.Tensor`/list of floats, for
            every user of the dataset (e.g. the profile encoder's embedding of each user's profile).
        method (`str`, defaults to `"random"`): `"random"` or `"ood"`.
        test_users (`int`, *optional*): test users per task (or in all with `by_task=False`). By default
            [`default_test_users`]: the paper's count for the task when the data has at least 5 times as many users,
            otherwise `test_fraction` of them.
        test_fraction (`float`, defaults to 0.2): the share of users to test on when `test_users` is unset and the
            paper's count does not apply (several tasks split together, a task the paper did not use, small data).
        seed (`int`, defaults to 0): makes the split reproducible.
        by_task (`bool`, defaults to `True`): split each task's users separately.
        n_clusters (`int`, *optional*): fixed number of k-means clusters (see [`select_test_users`]).

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset]`: `(train, test)`, each keeping the dataset's row order; no user has
        rows in both.

    Example:

    ```python
    >>> import numpy as np
    >>> from datasets import Dataset
    >>> from hyperpeft.data.splits import split_users
    >>> rows = Dataset.from_dict({"user_id": [f"u{i // 2}" for i in range(40)], "task": ["LaMP-3"] * 40})
    >>> vectors = {f"u{i}": np.random.default_rng(i).normal(size=8) for i in range(20)}
    >>> train, test = split_users(rows, vectors, method="random", seed=0)
    >>> len(set(test["user_id"])), len(train), len(test)
    (4, 32, 8)
    ```
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` should be a `datasets.Dataset` but is {type(dataset).__name__}.")
    if not isinstance(user_embeddings, Mapping):
        raise TypeError(
            f"`user_embeddings` should map each user id to its vector but is {type(user_embeddings).__name__}."
        )
    _check_method(method)
    _check_fraction(test_fraction)
    if "user_id" not in dataset.column_names:
        raise ValueError(f"`dataset` has no `user_id` column; its columns are {dataset.column_names}.")

    user_column = list(dataset["user_id"])
    for row, user in enumerate(user_column):
        if not isinstance(user, str):
            raise TypeError(f"Row {row} of `dataset`: `user_id` should be a string but is {type(user).__name__}.")
    missing = {user: row for row, user in enumerate(user_column) if user not in user_embeddings}
    if missing:
        user, row = next(iter(missing.items()))
        raise ValueError(
            f"`user_embeddings` has no vector for user {user!r} (first seen in row {row} of `dataset`)"
            + (f" nor for {len(missing) - 1} other users" if len(missing) > 1 else "")
            + "; give one embedding per user of the dataset."
        )

    groups = _users_by_task(dataset, user_column, by_task)
    # Without per-task groups the paper's count still applies when the data holds a single task.
    tasks = set(dataset["task"]) if "task" in dataset.column_names else set()
    only_task = next(iter(tasks)) if len(tasks) == 1 else None
    test_side: set[str] = set()
    for task, users in groups.items():
        if len(users) < 2:
            where = f" of task {task!r}" if by_task and task is not None else ""
            raise ValueError(f"A split needs at least 2 users{where} but there are {len(users)}.")
        if test_users is None:
            n_test = default_test_users(task if task is not None else only_task, len(users), method, test_fraction)
        else:
            n_test = test_users
            _check_n_test(n_test, len(users), f" of task {task!r}" if by_task and task is not None else "")
        chosen = select_test_users(users, user_embeddings, method, n_test, seed, n_clusters)
        test_side.update(chosen)
        label = f" of {task!r}" if task is not None else ""
        logger.info(f"{method} split{label}: {len(chosen)} of {len(users)} users go to the test side.")

    train_rows = [row for row, user in enumerate(user_column) if user not in test_side]
    test_rows = [row for row, user in enumerate(user_column) if user in test_side]
    return dataset.select(train_rows), dataset.select(test_rows)


def kfold_split(
    dataset: Dataset, folds: int, fold: int, seed: int = 0, by_task: bool = True
) -> tuple[Dataset, Dataset]:
    """
    Fold `fold` of a `folds`-fold cross-validation over users: its users are the test side, every other user trains.

    Over `fold = 0 .. folds - 1` every user is a test user exactly once. Users are dealt to the folds by activity, so
    that each fold gets a like share of users and of rows: sorted by their number of rows (most first, ties by a
    seeded shuffle), each run of `folds` users goes one to each fold, in an order drawn from `seed`.

    Args:
        dataset (`datasets.Dataset`): rows with a `user_id` column (and a `task` column to split per task).
        folds (`int`): the number of folds, at least 2 and at most the number of users (of each task).
        fold (`int`): which fold is the test side, from 0 to `folds - 1`.
        seed (`int`, defaults to 0): the draw of the folds; the same seed gives the same folds for every `fold`.
        by_task (`bool`, defaults to `True`): deal each task's users on their own.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset]`: `(train, test)`, each keeping the dataset's row order.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from hyperpeft.data.splits import kfold_split
    >>> rows = Dataset.from_dict({"user_id": [f"u{i % 6}" for i in range(24)], "task": ["EC"] * 24})
    >>> tests = [set(kfold_split(rows, folds=3, fold=f)[1]["user_id"]) for f in range(3)]
    >>> [len(t) for t in tests], set().union(*tests) == set(rows["user_id"])
    ([2, 2, 2], True)
    ```
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"`dataset` should be a `datasets.Dataset` but is {type(dataset).__name__}.")
    if "user_id" not in dataset.column_names:
        raise ValueError(f"`dataset` has no `user_id` column; its columns are {dataset.column_names}.")
    for name, value in (("folds", folds), ("fold", fold), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` should be an integer but is {value!r}.")
    if folds < 2:
        raise ValueError(f"`folds` should be at least 2 but is {folds}.")
    if not 0 <= fold < folds:
        raise ValueError(f"`fold` should be in 0..{folds - 1} (folds={folds}) but is {fold}.")
    user_column = list(dataset["user_id"])
    rows_of: dict[str, int] = {}
    for user in user_column:
        rows_of[user] = rows_of.get(user, 0) + 1
    rng = np.random.default_rng(seed)
    test_side: set[str] = set()
    for task, users in _users_by_task(dataset, user_column, by_task).items():
        if len(users) < folds:
            where = f" of task {task!r}" if task is not None else ""
            raise ValueError(f"`folds`={folds} is more than the {len(users)} users{where}; use at most {len(users)}.")
        shuffled = [users[i] for i in rng.permutation(len(users))]
        ordered = sorted(shuffled, key=lambda user: -rows_of[user])  # stable: ties keep the shuffled order
        for start in range(0, len(ordered), folds):
            run = ordered[start : start + folds]
            dealt = rng.permutation(folds)[: len(run)]  # this run's users, one to each of these folds
            test_side.update(user for user, f in zip(run, dealt) if f == fold)
    train_rows = [row for row, user in enumerate(user_column) if user not in test_side]
    test_rows = [row for row, user in enumerate(user_column) if user in test_side]
    return dataset.select(train_rows), dataset.select(test_rows)


def _select_random(matrix: np.ndarray, n_test: int, seed: int, n_clusters: int | None, n_distinct: int) -> list[int]:
    n_users = len(matrix)
    if n_clusters is None:
        n_clusters = round(math.sqrt(n_users / 2))
        n_clusters = min(max(n_clusters, RANDOM_MIN_CLUSTERS), RANDOM_MAX_CLUSTERS, n_test)
    labels, centroids = _fit(matrix, min(n_clusters, n_distinct), seed)
    members = [np.flatnonzero(labels == c) for c in range(len(centroids))]
    sizes = np.array([len(m) for m in members])

    # Largest-remainder rounding: floors first, then one more user for the largest remainders (ties: larger cluster,
    # then lower index), so the total is exactly n_test and no cluster is asked for more users than it has.
    quotas = n_test * sizes / n_users
    counts = np.floor(quotas).astype(int)
    leftover = n_test - counts.sum()
    by_remainder = sorted(range(len(sizes)), key=lambda c: (-(quotas[c] - counts[c]), -sizes[c], c))
    for c in by_remainder[:leftover]:
        counts[c] += 1

    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cluster, count in zip(members, counts):
        chosen.extend(rng.choice(cluster, size=count, replace=False).tolist())
    logger.info(f"random split: {len(members)} clusters, test users per cluster {counts.tolist()}.")
    return chosen


def _select_ood(matrix: np.ndarray, n_test: int, seed: int, n_clusters: int | None, n_distinct: int) -> list[int]:
    n_users = len(matrix)
    if n_clusters is not None:
        labels, centroids = _fit(matrix, min(n_clusters, n_distinct), seed)
    else:
        # silhouette_score needs 2 <= k <= n_users - 1
        candidates = range(2, min(OOD_MAX_CLUSTERS, n_distinct, n_users - 1) + 1)
        labels, centroids = _fit(matrix, 1, seed)
        best = -math.inf
        sample = SILHOUETTE_SAMPLE_SIZE if n_users > SILHOUETTE_SAMPLE_SIZE else None
        for k in logging.tqdm(candidates, desc="Silhouette search", disable=len(candidates) < 2 or n_users < 2000):
            k_labels, k_centroids = _fit(matrix, k, seed)
            score = silhouette_score(matrix, k_labels, sample_size=sample, random_state=seed)
            if score > best:
                best, labels, centroids = score, k_labels, k_centroids
        if candidates:
            logger.info(
                f"ood split: {len(centroids)} clusters (silhouette {best:.3f}, searched k in {list(candidates)})."
            )
        else:
            logger.info("ood split: too few distinct users to search the number of clusters; using one cluster.")

    k = len(centroids)
    sizes = np.bincount(labels, minlength=k)
    between = pairwise_distances(centroids)
    isolation = between.sum(axis=1) / (k - 1) if k > 1 else np.zeros(k)
    scores = isolation / (1 + sizes)
    ranking = sorted(range(k), key=lambda c: (-scores[c], c))

    chosen: list[int] = []
    for c in ranking:
        remaining = n_test - len(chosen)
        if remaining == 0:
            break
        members = np.flatnonzero(labels == c)
        if len(members) <= remaining:
            chosen.extend(members.tolist())
            logger.info(f"ood split: cluster {c} ({len(members)} users, score {scores[c]:.4f}) goes to test whole.")
            continue
        distance = np.linalg.norm(matrix[members] - centroids[c], axis=1)
        farthest = members[np.argsort(-distance, kind="stable")[:remaining]]
        chosen.extend(farthest.tolist())
        logger.info(
            f"ood split: the {remaining} users of cluster {c} ({len(members)} users) farthest from its centroid go to "
            "test; its other users stay in training."
        )
        break
    return chosen


def _fit(matrix: np.ndarray, n_clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels and centroids; one cluster is simply the mean."""
    if n_clusters <= 1:
        return np.zeros(len(matrix), dtype=int), matrix.mean(axis=0, keepdims=True)
    kmeans = _kmeans(matrix, n_clusters, seed)
    return kmeans.labels_, kmeans.cluster_centers_


def _kmeans(matrix: np.ndarray, n_clusters: int, seed: int) -> KMeans:
    return KMeans(n_clusters=n_clusters, n_init=KMEANS_N_INIT, random_state=seed).fit(matrix)


def _embedding_matrix(
    user_ids: Sequence[str], embeddings: Mapping[str, Any] | np.ndarray | torch.Tensor
) -> tuple[list[str], np.ndarray]:
    """Sorted user ids and their L2-normalised embeddings, one row each; clear errors for anything malformed."""
    if isinstance(user_ids, str) or not isinstance(user_ids, Sequence):
        raise TypeError(f"`user_ids` should be a list of strings but is {type(user_ids).__name__}.")
    seen: set[str] = set()
    for i, user in enumerate(user_ids):
        if not isinstance(user, str):
            raise TypeError(f"`user_ids[{i}]` should be a string but is {type(user).__name__}: {user!r}.")
        if user in seen:
            raise ValueError(f"`user_ids` lists user {user!r} twice; give each user once.")
        seen.add(user)
    if len(user_ids) < 2:
        raise ValueError(f"A split needs at least 2 users but got {len(user_ids)}.")

    if isinstance(embeddings, Mapping):
        missing = [user for user in user_ids if user not in embeddings]
        if missing:
            raise ValueError(
                f"`embeddings` has no vector for user {missing[0]!r}"
                + (f" nor for {len(missing) - 1} other users" if len(missing) > 1 else "")
                + "; give one embedding per user."
            )
        vectors = [_as_vector(user, embeddings[user]) for user in user_ids]
    elif isinstance(embeddings, (np.ndarray, torch.Tensor)):
        if embeddings.ndim != 2 or embeddings.shape[0] != len(user_ids):
            raise ValueError(
                f"`embeddings` should be a matrix with one row per user, shape ({len(user_ids)}, dim), but has shape "
                f"{tuple(embeddings.shape)}."
            )
        vectors = [_as_vector(user, row) for user, row in zip(user_ids, embeddings)]
    else:
        raise TypeError(
            "`embeddings` should map user ids to vectors or be a (n_users, dim) array, "
            f"not {type(embeddings).__name__}."
        )

    # Name the odd one out: compare every user with the most common width.
    widths = [len(vector) for vector in vectors]
    width = max(set(widths), key=widths.count)
    example = next(user for user, w in zip(user_ids, widths) if w == width)
    for user, w in sorted(zip(user_ids, widths)):
        if w != width:
            raise ValueError(
                f"The embedding of user {user!r} has {w} values but that of user {example!r} (and most others) has "
                f"{width}; all users need embeddings of one width (from one encoder)."
            )
    order = sorted(range(len(user_ids)), key=lambda i: user_ids[i])
    matrix = normalize(np.stack([vectors[i] for i in order]))
    return [user_ids[i] for i in order], matrix


def _as_vector(user: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"The embedding of user {user!r} should be a vector of numbers but is {type(value).__name__}."
        ) from None
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(
            f"The embedding of user {user!r} should be a non-empty 1-D vector but has shape {vector.shape}."
        )
    if not np.isfinite(vector).all():
        raise ValueError(f"The embedding of user {user!r} contains NaN or infinite values.")
    return vector


def _users_by_task(dataset: Dataset, user_column: list[str], by_task: bool) -> dict[str | None, list[str]]:
    """Distinct users per task (one group, keyed `None`, when not splitting per task or without a `task` column)."""
    if not by_task or "task" not in dataset.column_names:
        return {None: list(dict.fromkeys(user_column))}
    groups: dict[str | None, dict[str, None]] = {}
    task_of: dict[str, tuple[str, int]] = {}
    for row, (user, task) in enumerate(zip(user_column, dataset["task"])):
        earlier = task_of.setdefault(user, (task, row))
        if earlier[0] != task:
            raise ValueError(
                f"User {user!r} has rows in task {earlier[0]!r} (row {earlier[1]}) and task {task!r} (row {row}) of "
                "`dataset`, so splitting each task on its own could put them on both sides; pass `by_task=False` to "
                "split all users at once."
            )
        groups.setdefault(task, {})[user] = None
    return {task: list(users) for task, users in sorted(groups.items(), key=lambda item: str(item[0]))}


def _check_method(method: str) -> None:
    if method not in SPLIT_METHODS:
        raise ValueError(f"`method` should be one of {SPLIT_METHODS} but is {method!r}.")


def _check_fraction(test_fraction: float) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"`test_fraction` should be a number between 0 and 1 (exclusive) but is {test_fraction!r}.")


def _check_n_test(n_test: int, n_users: int, where: str = "") -> None:
    if isinstance(n_test, bool) or not isinstance(n_test, int):
        raise TypeError(f"The number of test users should be an int but is {type(n_test).__name__}: {n_test!r}.")
    if not 1 <= n_test <= n_users - 1:
        raise ValueError(
            f"Asked for {n_test} test users out of {n_users} users{where}; ask for between 1 and {n_users - 1}, so "
            "that both sides have users."
        )
