"""The CUDA path: the same maths checks as on the CPU, on a GPU. Skipped without CUDA (CI has none)."""

from __future__ import annotations

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb, profiles

from hyperpeft import HyperLoraConfig, HyperPeftModel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def build(dtype: torch.dtype) -> HyperPeftModel:
    model = HyperPeftModel(make_base("llama", dtype=dtype).cuda(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    assert model.hypernetwork.trunk[0].weight.is_cuda
    return model.eval()


def test_identity_at_init_on_cuda():
    reference = make_base("llama").cuda()
    model = build(torch.float32)
    ids = torch.randint(3, 96, (3, 7), device="cuda")
    torch.testing.assert_close(
        model(input_ids=ids, profile_embeddings=profiles(3).cuda()).logits, reference(input_ids=ids).logits
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_row_equals_alone_on_cuda(dtype):
    model = build(dtype)
    perturb(model, std=1.0)
    ids = torch.randint(3, 96, (3, 7), device="cuda")
    users = profiles(3).cuda()
    together = model(input_ids=ids, profile_embeddings=users).logits
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
    generated = model.generate(input_ids=ids, profile=users, **kwargs)
    tolerance = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=0.05, rtol=0.05)
    for row in range(3):
        alone = model(input_ids=ids[row : row + 1], profile_embeddings=users[row]).logits
        torch.testing.assert_close(together[row], alone[0], **tolerance)
        if dtype == torch.float32:
            alone_ids = model.generate(input_ids=ids[row : row + 1], profile=users[row], **kwargs)
            assert torch.equal(generated[row], alone_ids[0])


def test_export_matches_peft_on_cuda(tmp_path):
    from peft import PeftModel

    model = build(torch.float32)
    perturb(model, std=0.3)
    user = profiles(1)[0].cuda()
    model.export_lora(user, tmp_path)
    plain = PeftModel.from_pretrained(make_base("llama").cuda(), tmp_path).eval()
    ids = torch.randint(3, 96, (2, 9), device="cuda")
    expected = model(input_ids=ids, profile_embeddings=user).logits
    assert (plain(input_ids=ids).logits - expected).abs().max() <= 1e-4


def test_training_step_with_checkpointing_on_cuda():
    model = build(torch.bfloat16)
    model.train()
    model.gradient_checkpointing_enable()
    perturb(model)
    ids = torch.randint(3, 96, (2, 7), device="cuda")
    out = model(input_ids=ids, labels=ids, profile_embeddings=profiles(2).cuda())
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.hypernetwork.parameters())
    assert all(p.grad is None for p in model.base_model.model.parameters())
