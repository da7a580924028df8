"""`SummaryCache`: the summaries on disk in SQLite, keyed by everything a summary depends on."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..embedded import cache_dir


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
    >>> from hyperpeft.profiles import SummaryCache, SummaryKey
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


def history_sha256(history: Sequence[dict[str, str]]) -> str:
    """The sha256 of a history's content; extra keys (ids, dates) do not change the summary's input."""
    canonical = json.dumps([[item["input"], item["output"]] for item in history], ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
