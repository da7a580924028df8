"""Loaders: every source's official layout read into the common row schema, and every kind of bad input refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import concatenate_datasets

from hyperpeft.data import ROW_COLUMNS, TASKS, Task, register_task
from hyperpeft.data.loaders import (
    ROW_FEATURES,
    load_empathic_conversations,
    load_lamp,
    load_longlamp,
    load_oppu,
    load_reddit_style,
    load_rows,
)

FIXTURES = Path(__file__).parent / "fixtures" / "loaders"
LAMP = FIXTURES / "lamp"
REAL_EC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "empathic_conversations"

# The canonical history mapping of each LaMP task: (profile-item key of the input, key of the output).
LAMP_MAPPING = {
    "1": ("abstract", "title"),
    "2N": ("text", "category"),
    "2M": ("description", "tag"),
    "3": ("text", "score"),
    "4": ("text", "title"),
    "5": ("abstract", "title"),
    "7": (None, "text"),
}


def read(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def copy_lamp(tmp_path: Path, task: str) -> Path:
    return Path(shutil.copytree(LAMP / f"LaMP_{task}", tmp_path / f"LaMP_{task}"))


def assert_schema(dataset) -> None:
    assert tuple(dataset.column_names) == ROW_COLUMNS
    assert dataset.features == ROW_FEATURES
    for row in dataset:
        assert row["metric"] == TASKS[row["task"]].metric
        assert all(set(item) == {"input", "output"} for item in row["history"])


def test_row_features_follow_the_schema():
    assert tuple(ROW_FEATURES) == ROW_COLUMNS


# --- LaMP ---


@pytest.mark.parametrize("task", list(LAMP_MAPPING))
def test_lamp_rows_follow_the_official_files(task):
    folder = LAMP / f"LaMP_{task}"
    questions = read(folder / "train_questions.json")
    golds = {gold["id"]: str(gold["output"]) for gold in read(folder / "train_outputs.json")["golds"]}
    rows = load_lamp(folder, task)
    assert_schema(rows)
    assert len(rows) == len(questions)
    input_key, output_key = LAMP_MAPPING[task]
    for row, question in zip(rows, questions):
        assert row["id"] == question["id"]
        assert row["task"] == f"LaMP-{task}"
        assert row["input"] == question["input"]
        assert row["output"] == golds[question["id"]]
        assert row["user_id"] == question.get("user_id", question["id"])
        assert row["profile_text"] == question.get("profile_text")
        expected = [
            {"input": "" if input_key is None else item[input_key], "output": str(item[output_key])}
            for item in question["profile"]
        ]
        assert row["history"] == expected


def test_lamp_values_spot_checks():
    rows = load_lamp(LAMP / "LaMP_2M", "2M")
    assert rows[0]["user_id"] == rows[1]["user_id"] == "film-fan-7"  # the optional user_id key groups two questions
    assert rows[2]["user_id"] == "2203"  # without it, each question is its own user
    assert rows[0]["profile_text"].startswith("Tags slow films")
    assert rows[0]["history"][1] == {
        "input": "An old fisherman tells his grandson about the war.",
        "output": "classic",
    }
    rating = load_lamp(LAMP / "LaMP_3", "3")
    assert rating["output"] == ["3", "1"]  # a gold written as the number 1 in the file is the label "1"
    assert [item["output"] for item in rating[0]["history"]] == ["5", "2"]
    tweets = load_lamp(LAMP / "LaMP_7", "LaMP-7")  # the "LaMP-" prefix is accepted
    assert tweets[0]["history"][0] == {"input": "", "output": "coffee first, people later"}


def test_lamp_split_without_golds(tmp_path):
    with pytest.raises(FileNotFoundError, match="test_outputs.json does not exist.*require_outputs=False"):
        load_lamp(LAMP / "LaMP_7", "7", split="test")
    rows = load_lamp(LAMP / "LaMP_7", "7", split="test", require_outputs=False)
    assert rows["output"] == [""] and rows["id"] == ["7101"]
    with pytest.raises(FileNotFoundError, match="dev_questions.json does not exist"):
        load_lamp(LAMP / "LaMP_7", "7", split="dev")


def test_lamp_task_name_override():
    own = register_task(
        Task(
            "test-loaders-movies",
            "classification",
            "Tag the movie.",
            "Answer with one tag.",
            "tagging movies",
            TASKS["LaMP-2M"].labels,
        )
    )
    rows = load_lamp(LAMP / "LaMP_2M", "2M", task_name=own.name)
    assert set(rows["task"]) == {"test-loaders-movies"} and set(rows["metric"]) == {"classification"}
    with pytest.raises(ValueError, match=r"Unknown task 'no-such-task'; known tasks: \[.*'LaMP-2M'"):
        load_lamp(LAMP / "LaMP_2M", "2M", task_name="no-such-task")


@pytest.mark.parametrize(
    "task, message",
    [
        ("6", r"Unknown LaMP task '6'; supported: \['1', '2N', '2M', '3', '4', '5', '7'\]"),
        ("2", "ambiguous: use '2N'"),
        ("LaMP-9", "Unknown LaMP task 'LaMP-9'"),
    ],
)
def test_lamp_unknown_task(task, message):
    with pytest.raises(ValueError, match=message):
        load_lamp(LAMP / "LaMP_1", task)


def test_lamp_invalid_json_names_file_and_position(tmp_path):
    folder = copy_lamp(tmp_path, "1")
    text = (folder / "train_questions.json").read_text().splitlines()
    text[3] = text[3] + ","  # a trailing comma on line 4
    (folder / "train_questions.json").write_text("\n".join(text))
    with pytest.raises(ValueError, match=r"train_questions.json is not valid JSON: .* at line \d+, column \d+"):
        load_lamp(folder, "1")


def test_lamp_missing_question_key(tmp_path):
    folder = copy_lamp(tmp_path, "4")
    questions = read(folder / "train_questions.json")
    del questions[1]["input"]
    write(folder / "train_questions.json", questions)
    with pytest.raises(
        ValueError,
        match=r"train_questions.json: question 1 \(id '4002'\) has no key 'input'; "
        r"expected the keys \['id', 'input', 'profile'\]",
    ):
        load_lamp(folder, "4")


def test_lamp_missing_profile_item_key(tmp_path):
    folder = copy_lamp(tmp_path, "2M")
    questions = read(folder / "train_questions.json")
    del questions[0]["profile"][1]["tag"]
    write(folder / "train_questions.json", questions)
    with pytest.raises(
        ValueError,
        match=r"question 0 \(id '2201'\), profile item 1 has no key 'tag'; expected the keys \['description', 'tag'\]",
    ):
        load_lamp(folder, "2M")


def test_lamp_question_without_gold_and_gold_without_question(tmp_path):
    folder = copy_lamp(tmp_path, "5")
    outputs = read(folder / "train_outputs.json")
    write(folder / "train_outputs.json", {**outputs, "golds": outputs["golds"][:1]})
    with pytest.raises(ValueError, match=r"question 1 \(id '5002'\) has no gold in .*train_outputs.json"):
        load_lamp(folder, "5")
    write(folder / "train_outputs.json", {**outputs, "golds": outputs["golds"] + [{"id": "5999", "output": "x"}]})
    with pytest.raises(ValueError, match=r"train_outputs.json has 1 golds without a question .*\['5999'\]"):
        load_lamp(folder, "5")


def test_lamp_empty_profile_names_the_id(tmp_path):
    folder = copy_lamp(tmp_path, "7")
    questions = read(folder / "train_questions.json")
    questions[1]["profile"] = []
    write(folder / "train_questions.json", questions)
    with pytest.raises(ValueError, match=r"question 1 \(id '7002'\) has an empty `profile`"):
        load_lamp(folder, "7")


def test_lamp_repeated_ids_and_golds(tmp_path):
    folder = copy_lamp(tmp_path, "1")
    outputs = read(folder / "train_outputs.json")
    write(folder / "train_outputs.json", {**outputs, "golds": outputs["golds"] + outputs["golds"][:1]})
    with pytest.raises(ValueError, match=r"gold 2: the id '1001' has more than one gold"):
        load_lamp(folder, "1")
    write(folder / "train_outputs.json", outputs)
    questions = read(folder / "train_questions.json")
    write(folder / "train_questions.json", questions + questions[:1])
    with pytest.raises(ValueError, match=r"ids must be unique but 1 repeat, e.g. \['1001'\]"):
        load_lamp(folder, "1")


def test_lamp_gold_outside_the_label_set(tmp_path):
    folder = copy_lamp(tmp_path, "2N")
    outputs = read(folder / "train_outputs.json")
    outputs["golds"][0]["output"] = "weather"
    write(folder / "train_outputs.json", outputs)
    with pytest.raises(ValueError, match=r"the gold output 'weather' is not a label of the task 'LaMP-2N'"):
        load_lamp(folder, "2N")


def test_lamp_outputs_of_another_task(tmp_path):
    folder = copy_lamp(tmp_path, "4")
    write(folder / "train_outputs.json", {**read(folder / "train_outputs.json"), "task": "LaMP_5"})
    with pytest.raises(ValueError, match=r"holds the golds of 'LaMP_5' but the task asked for is LaMP-4"):
        load_lamp(folder, "4")


def test_lamp_wrong_value_type(tmp_path):
    folder = copy_lamp(tmp_path, "4")
    questions = read(folder / "train_questions.json")
    questions[0]["input"] = ["not", "a", "string"]
    write(folder / "train_questions.json", questions)
    with pytest.raises(ValueError, match=r"question 0 \(id '4001'\): `input` should be a string but is \['not'"):
        load_lamp(folder, "4")


# --- OPPU ---


def test_oppu_rows():
    path = FIXTURES / "oppu" / "movie_tagging_user_history.json"
    rows = load_oppu(path, "movie_tagging")
    assert_schema(rows)
    assert rows["id"] == ["9001", "9002", "9003"]
    assert rows["user_id"] == ["oppu-u1", "oppu-u1", "17"]  # a numeric user id becomes a string
    assert rows["output"] == ["dystopia", "classic", "comedy"]
    assert (
        rows[0]["history"]
        == rows[1]["history"]
        == [
            {"input": "A detective solves a murder on a night train.", "output": "classic"},
            {"input": "A hacker finds out the city is a simulation.", "output": "dystopia"},
        ]
    )
    assert load_oppu(path, "2M").to_list() == rows.to_list()  # the LaMP code and OPPU's name are the same task


def test_oppu_errors(tmp_path):
    users = read(FIXTURES / "oppu" / "movie_tagging_user_history.json")
    broken = [dict(users[0], query=[{"id": "9001", "input": "x"}])]
    with pytest.raises(ValueError, match=r"user 0 \(user_id 'oppu-u1'\), query 0 has no key 'gold'"):
        load_oppu(write(tmp_path / "a.json", broken), "2M")
    with pytest.raises(ValueError, match=r"user 0 \(user_id 'oppu-u1'\) has an empty `profile`"):
        load_oppu(write(tmp_path / "b.json", [dict(users[0], profile=[])]), "2M")
    with pytest.raises(ValueError, match=r"user 0 has no key 'user_id'"):
        load_oppu(write(tmp_path / "c.json", [{k: v for k, v in users[0].items() if k != "user_id"}]), "2M")
    with pytest.raises(ValueError, match="Unknown LaMP task 'movies'"):
        load_oppu(tmp_path / "c.json", "movies")


# --- LongLaMP ---


def test_longlamp_abstract_and_topic():
    rows = load_longlamp(FIXTURES / "longlamp" / "abstract_generation_user.jsonl", "abstract")
    assert_schema(rows)
    assert rows["task"] == ["LongLaMP-abstract"] * 2
    assert rows["user_id"] == ["R. Okafor", "LongLaMP-abstract-user-1"]  # `name`, else one user per row
    assert rows["id"] == ["LongLaMP-abstract-0", "LongLaMP-abstract-1"]
    assert rows[0]["history"][0] == {
        "input": "Low-rank updates in practice",
        "output": "We study rank-8 updates on seven tasks and find them close to full fine-tuning.",
    }
    topic = load_longlamp(FIXTURES / "longlamp" / "topic_writing_user.jsonl", "topic_writing_user")
    assert topic["user_id"] == ["t_walker", "moss_and_stone"]
    assert topic[1]["history"] == [
        {"input": "Ferns under an oak", "output": "Ferns did well under the oak once I stopped raking the leaves."}
    ]
    assert topic[0]["output"].startswith("I started baking")


def test_longlamp_review_jsonl_parquet_and_json_agree(tmp_path):
    jsonl = load_longlamp(FIXTURES / "longlamp" / "product_review_user.jsonl", "review")
    parquet = load_longlamp(FIXTURES / "longlamp" / "product_review_user.parquet", "review")
    assert_schema(parquet)
    assert parquet.to_list() == jsonl.to_list()
    assert jsonl["user_id"] == ["A1REVIEWER", "A2REVIEWER"]
    assert jsonl[0]["history"] == [
        {"input": "Great lamp (rated 5 out of 5)", "output": "Bright, warm light and easy to set up."},
        {"input": "Too small (rated 2 out of 5)", "output": "The bag is much smaller than in the photos."},
    ]
    lines = (FIXTURES / "longlamp" / "product_review_user.jsonl").read_text().splitlines()
    as_json = write(tmp_path / "reviews.json", [json.loads(line) for line in lines])
    assert load_longlamp(as_json, "review").to_list() == jsonl.to_list()


def test_longlamp_errors(tmp_path):
    lines = (FIXTURES / "longlamp" / "topic_writing_user.jsonl").read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 is not valid JSON: .* at column \d+"):
        load_longlamp(bad, "topic")
    row = json.loads(lines[0])
    row["profile"][1] = {"summary": "no content here"}
    (tmp_path / "item.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(
        ValueError,
        match=r"item.jsonl: row 0, profile item 1 has no key 'content'; expected the keys \['summary', 'content'\]",
    ):
        load_longlamp(tmp_path / "item.jsonl", "topic")
    (tmp_path / "empty.jsonl").write_text(json.dumps(dict(row, profile=[])) + "\n")
    with pytest.raises(ValueError, match=r"row 0 \(id 'LongLaMP-topic-0'\) has an empty `profile`"):
        load_longlamp(tmp_path / "empty.jsonl", "topic")
    (tmp_path / "nooutput.jsonl").write_text(json.dumps({k: v for k, v in row.items() if k != "output"}) + "\n")
    with pytest.raises(
        ValueError, match=r"row 0 has no key 'output'; expected the keys \['input', 'output', 'profile'\]"
    ):
        load_longlamp(tmp_path / "nooutput.jsonl", "topic")
    with pytest.raises(ValueError, match=r"Unknown LongLaMP task 'email'"):
        load_longlamp(FIXTURES / "longlamp" / "topic_writing_user.jsonl", "email")
    with pytest.raises(ValueError, match=r"should end with one of \['.jsonl', '.json', '.parquet'\]"):
        load_longlamp(tmp_path / "rows.csv", "topic")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="broken.parquet could not be read as Parquet"):
        load_longlamp(tmp_path / "broken.parquet", "review")


# --- Empathic Conversations ---


def test_empathic_conversations_fixture():
    rows = load_empathic_conversations(FIXTURES / "empathic_conversations")
    assert_schema(rows)
    assert rows["id"] == [f"EC-{i}" for i in range(1, 7)]
    assert rows["user_id"] == ["101", "101", "101", "102", "103", "103"]
    assert set(rows["task"]) == {"EC"}
    # the article joined by id; the essay that quotes the article keeps its quotes (TSV quoting undone)
    assert rows[1]["input"].startswith("Aid promised to island, again")
    assert rows[1]["output"].startswith('The article says "help is coming soon" but')
    # history: the speaker's other essays only, articles cut to 300 characters
    assert [item["output"][:20] for item in rows[0]["history"]] == [rows[1]["output"][:20], rows[2]["output"][:20]]
    assert rows[3]["history"] == []  # a speaker with one essay has no history, but a profile
    flood = rows[1]["history"][0]["input"]
    assert len(flood) <= 300 and flood.endswith("…") and flood.startswith("River floods village")
    assert rows[0]["history"][1]["input"] == rows[2]["input"]  # short articles are kept whole
    # the profile in words: decoded codes, income and the questionnaire scores with their names
    profile = rows[0]["profile_text"]
    for words in (
        "Gender: female.",
        "Age: 37 years old.",
        "Education: a four-year bachelor's degree.",
        "Race or ethnicity: Black or African American.",
        "Yearly income: $40,000.",
        "openness 5.5",
        "conscientiousness 7",
        "extraversion 1",
        "empathic concern 5",
        "perspective taking 4.86",
    ):
        assert words in profile
    assert rows[3]["profile_text"].startswith(
        "Gender: male. Age: 29 years old. Education: some college but no degree."
    )
    assert rows[4]["profile_text"] is None  # everything "unknown": no profile rather than an empty one
    for row in rows:
        assert row["output"] not in [item["output"] for item in row["history"]]


def test_empathic_conversations_errors(tmp_path):
    folder = Path(shutil.copytree(FIXTURES / "empathic_conversations", tmp_path / "ec"))
    articles = folder / "articles_adobe_AMT.csv"
    original = articles.read_text()
    articles.write_text("\n".join(line for line in original.splitlines() if not line.startswith("30,")) + "\n")
    with pytest.raises(
        ValueError, match=r"row 2 \(essay_id '3'\): its article_id '30' is not in .*articles_adobe_AMT.csv"
    ):
        load_empathic_conversations(folder)
    articles.write_text(original)
    essays = folder / "WASSA23_essay_level_with_labels_train.tsv"
    lines = essays.read_text().splitlines()
    essays.write_text("\n".join(line.replace("\tspeaker_id\t", "\tspeaker\t") for line in lines) + "\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['speaker_id'\]"):
        load_empathic_conversations(folder)
    with pytest.raises(FileNotFoundError, match="nothing.tsv does not exist"):
        load_empathic_conversations(folder, essays_file="nothing.tsv")


@pytest.mark.skipif(not REAL_EC.is_dir(), reason="../shared/data/empathic_conversations is not present")
def test_empathic_conversations_real_data():
    rows = load_empathic_conversations(REAL_EC)
    assert_schema(rows)
    assert len(rows) == 792
    assert len(set(rows["user_id"])) == 59
    essays_per_user: dict[str, int] = {}
    for user in rows["user_id"]:
        essays_per_user[user] = essays_per_user.get(user, 0) + 1
    for row in rows:
        assert row["output"] not in {item["output"] for item in row["history"]}  # no leakage of the answer
        assert len(row["history"]) == essays_per_user[row["user_id"]] - 1  # ... and every other essay is there
        assert len(row["input"]) > 100 and all(len(item["input"]) <= 300 for item in row["history"])
    assert sum(row["profile_text"] is None for row in rows) == 13  # the two speakers whose profile is "unknown"


# --- Reddit-style rows, own rows, and mixing sources ---


def test_reddit_style():
    rows = load_reddit_style(FIXTURES / "reddit" / "personal_reddit.jsonl")
    assert_schema(rows)
    assert rows["id"] == ["r1", "r2", "reddit-2"]
    assert rows["user_id"] == ["redditor-a", "redditor-a", "redditor-b"]
    assert rows[0]["history"] == [
        {"input": "How do you sleep during the day?", "output": "Blackout curtains and earplugs, every time."},
        {"input": "", "output": "Night shifts build character."},
    ]
    assert rows[1]["history"] == [] and rows[1]["profile_text"].startswith("A nurse")


def test_reddit_style_errors(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"user_id": "u", "input": "hi", "output": "hey"}) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl: row 0 has no key 'profile_text'"):
        load_reddit_style(path)
    path.write_text(json.dumps({"user_id": "u", "profile_text": None, "input": "hi", "output": "hey"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0 has neither a history nor a profile_text"):
        load_reddit_style(path)
    path.write_text(json.dumps({"user_id": "u", "profile_text": "p", "input": "hi", "output": "hey", "history": [3]}))
    with pytest.raises(ValueError, match=r"row 0, history item 0 should be a JSON object with the keys \['output'\]"):
        load_reddit_style(path)


def test_load_rows():
    own = [
        {"id": "q1", "user_id": "ann", "task": "reddit", "input": "Hi!", "output": "Hey :)", "history": ["yo"]},
        {
            "id": "q2",
            "user_id": "bob",
            "task": "LaMP-3",
            "input": "review: fine",
            "output": "4",
            "profile_text": "Kind.",
        },
    ]
    rows = load_rows(own)
    assert_schema(rows)
    assert rows["metric"] == ["generation", "rating"]
    assert rows[0]["history"] == [{"input": "", "output": "yo"}] and rows[1]["history"] == []
    with pytest.raises(ValueError, match=r"rows: row 0 has keys outside the row schema \['profile'\]"):
        load_rows([dict(own[0], profile="typo for profile_text")])
    with pytest.raises(ValueError, match=r"`metric` is 'generation' but the task 'LaMP-3' is scored as 'rating'"):
        load_rows([dict(own[1], metric="generation")])
    with pytest.raises(ValueError, match=r"the gold output '4.5' is not a label of the task 'LaMP-3'"):
        load_rows([dict(own[1], output="4.5")])
    with pytest.raises(ValueError, match=r"row 0 has the task 'reddit' but `task='EC'` was asked for"):
        load_rows(own[:1], task="EC")
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        load_rows([dict(own[0], task="nope")])
    with pytest.raises(TypeError, match="should be a file path or an iterable of row dicts but is int"):
        load_rows(3)


def test_sources_concatenate():
    parts = [
        load_lamp(LAMP / "LaMP_2M", "2M"),
        load_longlamp(FIXTURES / "longlamp" / "product_review_user.parquet", "review"),
        load_empathic_conversations(FIXTURES / "empathic_conversations"),
        load_reddit_style(FIXTURES / "reddit" / "personal_reddit.jsonl"),
    ]
    mixed = concatenate_datasets(parts)
    assert_schema(mixed)
    assert len(mixed) == sum(len(part) for part in parts)
    assert len(set(mixed["id"])) == len(mixed)
    assert mixed["profile_text"][: len(parts[0])] == parts[0]["profile_text"]
