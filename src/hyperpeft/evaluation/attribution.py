"""Author attribution: does an answer read as written by its user rather than by another test user?

ROUGE against one gold continuation barely moves with the user. Attribution asks the personalization question
directly: each candidate user is the mean sentence embedding of their own history texts, an answer is ranked against
every candidate by cosine similarity, and the rank of the true user gives accuracy@1 and the mean reciprocal rank.
With `n` candidates, an answer that says nothing about its user scores 1/n at accuracy@1 (about (ln n + 0.58)/n MRR).

Sentence embeddings follow the topic. When the rows' inputs are given, every candidate's history items written for
the answer's own input (the same news article, say) are left out of that candidate's centroid for that answer: an
answer that restates its input is then not credited to whoever wrote about that input before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..encoder import ProfileEncoder

# The most recent history items that stand for a user: enough for a stable centroid, bounded encoder work.
MAX_ITEMS_PER_USER = 64
# Inputs are compared after cutting (a loader may keep only an article's first characters): one input that starts
# with the other counts as the same when the shorter has at least this many characters.
MIN_PREFIX_CHARS = 40


def _input_key(text: str | None) -> str:
    return " ".join((text or "").split()).rstrip("…").rstrip()


def same_input(a: str | None, b: str | None) -> bool:
    """Whether two inputs are one, allowing for either being a cut copy (whitespace and a final ellipsis ignored)."""
    return _same_key(_input_key(a), _input_key(b))


def _same_key(a: str, b: str) -> bool:
    if not a or not b:
        return False
    short, long = sorted((a, b), key=len)
    return short == long or (len(short) >= MIN_PREFIX_CHARS and long.startswith(short))


class AuthorAttribution:
    """
    Ranks answers' authors among a fixed set of candidate users, each the unit-length mean embedding of their own
    history outputs (the most recent `MAX_ITEMS_PER_USER`); users without a history text are not candidates.

    Args:
        encoder ([`ProfileEncoder`]): the sentence encoder of answers and history texts.
        users (`list[str]`) and histories (`list[list[dict]]`): one entry per row (the first row of a user gives
            their history); the candidates are these users.

    Example:

    ```python
    >>> import torch
    >>> from hyperpeft.encoder import ProfileEncoder
    >>> from hyperpeft.evaluation.attribution import AuthorAttribution
    >>> class Letters:  # a toy sentence encoder: counts of a, b and c
    ...     def encode(self, texts, **kwargs):
    ...         return torch.tensor([[float(t.count(c)) for c in "abc"] for t in texts])
    >>> histories = [[{"input": f"news {i}", "output": c * 3}] for i, c in enumerate("abc")]
    >>> attribution = AuthorAttribution(ProfileEncoder(model=Letters()), ["u0", "u1", "u2"], histories)
    >>> attribution.ranks(["aab", "aab"], ["u0", "u1"])
    [1, 2]
    >>> attribution.ranks(["aab"], ["u1"], inputs=["news 0"])  # u0 wrote "aaa" on news 0: left out for this answer
    [1]
    ```
    """

    def __init__(self, encoder: ProfileEncoder, users: Sequence[str], histories: Sequence[Sequence[dict]]) -> None:
        if len(users) != len(histories):
            raise ValueError(f"Got {len(users)} users for {len(histories)} histories; pass one history per row.")
        items: dict[str, list[dict]] = {}
        for user, history in zip(users, histories):
            if user not in items:
                kept = [item for item in history or [] if item.get("output", "").strip()]
                items[user] = kept[-MAX_ITEMS_PER_USER:]
        self.encoder = encoder
        self.candidates = [user for user, kept in items.items() if kept]
        self._index = {user: i for i, user in enumerate(self.candidates)}
        flat = [item for user in self.candidates for item in items[user]]
        self._owner = torch.tensor([self._index[user] for user in self.candidates for _ in items[user]])
        self._item_keys = [_input_key(item.get("input")) for item in flat]
        self._items = self._unit(encoder.encode([item["output"] for item in flat])) if flat else torch.empty(0)

    @staticmethod
    def _unit(embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embeddings.float(), dim=-1)

    def _centroids(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each candidate's unit mean of its kept items, and whether it kept any."""
        sums = torch.zeros(len(self.candidates), self._items.shape[1]).index_add_(
            0, self._owner, self._items * keep[:, None]
        )
        counts = torch.zeros(len(self.candidates)).index_add_(0, self._owner, keep.float())
        return self._unit(sums), counts > 0

    def ranks(
        self, answers: Sequence[str], users: Sequence[str], inputs: Sequence[str] | None = None
    ) -> list[int | None]:
        """
        The rank (1: most similar) of each answer's own user among the candidates; `None` when that user is not a
        candidate or there are fewer than two. An empty answer ranks last: it carries no authorship. With `inputs`
        (one per answer) the candidates' items on an answer's input are left out for that answer, and a candidate
        with no other item is not ranked against it.
        """
        if len(answers) != len(users) or (inputs is not None and len(inputs) != len(answers)):
            raise ValueError(
                f"Got {len(answers)} answers for {len(users)} users"
                + ("" if inputs is None else f" and {len(inputs)} inputs")
                + "; pass one of each per answer."
            )
        ranks: list[int | None] = [None] * len(answers)
        if len(self.candidates) < 2:
            return ranks
        spoken = [i for i, (a, u) in enumerate(zip(answers, users)) if u in self._index and a.strip()]
        embedded = self._unit(self.encoder.encode([answers[i] for i in spoken])) if spoken else None
        spoken_row = {i: row for row, i in enumerate(spoken)}
        by_input: dict[str | None, tuple[torch.Tensor, torch.Tensor]] = {}  # the centroids without each input's items
        for i, user in enumerate(users):
            if user not in self._index:
                continue
            key = None if inputs is None else _input_key(inputs[i])
            if key not in by_input:
                keep = [key is None or not _same_key(key, other) for other in self._item_keys]
                by_input[key] = self._centroids(torch.tensor(keep, dtype=torch.float32))
            centroids, present = by_input[key]
            own = self._index[user]
            if not present[own] or int(present.sum()) < 2:
                continue
            if i not in spoken_row:  # an empty answer
                ranks[i] = int(present.sum())
                continue
            similarity = centroids @ embedded[spoken_row[i]]
            ranks[i] = 1 + int(((similarity > similarity[own]) & present).sum())
        return ranks
