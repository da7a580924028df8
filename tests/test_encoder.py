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


def test_profiles_longer_than_the_encoders_window_are_named_once(minilm_encoder, caplog):
    encoder = ProfileEncoder(model=minilm_encoder.model)
    window = minilm_encoder.model.max_seq_length
    encoder.encode(["likes jazz", "writes in slang"])
    assert "longer than the profile encoder" not in caplog.text
    long = " ".join(f"item{i}" for i in range(window))  # well past the window in word pieces
    encoder.encode(["likes jazz", long, long + " more"])
    assert f"2 of 2 texts are longer than the profile encoder 'all-minilm-l6-v2' reads ({window} tokens" in (
        caplog.text
    )  # the cached "likes jazz" is not re-encoded, so not counted
    # the cut is real: what lies past the window does not change the embedding
    assert torch.equal(encoder.encode(long), encoder.encode(long + " more"))
    caplog.clear()
    encoder.encode([long + " again"])
    assert "longer than the profile encoder" not in caplog.text  # once per encoder


def test_bad_texts():
    encoder = ProfileEncoder(model=object())
    with pytest.raises(ValueError, match="empty"):
        encoder.encode("")
    with pytest.raises(TypeError, match=r"`profile\[1\]` should be a string"):
        encoder.encode(["ok", None])


def test_hidden_state_encoder_is_the_mean_of_the_lms_last_hidden_states(tmp_path):
    from conftest import make_base, make_tokenizer
    from transformers import AutoModel

    from hyperpeft import HyperLoraConfig, HyperPeftModel

    make_base().save_pretrained(tmp_path / "lm")
    make_tokenizer().save_pretrained(tmp_path / "lm")
    encoder = ProfileEncoder(f"hidden-states:{tmp_path / 'lm'}", device="cpu")
    texts = ["w5 w6 w7 w8", "w9", "w40 w41"]
    embeddings = encoder.encode(texts)
    assert embeddings.shape == (3, 32) and encoder.dim == 32  # the LM's hidden size
    decoder, tokenizer = AutoModel.from_pretrained(tmp_path / "lm").eval(), make_tokenizer()
    for text, embedding in zip(texts, embeddings):  # each text alone: no padding in the mean
        with torch.no_grad():
            states = decoder(**tokenizer(text, return_tensors="pt")).last_hidden_state[0]
        torch.testing.assert_close(embedding, states.mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(embeddings[0], embeddings[1])

    # a hypernetwork as wide as the LM reads it from profile texts
    config = HyperLoraConfig(r=2, profile_dim=32, profile_encoder=f"hidden-states:{tmp_path / 'lm'}")
    model = HyperPeftModel(make_base(), config).eval()
    ids = torch.tensor([[5, 6, 7]])
    assert model(input_ids=ids, profile=["w5 w6"]).logits.shape == (1, 3, 96)
    with pytest.raises(ValueError, match="names no model"):
        ProfileEncoder("hidden-states:").encode(["w5"])
