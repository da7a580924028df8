"""How likely a method finds the user's real answer: the teacher-forced negative log-likelihood of each gold output.

A generated text is one sample; the gold output's likelihood reads the whole distribution, so it sees a profile's
effect that greedy decoding hides. Each gold answer is scored after the very conversation the method answers (the
same prompt, context block and per-row profile), over the tokens that training puts a loss on: the assistant's turn
as the chat template writes it, its end-of-turn token included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from ..data.tasks import chat_messages


def _prompt_and_answer_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict], gold: str) -> tuple[list, list]:
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": gold}], tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            f"The chat template of {tokenizer.name_or_path!r} does not write a conversation with its answer as the "
            "prompt followed by the answer, so the answer's tokens cannot be told apart; score with another template."
        )

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]  # the template has the special tokens

    return ids(prompt), ids(full[len(prompt) :])


def gold_nll(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    inputs: Sequence[str],
    golds: Sequence[str],
    profiles: Sequence[str] | torch.Tensor | None = None,
    contexts: Sequence[str | None] | None = None,
    batch_size: int = 8,
) -> list[float]:
    """
    Each gold output's mean negative log-likelihood per token (nats) under `model`, after the row's conversation.

    Args:
        model: a causal LM; a hyperpeft model is given each row's profile (`profiles`).
        tokenizer: its tokenizer, with a chat template.
        tasks, inputs, golds (`list[str]`): one entry per row.
        profiles (`list[str]` or `torch.Tensor`, *optional*): each row's profile, for a hyperpeft model.
        contexts (`list[str | None]`, *optional*): each row's context block (as [`chat_messages`] puts it).
        batch_size (`int`, defaults to 8): rows per forward pass (right-padded; a row's value does not depend on
            its batch).

    Returns:
        `list[float]`: one value per row, in the order of `inputs`; lower means the model expected the answer more.

    Example:

    ```python
    >>> from hyperpeft.embedded import load_base_model, load_tokenizer
    >>> from hyperpeft.evaluation.likelihood import gold_nll
    >>> model, tokenizer = load_base_model(), load_tokenizer()
    >>> abstract, title = "We scale attention linearly with the length of a document.", "Longformer"
    >>> gold_nll(model, tokenizer, ["LaMP-5"], [abstract], [title])  # doctest: +SKIP
    [8.75...]
    ```
    """
    n = len(inputs)
    if len(tasks) != n or len(golds) != n or any(x is not None and len(x) != n for x in (profiles, contexts)):
        raise ValueError("`tasks`, `inputs`, `golds`, `profiles` and `contexts` should have one entry per row.")
    contexts = list(contexts) if contexts is not None else [None] * n
    encoded = [
        _prompt_and_answer_ids(tokenizer, chat_messages(t, x, c), y)
        for t, x, c, y in zip(tasks, inputs, contexts, golds)
    ]  # fmt: skip
    order = sorted(range(n), key=lambda i: sum(map(len, encoded[i])))  # similar lengths pad less
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    found = [float("nan")] * n
    model.eval()
    for start in range(0, n, batch_size):
        batch = order[start : start + batch_size]
        sequences = [encoded[i][0] + encoded[i][1] for i in batch]
        width = max(map(len, sequences))
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        scored = torch.zeros_like(input_ids, dtype=torch.bool)  # the answer's tokens
        for row, (i, sequence) in enumerate(zip(batch, sequences)):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            attention_mask[row, : len(sequence)] = 1
            scored[row, len(encoded[i][0]) : len(sequence)] = True
        extra = {}
        if profiles is not None:
            extra["profile"] = profiles[batch] if isinstance(profiles, torch.Tensor) else [profiles[i] for i in batch]
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **extra).logits
        # position t predicts token t + 1; only the answer's positions are scored (the vocabulary is large)
        mask = scored[:, 1:].to(device)
        token_nll = torch.nn.functional.cross_entropy(
            logits[:, :-1][mask].float(), input_ids[:, 1:].to(device)[mask], reduction="none"
        )
        totals = torch.zeros(len(batch), device=device).index_add_(0, mask.nonzero()[:, 0], token_nll)
        per_row = totals / mask.sum(-1).clamp(min=1)
        for i, value in zip(batch, per_row.tolist()):
            found[i] = value
    return found


__all__ = ["gold_nll"]
