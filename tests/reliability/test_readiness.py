"""The server stays responsive and honest: `/health` answers while a prompt is being tokenized, a server whose model
cannot make adapters says it is not ready (503) instead of failing every request with a 500, and `hyperpeft serve`
refuses to start with such a model."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import PROFILE_DIM, make_base, make_tokenizer
from test_serving import build_model

import hyperpeft.serving.server as server_module
from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.serving.server import create_app, serve_in_background, warm_up

ASK = {"model": "tiny-llama", "prompt": "w1 w2", "max_tokens": 3, "temperature": 0}


def test_health_answers_while_a_prompt_is_being_tokenized(monkeypatch):
    started, release = threading.Event(), threading.Event()
    tokenize = server_module._tokenize_prompts

    def held(tokenizer, prompt):  # tokenization that cannot finish until /health has answered
        started.set()
        if not release.wait(30):
            raise TimeoutError("/health never answered while a prompt was tokenized")
        return tokenize(tokenizer, prompt)

    monkeypatch.setattr(server_module, "_tokenize_prompts", held)
    with serve_in_background(create_app(build_model(), make_tokenizer())) as url, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{url}/v1/completions", json=ASK, timeout=60)
        assert started.wait(30)
        health = httpx.get(f"{url}/health", timeout=20)  # on the event loop while the tokenizer thread is held
        release.set()
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert pending.result().status_code == 200


def broken_model() -> HyperPeftModel:
    config = HyperLoraConfig(  # the encoder loads on first use, and fails then
        r=4, profile_dim=PROFILE_DIM, base_model_name_or_path="tiny-llama", profile_encoder="/nonexistent/encoder"
    )
    return HyperPeftModel(make_base(), config).eval()


def test_a_server_whose_model_cannot_make_adapters_is_not_ready():
    with serve_in_background(create_app(broken_model(), make_tokenizer())) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] == "not ready"
        assert "nonexistent" in health.json()["reason"]
        for body in (ASK, {**ASK, "profile": "likes jazz"}):
            response = httpx.post(f"{url}/v1/completions", json=body)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert error["type"] == "server_error" and "not ready" in error["message"]


def test_serve_refuses_to_start_with_a_model_that_cannot_make_adapters(tmp_path):
    make_base().save_pretrained(tmp_path / "base")
    make_tokenizer().save_pretrained(tmp_path / "base")
    model = broken_model()
    model.hyper_config.base_model_name_or_path = str(tmp_path / "base")
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(SystemExit, match="the model cannot make adapters .*nonexistent"):
        server_module.main(["--model", str(tmp_path / "ckpt"), "--port", "0"])
    warm_up(build_model())  # a working model warms up


def test_the_user_store_holds_at_most_max_users():
    with serve_in_background(create_app(build_model(), make_tokenizer(), max_users=2)) as url:
        for user in ("u1", "u2"):
            assert httpx.put(f"{url}/v1/users/{user}", json={"profile": f"{user} likes jazz"}).status_code == 200
        response = httpx.put(f"{url}/v1/users/u3", json={"profile": "likes rock"})
        assert response.status_code == 400 and "at most 2 users" in response.json()["error"]["message"]
        assert httpx.put(f"{url}/v1/users/u1", json={"profile": "now likes rock"}).status_code == 200  # a change
