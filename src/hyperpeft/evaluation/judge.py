"""An LLM judge: scores a generated answer from 1 to 5 against the reference, knowing who the user is.

The judge is a local transformers chat model (e.g. the embedded SmolLM2-135M, which runs offline but is far too small
to judge well: treat its scores as a smoke test, not a measurement) or any OpenAI-compatible endpoint. Scores are
parsed strictly; an answer without a score is counted as unparseable and left out of the mean (the count is reported).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..embedded import EMBEDDED_BASE_MODEL
from ..llm import OpenAIChat, TransformersChat, make_llm

RUBRIC = """You grade how well a candidate text matches what one particular person would have written.

About the person:
{profile}

The text this person actually wrote:
{reference}

The candidate text:
{answer}

Grade the candidate from 1 to 5:
5 - says what the person said, in their voice; a reader could take it for theirs.
4 - the same content and stance, with small differences of tone or detail.
3 - on topic and partly in their manner, but generic or missing their main points.
2 - on topic but written as someone else would write it, or mostly generic.
1 - off topic, empty, or contradicts what the person wrote.

Reply with the grade only, as "Score: N"."""

JUDGE_SYSTEM_PROMPT = "You are a strict, consistent grader."
SCORE_PREFIX = "Score: "
_SCORE = re.compile(r"^\s*(?:score\s*[:=]?\s*)?\**([1-5])\**(?![\d.])", re.IGNORECASE)


def judge_prompt(profile: str, reference: str, answer: str) -> str:
    """The rubric filled in for one answer."""
    return RUBRIC.format(
        profile=profile.strip() or "(nothing known)", reference=reference.strip(), answer=answer.strip()
    )


def parse_score(text: str) -> int | None:
    """
    The grade at the start of a judge's reply (`"Score: 4"`, `"4"`, `"**4** because ..."`), or `None`.

    Example:

    ```python
    >>> parse_score("Score: 4"), parse_score("4/5"), parse_score("I'd say 4"), parse_score("Score: 6")
    (4, 4, None, None)
    ```
    """
    match = _SCORE.match(text or "")
    return int(match.group(1)) if match else None


class _Judge:
    """The rubric as a user message (after the grader's system prompt) to an LLM of `hyperpeft.llm`."""

    def __init__(self, llm) -> None:
        self.llm = llm
        self.name = llm.name

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """The judge's raw replies, in order (a local model's start with the `"Score: "` it was given)."""
        conversations = [
            [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": p}] for p in prompts
        ]
        if not self.llm.supports_reply_prefix:
            return self.llm.complete(conversations, max_tokens=16)
        # started with "Score: ", even a small model answers with a digit
        sequential = [
            list(range(i, min(i + self.llm.batch_size, len(prompts))))
            for i in range(0, len(prompts), self.llm.batch_size)
        ]
        replies = self.llm.complete(conversations, 3, reply_prefix=SCORE_PREFIX, batches=sequential, desc="judging")
        return [SCORE_PREFIX + reply for reply in replies]


class TransformersJudge(_Judge):
    """
    A local chat model as judge: greedy, a few new tokens, the reply started with `"Score: "` so that even a small
    model answers with a digit.

    Args:
        model_name_or_path (`str`, defaults to the embedded SmolLM2-135M-Instruct): loaded with
            `hyperpeft.load_base_model` on first use unless `model` is given.
        batch_size (`int`, defaults to 8): prompts per `generate` call.
        model, tokenizer (*optional*): an already loaded model and tokenizer.
    """

    def __init__(
        self, model_name_or_path: str = EMBEDDED_BASE_MODEL, batch_size: int = 8, *, model: Any = None, tokenizer=None
    ) -> None:
        super().__init__(TransformersChat(model_name_or_path, batch_size, model=model, tokenizer=tokenizer))
        self.model_name_or_path = model_name_or_path


class OpenAIJudge(_Judge):
    """
    An OpenAI-compatible chat-completions endpoint as judge (vLLM, llama.cpp, OpenAI, ...), temperature 0, through
    the official `openai` client (retries with backoff, a timeout, bounded concurrency).

    Args:
        base_url (`str`): e.g. `"http://localhost:8000"` (with or without `/v1`).
        model (`str`): the model name the server expects.
        api_key (`str`, *optional*): sent as a bearer token.
        timeout (`float`, defaults to 60): seconds per request.
        max_concurrency (`int`, defaults to 4): requests in flight at once.
        max_retries (`int`, defaults to 2): retries of a failed request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        max_concurrency: int = 4,
        max_retries: int = 2,
    ) -> None:
        super().__init__(OpenAIChat(base_url, model, api_key, timeout, max_retries, max_concurrency))
        self.url = self.llm.url


def make_judge(spec: str | dict | None) -> _Judge | None:
    """`None` (no judge), a transformers model name, or `{"base_url": ..., "model": ...}` for an endpoint."""
    llm = make_llm(spec, "judge")  # validates the spec
    if llm is None:
        return None
    return TransformersJudge(spec) if isinstance(llm, TransformersChat) else OpenAIJudge(**spec)


def judge_scores(judge: Any, profiles: Sequence[str], references: Sequence[str], answers: Sequence[str]) -> dict:
    """
    Judge every answer; returns the mean grade over the parseable replies, their count, and the unparseable count.

    Example:

    ```python
    >>> judge_scores(TransformersJudge(), ["writes tersely"], ["Sad news."], ["So sad."])  # doctest: +SKIP
    {'judge': 4.0, 'judged': 1, 'judge_unparseable': 0}
    ```
    """
    if not len(profiles) == len(references) == len(answers):
        raise ValueError("`profiles`, `references` and `answers` should have one entry per answer.")
    replies = judge.complete([judge_prompt(p, r, a) for p, r, a in zip(profiles, references, answers)])
    scores = [parse_score(reply) for reply in replies]
    valid = [s for s in scores if s is not None]
    return {
        "judge": sum(valid) / len(valid) if valid else float("nan"),
        "judged": len(valid),
        "judge_unparseable": len(scores) - len(valid),
    }
