"""One PEFT Per User (OPPU): for each test user, a fresh LoRA trained on that user's own history only, used for that
user's queries, then removed. Its training time per user is the cost that P2P's one forward pass replaces."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging
from trl import SFTConfig

from ...training.recipes import conversation_rows
from ..generation import generate_answers
from ..likelihood import gold_nll
from .base import Answers, Method
from .mt_lora import train_lora

logger = logging.get_logger(__name__)


@dataclass
class OppuResult:
    """Answers in the order of the evaluated rows (with `score_gold`, the gold answers' NLL too), and per user:
    training seconds and training rows."""

    answers: list[str]
    train_seconds: dict[str, float] = field(default_factory=dict)
    train_rows: dict[str, int] = field(default_factory=dict)
    generate_seconds: float = 0.0
    gold_nll: list[float] | None = None


def _opening(text: str) -> str:
    """The first 80 characters of `text` with whitespace collapsed and a trailing ellipsis dropped: enough to tell
    whether a history item's (possibly shortened) input is an evaluated row's input."""
    return " ".join(text.split()).rstrip("…").rstrip()[:80]


def user_history_rows(rows: Dataset, user_id: str) -> Dataset:
    """
    The training rows of one user: the distinct items of the histories of that user's evaluated rows, as
    prompt-completion conversations of the row's task. An item that is one of the user's evaluated rows (the same
    output and the same opening of its input) is left out: data such as Empathic Conversations put a user's other
    essays in each row's history, so another query's answer would otherwise be trained on. Items that merely share
    a label with a query (a rating of 4, a tag) are kept.
    """
    own = [row for row in rows if row["user_id"] == user_id]
    evaluated = {(row["output"], _opening(row["input"])) for row in own}
    seen, tasks, inputs, outputs = set(), [], [], []
    for row in own:
        for item in row["history"] or []:
            key = (row["task"], item["input"], item["output"])
            if key in seen or (item["output"], _opening(item["input"])) in evaluated:
                continue
            seen.add(key)
            tasks.append(row["task"])
            inputs.append(item["input"])
            outputs.append(item["output"])
    return conversation_rows(tasks, inputs, outputs)


def run_oppu(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Dataset,
    args: SFTConfig,
    lora: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    score_gold: bool = False,
) -> OppuResult:
    """
    OPPU over the evaluated `rows` (common schema): per user, train a LoRA on [`user_history_rows`] only, answer that
    user's rows with it, and unload it, so the next user starts from the untouched base model. A user without history
    is answered by the base model (and has no training time).

    Args:
        model: the base causal LM; it is wrapped and unwrapped per user and comes back unchanged.
        tokenizer: its tokenizer.
        rows (`datasets.Dataset`): the evaluated rows, several users.
        args (`trl.SFTConfig`): per-user training (epochs or steps, learning rate, batch size).
        lora (`dict`, *optional*): `peft.LoraConfig` fields over the default r = 8 on q_proj and v_proj.
        batch_size, max_new_tokens: for generation, as in [`generate_answers`].
        score_gold (`bool`, defaults to `False`): also score each gold answer's NLL under its user's LoRA
            ([`gold_nll`]).

    Returns:
        [`OppuResult`]

    Example:

    ```python
    >>> from hyperpeft.training.recipes import trainer_config
    >>> args = trainer_config("out/oppu", num_train_epochs=2)
    >>> result = run_oppu(base, tokenizer, test_rows, args)  # doctest: +SKIP
    >>> sum(result.train_seconds.values()) / len(result.train_seconds)  # seconds per user  # doctest: +SKIP
    ```
    """
    if isinstance(model, PeftModel):
        raise TypeError("`model` should be the base model; OPPU adds (and removes) its own LoRA per user.")
    users = list(dict.fromkeys(rows["user_id"]))
    result = OppuResult(answers=[""] * len(rows), gold_nll=[float("nan")] * len(rows) if score_gold else None)
    for user in tqdm(users, desc="OPPU users", leave=False):
        index = [i for i, u in enumerate(rows["user_id"]) if u == user]
        own = rows.select(index)
        train = user_history_rows(own, user)
        result.train_rows[user] = len(train)
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        personal = train_lora(model, tokenizer, train, args, lora) if len(train) else model
        if len(train):
            result.train_seconds[user] = time.perf_counter() - start
        else:
            logger.warning("OPPU: user %r has no history; the base model answers.", user)
        start = time.perf_counter()
        answers = generate_answers(
            personal, tokenizer, own["task"], own["input"], batch_size=batch_size, max_new_tokens=max_new_tokens,
            desc=f"OPPU {user}",
        )  # fmt: skip
        result.generate_seconds += time.perf_counter() - start
        for i, answer in zip(index, answers):
            result.answers[i] = answer
        if score_gold:
            nll = gold_nll(personal, tokenizer, own["task"], own["input"], own["output"], batch_size=batch_size)
            for i, value in zip(index, nll):
                result.gold_nll[i] = value
        if isinstance(personal, PeftModel):
            model = personal.unload()  # the base model without this user's LoRA
    return result


class OPPU(Method):
    """One PEFT per user: a LoRA trained on each test user's history at answer time, its seconds the user's
    preparation cost. It wraps (and unwraps) the run's shared base model."""

    def answer(self, rows) -> Answers:
        run, settings = self.run, self.run.config.oppu
        overrides = {"disable_tqdm": True, "logging_strategy": "no", **settings.oppu_training}
        args = run.trainer_config(run.workdir / "oppu", overrides)
        result = run_oppu(
            run.base, run.tokenizer, rows, args, settings.oppu_lora, run.config.eval.eval_batch_size,
            run.config.eval.max_new_tokens, score_gold=run.config.eval.gold_nll,
        )  # fmt: skip
        return Answers(result.answers, result.generate_seconds, result.train_seconds, result.gold_nll)
