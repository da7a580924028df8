"""
Profile texts (paper section 3.1): `profile = [summary of the user's history ‖ the k items closest to the input]`.

- The summary is written once per (user, task, history) by an LLM (`TransformersSummarizer` locally, or
  `OpenAISummarizer` for any OpenAI-compatible server) and kept in an SQLite cache, so a rerun never pays twice.
  A row that carries a `profile_text` (e.g. demographics) uses it as the summary, with no LLM call.
- The k items are retrieved with BM25 (`bm25s`) over the user's own history, the row's `input` being the query.
- `ProfileBuilder(mode=...)` also builds the ablations of the paper's Table 5: summary only, retrieved items only,
  full history, another user's profile, and the profile with its words shuffled.

Histories are in chronological order, oldest first: "the most recent items" are the last ones.
"""

from __future__ import annotations

import hashlib
import json
import logging as stdlib_logging
import os
import random
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from transformers.utils import logging

from .data.tasks import get_task
from .embedded import EMBEDDED_BASE_MODEL, cache_dir
from .openai_compat import map_prompts

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.get_logger(__name__)
tqdm = logging.tqdm  # respects `transformers.utils.logging.disable_progress_bar()`

# Bump whenever the summary prompt or the system prompt changes: it is part of every cache key.
PROMPT_VERSION = "p2p-summary-1"
SYSTEM_PROMPT = "You study how people behave from their past activity and describe it concisely."
MODES = ("full", "summary", "retrieved", "history", "random_user", "shuffled")
RETRIEVED_HEADER = "Related past items:"
HISTORY_HEADER = "Past items:"

_SUMMARY_MODES = ("full", "summary", "random_user", "shuffled")
_SUMMARY_PROMPT = """\
Below is the past activity of one person on this task: {description}.

Describe how this person behaves and decides on this task: the habits, criteria and tendencies behind their \
answers, and their personal style and tone. Describe patterns that would help predict what they will do next. \
Do not list the particular items, topics, titles or names in their history.

Write one plain-text paragraph of at most {max_words} words, in the third person ("This user ..."), with no \
heading, no list and no introduction.

Past activity, oldest first:
{history}"""


# ----------------------------------------------------------------------------------------------------- text helpers


def _clip(text: str, max_chars: int) -> str:
    """Collapse whitespace and cut at a word boundary to at most `max_chars` characters (plus an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "..."


def format_items(items: Sequence[dict[str, str]], item_chars: int = 300) -> str:
    """
    One line per history item, `- input: ... | output: ...` (just `- ...` when the item has no input).

    Args:
        items (`list[dict]`): history items `{"input": str, "output": str}`.
        item_chars (`int`, defaults to 300): the input and the output of each item are clipped to this many
            characters.

    Returns:
        `str`: the items, one per line.

    Example:

    ```python
    >>> from hyperpeft.profile import format_items
    >>> print(format_items([{"input": "A heist goes wrong.", "output": "violence"}, {"input": "", "output": "hi!"}]))
    - input: A heist goes wrong. | output: violence
    - hi!
    ```
    """
    lines = []
    for item in items:
        source, output = _clip(item["input"], item_chars), _clip(item["output"], item_chars)
        lines.append(f"- input: {source} | output: {output}" if source else f"- {output}")
    return "\n".join(lines)


def build_summary_prompt(
    task: str, history: Sequence[dict[str, str]], max_items: int = 16, item_chars: int = 300, max_words: int = 60
) -> str:
    """
    The instruction given to the summarizer LLM for one user's history on one task.

    It asks how the user behaves and decides (habits, criteria, style), not which items they liked, and bounds the
    answer's length. Only the `max_items` most recent items are shown, each clipped to `item_chars` characters.

    Args:
        task (`str`): a key of `hyperpeft.data.TASKS`; its `description` is put in the prompt.
        history (`list[dict]`): the user's items `{"input": str, "output": str}`, oldest first.
        max_items (`int`, defaults to 16): how many of the most recent items are shown.
        item_chars (`int`, defaults to 300): clip length of each item's input and output.
        max_words (`int`, defaults to 60): the length limit stated in the prompt.

    Returns:
        `str`: the prompt (a user message; the chat template is applied by the summarizer).

    Example:

    ```python
    >>> from hyperpeft.profile import build_summary_prompt
    >>> prompt = build_summary_prompt("LaMP-2M", [{"input": "A heist goes wrong.", "output": "violence"}])
    >>> "tagging movies" in prompt and prompt.endswith("- input: A heist goes wrong. | output: violence")
    True
    ```
    """
    description = get_task(task).description
    shown = list(history)[-max_items:] if max_items > 0 else []
    return _SUMMARY_PROMPT.format(
        description=description, max_words=max_words, history=format_items(shown, item_chars)
    )


def _clean_summary(text: str) -> str:
    """Collapse whitespace, drop sentences that repeat an earlier one word for word (small models loop under greedy
    decoding), and drop a last sentence cut off by the token limit when a complete one comes before it."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    text = " ".join(dict.fromkeys(sentence for sentence in sentences if sentence))
    if text and text[-1] not in ".!?\"')":
        end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        if end > 0:
            text = text[: end + 1]
    return text


def _history_sha256(history: Sequence[dict[str, str]]) -> str:
    # Only the content counts; extra keys (ids, dates) do not change the summary's input.
    canonical = json.dumps([[item["input"], item["output"]] for item in history], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -------------------------------------------------------------------------------------------------------- retrieval


def _bm25s():
    try:
        import bm25s
    except ImportError:
        raise ImportError("BM25 retrieval needs the `bm25s` package: `pip install bm25s`.") from None
    # bm25s sets its own logger to DEBUG and logs every index it builds (one per user); keep it to warnings
    stdlib_logging.getLogger("bm25s").setLevel(stdlib_logging.WARNING)
    return bm25s


def _tokenize(texts: list[str]) -> list[list[str]]:
    return _bm25s().tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


class _HistoryIndex:
    """A BM25 index over one user's history items (input + output text of each item)."""

    def __init__(self, history: Sequence[dict[str, str]]) -> None:
        self.history = list(history)
        self._retriever = None
        if self.history:
            tokens = _tokenize([f"{item['input']} {item['output']}" for item in self.history])
            if any(tokens):  # bm25s cannot index a corpus without a single token
                self._retriever = _bm25s().BM25()
                self._retriever.index(tokens, show_progress=False)

    def top(self, query: str, k: int) -> list[dict[str, str]]:
        """The `k` items most relevant to `query`, best first; ties (or no shared word) go to recent items."""
        k = min(k, len(self.history))
        if k <= 0:
            return []
        scores = [0.0] * len(self.history)
        if self._retriever is not None:
            vocab = self._retriever.vocab_dict
            known = [token for token in _tokenize([query])[0] if token and token in vocab]
            if known:
                scores = [float(s) for s in self._retriever.get_scores(known)]
        order = sorted(range(len(self.history)), key=lambda i: (-scores[i], -i))
        return [self.history[i] for i in order[:k]]


def retrieve(query: str, history: Sequence[dict[str, str]], k: int = 2) -> list[dict[str, str]]:
    """
    The `k` history items most relevant to `query` by BM25 over each item's input and output text, best first.

    Ties, and a query that shares no word with the history, are broken in favour of the most recent items.

    Args:
        query (`str`): the current input.
        history (`list[dict]`): the user's items `{"input": str, "output": str}`, oldest first.
        k (`int`, defaults to 2): how many items to return (fewer if the history is shorter).

    Returns:
        `list[dict]`: the chosen items, most relevant first.

    Example:

    ```python
    >>> from hyperpeft.profile import retrieve
    >>> history = [{"input": "a space opera with robots", "output": "sci-fi"},
    ...            {"input": "two strangers fall in love in Paris", "output": "romance"}]
    >>> retrieve("robots invade a space station", history, k=1)[0]["output"]
    'sci-fi'
    ```
    """
    return _HistoryIndex(history).top(query, k)


# ------------------------------------------------------------------------------------------------------ summarizers


@runtime_checkable
class Summarizer(Protocol):
    """
    Anything that turns summary prompts into summaries.

    `name` identifies the model and its generation settings in the cache key: two summarizers that may write
    different summaries must have different names. An optional `batch_size` attribute tells `ProfileBuilder` how
    many prompts to pass per call (each call's summaries are saved as soon as it returns).
    """

    name: str

    def summarize(self, prompts: list[str]) -> list[str]: ...


class SummarizerError(RuntimeError):
    """A summarizer could not produce a summary (server error, unreachable endpoint, empty answer)."""


class TransformersSummarizer:
    """
    Writes summaries with a local chat model: chat template, left padding, greedy decoding, in batches.

    Args:
        model_name_or_path (`str`, defaults to `"smollm2-135m-instruct"`): Hub name, local path or the embedded short
            name; loaded with `hyperpeft.load_base_model` / `load_tokenizer` on first use. It also names the
            summarizer in the cache key, also when `model` is passed.
        batch_size (`int`, defaults to 8): prompts per `generate` call.
        max_new_tokens (`int`, defaults to 96): the summary's length limit in tokens.
        device (`str`, *optional*): where the model runs; defaults to CUDA when available (or the passed model's
            device), else the CPU.
        model (`transformers.PreTrainedModel`, *optional*): an already loaded causal LM.
        tokenizer (`transformers.PreTrainedTokenizerBase`, *optional*): its tokenizer (needs a chat template).
        system_prompt (`str`, *optional*): the system message; `None` sends none (the template's default, if any).
        generation_kwargs (`dict`, *optional*): more `GenerationConfig` fields, e.g. `{"no_repeat_ngram_size": 4}`
            (they become part of `name`, hence of the cache key).

    Example:

    ```python
    >>> from hyperpeft.profile import TransformersSummarizer, build_summary_prompt
    >>> summarizer = TransformersSummarizer("smollm2-135m-instruct", device="cpu")
    >>> prompt = build_summary_prompt("LaMP-3", [{"input": "Broke after a week.", "output": "1"}])
    >>> summary = summarizer.summarize([prompt])[0]  # a short paragraph, e.g. "This user ..."
    ```
    """

    def __init__(
        self,
        model_name_or_path: str = EMBEDDED_BASE_MODEL,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        device: str | None = None,
        *,
        model: Any | None = None,
        tokenizer: Any | None = None,
        system_prompt: str | None = SYSTEM_PROMPT,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        for arg, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` should be a positive integer but the value passed is {value!r}.")
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.system_prompt = system_prompt
        self._model = model
        self._tokenizer = tokenizer
        self.generation_kwargs = dict(generation_kwargs or {})
        self.name = f"transformers:{model_name_or_path}:greedy:max_new_tokens={max_new_tokens}"
        if self.generation_kwargs:
            self.name += ":" + json.dumps(self.generation_kwargs, sort_keys=True, separators=(",", ":"), default=str)
        if system_prompt != SYSTEM_PROMPT:  # the default is covered by PROMPT_VERSION
            self.name += f":system={_sha256(system_prompt or '')[:12]}"

    def load(self) -> tuple[Any, Any]:
        """Load the model and tokenizer now (otherwise the first `summarize` does); returns `(model, tokenizer)`."""
        import torch

        from .embedded import load_base_model, load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if self._model is None:
            self._model = load_base_model(self.model_name_or_path)
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model.to(device)
        elif self.device is not None:
            self._model.to(self.device)
        self._model.eval()
        return self._model, self._tokenizer

    def _chat(self, tokenizer: Any, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def summarize(self, prompts: list[str]) -> list[str]:
        """
        Args:
            prompts (`list[str]`): summary prompts (user messages), e.g. from `build_summary_prompt`.

        Returns:
            `list[str]`: one generated text per prompt, in order, special tokens removed.
        """
        import torch
        from transformers import GenerationConfig

        if not prompts:
            return []
        model, tokenizer = self.load()
        texts = [self._chat(tokenizer, prompt) for prompt in prompts]
        eos = model.generation_config.eos_token_id
        config = GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            **self.generation_kwargs,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos if eos is not None else tokenizer.eos_token_id,
        )
        # Longest first, so each batch holds prompts of similar length (less padding) and memory peaks at once.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: list[str] = [""] * len(texts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        device = next(model.parameters()).device
        for batch in tqdm(batches, desc="Summarizing", unit="batch", disable=len(batches) <= 1):
            encoded = tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                padding_side="left",
                add_special_tokens=False,  # the chat template already has them
            ).to(device)
            with torch.inference_mode():
                output = model.generate(**encoded, generation_config=config)
            new_tokens = output[:, encoded["input_ids"].shape[1] :]
            for i, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                results[i] = text.strip()
        return results


class OpenAISummarizer:
    """
    Writes summaries with any server that speaks the OpenAI chat-completions API (vLLM, llama.cpp, OpenAI, ...).

    Requests run concurrently in threads. `base_url` may end in `/v1` or not: the request goes to
    `<base_url>/v1/chat/completions` either way.

    Args:
        base_url (`str`): the server, e.g. `"http://localhost:8000"` or `"http://localhost:8000/v1"`.
        model (`str`): the model name the server expects.
        api_key (`str`, *optional*): sent as a bearer token; defaults to `$OPENAI_API_KEY` when set, else none.
        timeout (`float`, defaults to 60): seconds per request.
        max_concurrency (`int`, defaults to 4): requests in flight at once.
        max_tokens (`int`, defaults to 256): the summary's length limit in tokens.
        temperature (`float`, defaults to 0.0): sampling temperature (0 is greedy on most servers).
        system_prompt (`str`, *optional*): the system message; `None` sends none.

    Example:

    ```python
    >>> from hyperpeft.profile import OpenAISummarizer
    >>> summarizer = OpenAISummarizer("http://localhost:8000", model="Qwen/Qwen2.5-7B-Instruct")
    >>> summaries = summarizer.summarize(["Describe this user: ..."])  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        max_concurrency: int = 4,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        system_prompt: str | None = SYSTEM_PROMPT,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` should be an http(s) URL such as 'http://localhost:8000', not {base_url!r}.")
        for arg, value in (("max_concurrency", max_concurrency), ("max_tokens", max_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` should be a positive integer but the value passed is {value!r}.")
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.system_prompt = system_prompt
        self.name = f"openai:{model}:max_tokens={max_tokens}:temperature={temperature}"
        if system_prompt != SYSTEM_PROMPT:
            self.name += f":system={_sha256(system_prompt or '')[:12]}"

    @property
    def batch_size(self) -> int:
        """Prompts per `summarize` call from `ProfileBuilder`: a few rounds of concurrent requests."""
        return 4 * self.max_concurrency

    def _request(self, client: Any, prompt: str) -> str:
        import httpx

        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        payload = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        try:
            response = client.post(self.url, json=payload)
        except httpx.HTTPError as error:
            raise SummarizerError(f"Could not reach {self.url}: {type(error).__name__}: {error}") from None
        if response.status_code != 200:
            raise SummarizerError(
                f"POST {self.url} returned HTTP {response.status_code}: {_clip(response.text, 500) or '(no body)'}"
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SummarizerError(
                f"POST {self.url} answered without `choices[0].message.content`: {_clip(response.text, 500)}"
            ) from None
        if not isinstance(content, str):
            raise SummarizerError(f"POST {self.url} answered a non-text message content: {content!r}")
        return content.strip()

    def summarize(self, prompts: list[str]) -> list[str]:
        """
        Args:
            prompts (`list[str]`): summary prompts (user messages).

        Returns:
            `list[str]`: one answer per prompt, in order.

        Raises:
            `SummarizerError`: with the URL and the HTTP status (or the connection error) of a failed request.
        """
        return map_prompts(prompts, self._request, self.api_key, self.timeout, self.max_concurrency)


# ------------------------------------------------------------------------------------------------------------ cache


def default_cache_path() -> Path:
    """`$HYPERPEFT_CACHE/summaries.sqlite`, else `~/.cache/hyperpeft/summaries.sqlite`."""
    return cache_dir() / "summaries.sqlite"


class SummaryKey(NamedTuple):
    """What a cached summary depends on."""

    user_id: str
    task: str
    history_sha256: str
    summarizer: str
    prompt_version: str
    prompt_sha256: str  # the exact prompt: covers truncation settings and task descriptions


_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    user_id TEXT NOT NULL,
    task TEXT NOT NULL,
    history_sha256 TEXT NOT NULL,
    summarizer TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (user_id, task, history_sha256, summarizer, prompt_version, prompt_sha256)
)"""
_WHERE = (
    "user_id = ? AND task = ? AND history_sha256 = ? AND summarizer = ? AND prompt_version = ? AND prompt_sha256 = ?"
)


def _execute_retrying_when_locked(connection: sqlite3.Connection, statement: str, deadline: float) -> None:
    delay = 0.01
    while True:
        try:
            connection.execute(statement)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


class SummaryCache:
    """
    Summaries on disk in SQLite, one row per summary, safe to share between processes.

    WAL mode lets readers and one writer work at once; a busy timeout makes a second writer wait instead of failing;
    `INSERT OR IGNORE` keeps the first summary written for a key, and `put` returns what is stored, so every process
    ends up using the same text. Each `put` is its own committed transaction. WAL needs a local file system.

    Args:
        path (`str` or `Path`, *optional*): the database file; defaults to `default_cache_path()`.
        timeout (`float`, defaults to 60): seconds to wait for another process's write lock.

    Example:

    ```python
    >>> from hyperpeft.profile import SummaryCache, SummaryKey
    >>> with SummaryCache("/tmp/summaries.sqlite") as cache:
    ...     key = SummaryKey("u1", "LaMP-3", "0" * 64, "my-llm", "v1", "1" * 64)
    ...     cache.put({key: "This user rates generously."})[key]
    'This user rates generously.'
    ```
    """

    def __init__(self, path: str | os.PathLike | None = None, timeout: float = 60.0) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: we open transactions ourselves, so each `put` commits exactly once.
            self._connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            # Switching a new file to WAL and creating the table can report "locked" at once, without waiting, when
            # another process does the same at the same moment, so these two steps retry until `timeout`.
            deadline = time.monotonic() + timeout
            for statement in ("PRAGMA journal_mode = WAL", _SCHEMA):
                _execute_retrying_when_locked(self._connection, statement, deadline)
        except sqlite3.DatabaseError as error:
            raise ValueError(f"Cannot use {self.path} as a summary cache (an SQLite file): {error}.") from None

    def get(self, keys: Sequence[SummaryKey]) -> dict[SummaryKey, str]:
        """The cached summaries among `keys` (missing keys are left out)."""
        found = {}
        for key in dict.fromkeys(keys):
            row = self._connection.execute(f"SELECT summary FROM summaries WHERE {_WHERE}", tuple(key)).fetchone()
            if row is not None:
                found[key] = row[0]
        return found

    def put(self, summaries: dict[SummaryKey, str]) -> dict[SummaryKey, str]:
        """Store `summaries` in one transaction (keeping any already stored for a key); return the stored texts."""
        if not summaries:
            return {}
        now = time.time()
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT OR IGNORE INTO summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*key, summary, now) for key, summary in summaries.items()],
            )
            stored = {
                key: connection.execute(f"SELECT summary FROM summaries WHERE {_WHERE}", tuple(key)).fetchone()[0]
                for key in summaries
            }
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return stored

    def __len__(self) -> int:
        return self._connection.execute("SELECT COUNT(*) FROM summaries").fetchone()[0]

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> SummaryCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------------- builder


@dataclass
class _Row:
    id: str
    user_id: str
    task: str
    input: str
    history: list[dict[str, str]]
    profile_text: str | None
    history_sha256: str

    @property
    def owner(self) -> tuple[str, str, str]:
        """Rows with the same owner share one summary and one retrieval index."""
        return (self.user_id, self.task, self.history_sha256)


def _read_rows(dataset: Any) -> list[_Row]:
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
    columns = [*required, "profile_text"] if "profile_text" in dataset.column_names else list(required)
    rows = []
    for record in dataset.select_columns(columns).to_list():
        row_id = record["id"]
        for column in ("id", "user_id", "task", "input"):
            if not isinstance(record[column], str):
                raise TypeError(
                    f"Row {row_id!r}: `{column}` should be a string but is {type(record[column]).__name__}."
                )
        try:
            get_task(record["task"])
        except ValueError as error:
            raise ValueError(f"Row {row_id!r}: {error}") from None
        history = record["history"] or []
        if not isinstance(history, list):
            raise TypeError(f"Row {row_id!r}: `history` should be a list of items, not {type(history).__name__}.")
        for i, item in enumerate(history):
            if not isinstance(item, dict) or not isinstance(item.get("input"), str):
                raise TypeError(
                    f"Row {row_id!r}: `history[{i}]` should be a dict with a string `input`: {item!r:.200}."
                )
            if not isinstance(item.get("output"), str):
                raise TypeError(
                    f"Row {row_id!r}: `history[{i}]` should be a dict with a string `output`: {item!r:.200}."
                )
        history = [{"input": item["input"], "output": item["output"]} for item in history]
        profile_text = record.get("profile_text")
        if profile_text is not None and not isinstance(profile_text, str):
            raise TypeError(f"Row {row_id!r}: `profile_text` should be a string or None, not {profile_text!r}.")
        profile_text = profile_text.strip() if profile_text and profile_text.strip() else None
        rows.append(
            _Row(
                id=row_id,
                user_id=record["user_id"],
                task=record["task"],
                input=record["input"],
                history=history,
                profile_text=profile_text,
                history_sha256=_history_sha256(history),
            )
        )
    return rows


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
        - `"random_user"`: the full profile of another user of the same task (their summary and their items
          retrieved for this row's input), drawn once per user with `seed`; never the user's own.
        - `"shuffled"`: the full profile with its words in a random order drawn with `seed` and the row's id.

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
        history_chars (`int`, defaults to 4000): character budget of the `"history"` mode.
        summary_words (`int`, defaults to 60): the length limit the summary prompt asks for.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> from hyperpeft.profile import ProfileBuilder, TransformersSummarizer
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
        history_chars: int = 4000,
        summary_words: int = 60,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"`mode` should be one of {MODES} but the value passed is {mode!r}.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(
                f"`k` should be a non-negative integer (0 retrieves nothing) but the value passed is {k!r}."
            )
        if mode == "retrieved" and k == 0:
            raise ValueError(
                "`mode='retrieved'` builds the profile from the retrieved items only, so `k` must be >= 1."
            )
        if summarizer is not None and not isinstance(summarizer, Summarizer):
            raise TypeError(
                "`summarizer` should have a `name` and a `summarize(prompts)` method, not "
                f"{type(summarizer).__name__}."
            )
        positive = {"summary_items": summary_items, "item_chars": item_chars, "history_chars": history_chars}
        positive |= {"summary_words": summary_words, "batch_size": 1 if batch_size is None else batch_size}
        for arg, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` should be a positive integer but the value passed is {value!r}.")
        self.summarizer = summarizer
        self.cache_path = Path(cache_path) if cache_path is not None else default_cache_path()
        self.k = k
        self.mode = mode
        self.seed = seed
        self.batch_size = batch_size or int(getattr(summarizer, "batch_size", 8) or 8)
        self.summary_items = summary_items
        self.item_chars = item_chars
        self.history_chars = history_chars
        self.summary_words = summary_words

    def summary_prompt(self, task: str, history: Sequence[dict[str, str]]) -> str:
        """The prompt this builder sends to the summarizer for one user's history."""
        return build_summary_prompt(task, history, self.summary_items, self.item_chars, self.summary_words)

    def build(self, dataset: Dataset, show_progress: bool = True) -> Dataset:
        """
        Args:
            dataset (`datasets.Dataset`): rows with `id`, `user_id`, `task`, `input`, `history` and optionally
                `profile_text` (see `hyperpeft.data.ROW_COLUMNS`).
            show_progress (`bool`, defaults to `True`): show progress bars.

        Returns:
            `datasets.Dataset`: `dataset` with the columns `profile` (the text to encode), `summary` (the row's own
            user summary, `None` in the modes that use none) and, in `"random_user"` mode, `profile_user_id` (whose
            profile was used). Existing columns of those names are replaced.
        """
        rows = _read_rows(dataset)
        needs_summary = self.mode in _SUMMARY_MODES
        for row in rows:
            if not row.history and (row.profile_text is None or not needs_summary):
                what = "a `profile_text` or a non-empty `history`" if needs_summary else "a non-empty `history`"
                raise ValueError(
                    f"Row {row.id!r} (user {row.user_id!r}) has an empty history; mode {self.mode!r} needs {what}."
                )

        summaries = self._summaries(rows, show_progress) if needs_summary else {}
        donors = self._donors(rows) if self.mode == "random_user" else {}
        owners = {}  # the first row of each (user, task), for another user's profile
        for row in rows:
            owners.setdefault((row.user_id, row.task), row)
        indexes: dict[tuple[str, str, str], _HistoryIndex] = {}

        def items(owner: _Row, query: str) -> list[dict[str, str]]:
            if self.k == 0:
                return []
            if owner.owner not in indexes:
                indexes[owner.owner] = _HistoryIndex(owner.history)
            return indexes[owner.owner].top(query, self.k)

        profiles, own_summaries, profile_users = [], [], []

        def summary_of(owner: _Row) -> str | None:
            return owner.profile_text or summaries.get(owner.owner)

        for row in tqdm(rows, desc="Building profiles", unit="row", disable=not show_progress or len(rows) < 1000):
            summary = summary_of(row) if needs_summary else None
            owner = owners[(donors[(row.user_id, row.task)], row.task)] if donors else row
            if self.mode in ("full", "shuffled", "random_user"):
                profile = self._compose(summary_of(owner), items(owner, row.input))
                if self.mode == "shuffled":
                    words = profile.split()
                    random.Random(f"{self.seed}:{row.id}").shuffle(words)
                    profile = " ".join(words)
            elif self.mode == "summary":
                profile = summary
            elif self.mode == "retrieved":
                profile = f"{RETRIEVED_HEADER}\n{format_items(items(row, row.input), self.item_chars)}"
            else:  # "history"
                profile = f"{HISTORY_HEADER}\n{self._recent_history(row.history)}"
            profiles.append(profile)
            own_summaries.append(summary)
            profile_users.append(owner.user_id)

        new_columns = {"profile": profiles, "summary": own_summaries}
        if self.mode == "random_user":
            new_columns["profile_user_id"] = profile_users
        replaced = [column for column in new_columns if column in dataset.column_names]
        if replaced:
            logger.info("Replacing the existing column(s) %s.", replaced)
            dataset = dataset.remove_columns(replaced)
        for column, values in new_columns.items():
            dataset = dataset.add_column(column, values)
        return dataset

    def _compose(self, summary: str, items: list[dict[str, str]]) -> str:
        if not items:
            return summary
        return f"{summary}\n\n{RETRIEVED_HEADER}\n{format_items(items, self.item_chars)}"

    def _recent_history(self, history: list[dict[str, str]]) -> str:
        """The most recent items whose lines fit `history_chars` (at least one), oldest first."""
        lines = format_items(history, self.item_chars).split("\n")
        kept, used = [], 0
        for line in reversed(lines):
            if kept and used + len(line) + 1 > self.history_chars:
                break
            kept.append(line[: self.history_chars])
            used += len(line) + 1
        return "\n".join(reversed(kept))

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
        keys = {owner: SummaryKey(*owner, name, PROMPT_VERSION, _sha256(prompt)) for owner, prompt in prompts.items()}
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
                    text = _clean_summary(text) if isinstance(text, str) else ""
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


__all__ = [
    "HISTORY_HEADER",
    "MODES",
    "PROMPT_VERSION",
    "RETRIEVED_HEADER",
    "SYSTEM_PROMPT",
    "OpenAISummarizer",
    "ProfileBuilder",
    "Summarizer",
    "SummarizerError",
    "SummaryCache",
    "SummaryKey",
    "TransformersSummarizer",
    "build_summary_prompt",
    "default_cache_path",
    "format_items",
    "retrieve",
]
