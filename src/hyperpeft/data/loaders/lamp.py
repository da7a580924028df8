"""LaMP (official per-split question and output files) and OPPU (one file of users with their queries)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..schema import _check_label, _optional_text, _require, _text, _to_dataset
from ..tasks import TASKS
from .common import PathLike, _progress, _read_json, _resolve_task_name


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
