"""Author attribution: does an answer read as written by its user rather than by another test user?

ROUGE against one gold continuation barely moves with the user. Attribution asks the personalization question
directly: each candidate user is the mean sentence embedding of their own history texts, an answer is ranked against
every candidate by cosine similarity, and the rank of the true user gives accuracy@1 and the mean reciprocal rank.
With `n` candidates, an answer that says nothing about its user scores 1/n at accuracy@1 (about (ln n + 0.58)/n MRR).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..encoder import ProfileEncoder

# The most recent history items that stand for a user: enough for a stable centroid, bounded encoder work.
MAX_ITEMS_PER_USER = 64


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
    >>> histories = [[{"output": "aaa"}], [{"output": "bbb"}]]
    >>> attribution = AuthorAttribution(ProfileEncoder(model=Letters()), ["u1", "u2"], histories)
    >>> attribution.ranks(["aab", "aab"], ["u1", "u2"])
    [1, 2]
    ```
    """

    def __init__(self, encoder: ProfileEncoder, users: Sequence[str], histories: Sequence[Sequence[dict]]) -> None:
        if len(users) != len(histories):
            raise ValueError(f"Got {len(users)} users for {len(histories)} histories; pass one history per row.")
        texts: dict[str, list[str]] = {}
        for user, history in zip(users, histories):
            if user not in texts:
                outputs = [item["output"] for item in history or [] if item.get("output", "").strip()]
                texts[user] = outputs[-MAX_ITEMS_PER_USER:]
        self.encoder = encoder
        self.candidates = [user for user, items in texts.items() if items]
        self._index = {user: i for i, user in enumerate(self.candidates)}
        centroids = [self._unit(encoder.encode(texts[user])).mean(0) for user in self.candidates]
        self._centroids = self._unit(torch.stack(centroids)) if centroids else torch.empty(0)

    @staticmethod
    def _unit(embeddings: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(embeddings.float(), dim=-1)

    def ranks(self, answers: Sequence[str], users: Sequence[str]) -> list[int | None]:
        """
        The rank (1: most similar) of each answer's own user among the candidates; `None` when that user is not a
        candidate or there are fewer than two. An empty answer ranks last: it carries no authorship.
        """
        if len(answers) != len(users):
            raise ValueError(f"Got {len(answers)} answers for {len(users)} users; pass one user per answer.")
        ranks: list[int | None] = [None] * len(answers)
        if len(self.candidates) < 2:
            return ranks
        spoken = [i for i, (a, u) in enumerate(zip(answers, users)) if u in self._index and a.strip()]
        for i, (answer, user) in enumerate(zip(answers, users)):
            if user in self._index and not answer.strip():
                ranks[i] = len(self.candidates)
        if spoken:
            similarity = self._unit(self.encoder.encode([answers[i] for i in spoken])) @ self._centroids.T
            for row, i in enumerate(spoken):
                own = similarity[row, self._index[users[i]]]
                ranks[i] = 1 + int((similarity[row] > own).sum())
        return ranks
