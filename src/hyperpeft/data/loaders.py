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

import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.utils import logging

from .tasks import GENERATION, ROW_COLUMNS, TASKS, get_task

try:
    import pandas as pd
    from datasets import Dataset, Features, List, Value
except ImportError as error:  # `datasets` is an optional extra
    raise ImportError(
        "hyperpeft.data.loaders needs the `datasets` package: `pip install 'hyperpeft[training]'`."
    ) from error

logger = logging.get_logger(__name__)

PathLike = str | os.PathLike

_COLUMN_FEATURES = {
    "id": Value("string"),
    "user_id": Value("string"),
    "task": Value("string"),
    "metric": Value("string"),
    "input": Value("string"),
    "output": Value("string"),
    "history": List({"input": Value("string"), "output": Value("string")}),
    "profile_text": Value("string"),  # Arrow strings are nullable: None when the data has no profile
}
# Built from ROW_COLUMNS so that the column order is the schema's and a new column cannot be forgotten here.
ROW_FEATURES = Features({name: _COLUMN_FEATURES[name] for name in ROW_COLUMNS})


# --- Small helpers shared by the loaders ---


def _text(value: Any, where: str, key: str) -> str:
    """`value` as a string: strings as they are, numbers written plainly (5.0 -> "5"), anything else refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: `{key}` should be a string but is {value!r} ({type(value).__name__}).")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _require(record: Any, keys: Iterable[str], where: str, expected: Iterable[str], optional: Iterable[str] = ()):
    """Refuse a record that is not a JSON object or lacks one of `keys`, naming what a record should hold."""
    expected, optional = list(expected), list(optional)
    described = f"{expected}" + (f" (optional: {optional})" if optional else "")
    if not isinstance(record, Mapping):
        raise ValueError(f"{where} should be a JSON object with the keys {described} but is {type(record).__name__}.")
    for key in keys:
        if key not in record:
            raise ValueError(f"{where} has no key {key!r}; expected the keys {described}, found {sorted(record)}.")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}).") from None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path} line {line_number} is not valid JSON: {error.msg} at column {error.colno}."
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path} line {line_number} should be a JSON object but is {type(record).__name__}.")
            records.append(record)
    return records


def _read_parquet(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    # A throw-away cache folder: reading a file once should not leave Arrow copies in the user's HF cache.
    with tempfile.TemporaryDirectory(prefix="hyperpeft-parquet-") as cache_dir:
        try:
            table = Dataset.from_parquet(str(path), cache_dir=cache_dir, keep_in_memory=True)
        except Exception as error:  # pyarrow and datasets raise several unrelated types for an unreadable file
            raise ValueError(f"{path} could not be read as Parquet: {error}") from None
        return table.to_list()


_RECORD_SUFFIXES = (".jsonl", ".json", ".parquet")


def _read_records(path: PathLike) -> tuple[Path, list[dict]]:
    """Rows of a .jsonl, .json (a list of objects) or .parquet file, as dicts."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return path, _read_jsonl(path)
    if suffix == ".parquet":
        return path, _read_parquet(path)
    if suffix == ".json":
        data = _read_json(path)
        if not isinstance(data, list):
            raise ValueError(f"{path} should hold a JSON list of rows but holds a {type(data).__name__}.")
        return path, data
    raise ValueError(f"Cannot read {path}: the file name should end with one of {list(_RECORD_SUFFIXES)}.")


def _history_item(item: Any, where: str) -> dict[str, str]:
    """A history item given as `{"input", "output"}` (input optional) or as a bare string (an output-only item)."""
    if isinstance(item, str):
        return {"input": "", "output": item}
    _require(item, ["output"], where, expected=["output"], optional=["input"])
    return {"input": _text(item.get("input", ""), where, "input"), "output": _text(item["output"], where, "output")}


def _optional_text(record: Mapping, key: str, where: str) -> str | None:
    value = record.get(key)
    return None if value is None else _text(value, where, key)


def _check_label(task_name: str, output: str, where: str) -> None:
    """A classification or rating gold must be one of the task's labels, or prompts and metrics would disagree."""
    task = TASKS[task_name]
    if task.metric != GENERATION and output != "" and output not in task.labels:
        raise ValueError(
            f"{where}: the gold output {output!r} is not a label of the task {task_name!r} ({list(task.labels)}). "
            "Is this the right task for this file?"
        )


# Below this many items a loop is quick and a progress bar would only be noise.
_PROGRESS_MIN_ITEMS = 500


def _progress(items: list, desc: str):
    return logging.tqdm(items, desc=desc, leave=False, disable=len(items) < _PROGRESS_MIN_ITEMS)


def _warn_unused_keys(path: Path, unused: Counter) -> None:
    if unused:
        logger.warning(
            f"{path}: ignored keys outside the row schema (with the number of rows that had each): {dict(unused)}."
        )


def _to_dataset(rows: list[dict], source: str) -> Dataset:
    """Build the dataset with `ROW_FEATURES` after checking that ids are unique."""
    counts = Counter(row["id"] for row in rows)
    duplicated = [row_id for row_id, count in counts.items() if count > 1]
    if duplicated:
        raise ValueError(f"{source}: ids must be unique but {len(duplicated)} repeat, e.g. {duplicated[:5]}.")
    columns = {name: [row[name] for row in rows] for name in ROW_COLUMNS}
    dataset = Dataset.from_dict(columns, features=ROW_FEATURES)
    logger.info(f"Loaded {len(rows)} rows of {len({r['user_id'] for r in rows})} users from {source}.")
    return dataset


# --- LaMP and OPPU ---


@dataclass(frozen=True)
class _LampLayout:
    input_key: str | None  # profile-item key that becomes the history input (None: the item is a bare text)
    output_key: str  # profile-item key that becomes the history output


# Which profile-item fields hold what the user saw and what they produced, per LaMP task.
_LAMP_LAYOUTS = {
    "1": _LampLayout("abstract", "title"),
    "2N": _LampLayout("text", "category"),
    "2M": _LampLayout("description", "tag"),
    "3": _LampLayout("text", "score"),
    "4": _LampLayout("text", "title"),
    "5": _LampLayout("abstract", "title"),
    "7": _LampLayout(None, "text"),
}
# OPPU names its data folders by task; they map onto LaMP's codes.
_OPPU_TASKS = {
    "citation": "1",
    "news_categorize": "2N",
    "movie_tagging": "2M",
    "product_rating": "3",
    "news_headline": "4",
    "scholarly_title": "5",
    "tweet_paraphrase": "7",
}


def _lamp_code(task: str | int) -> str:
    name = str(task).strip()
    if name.lower() in _OPPU_TASKS:
        return _OPPU_TASKS[name.lower()]
    code = re.sub(r"^lamp[-_ ]?", "", name, flags=re.IGNORECASE).upper()
    if code == "2":
        raise ValueError(
            f"The LaMP task {task!r} is ambiguous: use '2N' (news categorization) or '2M' (movie tagging)."
        )
    if code not in _LAMP_LAYOUTS:
        raise ValueError(
            f"Unknown LaMP task {task!r}; supported: {list(_LAMP_LAYOUTS)} or the OPPU names {list(_OPPU_TASKS)} "
            "(LaMP-6 is built from private e-mail data and is not supported)."
        )
    return code


def _resolve_task_name(task_name: str | None, default: str) -> str:
    name = default if task_name is None else task_name
    get_task(name)  # a ValueError listing the known tasks when unknown
    return name


def _lamp_history(profile: Any, code: str, where: str) -> list[dict[str, str]]:
    """Map a LaMP profile (a list of items) to history items; an empty profile is an error."""
    layout = _LAMP_LAYOUTS[code]
    if not isinstance(profile, list):
        raise ValueError(f"{where}: `profile` should be a list of items but is {type(profile).__name__}.")
    if not profile:
        raise ValueError(f"{where} has an empty `profile`; every LaMP query needs at least one history item.")
    keys = [key for key in (layout.input_key, layout.output_key) if key is not None]
    history = []
    for index, item in enumerate(profile):
        item_where = f"{where}, profile item {index}"
        _require(item, keys, item_where, expected=keys)
        seen = "" if layout.input_key is None else _text(item[layout.input_key], item_where, layout.input_key)
        history.append({"input": seen, "output": _text(item[layout.output_key], item_where, layout.output_key)})
    return history


def _check_outputs_task(outputs: Mapping, code: str, path: Path) -> None:
    """The outputs file names its task ("LaMP_3"); refuse a file that belongs to another LaMP task."""
    declared = outputs.get("task")
    if not isinstance(declared, str):
        return
    match = re.fullmatch(r"LaMP[-_ ]?(\d+)\w*", declared.strip(), flags=re.IGNORECASE)
    if match and match.group(1) != re.match(r"\d+", code).group(0):
        raise ValueError(f"{path} holds the golds of {declared!r} but the task asked for is LaMP-{code}.")


def load_lamp(
    folder: PathLike,
    task: str | int,
    split: str = "train",
    task_name: str | None = None,
    require_outputs: bool = True,
) -> Dataset:
    """
    Load one split of a LaMP task from its official files, one row per question.

    Reads `{folder}/{split}_questions.json` (`[{"id", "input", "profile": [item, ...]}, ...]`) and
    `{folder}/{split}_outputs.json` (`{"task": "LaMP_2", "golds": [{"id", "output"}, ...]}`). Each question is one
    user in LaMP, so `user_id` is the question id unless the question carries a `user_id` key; a `profile_text` key is
    kept as the row's profile. Profile items become history items:

    | task | item keys | history input | history output |
    | --- | --- | --- | --- |
    | 1 (citation) | title, abstract | abstract | title |
    | 2N (news categories) | text, title, category | text | category |
    | 2M (movie tags) | description, tag | description | tag |
    | 3 (product rating) | text, score | text | score |
    | 4 (news headlines) | text, title | text | title |
    | 5 (scholarly titles) | title, abstract | abstract | title |
    | 7 (tweet paraphrasing) | text | "" | text |

    Args:
        folder (`str` or `os.PathLike`): the folder holding the split's two JSON files.
        task (`str` or `int`): `"1"`, `"2N"`, `"2M"`, `"3"`, `"4"`, `"5"` or `"7"` (a `"LaMP-"` prefix and the OPPU
            names such as `"movie_tagging"` are accepted too).
        split (`str`, *optional*, defaults to `"train"`): the file prefix, e.g. `"train"`, `"dev"` or `"test"`.
        task_name (`str`, *optional*): the value of the rows' `task` column, a task registered in
            `hyperpeft.data.TASKS`; defaults to `"LaMP-<task>"`.
        require_outputs (`bool`, *optional*, defaults to `True`): when `False`, a split without an outputs file (a test
            split without golds) loads with `output = ""`.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `FileNotFoundError`: a file is missing (the outputs file only when `require_outputs`).
        `ValueError`: unknown task, invalid JSON, a missing key, an empty profile, a question without a gold or a gold
            without a question, a repeated id, or a classification gold outside the task's labels.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_lamp
    >>> rows = load_lamp("LaMP_2M/train", "2M")  # doctest: +SKIP
    >>> rows.column_names  # doctest: +SKIP
    ['id', 'user_id', 'task', 'metric', 'input', 'output', 'history', 'profile_text']
    ```
    """
    code = _lamp_code(task)
    name = _resolve_task_name(task_name, f"LaMP-{code}")
    folder = Path(folder)
    questions_path = folder / f"{split}_questions.json"
    outputs_path = folder / f"{split}_outputs.json"
    questions = _read_json(questions_path)
    if not isinstance(questions, list):
        raise ValueError(
            f"{questions_path} should hold a JSON list of questions but holds a {type(questions).__name__}."
        )

    golds: dict[str, str] | None = None
    if outputs_path.is_file():
        golds = _read_lamp_golds(outputs_path, code)
    elif require_outputs:
        raise FileNotFoundError(
            f"{outputs_path} does not exist. Pass `require_outputs=False` to load a split without golds (output = '')."
        )

    expected = ["id", "input", "profile"]
    optional = ["user_id", "profile_text"]
    metric = TASKS[name].metric
    rows = []
    for index, question in enumerate(_progress(questions, f"LaMP-{code} {split}")):
        where = f"{questions_path}: question {index}"
        _require(question, [], where, expected, optional)
        if "id" in question:
            where += f" (id {question['id']!r})"
        _require(question, expected, where, expected, optional)
        question_id = _text(question["id"], where, "id")
        output = ""
        if golds is not None:
            if question_id not in golds:
                raise ValueError(f"{where} has no gold in {outputs_path}.")
            output = golds[question_id]
            _check_label(name, output, where)
        user_id = _optional_text(question, "user_id", where)
        rows.append(
            {
                "id": question_id,
                "user_id": question_id if user_id is None else user_id,
                "task": name,
                "metric": metric,
                "input": _text(question["input"], where, "input"),
                "output": output,
                "history": _lamp_history(question["profile"], code, where),
                "profile_text": _optional_text(question, "profile_text", where),
            }
        )
    if golds is not None:
        unmatched = sorted(set(golds) - {row["id"] for row in rows})
        if unmatched:
            raise ValueError(
                f"{outputs_path} has {len(unmatched)} golds without a question in {questions_path}, "
                f"e.g. {unmatched[:5]}."
            )
    return _to_dataset(rows, str(questions_path))


def _read_lamp_golds(path: Path, code: str) -> dict[str, str]:
    outputs = _read_json(path)
    _require(outputs, ["golds"], str(path), expected=["task", "golds"])
    _check_outputs_task(outputs, code, path)
    if not isinstance(outputs["golds"], list):
        raise ValueError(
            f"{path}: `golds` should be a list of {{'id', 'output'}} but is {type(outputs['golds']).__name__}."
        )
    golds: dict[str, str] = {}
    for index, gold in enumerate(outputs["golds"]):
        where = f"{path}: gold {index}"
        _require(gold, ["id", "output"], where, expected=["id", "output"])
        gold_id = _text(gold["id"], where, "id")
        if gold_id in golds:
            raise ValueError(f"{where}: the id {gold_id!r} has more than one gold.")
        golds[gold_id] = _text(gold["output"], where, "output")
    return golds


def load_oppu(path: PathLike, task: str | int, task_name: str | None = None) -> Dataset:
    """
    Load OPPU's per-user file: `[{"user_id", "profile": [item, ...], "query": [{"id", "input", "gold"}, ...]}, ...]`.

    Each user's queries share the user's profile, mapped to history items as in [`load_lamp`] (the items have the keys
    of the LaMP task).

    Args:
        path (`str` or `os.PathLike`): the JSON file, e.g. OPPU's `user_top_100_history.json`.
        task (`str` or `int`): the LaMP code (`"1"`, `"2N"`, `"2M"`, `"3"`, `"4"`, `"5"`, `"7"`) or OPPU's task name
            (`"citation"`, `"news_categorize"`, `"movie_tagging"`, `"product_rating"`, `"news_headline"`,
            `"scholarly_title"`, `"tweet_paraphrase"`).
        task_name (`str`, *optional*): the rows' `task` value, a registered task; defaults to `"LaMP-<task>"`.

    Returns:
        `datasets.Dataset`: one row per query, with `ROW_FEATURES`.

    Raises:
        `ValueError`: unknown task, invalid JSON, a missing key, an empty profile, a repeated query id, or a
            classification gold outside the task's labels.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_oppu
    >>> rows = load_oppu("movie_tagging/user_top_100_history.json", "movie_tagging")  # doctest: +SKIP
    ```
    """
    code = _lamp_code(task)
    name = _resolve_task_name(task_name, f"LaMP-{code}")
    path = Path(path)
    users = _read_json(path)
    if not isinstance(users, list):
        raise ValueError(f"{path} should hold a JSON list of users but holds a {type(users).__name__}.")
    expected, query_keys = ["user_id", "profile", "query"], ["id", "input", "gold"]
    metric = TASKS[name].metric
    rows = []
    for index, user in enumerate(_progress(users, f"OPPU LaMP-{code}")):
        where = f"{path}: user {index}"
        _require(user, expected, where, expected, optional=["profile_text"])
        user_id = _text(user["user_id"], where, "user_id")
        where += f" (user_id {user_id!r})"
        history = _lamp_history(user["profile"], code, where)
        if not isinstance(user["query"], list):
            raise ValueError(f"{where}: `query` should be a list of queries but is {type(user['query']).__name__}.")
        for query_index, query in enumerate(user["query"]):
            query_where = f"{where}, query {query_index}"
            _require(query, query_keys, query_where, query_keys)
            output = _text(query["gold"], query_where, "gold")
            _check_label(name, output, query_where)
            rows.append(
                {
                    "id": _text(query["id"], query_where, "id"),
                    "user_id": user_id,
                    "task": name,
                    "metric": metric,
                    "input": _text(query["input"], query_where, "input"),
                    "output": output,
                    "history": history,
                    "profile_text": _optional_text(user, "profile_text", where),
                }
            )
    return _to_dataset(rows, str(path))


# --- LongLaMP ---


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


# --- Empathic Conversations (WASSA 2023) ---

EC_ESSAYS_FILE = "WASSA23_essay_level_with_labels_train.tsv"
EC_ARTICLES_FILE = "articles_adobe_AMT.csv"

# Demographic codes as the shared task describes them (WASSA 2022/2023 data description; the same table is used by
# public WASSA 2023 systems, e.g. hasan-rakibul/WASSA23-empathy-emotion). A code outside a table stays a number.
_EC_GENDER = {"1": "male", "2": "female", "5": "non-binary"}
_EC_EDUCATION = {
    "1": "less than a high-school diploma",
    "2": "a high-school diploma",
    "3": "technical or vocational school",
    "4": "some college but no degree",
    "5": "a two-year associate degree",
    "6": "a four-year bachelor's degree",
    "7": "a postgraduate or professional degree",
}
_EC_RACE = {
    "1": "White",
    "2": "Hispanic or Latino",
    "3": "Black or African American",
    "4": "Native American or American Indian",
    "5": "Asian or Pacific Islander",
    "6": "another race or ethnicity",
}
# Self-reported scores; the ranges are those the values span in the released data (Big Five 1-7, IRI 1-5).
_EC_PERSONALITY = {
    "personality_openess": "openness",  # sic: the column is spelled so in the release
    "personality_conscientiousness": "conscientiousness",
    "personality_extraversion": "extraversion",
    "personality_agreeableness": "agreeableness",
    "personality_stability": "emotional stability",
}
_EC_IRI = {
    "iri_empathatic_concern": "empathic concern",  # sic
    "iri_perspective_taking": "perspective taking",
    "iri_personal_distress": "personal distress",
    "iri_fantasy": "fantasy",
}
_EC_ESSAY_COLUMNS = ("essay_id", "speaker_id", "article_id", "essay", "gender", "education", "race", "age", "income")
_EC_MISSING = {"", "unknown", "nan", "none", "na"}


def _number(value: str) -> str:
    """A score written briefly: "7.0" -> "7", "4.857" -> "4.86"."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.2f}".rstrip("0").rstrip(".")


def _ec_profile_text(row: Mapping[str, str]) -> str | None:
    """The speaker's demographics and questionnaire scores in plain words; codes decoded where documented."""

    def known(column: str) -> str | None:
        value = str(row[column]).strip()
        return None if value.lower() in _EC_MISSING else value

    def decoded(column: str, table: dict[str, str]) -> str | None:
        value = known(column)
        if value is None:
            return None
        code = value[:-2] if value.endswith(".0") else value
        return table.get(code, f"code {value}")

    facts = []
    for label, value in (
        ("Gender", decoded("gender", _EC_GENDER)),
        ("Age", None if known("age") is None else f"{_number(known('age'))} years old"),
        ("Education", decoded("education", _EC_EDUCATION)),
        ("Race or ethnicity", decoded("race", _EC_RACE)),
        ("Yearly income", _income(known("income"))),
    ):
        if value is not None:
            facts.append(f"{label}: {value}.")
    for title, columns in (
        ("Big Five personality scores (1 = low, 7 = high)", _EC_PERSONALITY),
        ("Interpersonal Reactivity Index scores (1 = low, 5 = high)", _EC_IRI),
    ):
        scores = [f"{name} {_number(known(column))}" for column, name in columns.items() if known(column) is not None]
        if scores:
            facts.append(f"{title}: {', '.join(scores)}.")
    if not facts:
        return None
    missing = [name for name in ("gender", "age", "education", "race", "income") if known(name) is None]
    if missing:
        facts.append(f"Not reported: {', '.join(missing)}.")
    return " ".join(facts)


def _income(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return f"${float(value):,.0f}"
    except ValueError:
        return value


def _shorten(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters at a word boundary, with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def _read_table(path: Path, **kwargs) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        # Everything as text: ids stay "007"-safe and "unknown" stays a word; quoted fields ("" inside) are undone.
        return pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} could not be parsed: {error}") from None


def load_empathic_conversations(
    folder: PathLike,
    essays_file: str = EC_ESSAYS_FILE,
    articles_file: str = EC_ARTICLES_FILE,
    history_input_chars: int = 300,
    task_name: str = "EC",
) -> Dataset:
    """
    Load the essay level of Empathic Conversations (WASSA 2023 release), one row per essay.

    The user is the essay's `speaker_id`; `input` is the news article the essay reacts to (`article_id` joined with
    `articles_adobe_AMT.csv`), `output` the essay, and `profile_text` the speaker's demographics and self-reported
    Big Five and Interpersonal Reactivity Index scores written out in words. `history` holds the speaker's other
    essays, never the row's own, each with the first `history_input_chars` characters of its article as input. Row ids
    are `"EC-<essay_id>"`.

    Args:
        folder (`str` or `os.PathLike`): the folder holding the two files.
        essays_file (`str`, *optional*): the tab-separated essay file inside `folder`.
        articles_file (`str`, *optional*): the comma-separated article file (`article_id,text`) inside `folder`.
        history_input_chars (`int`, *optional*, defaults to 300): how much of each history item's article to keep.
        task_name (`str`, *optional*, defaults to `"EC"`): the rows' `task` value, a registered task.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `FileNotFoundError`: a file is missing.
        `ValueError`: a missing column, an empty essay, an essay whose article is not in the article file, or a
            repeated essay id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_empathic_conversations
    >>> rows = load_empathic_conversations("data/empathic_conversations")  # doctest: +SKIP
    >>> len(rows), len(set(rows["user_id"]))  # doctest: +SKIP
    (792, 59)
    ```
    """
    name = _resolve_task_name(task_name, "EC")
    if not isinstance(history_input_chars, int) or history_input_chars < 1:
        raise ValueError(f"`history_input_chars` should be a positive integer but is {history_input_chars!r}.")
    folder = Path(folder)
    essays_path, articles_path = folder / essays_file, folder / articles_file
    essays = _read_table(essays_path, sep="\t")
    articles = _read_table(articles_path)
    required = [*_EC_ESSAY_COLUMNS, *_EC_PERSONALITY, *_EC_IRI]
    for path, table, columns in ((essays_path, essays, required), (articles_path, articles, ["article_id", "text"])):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; expected {columns}, found {list(table.columns)}.")

    article_text: dict[str, str] = {}
    for index, (article_id, text) in enumerate(zip(articles["article_id"], articles["text"])):
        if article_id.strip() in article_text:
            raise ValueError(f"{articles_path}: row {index} repeats the article_id {article_id!r}.")
        article_text[article_id.strip()] = text

    records = essays.to_dict("records")
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        where = f"{essays_path}: row {index} (essay_id {record['essay_id']!r})"  # row 0 is the line after the header
        if not record["essay"].strip():
            raise ValueError(f"{where} has an empty essay.")
        if record["article_id"].strip() not in article_text:
            raise ValueError(f"{where}: its article_id {record['article_id']!r} is not in {articles_path}.")
        by_speaker[record["speaker_id"].strip()].append(index)

    short_article = {key: _shorten(text, history_input_chars) for key, text in article_text.items()}
    rows = []
    for index, record in enumerate(_progress(records, "Empathic Conversations")):
        speaker = record["speaker_id"].strip()
        history = [
            {"input": short_article[records[other]["article_id"].strip()], "output": records[other]["essay"]}
            for other in by_speaker[speaker]
            if other != index  # the row's own essay is its answer: never part of its history
        ]
        rows.append(
            {
                "id": f"EC-{record['essay_id'].strip()}",
                "user_id": speaker,
                "task": name,
                "metric": TASKS[name].metric,
                "input": article_text[record["article_id"].strip()],
                "output": record["essay"],
                "history": history,
                "profile_text": _ec_profile_text(record),
            }
        )
    return _to_dataset(rows, str(essays_path))


# --- Reddit-style rows and rows already in the schema ---


def _needs_context(row: Mapping, where: str) -> None:
    if not row["history"] and not row["profile_text"]:
        raise ValueError(f"{where} has neither a history nor a profile_text; a personalized row needs one of them.")


def load_reddit_style(path: PathLike, task_name: str = "reddit") -> Dataset:
    """
    Load rows `{"user_id", "profile_text", "input", "output"}` (optional `"id"`, `"history"`) from a .jsonl file.

    This is the shape of Personal-Reddit-style data: each row has the user's textual profile (e.g. a description of the
    author's attributes), a message and the user's reply. `history` items are `{"input", "output"}` objects or bare
    strings (output-only items). Ids default to `"<task_name>-<row>"`. A `.json` list or `.parquet` file works too.

    Args:
        path (`str` or `os.PathLike`): the file.
        task_name (`str`, *optional*, defaults to `"reddit"`): the rows' `task` value, a registered task.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `ValueError`: invalid JSON (with the line), a missing key, a row with neither history nor profile text, or a
            repeated id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_reddit_style
    >>> rows = load_reddit_style("personal_reddit.jsonl")  # doctest: +SKIP
    ```
    """
    name = _resolve_task_name(task_name, "reddit")
    path, records = _read_records(path)
    expected, optional = ["user_id", "profile_text", "input", "output"], ["id", "history"]
    rows, unused = [], Counter()
    for index, record in enumerate(records):
        where = f"{path}: row {index}"
        _require(record, expected, where, expected, optional)
        unused.update(key for key in record if key not in {*expected, *optional})
        history = record.get("history") or []
        if not isinstance(history, list):
            raise ValueError(f"{where}: `history` should be a list but is {type(history).__name__}.")
        row = {
            "id": _optional_text(record, "id", where) or f"{name}-{index}",
            "user_id": _text(record["user_id"], where, "user_id"),
            "task": name,
            "metric": TASKS[name].metric,
            "input": _text(record["input"], where, "input"),
            "output": _text(record["output"], where, "output"),
            "history": [_history_item(item, f"{where}, history item {i}") for i, item in enumerate(history)],
            "profile_text": _optional_text(record, "profile_text", where),
        }
        _needs_context(row, where)
        rows.append(row)
    _warn_unused_keys(path, unused)
    return _to_dataset(rows, str(path))


def load_rows(path_or_rows: PathLike | Iterable[Mapping[str, Any]], task: str | None = None) -> Dataset:
    """
    Check rows that are already in the schema (your own data) and turn them into a dataset with `ROW_FEATURES`.

    Each row needs `id`, `user_id`, `input`, `output` and `task` (or pass `task` for rows without one); `history`
    (default `[]`), `profile_text` (default `None`) and `metric` (default: the task's) are optional. A row needs a
    history or a profile text. History items are `{"input", "output"}` objects or bare strings (output-only items).
    Keys outside the schema are refused, so that a misspelt column is not dropped unnoticed.

    Args:
        path_or_rows (`str`, `os.PathLike` or an iterable of mappings): a .jsonl/.json/.parquet file, or the rows.
        task (`str`, *optional*): the task of rows that do not name one; a row naming another task is refused.

    Returns:
        `datasets.Dataset`: the rows, with `ROW_FEATURES`.

    Raises:
        `TypeError`: `path_or_rows` is neither a path nor an iterable of mappings.
        `ValueError`: a missing or unknown key, an unknown task, a `metric` that is not the task's, a row with neither
            history nor profile text, a classification gold outside the task's labels, or a repeated id.

    Example:

    ```python
    >>> from hyperpeft.data.loaders import load_rows
    >>> row = {"id": "q1", "user_id": "ann", "input": "Hi!", "output": "Hey :)", "history": ["yo", "sup"]}
    >>> rows = load_rows([row], task="reddit")
    >>> rows[0]["history"]
    [{'input': '', 'output': 'yo'}, {'input': '', 'output': 'sup'}]
    ```
    """
    if isinstance(path_or_rows, (str, os.PathLike)):
        path, records = _read_records(path_or_rows)
        source = str(path)
    elif isinstance(path_or_rows, Iterable) and not isinstance(path_or_rows, (bytes, Mapping)):
        records, source = list(path_or_rows), "rows"
    else:
        raise TypeError(
            f"`path_or_rows` should be a file path or an iterable of row dicts but is {type(path_or_rows).__name__}."
        )
    if task is not None:
        get_task(task)
    required = ["id", "user_id", "input", "output"] + ([] if task is not None else ["task"])
    allowed = set(ROW_COLUMNS)
    rows = []
    for index, record in enumerate(records):
        where = f"{source}: row {index}"
        _require(record, required, where, required, optional=[c for c in ROW_COLUMNS if c not in required])
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise ValueError(
                f"{where} has keys outside the row schema {unknown}; the columns are {list(ROW_COLUMNS)}."
            )
        name = task if record.get("task") is None else _text(record["task"], where, "task")
        if task is not None and name != task:
            raise ValueError(f"{where} has the task {name!r} but `task={task!r}` was asked for.")
        metric = get_task(name).metric
        if record.get("metric") is not None and record["metric"] != metric:
            raise ValueError(
                f"{where}: `metric` is {record['metric']!r} but the task {name!r} is scored as {metric!r}."
            )
        history = record.get("history") or []
        if not isinstance(history, list):
            raise ValueError(f"{where}: `history` should be a list but is {type(history).__name__}.")
        row = {
            "id": _text(record["id"], where, "id"),
            "user_id": _text(record["user_id"], where, "user_id"),
            "task": name,
            "metric": metric,
            "input": _text(record["input"], where, "input"),
            "output": _text(record["output"], where, "output"),
            "history": [_history_item(item, f"{where}, history item {i}") for i, item in enumerate(history)],
            "profile_text": _optional_text(record, "profile_text", where),
        }
        _needs_context(row, where)
        _check_label(name, row["output"], where)
        rows.append(row)
    return _to_dataset(rows, source)


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
