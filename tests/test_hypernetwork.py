"""The hypernetwork: shapes, the zero-ΔW initialisation, batching over users, profile statistics."""

from __future__ import annotations

import math

import pytest
import torch

from hyperpeft import HyperLoraConfig, HyperNetwork, TargetLayout

LAYOUT = TargetLayout(
    shapes={"q_proj": (32, 32), "v_proj": (32, 16)}, depths={"q_proj": (0, 1, 2), "v_proj": (0, 1, 2)}, num_layers=3
)


def make(r: int = 4, profile_dim: int = 8) -> HyperNetwork:
    torch.manual_seed(0)
    return HyperNetwork(HyperLoraConfig(r=r, profile_dim=profile_dim), LAYOUT)


def test_shapes_follow_each_module_type():
    lora = make()(torch.randn(5, 8))
    assert lora["q_proj"][0].shape == (5, 3, 4, 32) and lora["q_proj"][1].shape == (5, 3, 32, 4)
    assert lora["v_proj"][0].shape == (5, 3, 4, 32) and lora["v_proj"][1].shape == (5, 3, 16, 4)


def test_initial_delta_is_exactly_zero_and_a_is_at_lora_scale():
    lora = make()(torch.randn(64, 8))
    for a, b in lora.values():
        assert torch.count_nonzero(b) == 0
        assert torch.count_nonzero(torch.einsum("uLor,uLri->uLoi", b, a)) == 0
        assert 0.5 / math.sqrt(32) < a.std().item() < 2.0 / math.sqrt(32)


def test_a_batch_of_users_equals_each_user_alone():
    net = make()
    with torch.no_grad():
        for head in net.heads.values():
            head.weight.normal_()
    users = torch.randn(4, 8)
    together = net(users)
    for u in range(4):
        alone = net(users[u : u + 1])
        for m in together:
            torch.testing.assert_close(together[m][0][u], alone[m][0][0])
            torch.testing.assert_close(together[m][1][u], alone[m][1][0])


def test_positions_get_different_weights():
    net = make()
    a, _ = net(torch.randn(1, 8))["q_proj"]
    assert not torch.allclose(a[0, 0], a[0, 1])  # the depth embedding separates layers


def test_profile_statistics_standardize_the_input():
    net = make()
    embeddings = torch.randn(100, 8) * 5 + 3
    net.set_profile_statistics(embeddings)
    torch.testing.assert_close(net.profile_mean, embeddings.mean(0))
    with pytest.raises(ValueError, match=r"shape \(n >= 2, 8\)"):
        net.set_profile_statistics(torch.randn(10, 7))
