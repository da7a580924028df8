"""The adapter cache is never stale: hypernetwork weights changed in any way (an optimizer-style in-place step,
`load_state_dict`, `fit_profile_statistics`, writes through `.data`) while other threads generate leave no cache entry
that differs from what the current weights generate."""

from __future__ import annotations

import random
import threading

import torch
from conftest import PROFILE_DIM, make_base, perturb
from figures import record
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder

USERS = [f"user {i} likes genre {i % 5}" for i in range(12)]


def build() -> HyperPeftModel:
    encoder = ProfileEncoder("fake", model=FakeSentenceModel())
    model = HyperPeftModel(
        make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, hidden_dim=32), profile_encoder=encoder
    )
    perturb(model, std=1.0)
    model.enable_adapter_cache()
    return model.eval()


def changes(model: HyperPeftModel, states: list[dict]) -> list:
    """Every way a user changes the weights, each leaving them different from before."""
    network = model.hypernetwork
    head = next(iter(network.heads.values()))
    return [
        lambda: network.load_state_dict(random.choice(states)),
        lambda: head.weight.data.mul_(1.5),  # through `.data`: no version bump
        lambda: head.weight.data.copy_(head.weight.data.flip(0)),  # same sum and sum of squares, other order
        lambda: network.profile_mean.data.add_(0.25),
        lambda: model.fit_profile_statistics(random.sample(USERS, 6)),
        lambda: torch.nn.init.normal_(head.bias),  # in place, like an optimizer step
    ]


def test_weight_changes_beside_cached_generation_never_leave_a_stale_entry():
    random.seed(0)
    model = build()
    tuner, cache = model.base_model, model.adapter_cache
    states = [{k: v.clone() for k, v in model.hypernetwork.state_dict().items()}]
    perturb(model, seed=5, std=1.0)
    states.append({k: v.clone() for k, v in model.hypernetwork.state_dict().items()})
    trials, stale = 60, 0
    for _ in range(trials):
        change = random.choice(changes(model, states))
        go, stop = threading.Barrier(4), threading.Event()

        def generate(go=go, stop=stop):
            go.wait()
            while not stop.is_set():
                with torch.no_grad():
                    tuner.generate_lora(random.sample(USERS, 3))

        threads = [threading.Thread(target=generate) for _ in range(3)]
        for thread in threads:
            thread.start()
        go.wait()
        change()  # while three threads generate and fill the cache
        stop.set()
        for thread in threads:
            thread.join()
        with torch.no_grad():
            cached = [tuner.generate_lora([user]) for user in USERS]
            with model.without_adapter_cache():
                fresh = [tuner.generate_lora([user]) for user in USERS]
        for a, b in zip(cached, fresh):
            # the rounding of another batch composition, no more: a stale adapter differs by far more
            stale += any(not torch.allclose(a[m][i], b[m][i], atol=1e-5, rtol=1e-4) for m in a for i in (0, 1))
    assert stale == 0, f"{stale} stale cache entries in {trials} trials"
    assert cache.stats.hits > 0  # the cache really served adapters between changes
    record("concurrent_weights", trials=trials, changes=len(changes(model, states)), stale_entries=stale)
