"""The adapter cache: hits equal misses, LRU eviction by bytes, training bypasses it, new weights empty it."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.adapter_cache import AdapterCache


class FakeSentenceModel:
    """A sentence-transformers stand-in: a fixed pseudo-random embedding per text, and a count of encoded texts."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts, batch_size=64, convert_to_tensor=True, show_progress_bar=False):
        self.encoded += len(texts)
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        return torch.stack([torch.randn(PROFILE_DIM, generator=torch.Generator().manual_seed(s)) for s in seeds])


def build() -> tuple[HyperPeftModel, FakeSentenceModel]:
    sentence_model = FakeSentenceModel()
    encoder = ProfileEncoder("fake", model=sentence_model, cache_size=1)  # a tiny encoder cache: it must not help
    model = HyperPeftModel(
        make_base(), HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM), profile_encoder=encoder
    )
    perturb(model, std=1.0)
    return model.eval(), sentence_model


IDS = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]])
GENERATE = dict(max_new_tokens=5, do_sample=False, pad_token_id=0, eos_token_id=None)
USERS = ["likes jazz and short replies", "writes long formal reviews", "asks about vegetarian cooking"]


def adapter_bytes(model: HyperPeftModel) -> int:
    lora = model.base_model.generate_lora(torch.zeros(PROFILE_DIM))
    return sum(a[0].nbytes + b[0].nbytes for a, b in lora.values())


def test_a_hit_gives_what_a_miss_gives_and_skips_encoder_and_hypernetwork():
    model, sentence_model = build()
    expected = model.generate(input_ids=IDS, profile=USERS, **GENERATE)  # no cache
    cache = model.enable_adapter_cache(max_bytes=10 * adapter_bytes(model))
    first = model.generate(input_ids=IDS, profile=USERS, **GENERATE)
    assert (cache.stats.misses, cache.stats.hits, len(cache)) == (3, 0, 3)
    calls = []
    handle = model.hypernetwork.register_forward_hook(lambda *args: calls.append(1))
    encoded = sentence_model.encoded
    again = model.generate(input_ids=IDS, profile=USERS, **GENERATE)
    handle.remove()
    assert (cache.stats.misses, cache.stats.hits) == (3, 3)
    assert calls == [] and sentence_model.encoded == encoded
    assert torch.equal(first, expected) and torch.equal(again, expected)
    with torch.no_grad():
        cached_logits = model(input_ids=IDS, profile=USERS).logits
    model.disable_adapter_cache()
    with torch.no_grad():
        torch.testing.assert_close(cached_logits, model(input_ids=IDS, profile=USERS).logits, rtol=0, atol=0)


def test_rows_mixing_hits_misses_and_repeats_get_their_own_adapter():
    model, _ = build()
    rows = [USERS[0], USERS[1], USERS[0]]
    expected = model.generate(input_ids=IDS, profile=rows, **GENERATE)
    cache = model.enable_adapter_cache()
    model.generate(input_ids=IDS[:1], profile=USERS[1], **GENERATE)
    got = model.generate(input_ids=IDS, profile=rows, **GENERATE)
    assert torch.equal(got, expected)
    assert (cache.stats.hits, cache.stats.misses) == (1, 2)  # USERS[1] hit; USERS[0] missed once for two rows
    assert not torch.equal(got[0], got[1])  # different users really got different adapters


def test_eviction_by_bytes_in_lru_order():
    model, _ = build()
    size = adapter_bytes(model)
    cache = model.enable_adapter_cache(max_bytes=2 * size + size // 2)  # room for two users
    for user in USERS[:2]:
        model.generate(input_ids=IDS[:1], profile=user, **GENERATE)
    model.generate(input_ids=IDS[:1], profile=USERS[0], **GENERATE)  # USERS[0] is now the most recently used
    model.generate(input_ids=IDS[:1], profile=USERS[2], **GENERATE)  # evicts USERS[1]
    assert USERS[0] in cache and USERS[2] in cache and USERS[1] not in cache
    assert (cache.stats.evictions, cache.stats.bytes, cache.stats.entries) == (1, 2 * size, 2)


def test_cache_unit_lru_and_too_large_entries():
    cache = AdapterCache(max_bytes=1000)
    entry = {"q_proj": (torch.zeros(10, 10), torch.zeros(10, 10))}  # 800 bytes
    cache.put("a", {"q_proj": (torch.zeros(5), torch.zeros(5))}, version=1)  # 40 bytes
    cache.put("b", {"q_proj": (torch.zeros(50), torch.zeros(50))}, version=1)  # 400 bytes
    assert cache.get("a", version=1) is not None  # "b" is now least recently used
    cache.put("c", entry, version=1)  # 1240 > 1000: evicts "b" only
    assert "a" in cache and "c" in cache and "b" not in cache and cache.stats.bytes == 840
    cache.put("d", {"q_proj": (torch.zeros(200), torch.zeros(200))}, version=1)  # 1600 bytes: never kept
    assert "d" not in cache and cache.stats.bytes == 840
    assert cache.get("a", version=2) is None and len(cache) == 0 and cache.stats.invalidations == 1


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1GB", True])
def test_bad_max_bytes(bad):
    with pytest.raises(ValueError, match="max_bytes"):
        AdapterCache(bad)


def test_training_bypasses_the_cache_and_gradients_flow():
    model, _ = build()
    cache = model.enable_adapter_cache()
    model.train()
    loss = model(input_ids=IDS, labels=IDS, profile=USERS).loss
    loss.backward()
    model.base_model.release_profile()
    assert (cache.stats.hits, cache.stats.misses, len(cache)) == (0, 0, 0)
    assert all(p.grad is not None for p in model.hypernetwork.parameters())


def test_changed_hypernetwork_weights_are_never_served_stale():
    model, _ = build()
    cache = model.enable_adapter_cache()
    before = model.generate(input_ids=IDS, profile=USERS, **GENERATE)
    perturb(model, seed=7, std=1.0)  # in-place copy_ into the heads, like an optimizer step or load_state_dict
    after = model.generate(input_ids=IDS, profile=USERS, **GENERATE)
    model.disable_adapter_cache()
    assert torch.equal(after, model.generate(input_ids=IDS, profile=USERS, **GENERATE))
    assert not torch.equal(before, after)
    assert cache.stats.invalidations == 1 and cache.stats.hits == 0
