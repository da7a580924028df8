"""User splits (paper appendix H) on synthetic user embeddings: Gaussian blobs on the unit sphere, built here."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from threadpoolctl import threadpool_limits

from hyperpeft.data import TASKS
from hyperpeft.data.splits import PAPER_TEST_USERS, default_test_users, select_test_users, split_users

DIM = 16


@pytest.fixture(autouse=True)
def one_thread():
    # k-means' OpenMP threads fight over a busy 2-core machine (measured 30x slower than one thread); the data is tiny
    with threadpool_limits(limits=1):
        yield


def blobs(sizes, centers, spread=0.03, seed=0, prefix="u"):
    """Users in groups around `centers` (rows of a matrix); returns ids, {id: vector}, and each id's group."""
    rng = np.random.default_rng(seed)
    ids, vectors, group = [], {}, {}
    for g, (size, center) in enumerate(zip(sizes, centers)):
        center = center / np.linalg.norm(center)
        for _ in range(size):
            user = f"{prefix}{len(ids):04d}"
            ids.append(user)
            vectors[user] = center + spread * rng.normal(size=DIM)
            group[user] = g
    return ids, vectors, group


def axis(i, sign=1.0):
    return sign * np.eye(DIM)[i]


# Three close groups around e0 (pairwise ~0.63 apart after normalising) and one small group at -e0 (~1.95 away).
NEAR = [axis(0) + 0.5 * axis(1), axis(0) + 0.5 * axis(2), axis(0) + 0.5 * axis(3)]
FAR = axis(0, -1.0)


def make_dataset(users_by_task, seed=0):
    """Rows in the common schema: 1-4 queries per user, rows of different users interleaved."""
    rng = random.Random(seed)
    rows = []
    for task, users in users_by_task.items():
        for user in users:
            for q in range(rng.randint(1, 4)):
                rows.append(
                    {
                        "id": f"{task}/{user}-{q}",
                        "user_id": user,
                        "task": task,
                        "metric": TASKS[task].metric,
                        "input": f"query {q} of {user}",
                        "output": "3",
                        "history": [{"input": "an earlier item", "output": "4"}],
                        "profile_text": None,
                    }
                )
    rng.shuffle(rows)
    return Dataset.from_list(rows)


def check_split(dataset, train, test, n_test_users=None):
    train_users, test_users = set(train["user_id"]), set(test["user_id"])
    train_ids, test_ids, all_ids = list(train["id"]), list(test["id"]), list(dataset["id"])
    assert not train_users & test_users, "a user is on both sides"
    assert train_users | test_users == set(dataset["user_id"])
    assert len(train) + len(test) == len(dataset)
    assert sorted(train_ids + test_ids) == sorted(all_ids)
    # each side keeps the dataset's row order
    position = {row_id: i for i, row_id in enumerate(all_ids)}
    for side in (train_ids, test_ids):
        assert [position[i] for i in side] == sorted(position[i] for i in side)
    if n_test_users is not None:
        assert len(test_users) == n_test_users


def test_paper_table_8_counts():
    assert set(PAPER_TEST_USERS) <= set(TASKS)
    assert PAPER_TEST_USERS["LaMP-2M"] == {"random": 92, "ood": 93}
    assert PAPER_TEST_USERS["LaMP-2N"] == {"random": 32, "ood": 32}
    assert PAPER_TEST_USERS["LaMP-4"] == {"random": 100, "ood": 100}
    assert PAPER_TEST_USERS["reddit"] == {"random": 52, "ood": 53}
    assert PAPER_TEST_USERS["EC"] == {"random": 10, "ood": 10}
    assert PAPER_TEST_USERS["LongLaMP-topic"] == {"random": 200, "ood": 200}


def test_default_test_users():
    # the paper's count when there are at least 5 times as many users (LaMP-2M had 918 users in all)
    assert default_test_users("LaMP-2M", 918, "random") == 92
    assert default_test_users("LaMP-2M", 918, "ood") == 93
    assert default_test_users("LaMP-2M", 460, "random") == 92
    assert default_test_users("EC", 50, "ood") == 10
    # smaller data, unknown tasks and no task: test_fraction of the users, at least one
    assert default_test_users("LaMP-2M", 300, "random") == 60
    assert default_test_users("EC", 49, "ood") == 10  # round(9.8)
    assert default_test_users("EC", 30, "ood") == 6
    assert default_test_users("LaMP-1", 500, "random") == 100
    assert default_test_users("my-task", 10_000, "random") == 2000
    assert default_test_users(None, 10, "random", test_fraction=0.3) == 3
    assert default_test_users(None, 2, "random") == 1
    with pytest.raises(ValueError, match="`method`"):
        default_test_users("EC", 100, "cluster")
    with pytest.raises(ValueError, match="`test_fraction`"):
        default_test_users("EC", 100, "random", test_fraction=1.0)


@pytest.mark.parametrize("seed", range(4))
def test_random_test_users_follow_group_sizes(seed):
    # 50 users make the default rule pick round(sqrt(50 / 2)) = 5 clusters: one per group
    sizes = (20, 12, 8, 6, 4)
    ids, vectors, group = blobs(sizes, [axis(i) for i in range(5)], seed=seed)
    chosen = select_test_users(ids, vectors, "random", n_test=10, seed=seed)
    assert len(chosen) == len(set(chosen)) == 10
    counts = np.bincount([group[u] for u in chosen], minlength=len(sizes))
    shares = 10 * np.array(sizes) / sum(sizes)
    assert np.all(np.abs(counts - shares) <= 1), (counts, shares)


@pytest.mark.parametrize("seed", range(3))
def test_random_with_fixed_cluster_count(seed):
    sizes = (61, 43, 29, 17)
    ids, vectors, group = blobs(sizes, [axis(i) for i in range(4)], seed=seed)
    chosen = select_test_users(ids, vectors, "random", n_test=30, seed=seed, n_clusters=4)
    counts = np.bincount([group[u] for u in chosen], minlength=4)
    # shares 12.2, 8.6, 5.8, 3.4: floors 12, 8, 5, 3, and the two largest remainders get one more
    assert counts.tolist() == [12, 9, 6, 3]


def test_random_is_seeded_and_order_free():
    ids, vectors, _ = blobs((30, 20, 10), [axis(i) for i in range(3)])
    first = select_test_users(ids, vectors, "random", n_test=12, seed=3)
    assert first == select_test_users(ids, vectors, "random", n_test=12, seed=3)
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert first == select_test_users(shuffled, vectors, "random", n_test=12, seed=3)
    # the matrix form (rows follow user_ids) and torch vectors give the same users
    matrix = np.stack([vectors[u] for u in shuffled])
    assert first == select_test_users(shuffled, matrix, "random", n_test=12, seed=3)
    as_torch = {u: torch.tensor(v, dtype=torch.float32) for u, v in vectors.items()}
    assert first == select_test_users(ids, as_torch, "random", n_test=12, seed=3)
    # different seeds draw different users
    draws = {tuple(select_test_users(ids, vectors, "random", n_test=12, seed=s)) for s in range(5)}
    assert len(draws) > 1


@pytest.mark.parametrize("seed", range(3))
def test_ood_takes_a_small_far_group_whole(seed):
    ids, vectors, group = blobs((40, 40, 40, 8), NEAR + [FAR], seed=seed)
    chosen = select_test_users(ids, vectors, "ood", n_test=10, seed=seed)
    assert len(chosen) == 10
    far = {u for u in ids if group[u] == 3}
    assert far <= set(chosen)  # no training user comes from the far group


def test_ood_gives_several_whole_groups_best_score_first():
    # two small isolated groups: 5 users at -e0 and 4 at e7; together exactly the 9 test users asked for
    ids, vectors, group = blobs((40, 40, 40, 5, 4), NEAR + [FAR, axis(7)])
    chosen = select_test_users(ids, vectors, "ood", n_test=9)
    assert {group[u] for u in chosen} == {3, 4}
    # with 7, the -e0 group (more isolated) is taken whole and the e7 group gives its 2 farthest users
    chosen = select_test_users(ids, vectors, "ood", n_test=7)
    assert sorted(group[u] for u in chosen) == [3, 3, 3, 3, 3, 4, 4]


def test_ood_takes_the_farthest_users_of_a_group_too_big_to_fit():
    ids, vectors, group = blobs((40, 40, 40, 12), NEAR + [FAR], spread=0.05)
    chosen = select_test_users(ids, vectors, "ood", n_test=5)
    far = [u for u in ids if group[u] == 3]
    assert set(chosen) <= set(far)  # the rest of that group stays in training
    points = np.stack([vectors[u] / np.linalg.norm(vectors[u]) for u in far])
    distance = np.linalg.norm(points - points.mean(axis=0), axis=1)
    expected = {far[i] for i in np.argsort(-distance)[:5]}
    assert set(chosen) == expected


@pytest.mark.parametrize("method", ["random", "ood"])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_users_never_puts_a_user_on_both_sides(method, seed):
    near_ids, near_vectors, _ = blobs((25, 15, 12, 6), NEAR + [FAR], seed=seed, prefix="a")
    small_ids, small_vectors, _ = blobs((7, 5), [axis(5), axis(6)], seed=seed, prefix="b")
    vectors = {**near_vectors, **small_vectors}
    cases = [
        (make_dataset({"LaMP-3": near_ids}, seed), {"LaMP-3": 12}),  # 58 users: 20%
        (make_dataset({"EC": near_ids}, seed), {"EC": 10}),  # 58 >= 5 * 10: the paper's count
        (make_dataset({"LaMP-2M": near_ids, "LaMP-7": small_ids}, seed), {"LaMP-2M": 12, "LaMP-7": 2}),
    ]
    for dataset, expected in cases:
        train, test = split_users(dataset, vectors, method, seed=seed)
        check_split(dataset, train, test, sum(expected.values()))
        for task, n_test in expected.items():
            assert len(set(test.filter(lambda row, t=task: row["task"] == t)["user_id"])) == n_test
        again = split_users(dataset, vectors, method, seed=seed)
        assert list(again[1]["id"]) == list(test["id"])  # deterministic
    train, test = split_users(cases[0][0], vectors, method, test_users=9, seed=seed)
    check_split(cases[0][0], train, test, 9)


def test_split_users_across_tasks():
    ids, vectors, _ = blobs((20, 10), [axis(0), axis(1)])
    # the same users answer two tasks
    dataset = make_dataset({"LaMP-3": ids, "LaMP-4": ids})
    with pytest.raises(ValueError, match=r"User 'u00\d\d' has rows in task .*by_task=False"):
        split_users(dataset, vectors)
    train, test = split_users(dataset, vectors, by_task=False)
    check_split(dataset, train, test, 6)  # several tasks together: 20% of the 30 users
    assert set(test["task"]) == {"LaMP-3", "LaMP-4"}
    # without a task column all users are split together too
    plain = dataset.remove_columns(["task"])
    check_split(plain, *split_users(plain, vectors, "ood"), 6)


def test_split_users_errors():
    ids, vectors, _ = blobs((25, 15), [axis(0), axis(1)])
    dataset = make_dataset({"LaMP-3": ids})
    with pytest.raises(ValueError, match="Asked for 50 test users out of 40 users of task 'LaMP-3'"):
        split_users(dataset, vectors, test_users=50)
    with pytest.raises(ValueError, match="Asked for 40 test users out of 40"):
        split_users(dataset, vectors, test_users=40)
    with pytest.raises(ValueError, match="Asked for 0"):
        split_users(dataset, vectors, test_users=0)
    with pytest.raises(TypeError, match="should be an int"):
        split_users(dataset, vectors, test_users=0.2)
    one_user = make_dataset({"LaMP-3": ids[:1]})
    with pytest.raises(ValueError, match="at least 2 users of task 'LaMP-3' but there are 1"):
        split_users(one_user, vectors)
    partial = {u: v for u, v in vectors.items() if u != "u0007"}
    with pytest.raises(ValueError, match=r"no vector for user 'u0007' \(first seen in row \d+"):
        split_users(dataset, partial)
    wide = {**vectors, "u0012": np.ones(DIM + 1)}
    with pytest.raises(
        ValueError, match=rf"user 'u0012' has {DIM + 1} values but that of user 'u\d+' \(and most others\) has {DIM}"
    ):
        split_users(dataset, wide)
    bad = {**vectors, "u0003": np.full(DIM, np.nan)}
    with pytest.raises(ValueError, match="user 'u0003' contains NaN"):
        split_users(dataset, bad)
    flat = {**vectors, "u0004": np.ones((2, DIM))}
    with pytest.raises(ValueError, match=r"user 'u0004' should be a non-empty 1-D vector but has shape \(2, 16\)"):
        split_users(dataset, flat)
    words = {**vectors, "u0005": "a profile"}
    with pytest.raises(TypeError, match="user 'u0005' should be a vector of numbers"):
        split_users(dataset, words)
    with pytest.raises(ValueError, match="`method` should be one of"):
        split_users(dataset, vectors, method="kmeans")
    with pytest.raises(ValueError, match="`test_fraction`"):
        split_users(dataset, vectors, test_fraction=20)
    with pytest.raises(TypeError, match="`datasets.Dataset`"):
        split_users(dataset.to_list(), vectors)
    with pytest.raises(TypeError, match="`user_embeddings` should map"):
        split_users(dataset, list(vectors.values()))
    with pytest.raises(ValueError, match="no `user_id` column"):
        split_users(dataset.remove_columns(["user_id"]), vectors)


def test_select_test_users_errors():
    ids, vectors, _ = blobs((6, 4), [axis(0), axis(1)])
    with pytest.raises(ValueError, match="lists user 'u0001' twice"):
        select_test_users(ids + ["u0001"], vectors, n_test=2)
    with pytest.raises(ValueError, match="at least 2 users but got 1"):
        select_test_users(ids[:1], vectors, n_test=1)
    with pytest.raises(ValueError, match=r"shape \(10, dim\), but has shape \(9, 16\)"):
        select_test_users(ids, np.stack([vectors[u] for u in ids[:9]]), n_test=2)
    with pytest.raises(ValueError, match="no vector for user 'u0009'"):
        select_test_users(ids, {u: vectors[u] for u in ids[:9]}, n_test=2)
    with pytest.raises(ValueError, match="Asked for 10 test users out of 10 users"):
        select_test_users(ids, vectors, "ood", n_test=10)
    with pytest.raises(ValueError, match="`n_clusters`"):
        select_test_users(ids, vectors, n_test=2, n_clusters=0)


def test_tiny_and_degenerate_inputs():
    # two users, and users sharing one vector, still split (k-means never asks for more clusters than points)
    for method in ("random", "ood"):
        assert len(select_test_users(["a", "b"], {"a": [1.0, 0.0], "b": [0.0, 1.0]}, method, n_test=1)) == 1
        same = {f"u{i}": [1.0, 2.0] for i in range(5)}
        assert len(select_test_users(list(same), same, method, n_test=2)) == 2


@pytest.mark.parametrize("method", ["random", "ood"])
def test_only_the_direction_of_an_embedding_counts(method):
    ids, vectors, _ = blobs((30, 20, 6), NEAR[:2] + [FAR])
    rng = np.random.default_rng(1)
    scaled = {u: v * rng.uniform(0.1, 50.0) for u, v in vectors.items()}
    assert select_test_users(ids, scaled, method, n_test=8) == select_test_users(ids, vectors, method, n_test=8)


def _activity_rows(counts: list[int]) -> Dataset:
    users = [f"u{i}" for i, n in enumerate(counts) for _ in range(n)]
    return Dataset.from_dict(
        {"user_id": users, "task": ["EC"] * len(users), "id": [str(i) for i in range(len(users))]}
    )


def test_kfold_makes_every_user_a_test_user_exactly_once_with_like_shares_of_rows():
    from hyperpeft.data.splits import kfold_split

    counts = [82, 70, 66, 58, 33, 21, 19, 14, 12, 10, 9, 5, 3, 3, 2, 2, 1, 1, 1, 1]  # skewed, as real users are
    rows = _activity_rows(counts)
    tested: list[str] = []
    for fold in range(3):
        train, test = kfold_split(rows, folds=3, fold=fold, seed=4)
        assert not set(train["user_id"]) & set(test["user_id"])
        assert len(train) + len(test) == len(rows)
        tested += sorted(set(test["user_id"]))
    assert sorted(tested) == sorted(set(rows["user_id"]))  # each once
    # dealt by activity: each run of 3 users by activity gives one to each fold, so every fold gets one of the three
    # heaviest users (82, 70 and 66 rows) and one of the next three, and the folds have 7, 7 and 6 users
    folds = [set(kfold_split(rows, folds=3, fold=f, seed=4)[1]["user_id"]) for f in range(3)]
    for run in ({"u0", "u1", "u2"}, {"u3", "u4", "u5"}):
        assert all(len(run & users) == 1 for users in folds)
    assert sorted(len(users) for users in folds) == [6, 7, 7]
    same = kfold_split(rows, folds=3, fold=1, seed=4)[1]["user_id"]
    assert same == kfold_split(rows, folds=3, fold=1, seed=4)[1]["user_id"]  # reproducible
    assert any(
        set(kfold_split(rows, folds=3, fold=1, seed=s)[1]["user_id"]) != set(same) for s in range(5, 10)
    )  # the seed draws the folds


def test_kfold_bad_arguments_are_named():
    from hyperpeft.data.splits import kfold_split

    rows = _activity_rows([2, 2, 2])
    with pytest.raises(ValueError, match="`folds` should be at least 2"):
        kfold_split(rows, folds=1, fold=0)
    with pytest.raises(ValueError, match=r"`fold` should be in 0..2"):
        kfold_split(rows, folds=3, fold=3)
    with pytest.raises(ValueError, match="more than the 3 users"):
        kfold_split(rows, folds=4, fold=0)
    with pytest.raises(TypeError, match="`fold` should be an integer"):
        kfold_split(rows, folds=3, fold="0")


def test_kfold_user_split_settings_are_checked_before_any_data_is_read():
    from hyperpeft.data.sources import DataArguments

    with pytest.raises(ValueError, match="needs `folds`"):
        DataArguments(source="empathic", path="x", user_split={"method": "kfold"})
    with pytest.raises(ValueError, match=r"\['test_users'\] that a 'kfold' split does not take"):
        DataArguments(source="empathic", path="x", user_split={"method": "kfold", "folds": 3, "test_users": 4})
    with pytest.raises(ValueError, match="one of"):
        DataArguments(source="empathic", path="x", user_split={"method": "kfolds"})
    with pytest.raises(ValueError, match=r"`user_split.folds` should be an integer of at least 2 but is '3'"):
        DataArguments(source="empathic", path="x", user_split={"method": "kfold", "folds": "3"})
    with pytest.raises(ValueError, match=r"`user_split.fold` should be an integer in 0..2 but is 3"):
        DataArguments(source="empathic", path="x", user_split={"method": "kfold", "folds": 3, "fold": 3})
    DataArguments(source="empathic", path="x", user_split={"method": "kfold", "folds": 3, "fold": 1, "seed": 2})


def test_user_split_is_refused_for_a_source_with_its_own_test_splits(tmp_path):
    from hyperpeft.data.sources import DataArguments, load_splits

    data = DataArguments(source="synthetic", user_split={"method": "random", "test_users": 2})
    with pytest.raises(ValueError, match="comes with the splits"):
        load_splits(data, tmp_path, "all-minilm-l6-v2", seed=0)
