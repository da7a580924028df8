"""HyperPeftModel maths: identity at init, per-row LoRA, generation, gradients, dtypes, merging, threads."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb, profiles

from hyperpeft import HyperLoraConfig, HyperPeftModel


def build(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **config) -> HyperPeftModel:
    config = {"r": 4, "lora_alpha": 8, "profile_dim": PROFILE_DIM, **config}
    model = HyperPeftModel(make_base(arch, seed, dtype), HyperLoraConfig(**config))
    return model.eval()


def batch(rows: int = 3, length: int = 7, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, 96, (rows, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    # left padding of different lengths, as batched generation uses
    for row in range(1, rows):
        ids[row, :row] = 0
        mask[row, :row] = 0
    return ids, mask


@pytest.mark.parametrize("shared_lora", [False, True])
def test_identity_at_init(arch, shared_lora):
    reference = make_base(arch)
    model = build(arch, shared_lora=shared_lora)
    ids, mask = batch()
    expected = reference(input_ids=ids, attention_mask=mask).logits
    got = model(input_ids=ids, attention_mask=mask, profile_embeddings=profiles(3)).logits
    assert torch.equal(got, expected)
    lora = model.base_model.generate_lora(profiles(3))
    for a, b in lora.values():
        assert torch.count_nonzero(b) == 0 and torch.count_nonzero(a) > 0


def test_only_the_hypernetwork_is_trainable(arch):
    model = build(arch)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("base_model.hypernetwork.") for n in trainable)
    assert len(trainable) == len(list(model.hypernetwork.parameters()))


def test_profile_changes_the_output():
    model = build()
    perturb(model)
    ids, mask = batch(rows=2)
    first = model(input_ids=ids, attention_mask=mask, profile_embeddings=profiles(2, seed=5)).logits
    second = model(input_ids=ids, attention_mask=mask, profile_embeddings=profiles(2, seed=6)).logits
    with model.disable_adapter():
        base = model(input_ids=ids, attention_mask=mask).logits
    assert (first - second).abs().max() > 1e-3
    assert (first - base).abs().max() > 1e-3


def test_per_row_lora_equals_each_row_alone(arch):
    model = build(arch)
    perturb(model)
    ids, mask = batch(rows=3)
    users = profiles(3)
    together = model(input_ids=ids, attention_mask=mask, profile_embeddings=users).logits
    for row in range(3):
        keep = mask[row].bool()
        alone = model(input_ids=ids[row : row + 1, keep], profile_embeddings=users[row]).logits[0]
        torch.testing.assert_close(together[row, keep], alone, atol=1e-5, rtol=1e-4)


def test_wrapped_layer_matches_the_lora_formula_for_3d_and_2d_inputs():
    """x Wᵀ + scaling · (x Aᵢᵀ) Bᵢᵀ for each row i, whether a row is a sequence (B, T, in) or one vector (B, in)."""
    model = build()
    perturb(model)
    layer = model.base_model.model.model.layers[1].self_attn.q_proj
    users = profiles(3)
    a, b = (w[:, layer.position] for w in model.base_model.generate_lora(users)[layer.module_type])
    x = torch.randn(3, 5, layer.in_features)
    expected = layer.base_layer(x) + layer.scaling * (x @ a.transpose(1, 2)) @ b.transpose(1, 2)
    with torch.no_grad(), model.base_model.use_profile(users):
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x[:, 0]), expected[:, 0], atol=1e-5, rtol=1e-5)
        with pytest.raises(ValueError, match="3 profiles"):
            layer(x[:2])


def test_generate_per_row_equals_each_row_alone(arch):
    model = build(arch)
    perturb(model, std=1.0)
    ids, mask = batch(rows=3)
    users = profiles(3)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    together = model.generate(input_ids=ids, attention_mask=mask, profile=users, **kwargs)
    outputs = set()
    for row in range(3):
        keep = mask[row].bool()
        alone = model.generate(input_ids=ids[row : row + 1, keep], profile=users[row], **kwargs)
        assert torch.equal(together[row, -6:], alone[0, -6:])
        outputs.add(tuple(alone[0, -6:].tolist()))
    with model.disable_adapter():
        base = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
    assert not torch.equal(base, together)  # the test would be vacuous if the adapters changed nothing


def test_generate_with_beams_keeps_each_rows_profile():
    model = build()
    perturb(model, std=1.0)
    ids, mask = batch(rows=2)
    users = profiles(2)
    kwargs = dict(max_new_tokens=4, do_sample=False, num_beams=2, pad_token_id=0, eos_token_id=None)
    together = model.generate(input_ids=ids, attention_mask=mask, profile=users, **kwargs)
    alone = model.generate(input_ids=ids[1:, 1:], profile=users[1], **kwargs)
    assert torch.equal(together[1, -4:], alone[0, -4:])


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("shared_lora", [False, True])
def test_gradients_reach_every_hypernetwork_parameter_and_no_base_parameter(arch, checkpointing, shared_lora):
    model = build(arch, shared_lora=shared_lora)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    perturb(model)  # non-zero B, so the A head gets gradient too
    ids, mask = batch(rows=2)
    out = model(input_ids=ids, attention_mask=mask, labels=ids, profile_embeddings=profiles(2))
    out.loss.backward()
    for name, parameter in model.hypernetwork.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    for name, parameter in model.base_model.model.named_parameters():
        assert parameter.grad is None, name
    model.base_model.release_profile()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_bases(dtype):
    model = build(dtype=dtype)
    perturb(model, std=0.05)
    ids, mask = batch(rows=2)
    reference = build()
    perturb(reference, std=0.05)
    users = profiles(2)
    got = model(input_ids=ids, attention_mask=mask, profile_embeddings=users).logits
    expected = reference(input_ids=ids, attention_mask=mask, profile_embeddings=users).logits
    assert got.dtype == dtype and torch.isfinite(got).all()
    assert model.hypernetwork.trunk[0].weight.dtype == torch.float32  # the hypernetwork stays in fp32
    torch.testing.assert_close(got.float(), expected, atol=0.1, rtol=0.05)


def test_merge_equals_the_generated_adapter_and_unmerge_restores():
    model = build()
    perturb(model)
    before = {n: p.clone() for n, p in model.base_model.model.named_parameters()}
    ids, mask = batch(rows=1, length=5)
    user = profiles(1)[0]
    expected = model(input_ids=ids, profile_embeddings=user).logits
    model.base_model.merge_profile(user)
    merged = model(input_ids=ids).logits  # no profile needed while one is merged
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="merged"):
        model(input_ids=ids, profile_embeddings=user)
    model.unmerge_adapter()
    for name, parameter in model.base_model.model.named_parameters():
        torch.testing.assert_close(parameter, before[name], atol=1e-6, rtol=0)


def test_safe_merge_refuses_nan():
    model = build()
    perturb(model)
    with torch.no_grad():
        model.hypernetwork.heads["v_proj"].bias.fill_(float("nan"))
    before = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    with pytest.raises(ValueError, match="NaN"):
        model.base_model.merge_profile(profiles(1)[0], safe_merge=True)
    after = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(before, after)  # the q_proj merge that succeeded was rolled back


def test_merge_and_unload_returns_the_personalised_base():
    model = build()
    perturb(model)
    ids, _ = batch(rows=1)
    user = profiles(1)[0]
    expected = model(input_ids=ids, profile_embeddings=user).logits
    plain = model.merge_and_unload(profile=user)
    assert not any("HyperLora" in type(m).__name__ for m in plain.modules())
    torch.testing.assert_close(plain(input_ids=ids).logits, expected, atol=1e-5, rtol=1e-4)


def test_threads_get_what_each_would_get_alone():
    model = build()
    perturb(model, std=1.0)
    ids, _ = batch(rows=1)
    users = profiles(6)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    alone = [model.generate(input_ids=ids, profile=users[i], **kwargs) for i in range(6)]
    assert len({tuple(t[0].tolist()) for t in alone}) > 1
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = model.generate(input_ids=ids, profile=users[i], **kwargs)
                assert torch.equal(results[i], alone[i])
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for i in range(6):
        assert torch.equal(results[i], alone[i])


# ---- bad input ----------------------------------------------------------------------------------------------------


def test_missing_profile_is_refused():
    model = build()
    ids, _ = batch(rows=1)
    with pytest.raises(ValueError, match="needs a profile"):
        model(input_ids=ids)


def test_profile_embeddings_of_the_wrong_width():
    model = build()
    ids, _ = batch(rows=2)
    with pytest.raises(ValueError, match=r"shape \(batch, 8\).*\(2, 5\)"):
        model(input_ids=ids, profile_embeddings=torch.randn(2, 5))


def test_number_of_profiles_must_match_rows():
    model = build()
    ids, _ = batch(rows=3)
    with pytest.raises(ValueError, match="Got 2 profiles for a batch of 3 rows"):
        model(input_ids=ids, profile_embeddings=profiles(2))
    with pytest.raises(ValueError, match="Got 2 profiles for a batch of 3 rows"):
        model.generate(input_ids=ids, profile=profiles(2), max_new_tokens=2)


def test_nan_embeddings_and_integer_embeddings():
    model = build()
    ids, _ = batch(rows=1)
    with pytest.raises(ValueError, match="NaN"):
        model(input_ids=ids, profile_embeddings=torch.full((1, PROFILE_DIM), float("nan")))
    with pytest.raises(TypeError, match="floating point"):
        model(input_ids=ids, profile_embeddings=torch.ones(1, PROFILE_DIM, dtype=torch.long))


def test_bad_profile_texts(minilm_encoder):
    model = build(profile_dim=384)
    model.base_model.profile_encoder = minilm_encoder
    ids, _ = batch(rows=2)
    with pytest.raises(ValueError, match=r"`profile\[1\]` is empty"):
        model(input_ids=ids, profile=["likes jazz", "  "])
    with pytest.raises(TypeError, match=r"`profile\[0\]` should be a string but is int"):
        model(input_ids=ids, profile=[3, "likes jazz"])
    with pytest.raises(ValueError, match="empty list"):
        model(input_ids=ids, profile=[])
    with pytest.raises(TypeError, match="string or a list of strings"):
        model(input_ids=ids, profile={"user": "x"})


def test_encoder_of_another_width_is_refused(minilm_encoder):
    model = build()  # profile_dim 8
    model.base_model.profile_encoder = minilm_encoder
    ids, _ = batch(rows=1)
    with pytest.raises(ValueError, match="384-d embeddings but the hypernetwork expects profile_dim=8"):
        model(input_ids=ids, profile="likes jazz")


def test_text_profiles_match_their_embeddings(minilm_encoder):
    model = build(profile_dim=384)
    model.base_model.profile_encoder = minilm_encoder
    perturb(model)
    ids, mask = batch(rows=2)
    texts = ["writes short lowercase replies", "Writes Long, Formal Letters."]
    by_text = model(input_ids=ids, attention_mask=mask, profile=texts).logits
    by_embedding = model(input_ids=ids, attention_mask=mask, profile_embeddings=minilm_encoder.encode(texts)).logits
    assert torch.equal(by_text, by_embedding)


def test_target_modules_that_do_not_exist():
    with pytest.raises(ValueError, match=r"\['qkv'\] do not exist.*'down_proj'.*'q_proj'"):
        HyperPeftModel(make_base(), HyperLoraConfig(profile_dim=PROFILE_DIM, target_modules=["q_proj", "qkv"]))


def test_wrong_types_for_the_constructor():
    with pytest.raises(TypeError, match="HyperLoraConfig"):
        HyperPeftModel(make_base(), {"r": 8})
    with pytest.raises(TypeError, match="causal LM"):
        HyperPeftModel("gpt2", HyperLoraConfig())


def test_wrapping_twice_is_refused():
    base = make_base()
    HyperPeftModel(base, HyperLoraConfig(profile_dim=PROFILE_DIM))
    with pytest.raises(ValueError, match="already wrapped by hyperpeft"):
        HyperPeftModel(base, HyperLoraConfig(profile_dim=PROFILE_DIM))
