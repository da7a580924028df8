"""Empathic Conversations (WASSA 2023 release), the essay level: one row per essay, the speaker as the user."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import pandas as pd  # installed with `datasets`, whose absence `..schema` reports
from datasets import Dataset

from ..schema import _to_dataset
from ..tasks import TASKS
from .common import PathLike, _progress, _resolve_task_name

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
