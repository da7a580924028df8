"""Batched greedy answers for evaluation rows, with the same prompts and token limits for every method."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ..data.tasks import CLASSIFICATION, RATING, chat_messages, get_task
from ..llm import chat_generate

# New-token limits per metric kind: enough for a label, a digit, or a short text.
MAX_NEW_TOKENS = {CLASSIFICATION: 8, RATING: 4}
DEFAULT_MAX_NEW_TOKENS = 32


def generate_answers(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    inputs: Sequence[str],
    profiles: Sequence[str] | torch.Tensor | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    desc: str = "generating",
    contexts: Sequence[str | None] | None = None,
    generation_kwargs: dict | None = None,
) -> list[str]:
    """
    Greedy answers for rows given as parallel lists of task names and inputs, batched by task (so each batch shares
    its token limit). With `profiles`, each row's profile goes to a hyperpeft model's `generate(profile=...)`; with
    `contexts`, each row's context block is put before its task prompt (see [`chat_messages`]); `generation_kwargs`
    go to every `generate` call.

    Returns:
        `list[str]`: the decoded answers, in the order of `inputs`.
    """
    if len(tasks) != len(inputs) or any(x is not None and len(x) != len(inputs) for x in (profiles, contexts)):
        raise ValueError("`tasks`, `inputs`, `profiles` and `contexts` should have one entry per row.")
    contexts = list(contexts) if contexts is not None else [None] * len(inputs)
    by_task: dict[str, list[int]] = {}
    lengths = [len(x) + len(c or "") for x, c in zip(inputs, contexts)]
    for i in sorted(range(len(inputs)), key=lambda i: lengths[i]):  # similar lengths pad less
        by_task.setdefault(tasks[i], []).append(i)
    answers: list[str] = [""] * len(inputs)
    model.eval()
    for task, rows in by_task.items():  # one token limit per task
        conversations = [chat_messages(task, inputs[i], contexts[i]) for i in rows]
        batches = [list(range(j, min(j + batch_size, len(rows)))) for j in range(0, len(rows), batch_size)]

        def row_profiles(batch: list[int], rows: list[int] = rows) -> dict:
            if profiles is None:
                return {}
            index = [rows[k] for k in batch]
            return {"profile": profiles[index] if isinstance(profiles, torch.Tensor) else [profiles[i] for i in index]}

        limit = max_new_tokens or MAX_NEW_TOKENS.get(get_task(task).metric, DEFAULT_MAX_NEW_TOKENS)
        replies = chat_generate(
            model, tokenizer, conversations, limit, batches=batches, batch_kwargs=row_profiles,
            generation_kwargs=generation_kwargs, desc=f"{desc} ({task})",
        )  # fmt: skip
        for i, reply in zip(rows, replies):
            answers[i] = reply
    return answers
