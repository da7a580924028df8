"""Synthetic users: schema, determinism, disjoint splits, held-out wording and pairs, the LaMP layout, the gap."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from hyperpeft.data import ROW_COLUMNS, TASKS
from hyperpeft.data.synthetic import (
    CHATTY_TAIL,
    CONNECTORS,
    FILM_PLOTS,
    HABITS,
    HELD_OUT,
    LAMP_CODES,
    LAMP_ITEM_KEYS,
    MESSAGE_EVENTS,
    OOD_COMBOS,
    OPENERS,
    REVIEW_PHRASES,
    SEEN_COMBOS,
    SPLITS,
    SYNTHETIC_TASKS,
    TAG_LABELS,
    TRAIN,
    SyntheticConfig,
    answer_for,
    generate_dataset,
    generate_rows,
    infer_traits,
    main,
    oracle_gap,
    write_lamp_layout,
)

FIXTURES = Path(__file__).parent / "fixtures" / "synthetic"
# The configuration the golden fixture was written with (tests/fixtures/synthetic/README.md says how).
FIXTURE_CONFIG = SyntheticConfig(train_users=3, test_random_users=2, test_ood_users=2, history_items=4, queries=1)
SMALL = SyntheticConfig(train_users=12, test_random_users=6, test_ood_users=6, history_items=6, queries=2, seed=3)


@pytest.fixture(scope="module")
def default_rows():
    return generate_rows()


def by_task(rows, task):
    return [row for row in rows if row["task"] == task]


def phrasings(part):
    """Every profile phrase (habits, openers, connectors) of one pool part."""
    habits = {p for traits in HABITS.values() for values in traits for pools in values for p in pools[part]}
    openers = {p for pools in OPENERS.values() for p in pools[part]}
    return habits, openers, set(CONNECTORS[part])


def test_tasks_are_registered_with_short_prompts_that_end_with_the_answer_format():
    metrics = {"synthetic-tagging": "classification", "synthetic-rating": "rating", "synthetic-style": "generation"}
    for name, metric in metrics.items():
        task = TASKS[name]
        assert task.metric == metric
        prompt = task.prompt("An example input.")
        assert prompt.endswith(task.answer_format) and task.answer_format.startswith("Answer with")
        assert len(prompt.split()) < 40
    assert TASKS["synthetic-tagging"].labels == TAG_LABELS and len(TAG_LABELS) == 6
    assert all(label in TASKS["synthetic-tagging"].answer_format for label in TAG_LABELS)
    assert TASKS["synthetic-rating"].labels == ("1", "2", "3", "4", "5")


def test_rows_follow_the_common_schema(default_rows):
    config = SyntheticConfig()
    ids = [row["id"] for rows in default_rows.values() for row in rows]
    assert len(ids) == len(set(ids)) == (180 + 36 + 36) * 3 * 3
    for split, rows in default_rows.items():
        assert len(rows) == config.users(split) * config.queries * len(SYNTHETIC_TASKS)
        profiles = {}
        for row in rows:
            assert tuple(row) == ROW_COLUMNS
            task = TASKS[row["task"]]
            assert row["metric"] == task.metric
            assert task.metric == "generation" or row["output"] in task.labels
            assert len(row["history"]) == config.history_items
            assert all(set(item) == {"input", "output"} for item in row["history"])
            # LaMP-7 items are only a text; the others show what the user saw
            assert all((item["input"] == "") == (row["task"] == "synthetic-style") for item in row["history"])
            assert isinstance(row["profile_text"], str) and row["profile_text"]
            assert profiles.setdefault(row["user_id"], row["profile_text"]) == row["profile_text"]
            assert row["input"] not in {item["input"] for item in row["history"]}


def test_inputs_and_answers_are_short(default_rows):
    rows = [row for split in default_rows.values() for row in split]
    assert max(len(TASKS[r["task"]].prompt(r["input"]).split()) for r in rows) < 40
    assert max(len(r["input"].split()) for r in rows) < 20
    assert max(len(r["output"].split()) for r in rows if r["task"] == "synthetic-style") <= 20
    assert max(len(r["profile_text"].split()) for r in rows) <= 40
    # a terse user's rewrites of one event would repeat, so a user never sees one event twice
    for row in by_task(rows, "synthetic-style"):
        outputs = [item["output"] for item in row["history"]] + [row["output"]]
        assert len(set(outputs)) == len(outputs)


def test_generation_is_deterministic_for_a_seed():
    assert generate_rows(SMALL) == generate_rows(SMALL)
    other = generate_rows(SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    assert other["train"] != generate_rows(SMALL)["train"]
    # each split and task has its own stream: a bigger test split or fewer tasks leave the other users as they were
    bigger = generate_rows(SyntheticConfig(**{**SMALL.__dict__, "test_ood_users": 9}))
    assert bigger["train"] == generate_rows(SMALL)["train"] and len(bigger["test_ood"]) == 9 * 2 * 3
    style_only = generate_rows(SyntheticConfig(**{**SMALL.__dict__, "tasks": ("synthetic-style",)}))
    assert style_only["test_ood"] == by_task(generate_rows(SMALL)["test_ood"], "synthetic-style")


def test_golden_fixture_is_reproduced(tmp_path):
    """The generator writes byte for byte what it wrote when the fixture was made (str seeds are platform-stable)."""
    write_lamp_layout(FIXTURE_CONFIG, tmp_path)
    expected = sorted(p.relative_to(FIXTURES) for p in FIXTURES.rglob("*.json"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.json")) == expected and len(expected) == 18
    for relative in expected:
        assert (tmp_path / relative).read_text() == (FIXTURES / relative).read_text(), relative


def test_no_user_is_on_two_sides(default_rows):
    users = {split: {row["user_id"] for row in rows} for split, rows in default_rows.items()}
    assert len(users["train"]) == 180 * 3 and len(users["test_random"]) == len(users["test_ood"]) == 36 * 3
    assert not users["train"] & users["test_random"]
    assert not users["train"] & users["test_ood"]
    assert not users["test_random"] & users["test_ood"]


def test_trait_pairs_per_split(default_rows):
    """Training and test_random users have the six seen pairs (balanced), test_ood users only the three others."""
    assert set(SEEN_COMBOS) | set(OOD_COMBOS) == {(a, b) for a in range(3) for b in range(3)}
    assert {a for a, _ in OOD_COMBOS} == {b for _, b in OOD_COMBOS} == {0, 1, 2}  # every single value is seen
    for task in SYNTHETIC_TASKS:
        combos = {}
        for split, rows in default_rows.items():
            users = {row["user_id"]: infer_traits(task, row["history"]) for row in by_task(rows, task)}
            combos[split] = Counter(users.values())
        assert combos["train"] == Counter({combo: 30 for combo in SEEN_COMBOS})
        assert combos["test_random"] == Counter({combo: 6 for combo in SEEN_COMBOS})
        assert combos["test_ood"] == Counter({combo: 12 for combo in OOD_COMBOS})


def test_behaviour_rules():
    film = f"A retired cop {FILM_PLOTS[0][TRAIN][0]}."
    assert [answer_for("synthetic-tagging", (v, 0), film) for v in range(3)] == ["action", "violence", "thriller"]
    light = f"A retired cop {FILM_PLOTS[1][TRAIN][0]}."
    assert [answer_for("synthetic-tagging", (0, v), light) for v in range(3)] == ["comedy", "romance", "feel-good"]
    flawed, good = (f"The kettle {REVIEW_PHRASES[polarity][TRAIN][0]}." for polarity in (0, 1))
    # trait 0 scores a flawed product (rock bottom, docked, middling), trait 1 a good one (reserved, warm, thrilled)
    assert [answer_for("synthetic-rating", (v, 1), text) for v in range(3) for text in (flawed, good)] == [
        "1", "4", "2", "4", "3", "4"]  # fmt: skip
    assert [answer_for("synthetic-rating", (1, v), good) for v in range(3)] == ["3", "4", "5"]
    assert [answer_for("synthetic-rating", (v, 2), flawed) for v in range(3)] == ["1", "2", "3"]
    message = "The bus was late this morning, so plans have changed."
    assert answer_for("synthetic-style", (0, 0), message) == "OMG guess what, the bus was late this morning!!"
    deadpan = "fyi the bus was late this morning, so plans have changed i guess"
    assert answer_for("synthetic-style", (1, 1), message) == deadpan
    assert answer_for("synthetic-style", (2, 2), message).endswith(
        f"so plans have changed, {CHATTY_TAIL} :) take care"
    )
    with pytest.raises(ValueError, match="not an input"):
        answer_for("synthetic-tagging", (0, 0), "A film nobody generated.")
    with pytest.raises(ValueError, match="`task`"):
        answer_for("LaMP-2M", (0, 0), film)


def test_test_users_see_only_held_out_wording(default_rows):
    train_habits, train_openers, train_connectors = phrasings(TRAIN)
    held_habits, held_openers, held_connectors = phrasings(HELD_OUT)
    assert not (train_habits | train_openers) & (held_habits | held_openers)
    train_inputs = {row["input"] for row in default_rows["train"]}
    train_inputs |= {item["input"] for row in default_rows["train"] for item in row["history"]}
    for split, rows in default_rows.items():
        habits, openers, connectors = (train_habits, train_openers, train_connectors) if split == "train" else (
            held_habits, held_openers, held_connectors)  # fmt: skip
        other = (held_habits | held_openers) if split == "train" else (train_habits | train_openers)
        for row in rows:
            text = row["profile_text"]
            assert sum(habit in text for habit in habits) == 2, text
            assert any(text.startswith(opener) for opener in openers) and any(c in text for c in connectors)
            assert not any(phrase in text for phrase in other), text
            if split != "train":
                inputs = [row["input"]] + [item["input"] for item in row["history"] if item["input"]]
                assert not set(inputs) & train_inputs
        if split != "train":  # held-out messages: the events of the style task are new too
            events = {e.lower() for e in MESSAGE_EVENTS[TRAIN]}
            assert not any(row["input"].lower().startswith(events_) for row in rows for events_ in events)


def test_profiles_describe_habits_without_quoting_answers(default_rows):
    rows = [row for split in default_rows.values() for row in split]
    for row in by_task(rows, "synthetic-tagging"):
        assert not any(re.search(rf"\b{re.escape(label)}\b", row["profile_text"]) for label in TAG_LABELS)
    assert not any(re.search(r"\d", row["profile_text"]) for row in by_task(rows, "synthetic-rating"))
    for row in by_task(rows, "synthetic-style"):
        assert not re.search(r"OMG|fyi|guess what|take care|:\)|what a week", row["profile_text"])
    # several phrasings per habit are in use
    assert len({row["profile_text"] for row in default_rows["train"]}) > 400


def test_test_inputs_can_come_from_the_train_pools():
    config = SyntheticConfig(**{**SMALL.__dict__, "held_out_inputs": False})
    rows = generate_rows(config)
    train_habits, _, _ = phrasings(TRAIN)
    held_habits, _, _ = phrasings(HELD_OUT)
    tagging = by_task(rows["test_ood"], "synthetic-tagging")
    assert all(any(plot in row["input"] for plot in FILM_PLOTS[0][TRAIN] + FILM_PLOTS[1][TRAIN]) for row in tagging)
    assert all(sum(h in row["profile_text"] for h in held_habits) == 2 for row in rows["test_ood"])
    assert not any(h in row["profile_text"] for row in rows["test_ood"] for h in train_habits)


def test_oracle_gap_is_clear_on_every_split(default_rows):
    for split, rows in default_rows.items():
        gap = oracle_gap(rows)
        assert set(gap) == set(SYNTHETIC_TASKS)
        tagging, rating, style = (gap[task] for task in SYNTHETIC_TASKS)
        # the oracle reads the traits off the history and is right every time: the traits show in the history
        assert tagging["oracle"] == 1.0 and rating["oracle"] == 0.0 and style["oracle"] == 1.0, split
        assert tagging["non_personalized"] < 0.45 and tagging["gap"] > 0.5, split
        assert rating["non_personalized"] > 0.45 and rating["gap"] > 0.45, split
        assert style["non_personalized"] < 0.8 and style["gap"] > 0.2, split
        assert tagging["rows"] == rating["rows"] == style["rows"] == len(rows) // 3


def test_oracle_gap_on_hand_made_rows():
    """The non-personalized answer is the best label per input class, fitted on the rows themselves."""
    fast = [f"A young pilot {plot}." for plot in FILM_PLOTS[0][TRAIN][:3]]
    seen = [f"A shy librarian {FILM_PLOTS[genre][TRAIN][4]}." for genre in (0, 1)]
    history = [{"input": seen[0], "output": "violence"}, {"input": seen[1], "output": "romance"}]
    plain = [{"input": seen[0], "output": "action"}]
    rows = [
        {"task": "synthetic-tagging", "input": fast[0], "output": "violence", "history": history},
        {"task": "synthetic-tagging", "input": fast[1], "output": "violence", "history": history},
        {"task": "synthetic-tagging", "input": fast[2], "output": "action", "history": plain},
        {"task": "LaMP-2M", "input": "ignored", "output": "x", "history": []},
    ]  # fmt: skip
    gap = oracle_gap(rows)
    assert list(gap) == ["synthetic-tagging"]
    assert gap["synthetic-tagging"]["non_personalized"] == pytest.approx(2 / 3)
    assert gap["synthetic-tagging"]["oracle"] == 1.0 and gap["synthetic-tagging"]["rows"] == 3
    review = f"The kettle {REVIEW_PHRASES[0][TRAIN][0]}."  # a flawed product
    rating = [{"task": "synthetic-rating", "input": review, "output": o, "history": []} for o in ("2", "3", "5")]
    assert oracle_gap(rating)["synthetic-rating"]["non_personalized"] == pytest.approx(1.0)  # median 3: |1|+0+|2|


def test_write_lamp_layout_uses_lamp_keys_and_reads_back(tmp_path):
    rows = generate_rows(SMALL)
    folders = write_lamp_layout(rows, tmp_path)
    assert set(folders) == set(SYNTHETIC_TASKS)
    for task, folder in folders.items():
        input_key, output_key = LAMP_ITEM_KEYS[task]
        for split in SPLITS:
            questions = json.loads((folder / f"{split}_questions.json").read_text())
            outputs = json.loads((folder / f"{split}_outputs.json").read_text())
            assert outputs["task"] == task
            expected = by_task(rows[split], task)
            read_back = []
            for question, gold in zip(questions, outputs["golds"], strict=True):
                assert set(question) == {"id", "input", "profile", "user_id", "profile_text"}
                assert gold["id"] == question["id"]
                keys = {"id", output_key} | ({input_key} if input_key else set())
                assert all(set(item) == keys for item in question["profile"])
                history = [
                    {"input": item.get(input_key, ""), "output": item[output_key]} for item in question["profile"]
                ]
                read_back.append({
                    "id": question["id"], "user_id": question["user_id"], "task": task, "metric": TASKS[task].metric,
                    "input": question["input"], "output": gold["output"], "history": history,
                    "profile_text": question["profile_text"],
                })  # fmt: skip
            assert read_back == expected


@pytest.mark.skipif(importlib.util.find_spec("hyperpeft.data.loaders") is None, reason="the LaMP loader is absent")
def test_round_trip_through_load_lamp(tmp_path):
    from hyperpeft.data.loaders import load_lamp

    rows = generate_rows(SMALL)
    folders = write_lamp_layout(SMALL, tmp_path)
    for task, folder in folders.items():
        for split in SPLITS:
            loaded = load_lamp(folder, task=LAMP_CODES[task], split=split, task_name=task)
            assert loaded.to_list() == by_task(rows[split], task), (task, split)


def test_generate_dataset_has_the_schema_columns():
    from hyperpeft.data.loaders import ROW_FEATURES

    dataset = generate_dataset(SMALL)
    assert list(dataset) == list(SPLITS)
    assert all(
        tuple(split.column_names) == ROW_COLUMNS and split.features == ROW_FEATURES for split in dataset.values()
    )
    assert dataset["train"].to_list() == generate_rows(SMALL)["train"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_users": 0}, "`train_users` should be an int >= 1"),
        ({"queries": 2.5}, "`queries`"),
        ({"seed": True}, "`seed`"),
        ({"tasks": ("synthetic-tagging", "LaMP-2M")}, "`tasks`"),
        ({"tasks": ()}, "`tasks`"),
        ({"history_items": 40}, "smallest pool"),
    ],
)
def test_config_refuses_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SyntheticConfig(**kwargs)


def test_config_can_pick_tasks():
    rows = generate_rows(
        SyntheticConfig(train_users=2, test_random_users=1, test_ood_users=1, tasks=["synthetic-style"])
    )
    assert {row["task"] for split in rows.values() for row in split} == {"synthetic-style"}
    with pytest.raises(TypeError, match="SyntheticConfig"):
        generate_rows({"train_users": 2})


def test_write_lamp_layout_refuses_bad_rows(tmp_path):
    rows = generate_rows(SyntheticConfig(train_users=2, test_random_users=1, test_ood_users=1, queries=1))
    broken = {"train": [dict(row) for row in rows["train"]]}
    del broken["train"][1]["profile_text"]
    with pytest.raises(ValueError, match=r"Row 1 of split 'train' lacks the columns \['profile_text'\]"):
        write_lamp_layout(broken, tmp_path)
    foreign = {"test_ood": [{**rows["test_ood"][0], "task": "LaMP-2M"}]}
    with pytest.raises(ValueError, match="Row 0 of split 'test_ood' has task 'LaMP-2M'"):
        write_lamp_layout(foreign, tmp_path)
    style = next(row for row in rows["train"] if row["task"] == "synthetic-style")
    with pytest.raises(ValueError, match="only a text"):
        write_lamp_layout({"train": [{**style, "history": [{"input": "seen", "output": "x"}]}]}, tmp_path)
    with pytest.raises(ValueError, match="`history` should be a list"):
        write_lamp_layout({"train": [{**style, "history": [{"output": "x"}]}]}, tmp_path)
    with pytest.raises(ValueError, match="Expected splits"):
        write_lamp_layout({"dev": rows["train"]}, tmp_path)
    with pytest.raises(TypeError, match="rows_or_config"):
        write_lamp_layout(rows["train"], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written before the rows were checked


def test_command_line(tmp_path, capsys):
    main(["--report"])
    table = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| test_") or line.startswith("| train")
    ]
    assert len(table) == 9
    main(["--out", str(tmp_path)])
    assert {p.name for p in tmp_path.iterdir()} == set(SYNTHETIC_TASKS)
    with pytest.raises(SystemExit):
        main([])


@pytest.mark.integration
def test_held_out_habit_phrasings_are_nearest_to_their_own_habit(minilm_encoder):
    """Every held-out phrasing is closest (MiniLM cosine) to the mean of its own habit's training phrasings, so the
    profile embedding of a test user can carry the habit at all."""
    from hyperpeft.data.synthetic import HABITS

    def embed(phrases):
        vectors = minilm_encoder.encode([f"This person {phrase}." for phrase in phrases])
        return torch.nn.functional.normalize(vectors, dim=-1)

    misplaced = []
    for task, traits in HABITS.items():
        for trait, values in enumerate(traits):
            centroids = torch.nn.functional.normalize(torch.stack([embed(v[0]).mean(0) for v in values]), dim=-1)
            for value, (_, held_out) in enumerate(values):
                nearest = (embed(held_out) @ centroids.T).argmax(-1)
                misplaced += [(task, trait, p) for p, n in zip(held_out, nearest.tolist()) if n != value]
    assert misplaced == [], misplaced


@pytest.mark.integration
def test_traits_are_linearly_readable_from_test_users_profiles(minilm_encoder, default_rows):
    """A linear probe fitted on training users' profile embeddings (z-scored with their statistics, as the
    hypernetwork's input is) reads both traits of every task off test users' embeddings, on unseen trait pairs too.

    Training users show only six of the nine pairs, so a probe can lean on one trait to guess the other; an earlier set
    of phrasings let it, and on `test_ood` it read the fast-paced-film habit at chance (0.33). No profile-reading
    method can learn a habit that its input does not carry.
    """
    from sklearn.linear_model import LogisticRegression

    for task in SYNTHETIC_TASKS:
        users = {
            split: list({row["user_id"]: row for row in by_task(rows, task)}.values())
            for split, rows in default_rows.items()
        }
        embeddings = {split: minilm_encoder.encode([u["profile_text"] for u in us]) for split, us in users.items()}
        traits = {split: [infer_traits(task, u["history"]) for u in us] for split, us in users.items()}
        mean, std = embeddings["train"].mean(0), embeddings["train"].std(0).clamp_min(1e-6)
        features = {split: ((e - mean) / std).numpy() for split, e in embeddings.items()}
        for trait in (0, 1):
            probe = LogisticRegression(C=0.1, max_iter=3000)
            probe.fit(features["train"], [t[trait] for t in traits["train"]])
            for split in ("test_random", "test_ood"):
                accuracy = probe.score(features[split], [t[trait] for t in traits[split]])
                assert accuracy >= 0.9, (task, trait, split, accuracy)
