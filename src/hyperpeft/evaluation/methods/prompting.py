"""The prompt-based baselines: what each one puts before the task prompt, cut to a token budget.

Every method answers with the same system message, task prompt, greedy decoding and token limits
(`hyperpeft.data.tasks.chat_messages`); the prompt-based ones only add a context block to the user's turn:

- `base`: nothing;
- `rag`: the k history items BM25 finds closest to the input;
- `pag`: the user's profile summary, then those k items;
- `full_history`: the most recent history items that fit the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from ..._validation import check_int
from ...profiles import format_items, retrieve
from .base import Answers, Method

PROMPT_METHODS = ("base", "rag", "pag", "full_history")
SUMMARY_HEADER = "What this user is like:"
ITEMS_HEADER = "Items from this user's history:"


def _tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _cut(tokenizer: PreTrainedTokenizerBase, text: str, budget: int) -> str:
    """`text` cut to its first `budget` tokens."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= budget else tokenizer.decode(ids[:budget]).rstrip() + " ..."


def _fit_lines(tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], budget: int) -> list[str]:
    """The leading lines whose tokens (one more per newline) fit `budget`."""
    kept, used = [], 0
    for line in lines:
        cost = _tokens(tokenizer, line) + 1
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    return kept


def summary_of(row: Mapping[str, Any]) -> str:
    """The row's profile summary: the `summary` column written by `ProfileBuilder`, else the data's `profile_text`."""
    summary = row.get("summary") or row.get("profile_text")
    if not summary:
        raise ValueError(
            f"Row {row.get('id')!r} has neither a `summary` nor a `profile_text`; PAG needs one (build profiles "
            "with `hyperpeft.profiles.build_profiles` first)."
        )
    return summary


def build_context(
    method: str,
    row: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    k: int = 2,
    context_tokens: int = 512,
    history_tokens: int = 1024,
    item_chars: int = 300,
) -> str | None:
    """
    The context block `method` puts before the row's task prompt, or `None` for `base`.

    Args:
        method (`str`): one of `PROMPT_METHODS`.
        row (`Mapping`): a row of the common schema (`input`, `history`, and for PAG `summary` or `profile_text`).
        tokenizer: counts tokens for the budgets.
        k (`int`, defaults to 2): retrieved items for RAG and PAG.
        context_tokens (`int`, defaults to 512): the token budget of the RAG and PAG blocks; PAG's summary takes
            at most half of it, the items what is left.
        history_tokens (`int`, defaults to 1024): the token budget of the full-history block (a stand-in for "the
            context window minus the prompt and the answer", kept small on a CPU).
        item_chars (`int`, defaults to 300): each item's input and output are clipped to this many characters.

    Example:

    ```python
    >>> from hyperpeft.embedded import load_tokenizer
    >>> row = {"input": "robots in space", "history": [{"input": "a robot film", "output": "sci-fi"}]}
    >>> print(build_context("rag", row, load_tokenizer("smollm2-135m-instruct"), k=1))
    Items from this user's history:
    - input: a robot film | output: sci-fi
    ```
    """
    if method not in PROMPT_METHODS:
        raise ValueError(f"`method` should be one of {PROMPT_METHODS} but the value passed is {method!r}.")
    for name, value in (("k", k), ("context_tokens", context_tokens), ("history_tokens", history_tokens)):
        check_int(name, value, minimum=0)
    if method == "base":
        return None
    history = list(row["history"] or [])
    parts, budget = [], context_tokens
    if method == "pag":
        summary = _cut(tokenizer, summary_of(row), context_tokens // 2)
        parts.append(f"{SUMMARY_HEADER}\n{summary}")
        budget -= _tokens(tokenizer, parts[0])
    if method == "full_history":
        newest_first = format_items(history[::-1], item_chars).split("\n") if history else []
        lines = _fit_lines(tokenizer, newest_first, history_tokens)[::-1]  # shown oldest first
    else:
        items = retrieve(row["input"], history, k) if k and history else []
        lines = _fit_lines(tokenizer, format_items(items, item_chars).split("\n"), budget) if items else []
    if lines:
        parts.append(ITEMS_HEADER + "\n" + "\n".join(lines))
    return "\n\n".join(parts) or None


def build_contexts(method: str, rows: Any, tokenizer: PreTrainedTokenizerBase, **kwargs: Any) -> list[str | None]:
    """[`build_context`] for every row of a `datasets.Dataset` (or a list of row mappings)."""
    return [build_context(method, row, tokenizer, **kwargs) for row in rows]


class PromptMethod(Method):
    """`base`, `rag`, `pag` or `full_history`: the run's base model with the method's context (`build_context`)."""

    def answer(self, rows) -> Answers:
        evaluation = self.run.config.eval
        contexts = build_contexts(
            self.name, rows, self.run.tokenizer, k=self.run.k, context_tokens=evaluation.context_tokens,
            history_tokens=evaluation.history_tokens,
        )  # fmt: skip
        return self.generate(self.run.base, rows, contexts=contexts)
