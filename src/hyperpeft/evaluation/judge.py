"""An LLM judge: scores a generated answer from 1 to 5 against the reference, knowing who the user is.

The judge is a local transformers chat model (e.g. the embedded SmolLM2-135M, which runs offline but is far too small
to judge well: treat its scores as a smoke test, not a measurement) or any OpenAI-compatible endpoint. Scores are
parsed strictly; an answer without a score is counted as unparseable and left out of the mean (the count is reported).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..embedded import EMBEDDED_BASE_MODEL
from ..openai_compat import map_prompts

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


class TransformersJudge:
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
        self.name = f"transformers:{model_name_or_path}"
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self._model, self._tokenizer = model, tokenizer

    def _load(self):
        from ..embedded import load_base_model, load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        if self._model is None:
            self._model = load_base_model(self.model_name_or_path)
        return self._model.eval(), self._tokenizer

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """The judge's raw replies, starting with the `"Score: "` prefix it was given."""
        model, tokenizer = self._load()
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": p}],
                tokenize=False,
                add_generation_prompt=True,
            )
            + "Score: "
            for p in prompts
        ]
        replies = [""] * len(texts)
        device = next(model.parameters()).device
        batches = [list(range(i, min(i + self.batch_size, len(texts)))) for i in range(0, len(texts), self.batch_size)]
        for batch in tqdm(batches, desc="judging", leave=False):
            encoded = tokenizer(
                [texts[i] for i in batch], return_tensors="pt", padding=True, padding_side="left",
                add_special_tokens=False,
            ).to(device)  # fmt: skip
            with torch.inference_mode():
                output = model.generate(
                    **encoded, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            for i, row in zip(batch, output[:, encoded["input_ids"].shape[1] :]):
                replies[i] = "Score: " + tokenizer.decode(row, skip_special_tokens=True).strip()
        return replies


class OpenAIJudge:
    """
    An OpenAI-compatible chat-completions endpoint as judge (vLLM, llama.cpp, OpenAI, ...), temperature 0.

    Args:
        base_url (`str`): e.g. `"http://localhost:8000"` (with or without `/v1`).
        model (`str`): the model name the server expects.
        api_key (`str`, *optional*): sent as a bearer token.
        timeout (`float`, defaults to 60): seconds per request.
        max_concurrency (`int`, defaults to 4): requests in flight at once.
    """

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60, max_concurrency: int = 4
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` should be an http(s) URL such as 'http://localhost:8000', not {base_url!r}.")
        base = base_url.rstrip("/")
        self.url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        self.model, self.api_key, self.timeout, self.max_concurrency = model, api_key, timeout, max_concurrency
        self.name = f"openai:{model}"

    def _request(self, client: Any, prompt: str) -> str:
        import httpx

        messages = [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": prompt}]
        payload = {"model": self.model, "messages": messages, "max_tokens": 16, "temperature": 0.0}
        try:
            response = client.post(self.url, json=payload)
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as error:
            raise RuntimeError(f"The judge at {self.url} failed: {type(error).__name__}: {error}") from None

    def complete(self, prompts: Sequence[str]) -> list[str]:
        """The judge's raw replies, in order."""
        return map_prompts(prompts, self._request, self.api_key, self.timeout, self.max_concurrency)


def make_judge(spec: str | dict | None):
    """`None` (no judge), a transformers model name, or `{"base_url": ..., "model": ...}` for an endpoint."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return TransformersJudge(spec)
    if isinstance(spec, dict) and {"base_url", "model"} <= spec.keys():
        return OpenAIJudge(**spec)
    raise ValueError(f"`judge` should be null, a model name, or {{base_url: ..., model: ...}}; got {spec!r}.")


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
