"""The summary prompt: what the summarizer LLM is asked about one user's history, and how its answer is tidied.

Histories are in chronological order, oldest first: "the most recent items" are the last ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..data.tasks import get_task

# Bump whenever the summary prompt or the system prompt changes: it is part of every cache key.
PROMPT_VERSION = "p2p-summary-1"
SYSTEM_PROMPT = "You study how people behave from their past activity and describe it concisely."
_SUMMARY_PROMPT = """\
Below is the past activity of one person on this task: {description}.

Describe how this person behaves and decides on this task: the habits, criteria and tendencies behind their \
answers, and their personal style and tone. Describe patterns that would help predict what they will do next. \
Do not list the particular items, topics, titles or names in their history.

Write one plain-text paragraph of at most {max_words} words, in the third person ("This user ..."), with no \
heading, no list and no introduction.

Past activity, oldest first:
{history}"""


def _clip(text: str, max_chars: int) -> str:
    """Collapse whitespace and cut at a word boundary to at most `max_chars` characters (plus an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "..."


def format_items(items: Sequence[dict[str, str]], item_chars: int = 300, input_chars: int | None = None) -> str:
    """
    One line per history item, `- input: ... | output: ...` (just `- ...` when the item has no input).

    Args:
        items (`list[dict]`): history items `{"input": str, "output": str}`.
        item_chars (`int`, defaults to 300): the input and the output of each item are clipped to this many
            characters.
        input_chars (`int`, *optional*): clip the inputs to this many characters instead; 0 leaves them out, so
            that each line is the user's own output.

    Returns:
        `str`: the items, one per line.

    Example:

    ```python
    >>> from hyperpeft.profiles import format_items
    >>> print(format_items([{"input": "A heist goes wrong.", "output": "violence"}, {"input": "", "output": "hi!"}]))
    - input: A heist goes wrong. | output: violence
    - hi!
    >>> print(format_items([{"input": "A heist goes wrong.", "output": "violence"}], input_chars=0))
    - violence
    ```
    """
    input_chars = item_chars if input_chars is None else input_chars
    lines = []
    for item in items:
        source = _clip(item["input"], input_chars) if input_chars else ""
        output = _clip(item["output"], item_chars)
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
    >>> from hyperpeft.profiles import build_summary_prompt
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


def clean_summary(text: str) -> str:
    """Collapse whitespace, drop sentences that repeat an earlier one word for word (small models loop under greedy
    decoding), and drop a last sentence cut off by the token limit when a complete one comes before it."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    text = " ".join(dict.fromkeys(sentence for sentence in sentences if sentence))
    if text and text[-1] not in ".!?\"')":
        end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
        if end > 0:
            text = text[: end + 1]
    return text
