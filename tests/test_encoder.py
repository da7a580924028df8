"""ProfileEncoder: sentence-transformers embeddings, instruction prefix, batching and the cache."""

from __future__ import annotations

import pytest
import torch

from hyperpeft import ProfileEncoder


class CountingModel:
    """Wraps a real encoder and counts the texts it is asked to encode."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def encode(self, texts, **kwargs):
        self.seen.extend(texts)
        return self.inner.encode(texts, **kwargs)

    def get_embedding_dimension(self):
        return self.inner.get_embedding_dimension()


def test_embeddings_are_real_and_cached(minilm_encoder):
    counting = CountingModel(minilm_encoder.model)
    encoder = ProfileEncoder(model=counting, batch_size=2)
    texts = ["likes short answers", "writes in slang", "likes short answers"]
    first = encoder.encode(texts)
    assert first.shape == (3, 384) and first.dtype == torch.float32 and encoder.dim == 384
    assert torch.equal(first[0], first[2])
    assert counting.seen == ["likes short answers", "writes in slang"]  # each distinct text encoded once
    second = encoder.encode(["writes in slang", "a new user"])
    assert counting.seen[2:] == ["a new user"]
    assert torch.equal(second[0], first[1])
    similarity = torch.nn.functional.cosine_similarity(first[0], first[1], dim=0)
    assert similarity < 0.9  # different profiles, different embeddings


def test_instruction_prefix_is_applied(minilm_encoder):
    counting = CountingModel(minilm_encoder.model)
    encoder = ProfileEncoder(model=counting, instruction="Describe this user: ")
    plain = ProfileEncoder(model=minilm_encoder.model).encode("likes jazz")
    prefixed = encoder.encode("likes jazz")
    assert counting.seen == ["Describe this user: likes jazz"]
    assert not torch.equal(plain, prefixed)


def test_cache_is_bounded(minilm_encoder):
    encoder = ProfileEncoder(model=minilm_encoder.model, cache_size=2)
    encoder.encode(["a", "b", "c"])
    assert list(encoder._cache) == ["b", "c"]


def test_bad_texts():
    encoder = ProfileEncoder(model=object())
    with pytest.raises(ValueError, match="empty"):
        encoder.encode("")
    with pytest.raises(TypeError, match=r"`profile\[1\]` should be a string"):
        encoder.encode(["ok", None])
