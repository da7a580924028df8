"""`ProfileBuilder`: each row's profile text (paper section 3.1), `[summary of the user's history ‖ the k items
closest to the input]`, or one of the ablations of the paper's Table 5 (`MODES`, one small function each)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.utils import logging

from .._validation import check_int
from ..data.schema import check_row
from .cache import SummaryCache, SummaryKey, default_cache_path, history_sha256, text_sha256
from .prompt import PROMPT_VERSION, build_summary_prompt, clean_summary, format_items
from .retrieval import HistoryIndex
from .summarizers import Summarizer, SummarizerError, make_summarizer

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.get_logger(__name__)
tqdm = logging.tqdm  # respects `transformers.utils.logging.disable_progress_bar()`

RETRIEVED_HEADER = "Related past items:"
HISTORY_HEADER = "Past items:"
# the item list of a user with no history yet, in the modes without a summary: a new user still gets a profile
NO_ITEMS = "- (none yet)"


@dataclass
class _Row:
    id: str
    user_id: str
    task: str
    input: str
    history: list[dict[str, str]]
    profile_text: str | None
    history_sha256: str
    output: str | None = None

    @property
    def owner(self) -> tuple[str, str, str]:
        """Rows with the same owner share one summary and one retrieval index."""
        return (self.user_id, self.task, self.history_sha256)


def _read_rows(dataset: Any) -> list[_Row]:
    """The rows of a `datasets.Dataset`, each checked like every other row of the common schema (`check_row`)."""
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise TypeError(
            f"`dataset` should be a `datasets.Dataset` (e.g. `Dataset.from_list(rows)`), not {type(dataset).__name__}."
        )
    required = ("id", "user_id", "task", "input", "history")
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {missing}; profiles need {list(required)} (and optionally "
            f"`profile_text`), as in `hyperpeft.data.ROW_COLUMNS`. It has {dataset.column_names}."
        )
    columns = [*required, *(c for c in ("profile_text", "output") if c in dataset.column_names)]
    rows = []
    for record in dataset.select_columns(columns).to_list():
        row = check_row(record, f"Row {record['id']!r}", require_output=False)
        text = row["profile_text"]
        rows.append(
            _Row(
                id=row["id"],
                user_id=row["user_id"],
                task=row["task"],
                input=row["input"],
                history=row["history"],
                profile_text=text.strip() if text and text.strip() else None,
                history_sha256=history_sha256(row["history"]),
                output=row.get("output"),
            )  # fmt: skip
        )
    return rows


@dataclass
class _Profiles:
    """What the modes build from: every owner's summary, the other user each (user, task) gets, the BM25 indexes."""

    builder: ProfileBuilder
    summaries: dict[tuple[str, str, str], str]
    owners: dict[tuple[str, str], _Row]
    donors: dict[tuple[str, str], str]
    answer_item: bool = False
    indexes: dict[tuple[str, str, str], HistoryIndex] = field(default_factory=dict)

    def summary(self, row: _Row) -> str | None:
        return row.profile_text or self.summaries.get(row.owner)

    def items(self, row: _Row) -> list[dict[str, str]]:
        """
        The k items of `row`'s history closest to its input; with `answer_item`, the row's own answer (as an item on
        its input) and the k - 1 closest.
        """
        k = self.builder.k
        if k == 0:
            return []
        if row.owner not in self.indexes:
            self.indexes[row.owner] = HistoryIndex(row.history)
        if not self.answer_item:
            return self.indexes[row.owner].top(row.input, k)
        return [{"input": row.input, "output": row.output}, *self.indexes[row.owner].top(row.input, k - 1)]

    def lines(self, items: Sequence[dict[str, str]]) -> str:
        return format_items(items, self.builder.item_chars, self.builder.item_input_chars)

    def full(self, row: _Row) -> str:
        """`row`'s summary, then its items."""
        summary, items = self.summary(row), self.items(row)
        if not items:
            return summary
        return f"{summary}\n\n{RETRIEVED_HEADER}\n{self.lines(items)}"

    def donor(self, row: _Row) -> _Row:
        return self.owners[(self.donors[(row.user_id, row.task)], row.task)]


def _full(p: _Profiles, row: _Row) -> str:
    return p.full(row)


def _summary(p: _Profiles, row: _Row) -> str:
    return p.summary(row)


def _retrieved(p: _Profiles, row: _Row) -> str:
    items = p.items(row)
    return f"{RETRIEVED_HEADER}\n{p.lines(items) if items else NO_ITEMS}"


def _history(p: _Profiles, row: _Row) -> str:
    """The most recent items whose lines fit `history_chars` (at least one), oldest first."""
    if not row.history:
        return f"{HISTORY_HEADER}\n{NO_ITEMS}"
    lines = p.lines(row.history).split("\n")
    kept, used = [], 0
    for line in reversed(lines):
        if kept and used + len(line) + 1 > p.builder.history_chars:
            break
        kept.append(line[: p.builder.history_chars])
        used += len(line) + 1
    return f"{HISTORY_HEADER}\n" + "\n".join(reversed(kept))


def _random_user(p: _Profiles, row: _Row) -> str:
    """Another user's profile in the builder's `other_user_mode`, built for this row (its input, its id)."""
    profile_of, _ = _MODES[p.builder.other_user_mode]
    return profile_of(p, replace(p.donor(row), id=row.id, input=row.input))


def _shuffled(p: _Profiles, row: _Row) -> str:
    words = p.full(row).split()
    random.Random(f"{p.builder.seed}:{row.id}").shuffle(words)
    return " ".join(words)


# mode -> (the profile of one row, whether it needs the summaries; random_user's is its other_user_mode's)
_MODES: dict[str, tuple[Callable[[_Profiles, _Row], str], bool]] = {
    "full": (_full, True),
    "summary": (_summary, True),
    "retrieved": (_retrieved, False),
    "history": (_history, False),
    "random_user": (_random_user, True),
    "shuffled": (_shuffled, True),
}
MODES = tuple(_MODES)
# the modes whose profiles hold retrieved items, and so can hold a training row's own answer (`answer_item`)
ANSWER_ITEM_MODES = ("full", "retrieved")


def _check_answer_item_settings(option: str, mode_field: str, mode: str, k: int) -> None:
    """A profile holds a row's answer as one of its retrieved items, so it needs items: `k >= 1` and such a mode."""
    if mode not in ANSWER_ITEM_MODES or k == 0:
        raise ValueError(
            f"{option} puts each training row's answer among its profile's retrieved items, so it needs `k >= 1` "
            f"and a {mode_field} of {ANSWER_ITEM_MODES}; got {mode_field}={mode!r}, k={k}."
        )


def _text_mode(mode: str, other_user_mode: str) -> str:
    """The mode whose kind of text the profiles are: `random_user` builds another user's `other_user_mode` profile."""
    return other_user_mode if mode == "random_user" else mode


class ProfileBuilder:
    """
    Builds each row's profile text: an LLM summary of the user's history followed by the k history items that BM25
    finds closest to the row's input (paper section 3.1), or one of the ablations of the paper's Table 5.

    Each distinct (user, task, history) is summarized once, in batches, and every batch's summaries are committed
    to the SQLite cache as soon as they are written, so an interrupted run loses nothing and a rerun makes no
    call for what is cached. A row with a `profile_text` uses it as its summary.

    Modes:
        - `"full"`: summary, then the k retrieved items.
        - `"summary"`: the summary only.
        - `"retrieved"`: the k retrieved items only (needs `k >= 1`; no LLM call).
        - `"history"`: the whole history, the most recent items that fit `history_chars` (no LLM call).
        - `"random_user"`: the profile of another user of the same task, drawn once per user with `seed` (never
          the user's own), in `other_user_mode`: by default the full one, their summary and their items retrieved
          for this row's input.
        - `"shuffled"`: the full profile with its words in a random order drawn with `seed` and the row's id.

    In `"retrieved"` and `"history"` mode a user with no history yet gets the header and the line `- (none yet)`; the
    modes with a summary refuse such a row unless it carries a `profile_text`.

    Args:
        summarizer ([`Summarizer`], *optional*): writes the summaries; only needed when a row without a
            `profile_text` needs one.
        cache_path (`str` or `Path`, *optional*): the SQLite cache; defaults to `default_cache_path()`.
        k (`int`, defaults to 2): retrieved items per profile; 0 retrieves none.
        mode (`str`, defaults to `"full"`): one of `MODES`.
        seed (`int`, defaults to 0): for the `random_user` and `shuffled` ablations.
        batch_size (`int`, *optional*): prompts per summarizer call, each call being committed at once; defaults to
            the summarizer's `batch_size`, else 8.
        summary_items (`int`, defaults to 16): most recent history items shown to the summarizer.
        item_chars (`int`, defaults to 300): each item's input and output are clipped to this many characters, in
            the summary prompt and in the profile.
        item_input_chars (`int`, *optional*): in the profile, clip each item's input to this many characters
            instead; 0 shows the user's outputs alone (when the inputs, news articles say, would fill the profile
            encoder's window with text the user did not write).
        history_chars (`int`, defaults to 4000): character budget of the `"history"` mode.
        summary_words (`int`, defaults to 60): the length limit the summary prompt asks for.
        other_user_mode (`str`, defaults to `"full"`): the mode of the other user's profile in `"random_user"` mode,
            any mode but `"random_user"`: the mode a model was trained with swaps the user and nothing else.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from hyperpeft.profiles import ProfileBuilder, TransformersSummarizer
    >>> rows = Dataset.from_list([{"id": "q1", "user_id": "u1", "task": "LaMP-2M", "input": "Robots take over.",
    ...     "history": [{"input": "A robot uprising.", "output": "sci-fi"}], "profile_text": None}])
    >>> builder = ProfileBuilder(TransformersSummarizer(), k=1)
    >>> print(builder.build(rows)[0]["profile"])  # doctest: +SKIP
    This user tags films by their setting ...
    <BLANKLINE>
    Related past items:
    - input: A robot uprising. | output: sci-fi
    ```
    """

    def __init__(
        self,
        summarizer: Summarizer | None = None,
        cache_path: str | os.PathLike | None = None,
        k: int = 2,
        mode: str = "full",
        *,
        seed: int = 0,
        batch_size: int | None = None,
        summary_items: int = 16,
        item_chars: int = 300,
        item_input_chars: int | None = None,
        history_chars: int = 4000,
        summary_words: int = 60,
        other_user_mode: str = "full",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"`mode` should be one of {MODES} but the value passed is {mode!r}.")
        donor_modes = tuple(m for m in MODES if m != "random_user")
        if other_user_mode not in donor_modes:
            raise ValueError(f"`other_user_mode` should be one of {donor_modes} but is {other_user_mode!r}.")
        check_int("k", k, minimum=0, hint=" (0 retrieves nothing)")
        if k == 0 and _text_mode(mode, other_user_mode) == "retrieved":
            raise ValueError(
                "`mode='retrieved'` builds the profile from the retrieved items only, so `k` must be >= 1."
            )
        if summarizer is not None and not isinstance(summarizer, Summarizer):
            raise TypeError(
                "`summarizer` should have a `name` and a `summarize(prompts)` method, not "
                f"{type(summarizer).__name__}."
            )
        for name, value in (("summary_items", summary_items), ("item_chars", item_chars)):
            check_int(name, value)
        for name, value in (("history_chars", history_chars), ("summary_words", summary_words)):
            check_int(name, value)
        if item_input_chars is not None:
            check_int("item_input_chars", item_input_chars, minimum=0, hint=" (0 leaves the inputs out)")
        if batch_size is not None:
            check_int("batch_size", batch_size)
        self.summarizer = summarizer
        self.cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
        self.k = k
        self.mode = mode
        self.seed = seed
        self.batch_size = batch_size or int(getattr(summarizer, "batch_size", 8) or 8)
        self.summary_items = summary_items
        self.item_chars = item_chars
        self.item_input_chars = item_input_chars
        self.history_chars = history_chars
        self.summary_words = summary_words
        self.other_user_mode = other_user_mode

    def summary_prompt(self, task: str, history: Sequence[dict[str, str]]) -> str:
        """The prompt this builder sends to the summarizer for one user's history."""
        return build_summary_prompt(task, history, self.summary_items, self.item_chars, self.summary_words)

    def build(self, dataset: Dataset, show_progress: bool = True, answer_item: bool = False) -> Dataset:
        """
        Args:
            dataset (`datasets.Dataset`): rows with `id`, `user_id`, `task`, `input`, `history` and optionally
                `profile_text` (see `hyperpeft.data.ROW_COLUMNS`).
            show_progress (`bool`, defaults to `True`): show progress bars.
            answer_item (`bool`, defaults to `False`): for training rows only: the first of each profile's k items is
                the row's own answer, as if the user had written it before (the rest are the k - 1 items closest to
                the input). The hypernetwork then learns from every row how a profile's items show in the answer,
                rather than only from how users differ, and at test time it writes the adapter from the user's real
                items. Needs an `output` column, `k >= 1` and mode `"full"` or `"retrieved"`. Never use it on rows
                you evaluate: their answer would be in their profile.

        Returns:
            `datasets.Dataset`: `dataset` with the columns `profile` (the text to encode), `summary` (the row's own
            user summary, `None` in the modes that use none) and, in `"random_user"` mode, `profile_user_id` (whose
            profile was used). Existing columns of those names are replaced.
        """
        rows = _read_rows(dataset)
        profile_of = _MODES[self.mode][0]
        needs_summary = _MODES[_text_mode(self.mode, self.other_user_mode)][1]
        if answer_item:
            self._check_answer_items(rows)
        for row in rows:
            # a summary of nothing cannot be written; the item-only modes say that there are no items
            if needs_summary and not row.history and row.profile_text is None:
                raise ValueError(
                    f"Row {row.id!r} (user {row.user_id!r}) has an empty history; mode {self.mode!r} needs a "
                    "`profile_text` or a non-empty `history`."
                )
        owners: dict[tuple[str, str], _Row] = {}  # the first row of each (user, task), for another user's profile
        for row in rows:
            owners.setdefault((row.user_id, row.task), row)
        profiles = _Profiles(
            builder=self,
            summaries=self._summaries(rows, show_progress) if needs_summary else {},
            owners=owners,
            donors=self._donors(rows) if self.mode == "random_user" else {},
            answer_item=answer_item,
        )
        texts, own_summaries, profile_users = [], [], []
        for row in tqdm(rows, desc="Building profiles", unit="row", disable=not show_progress or len(rows) < 1000):
            texts.append(profile_of(profiles, row))
            own_summaries.append(profiles.summary(row) if needs_summary else None)
            profile_users.append(profiles.donor(row).user_id if profiles.donors else row.user_id)

        new_columns = {"profile": texts, "summary": own_summaries}
        if self.mode == "random_user":
            new_columns["profile_user_id"] = profile_users
        replaced = [column for column in new_columns if column in dataset.column_names]
        if replaced:
            logger.info("Replacing the existing column(s) %s.", replaced)
            dataset = dataset.remove_columns(replaced)
        for column, values in new_columns.items():
            dataset = dataset.add_column(column, values)
        return dataset

    def _check_answer_items(self, rows: list[_Row]) -> None:
        _check_answer_item_settings("`answer_item=True`", "mode", self.mode, self.k)
        missing = next((row.id for row in rows if not (row.output or "").strip()), None)
        if missing is not None:
            raise ValueError(f"`answer_item=True` needs every row's `output`, and row {missing!r} has none.")

    def _donors(self, rows: list[_Row]) -> dict[tuple[str, str], str]:
        """For each (user, task), another user of the same task, drawn reproducibly whatever the row order."""
        users_by_task: dict[str, set[str]] = {}
        for row in rows:
            users_by_task.setdefault(row.task, set()).add(row.user_id)
        donors = {}
        for task, users in users_by_task.items():
            users = sorted(users)
            if len(users) < 2:
                raise ValueError(
                    f"`mode='random_user'` gives each user another user's profile, but task {task!r} has only one "
                    f"user ({users[0]!r}) in this dataset."
                )
            rng = random.Random(f"{self.seed}:{task}")
            for user in users:
                donors[(user, task)] = rng.choice([other for other in users if other != user])
        return donors

    def _summaries(self, rows: list[_Row], show_progress: bool) -> dict[tuple[str, str, str], str]:
        """The summary of every owner without a `profile_text`: from the cache, else written now."""
        summaries: dict[tuple[str, str, str], str] = {}
        todo: dict[tuple[str, str, str], _Row] = {}
        for row in rows:
            if row.profile_text is None:
                todo.setdefault(row.owner, row)
        if not todo:
            return summaries
        if self.summarizer is None:
            first = next(iter(todo.values()))
            raise ValueError(
                f"Row {first.id!r} has no `profile_text`, so its summary must be written by an LLM: pass a "
                "`summarizer` (e.g. `TransformersSummarizer()`)."
            )
        name = self.summarizer.name
        prompts = {owner: self.summary_prompt(row.task, row.history) for owner, row in todo.items()}
        keys = {
            owner: SummaryKey(*owner, name, PROMPT_VERSION, text_sha256(prompt)) for owner, prompt in prompts.items()
        }
        with SummaryCache(self.cache_path) as cache:
            cached = cache.get(list(keys.values()))
            missing = [owner for owner in todo if keys[owner] not in cached]
            logger.info(
                "%d distinct user histories: %d summaries cached in %s, %d to write with %s.",
                len(todo), len(todo) - len(missing), self.cache_path, len(missing), name,
            )  # fmt: skip
            for owner in todo:
                if keys[owner] in cached:
                    summaries[owner] = cached[keys[owner]]
            missing.sort(key=lambda owner: -len(prompts[owner]))  # similar lengths batch together
            failed = self._write_summaries(missing, prompts, keys, cache, summaries, show_progress)
        if failed:
            shown = ", ".join(f"{user!r} ({task})" for user, task, _ in failed[:5])
            raise SummarizerError(
                f"The summarizer returned an empty summary for {len(failed)} user(s), e.g. {shown}; nothing was "
                f"cached for them (the {len(missing) - len(failed)} others were). Rerun to retry only those."
            )
        return summaries

    def _write_summaries(
        self,
        missing: list[tuple[str, str, str]],
        prompts: dict[tuple[str, str, str], str],
        keys: dict[tuple[str, str, str], SummaryKey],
        cache: SummaryCache,
        summaries: dict[tuple[str, str, str], str],
        show_progress: bool,
    ) -> list[tuple[str, str, str]]:
        failed, saved = [], 0
        if not missing:
            return failed
        with tqdm(total=len(missing), desc="Writing summaries", unit="user", disable=not show_progress) as bar:
            for chunk in _chunks(missing, self.batch_size):
                try:
                    texts = self.summarizer.summarize([prompts[owner] for owner in chunk])
                except BaseException:
                    logger.error(
                        "Summarizing stopped after %d of %d new summaries; those are saved in %s and a rerun "
                        "continues from there.", saved, len(missing), self.cache_path,
                    )  # fmt: skip
                    raise
                if not isinstance(texts, list) or len(texts) != len(chunk):
                    got = len(texts) if isinstance(texts, list) else type(texts).__name__
                    raise SummarizerError(
                        f"{type(self.summarizer).__name__}.summarize should return one string per prompt: it was "
                        f"given {len(chunk)} prompts and returned {got}."
                    )
                done = {}
                for owner, text in zip(chunk, texts):
                    text = clean_summary(text) if isinstance(text, str) else ""
                    if text:
                        done[keys[owner]] = text
                    else:
                        failed.append(owner)
                stored = cache.put(done)  # committed now: an interruption later loses none of these
                saved += len(stored)
                for owner in chunk:
                    if keys[owner] in stored:
                        summaries[owner] = stored[keys[owner]]
                bar.update(len(chunk))
        return failed


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class ProfileArguments:
    """
    How each row's profile is built (the `profiles:` section of a config); see [`ProfileBuilder`].

    Args:
        k (`int`, defaults to 2): BM25 top-k history items after the summary.
        summarizer (`str` or `dict`, *optional*): the LLM that writes summaries: a transformers model name or path, or
            `{"base_url": ..., "model": ...}` for an OpenAI-compatible server; `None` when every row carries its
            `profile_text`.
        profile_mode (`str`, defaults to `"full"`): one of `MODES` (the ablations of the paper's Table 5).
        summary_cache (`str`, *optional*): the SQLite summary cache (default: `<workdir>/summaries.sqlite`).
        item_input_chars (`int`, *optional*): clip each profile item's input to this many characters (0: outputs
            only; default: as long as the output, 300).
        train_answer_item (`bool`, defaults to `False`): the `train` split's profiles put each row's own answer first
            among its k items (`ProfileBuilder.build(answer_item=True)`); other splits' profiles never do.
    """

    k: int = field(default=2, metadata={"help": "BM25 top-k history items after the summary."})
    summarizer: dict | str | None = field(
        default=None,
        metadata={"help": "A transformers model, or {base_url, model} of a server (JSON), that writes summaries."},
    )
    profile_mode: str = field(default="full", metadata={"help": f"How profiles are built: one of {MODES}."})
    summary_cache: str | None = field(default=None, metadata={"help": "The SQLite summary cache file."})
    item_input_chars: int | None = field(
        default=None, metadata={"help": "Clip each profile item's input to this many characters (0: outputs only)."}
    )
    train_answer_item: bool = field(
        default=False,
        metadata={"help": "Training rows' profiles put the row's own answer first among their k items."},
    )

    def __post_init__(self) -> None:
        check_int("k", self.k, minimum=0, hint=" (0 retrieves nothing)")
        if self.profile_mode not in MODES:
            raise ValueError(f"`profile_mode` should be one of {MODES} but is {self.profile_mode!r}.")
        if self.item_input_chars is not None:
            check_int("item_input_chars", self.item_input_chars, minimum=0, hint=" (0 leaves the inputs out)")
        if not isinstance(self.train_answer_item, bool):
            raise TypeError(f"`train_answer_item` should be true or false, not {self.train_answer_item!r}.")
        if self.train_answer_item:  # checked now, not after the data is generated
            _check_answer_item_settings("`train_answer_item`", "profile_mode", self.profile_mode, self.k)
        if isinstance(self.summarizer, str) and self.summarizer.lstrip().startswith("{"):
            self.summarizer = json.loads(self.summarizer)  # from a command line
        make_summarizer(self.summarizer)  # a bad summarizer fails now, not after the data is generated


def build_profiles(
    splits: dict[str, Dataset], arguments: ProfileArguments, workdir: str | os.PathLike, seed: int = 0, **changes
) -> dict[str, Dataset]:
    """
    Every split with its `profile` column, built as `arguments` say (and `changes`, e.g. `k=4`, over them); with
    `train_answer_item`, the split named `train` holds each row's own answer among its items.
    """
    settings = {"k": arguments.k, "mode": arguments.profile_mode, "item_input_chars": arguments.item_input_chars}
    builder = ProfileBuilder(
        make_summarizer(arguments.summarizer),
        cache_path=arguments.summary_cache or Path(workdir) / "summaries.sqlite",
        seed=seed,
        **{**settings, **changes},
    )
    return {
        split: builder.build(rows, show_progress=False, answer_item=arguments.train_answer_item and split == "train")
        for split, rows in splits.items()
    }
