"""Profile guidance: `generate(profile=..., negative_profile=..., guidance_scale=g)` decodes from
`negative + g · (own − negative)` log-probabilities, each row with its own profile, and leaves the model as it was."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tokenizer, perturb, profiles
from test_model import batch, build
from transformers import GenerationConfig

from hyperpeft.evaluation.generation import generate_answers

SETTINGS = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)


def guided_by_hand(model, ids, mask, own, negative, scale, steps):
    """Greedy decoding with full forwards (no cache) under each adapter: the reference the processor must match."""
    scores = []
    for _ in range(steps):
        with torch.no_grad():
            own_logits = model(input_ids=ids, attention_mask=mask, profile_embeddings=own).logits[:, -1]
            negative_logits = model(input_ids=ids, attention_mask=mask, profile_embeddings=negative).logits[:, -1]
        own_logp, negative_logp = own_logits.log_softmax(-1), negative_logits.log_softmax(-1)
        step = negative_logp + scale * (own_logp - negative_logp)
        scores.append(step)
        ids = torch.cat([ids, step.argmax(-1, keepdim=True)], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    return ids, scores


@pytest.mark.parametrize("per_row_negative", [False, True])
@pytest.mark.parametrize("call", ["keywords", "positional ids and a generation config"])
def test_guided_tokens_and_scores_match_the_formula(arch, per_row_negative, call):
    model = build(arch)
    perturb(model, std=1.0)
    ids, mask = batch(rows=3)  # left padding of different lengths
    own = profiles(3, seed=4)
    negative = profiles(3, seed=9) if per_row_negative else profiles(1, seed=9)[0]
    output = dict(output_scores=True, return_dict_in_generate=True)
    if call == "keywords":
        out = model.generate(
            input_ids=ids, attention_mask=mask, profile=own, negative_profile=negative, guidance_scale=3.0,
            **output, **SETTINGS,
        )  # fmt: skip
    else:
        config = GenerationConfig(guidance_scale=3.0, **output, **SETTINGS)
        out = model.generate(
            ids, attention_mask=mask, profile=own, negative_profile=negative, generation_config=config
        )
        assert config.guidance_scale == 3.0  # the caller's config is not changed
    expected_ids, expected_scores = guided_by_hand(
        model, ids, mask, own, negative.expand(3, -1) if negative.ndim == 1 else negative, 3.0, 5
    )
    assert torch.equal(out.sequences, expected_ids)
    for got, expected in zip(out.scores, expected_scores):
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    plain = model.generate(input_ids=ids, attention_mask=mask, profile=own, **SETTINGS)
    assert not torch.equal(plain, out.sequences)  # else this test could not tell guidance from none


def test_scale_one_is_plain_decoding_and_the_model_is_left_as_it_was():
    model = build()
    perturb(model, std=1.0)
    ids, mask = batch(rows=2)
    own = profiles(2, seed=4)
    plain = model.generate(input_ids=ids, attention_mask=mask, profile=own, **SETTINGS)
    same = model.generate(
        input_ids=ids, attention_mask=mask, profile=own, negative_profile=profiles(2, seed=9), guidance_scale=1.0,
        **SETTINGS,
    )  # fmt: skip
    assert torch.equal(plain, same)
    assert model.base_model._generated.weights is None  # neither adapter stays in place after generate
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, profile=own, **SETTINGS), plain)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs `guidance_scale` >= 1"),
        ({"guidance_scale": 0.5}, "needs `guidance_scale` >= 1"),
        ({"guidance_scale": 2.0, "num_beams": 2}, "one sequence per row"),
        ({"guidance_scale": 2.0, "negative_prompt_ids": torch.ones(2, 1, dtype=torch.long)}, "not both"),
    ],
)
def test_bad_guidance_settings_are_refused(kwargs, message):
    model = build()
    ids, mask = batch(rows=2)
    with pytest.raises(ValueError, match=message):
        model.generate(
            input_ids=ids, attention_mask=mask, profile=profiles(2), negative_profile=profiles(2, seed=9),
            **{**SETTINGS, **kwargs},
        )  # fmt: skip
    assert model.base_model._generated.weights is None


def test_a_negative_profile_needs_an_own_profile():
    model = build()
    ids, mask = batch(rows=2)
    with model.disable_adapter(), pytest.raises(ValueError, match="pass `profile=` too"):
        model.generate(
            input_ids=ids, attention_mask=mask, negative_profile=profiles(2), guidance_scale=2.0, **SETTINGS
        )


def test_evaluation_answers_are_guided_when_asked():
    model, tokenizer = build(), make_tokenizer()
    perturb(model, std=1.0)
    inputs = ["w1 w2", "w3 w4 w5"]
    own, negative = profiles(2, seed=4), profiles(1, seed=9)[0]

    def answers(**guidance):
        return generate_answers(
            model,
            tokenizer,
            ["LaMP-7"] * 2,
            inputs,
            profiles=own,
            max_new_tokens=6,
            generation_kwargs=guidance or None,
        )

    guided = answers(guidance_scale=3.0, negative_profile=negative)
    assert guided != answers()
    assert answers(guidance_scale=1.0, negative_profile=negative) == answers()


def test_a_negative_profile_per_row_must_match_the_batch():
    model = build()
    ids, mask = batch(rows=2)
    with pytest.raises(ValueError, match="3 profiles for a batch of 2"):
        model.generate(
            input_ids=ids, attention_mask=mask, profile=profiles(2), negative_profile=profiles(3), guidance_scale=2.0,
            **SETTINGS,
        )  # fmt: skip
