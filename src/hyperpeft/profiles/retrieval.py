"""BM25 retrieval over one user's history (`bm25s`): the k items closest to the current input."""

from __future__ import annotations

import logging as stdlib_logging
from collections.abc import Sequence


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


class HistoryIndex:
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
    >>> from hyperpeft.profiles import retrieve
    >>> history = [{"input": "a space opera with robots", "output": "sci-fi"},
    ...            {"input": "two strangers fall in love in Paris", "output": "romance"}]
    >>> retrieve("robots invade a space station", history, k=1)[0]["output"]
    'sci-fi'
    ```
    """
    return HistoryIndex(history).top(query, k)
