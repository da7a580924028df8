"""`IncrementalDetokenizer`: a sequence's new text as its tokens arrive, cut before a stop string."""

from __future__ import annotations

from collections.abc import Sequence

# The tokenizer's stand-in for bytes that do not yet form a whole character (one multi-byte character split over
# several tokens): held back until the character is complete.
_INCOMPLETE = "\ufffd"


class IncrementalDetokenizer:
    """
    Turns one sequence's generated token ids into text as they come, and finds the first stop string in it.

    `push(token_id)` returns the text that is now safe to send: text that could still turn out to begin a stop string,
    or the first bytes of a character split over tokens, is held back until the next tokens settle it. Once a stop
    string appears, the text is cut just before it and `stopped` is set; `finish()` returns whatever was held back.

    Args:
        tokenizer: the model's tokenizer (its `decode` with `skip_special_tokens=True` is used).
        stop (`Sequence[str]`): stop strings; the text never contains any of them.

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained("gpt2")
    >>> text = IncrementalDetokenizer(tokenizer, stop=["."])
    >>> "".join(text.push(t) for t in tokenizer("Hello there. Bye")["input_ids"]), text.stopped
    ('Hello there', True)
    ```
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.token_ids: list[int] = []
        self.text = ""  # all the text so far (cut at the stop string once one is found)
        self.sent = 0  # characters of `text` handed out
        self.stopped = False
        self._holdback = max((len(s) for s in self.stop), default=1) - 1

    def push(self, token_id: int) -> str:
        """Add one generated token; return the new text that is safe to send now."""
        if self.stopped:
            return ""
        self.token_ids.append(token_id)
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        # a stop string can only end in the new text, so search from where a stop could begin
        start = max(self.sent - self._holdback, 0)
        cuts = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
        if cuts:
            self.text, self.stopped = text[: min(cuts)], True
            return self._take(len(self.text))
        self.text = text
        safe = len(text) - self._holdback
        while safe > self.sent and text[safe - 1] == _INCOMPLETE:
            safe -= 1
        return self._take(safe)

    def finish(self) -> str:
        """The text held back so far (at the end of the sequence nothing can complete it any more)."""
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        if end <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent : end], end
        return piece
