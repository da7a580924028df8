"""The hypernetwork: shapes, the zero-ΔW initialisation, batching over users, profile statistics."""

from __future__ import annotations

import math

import pytest
import torch

from hyperpeft import HyperLoraConfig, HyperNetwork, TargetLayout

LAYOUT = TargetLayout(
    shapes={"q_proj": (32, 32), "v_proj": (32, 16)}, depths={"q_proj": (0, 1, 2), "v_proj": (0, 1, 2)}, num_layers=3
)


def make(r: int = 4, profile_dim: int = 8, shared_lora: bool = False) -> HyperNetwork:
    torch.manual_seed(0)
    return HyperNetwork(HyperLoraConfig(r=r, profile_dim=profile_dim, shared_lora=shared_lora), LAYOUT)


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


def test_shared_lora_starts_as_one_adapter_for_every_user_with_zero_delta():
    net = make(shared_lora=True)
    lora = net(torch.randn(5, 8))
    for m, (a, b) in lora.items():
        assert torch.count_nonzero(b) == 0
        assert 0.5 / math.sqrt(32) < a.std().item() < 2.0 / math.sqrt(32)
        # every user gets the shared A, layer by layer (and the layers differ)
        shared_a = net.shared[m][:, : 4 * 32].view(3, 4, 32)
        assert torch.equal(a, shared_a.expand_as(a)) and not torch.equal(shared_a[0], shared_a[1])


def test_shared_lora_is_added_to_each_users_generated_part():
    net = make(shared_lora=True)
    with torch.no_grad():
        for head in net.heads.values():
            head.weight.normal_()
            head.bias.normal_()
        for shared in net.shared.values():
            shared.normal_()
    users = torch.randn(4, 8)
    with_shared = net(users)
    with torch.no_grad():
        saved = {m: p.clone() for m, p in net.shared.items()}
        for p in net.shared.values():
            p.zero_()
    residual = net(users)
    for m, (fan_in, fan_out) in LAYOUT.shapes.items():
        shared_a, shared_b = saved[m].split([4 * fan_in, fan_out * 4], dim=-1)
        torch.testing.assert_close(with_shared[m][0], residual[m][0] + shared_a.view(3, 4, fan_in))
        torch.testing.assert_close(with_shared[m][1], residual[m][1] + shared_b.view(3, fan_out, 4))
        assert not torch.allclose(residual[m][1][0], residual[m][1][1])  # the residual still differs per user


def test_shared_lora_learns_at_the_full_rate_where_the_bias_learns_output_scale_times_slower():
    """One Adam step moves the shared B by the learning rate, as a LoRA's own B; the bias moves B output_scale
    times as much (so the common part learns ~16x more slowly without a shared LoRA at hidden_dim 256)."""
    moved = {}
    for shared_lora in (False, True):
        net = make(shared_lora=shared_lora)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        users = torch.randn(6, 8)
        b_before = net(users)["v_proj"][1].detach()
        sum(((b - 1.0) ** 2).sum() for _, b in net(users).values()).backward()
        common = net.shared["v_proj"] if shared_lora else net.heads["v_proj"].bias
        for p in net.parameters():  # only the common part moves
            if p is not common:
                p.grad = None
        optimizer.step()
        moved[shared_lora] = (net(users)["v_proj"][1].detach() - b_before).abs().mean().item()
    assert math.isclose(moved[True], 1e-3, rel_tol=1e-3)
    assert math.isclose(moved[False], 1e-3 * net.output_scale, rel_tol=1e-3)


def test_parameter_count_includes_the_shared_lora():
    from hyperpeft.hypernetwork import parameter_count

    for shared_lora in (False, True):
        net = make(shared_lora=shared_lora)
        config = HyperLoraConfig(r=4, profile_dim=8, shared_lora=shared_lora)
        assert parameter_count(config, LAYOUT) == sum(p.numel() for p in net.parameters())


def test_from_the_shared_init_the_profile_part_starts_learning_after_one_step():
    """All heads start at zero with a shared LoRA, so the first gradient reaches only the heads and the shared LoRA;
    once B is non-zero, the trunk (the profile's path) gets gradient too."""
    net = make(shared_lora=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    users = torch.randn(6, 8)
    trunk_grads = []
    for _ in range(2):
        optimizer.zero_grad()
        lora = net(users)
        sum((torch.einsum("uLor,uLri->uLoi", b, a) - 0.1).pow(2).sum() for a, b in lora.values()).backward()
        trunk_grads.append(sum(p.grad.abs().sum().item() for p in net.trunk.parameters()))
        assert all(p.grad.abs().sum() > 0 for p in net.shared.values())
        optimizer.step()
    assert trunk_grads[0] == 0 and trunk_grads[1] > 0
