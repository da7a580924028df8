"""The gold answer's teacher-forced NLL: the same value as the model's own loss, per row whatever the batch, and each
row scored with its own profile."""

from __future__ import annotations

import pytest
import torch
from conftest import PROFILE_DIM, make_base, make_tokenizer, perturb, profiles

from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.data.tasks import chat_messages
from hyperpeft.evaluation.likelihood import gold_nll

TASKS = ["LaMP-5"] * 3
INPUTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"]
GOLDS = ["w10 w11", "w12 w13 w14 w15", "w16"]


def loss_of_one_row(model, tokenizer, task, text, gold, context=None, **kwargs) -> float:
    """The model's own loss (`labels`, prompt positions ignored) on one unpadded row."""
    messages = chat_messages(task, text, context)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": gold}], tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + answer_ids])
    labels = ids.clone()
    labels[0, : len(prompt_ids)] = -100
    with torch.no_grad():
        return model(input_ids=ids, labels=labels, **kwargs).loss.item()


def test_gold_nll_is_the_models_loss_on_each_row_whatever_the_batch():
    tokenizer, model = make_tokenizer(), make_base()
    contexts = [None, "w20 w21", None]
    got = gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, contexts=contexts, batch_size=3)
    expected = [loss_of_one_row(model, tokenizer, *row) for row in zip(TASKS, INPUTS, GOLDS, contexts)]
    assert got == pytest.approx(expected, abs=1e-5)
    assert gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, contexts=contexts, batch_size=1) == pytest.approx(got)
    # a context block is part of the conditioning: without it the second row's value changes
    assert gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, batch_size=3)[1] != pytest.approx(got[1])


def test_each_row_is_scored_with_its_own_profile():
    tokenizer = make_tokenizer()
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM)).eval()
    perturb(model)  # ΔW non-zero and different per user
    users = profiles(3)
    got = gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, profiles=users, batch_size=3)
    for i, row in enumerate(zip(TASKS, INPUTS, GOLDS)):
        alone = loss_of_one_row(model, tokenizer, *row, profile_embeddings=users[i : i + 1])
        assert got[i] == pytest.approx(alone, abs=1e-5)
    swapped = gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, profiles=users[[1, 2, 0]], batch_size=3)
    assert all(a != pytest.approx(b) for a, b in zip(got, swapped))


def test_rows_must_line_up():
    tokenizer, model = make_tokenizer(), make_base()
    with pytest.raises(ValueError, match="one entry per row"):
        gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS[:2])
    with pytest.raises(ValueError, match="one entry per row"):
        gold_nll(model, tokenizer, TASKS, INPUTS, GOLDS, contexts=[None])
