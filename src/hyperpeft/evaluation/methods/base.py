"""The interface every evaluated method has: made from the run, prepared once, then answering rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Answers:
    """
    A method's answers in the order of the evaluated rows, their generation seconds, preparation per user, and (when
    the run asks for it) each row's gold answer's NLL under the method (`hyperpeft.evaluation.likelihood`).
    """

    answers: list[str]
    seconds: float
    prep_s_per_user: dict[str, float] = field(default_factory=dict)
    gold_nll: list[float] | None = None


class Method:
    """
    One evaluated method. Subclasses implement `answer`, and `prepare` when they train or load something.

    Args:
        name (`str`): its name in the registry (`"rag"`, `"p2p"`, ...).
        run ([`RunContext`]): what the run's methods share (config, tokenizer, data, base model).
    """

    def __init__(self, name: str, run) -> None:
        self.name = name
        self.run = run

    def prepare(self) -> dict[str, Any]:
        """Train or load what the method needs (once); returns what the report says about it."""
        return {}

    def answer(self, rows) -> Answers:
        """The method's answers to `rows` (a `datasets.Dataset` of the common schema with profiles)."""
        raise NotImplementedError

    def generate(
        self, model, rows, desc: str | None = None, generation_kwargs: dict | None = None, **kwargs: Any
    ) -> Answers:
        """
        Greedy answers of `model` with the run's prompts, batch size and token limits, timed; with `eval.gold_nll`,
        also the gold answers' NLL after the same conversations (`profiles`, `contexts` in `kwargs`). The
        `generation_kwargs` (e.g. profile guidance) change the decoding only: the gold NLL is the model's own.
        """
        from ..generation import generate_answers
        from ..likelihood import gold_nll

        evaluation = self.run.config.eval
        start = time.perf_counter()
        answers = generate_answers(
            model, self.run.tokenizer, rows["task"], rows["input"], batch_size=evaluation.eval_batch_size,
            max_new_tokens=evaluation.max_new_tokens, desc=desc or self.name, generation_kwargs=generation_kwargs,
            **kwargs,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        nll = None
        if evaluation.gold_nll:
            nll = gold_nll(
                model, self.run.tokenizer, rows["task"], rows["input"], rows["output"],
                batch_size=evaluation.eval_batch_size, **kwargs,
            )  # fmt: skip
        return Answers(answers, seconds, gold_nll=nll)
