"""The methods an evaluation compares, one small interface each, in one registry.

A method is made from the run's shared [`RunContext`], then `prepare()` (train or load whatever it needs, once) and
`answer(rows)` (its answers to the evaluated rows, the seconds they took, and each user's adapter-preparation
seconds where the method prepares one per user).

| name | what answers | |
| --- | --- | --- |
| `base`, `rag`, `pag`, `full_history` | the base model, with a context block before the task prompt (`prompting`) | |
| `mt_lora` | one LoRA trained on every training row without user context (`mt_lora`) | |
| `oppu` | one LoRA per test user, trained on that user's history alone (`oppu`) | |
| `p2p` | the hypernetwork's adapter from each row's profile (`p2p`) | |
| `p2p_other_user` | the same hypernetwork given another test user's profile of the same task (the ablation) | |
"""

from __future__ import annotations

from .base import Answers, Method
from .mt_lora import MTLoRA
from .oppu import OPPU
from .p2p import P2P, P2POtherUser
from .prompting import PromptMethod

REGISTRY: dict[str, type] = {
    "base": PromptMethod,
    "rag": PromptMethod,
    "pag": PromptMethod,
    "full_history": PromptMethod,
    "mt_lora": MTLoRA,
    "oppu": OPPU,
    "p2p": P2P,
    "p2p_other_user": P2POtherUser,
}


def make_method(name: str, run):
    """The method `name` of `REGISTRY`, for the run `run`."""
    if name not in REGISTRY:
        raise ValueError(f"Unknown method {name!r}; known: {tuple(REGISTRY)}.")
    return REGISTRY[name](name, run)


__all__ = ["REGISTRY", "Answers", "Method", "make_method"]
