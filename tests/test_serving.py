"""`hyperpeft serve` over real HTTP on 127.0.0.1: batched users get their own answers; bad requests get a 4xx."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from conftest import PROFILE_DIM, make_base, make_tokenizer, perturb
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.serving.server import DynamicBatcher, create_app, serve_in_background

USERS = {"alice": "writes tersely about jazz records", "bob": "long formal reviews of hiking boots"}
PROMPTS = ["w1 w2 w3", "w10 w11 w12 w13 w14 w15 w16", "w40"]


def build_model() -> HyperPeftModel:
    encoder = ProfileEncoder("fake", model=FakeSentenceModel())
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM)
    model = HyperPeftModel(make_base(), config, profile_encoder=encoder)
    perturb(model, std=1.0)
    model.enable_adapter_cache(max_bytes=1 << 24)
    return model.eval()


@pytest.fixture(scope="module")
def server():
    model, tokenizer = build_model(), make_tokenizer()
    # a long window, so that requests sent together are batched together even on a busy machine
    app = create_app(model, tokenizer, users={"alice": USERS["alice"]}, batch_window_ms=300, max_tokens_limit=32)
    with serve_in_background(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, app, tokenizer


def alone(app, tokenizer, user: str, prompt: str, max_tokens: int) -> str:
    """What one user gets with nobody else in the batch (a batch of one row, no padding), without the server."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    (completion,) = app.state.batcher.generate([ids], [USERS[user]], [max_tokens])
    return tokenizer.decode(completion.token_ids, skip_special_tokens=True)


def test_health(server):
    client, _, _ = server
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["users"] >= 1


def test_interleaved_concurrent_users_each_get_their_single_user_answer(server):
    client, app, tokenizer = server
    requests = []
    for prompt in PROMPTS:
        for user in ("alice", "bob"):
            max_tokens = 3 if prompt == "w40" else 6  # different lengths in one batch, too
            requests.append((user, prompt, max_tokens))
    expected = {r: alone(app, tokenizer, *r) for r in requests}
    assert expected[("alice", PROMPTS[0], 6)] != expected[("bob", PROMPTS[0], 6)]  # else the test proves nothing
    batches_before = list(app.state.batcher.batch_sizes)

    def send(request):
        user, prompt, max_tokens = request
        who = {"user_id": user} if user == "alice" else {"profile": USERS[user]}  # held by the server, or sent
        response = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, **who})
        assert response.status_code == 200, response.text
        return response.json()

    for _ in range(2):
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, requests))
        for request, answer in zip(requests, answers):
            assert answer["object"] == "text_completion"
            assert answer["choices"][0]["text"] == expected[request], request
            assert answer["usage"]["completion_tokens"] <= request[2]
    new_batches = app.state.batcher.batch_sizes[len(batches_before) :]
    assert max(new_batches) > 1  # several users really shared one generate
    assert client.get("/health").json()["adapter_cache"]["hits"] > 0


def test_chat_completions_and_registered_users(server):
    client, app, tokenizer = server
    response = client.put("/v1/users/carol-1", json={"profile": USERS["bob"]})
    assert response.status_code == 200 and len(response.json()["profile_sha256"]) == 64
    messages = [{"role": "user", "content": "w5 w6 w7"}]
    chat = client.post("/v1/chat/completions", json={"messages": messages, "user_id": "carol-1", "max_tokens": 5})
    assert chat.status_code == 200, chat.text
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    body = chat.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == alone(app, tokenizer, "bob", prompt, 5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "w1"}, 400, "exactly one of `profile`"),
        ({"prompt": "w1", "profile": "x", "user_id": "alice"}, 400, "exactly one of `profile`"),
        ({"prompt": "w1", "user_id": "nobody"}, 404, "Unknown `user_id` 'nobody'"),
        ({"prompt": "w1", "profile": "   "}, 400, "empty"),
        ({"prompt": "w1", "user_id": "alice", "max_tokens": "5"}, 400, "`max_tokens`"),
        ({"prompt": "w1", "user_id": "alice", "max_tokens": 0}, 400, "between 1 and 32, not 0"),
        ({"prompt": "w1", "user_id": "alice", "max_tokens": 33}, 400, "between 1 and 32, not 33"),
        ({"prompt": "w1", "user_id": "alice", "temperature": 0.7}, 400, "`temperature` 0.7 is not supported"),
        ({"prompt": 12, "user_id": "alice"}, 400, "`prompt`"),
        ({"user_id": "alice"}, 400, "`prompt`: Field required"),
        ({"prompt": " ".join(["w1"] * 120), "user_id": "alice", "max_tokens": 20}, 400, "exceeds the model's 128"),
    ],
)
def test_bad_completion_requests(server, body, status, message):
    client, _, _ = server
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]


def test_bad_user_registrations_and_chat_bodies(server):
    client, _, _ = server
    assert client.put("/v1/users/..", json={"profile": "x"}).status_code in (400, 404)
    response = client.put("/v1/users/a%20b", json={"profile": "likes jazz"})
    assert response.status_code == 400 and "'a b' is not allowed" in response.json()["error"]["message"]
    assert client.put("/v1/users/dave", json={"profile": ""}).status_code == 400
    response = client.post("/v1/chat/completions", json={"messages": [], "user_id": "alice"})
    assert response.status_code == 400 and "`messages`" in response.json()["error"]["message"]
    response = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_batcher_refuses_bad_settings():
    model, tokenizer = build_model(), make_tokenizer()
    with pytest.raises(ValueError, match="max_batch_size"):
        DynamicBatcher(model, tokenizer, max_batch_size=0)
    with pytest.raises(ValueError, match="batch_window_ms"):
        DynamicBatcher(model, tokenizer, batch_window_ms=-1)


def test_a_failing_batch_answers_every_request_with_the_error():
    model, tokenizer = build_model(), make_tokenizer()
    batcher = DynamicBatcher(model, tokenizer, batch_window_ms=50)
    batcher.start()
    try:
        ok = batcher.submit([5, 6], USERS["alice"], 2)
        bad = batcher.submit([5, 6], "", 2)  # an empty profile makes the whole batch fail in the model
        for future in (ok, bad):
            with pytest.raises(ValueError, match="empty"):
                future.result(timeout=30)
    finally:
        batcher.stop()
    assert torch.is_grad_enabled()  # the worker's inference mode did not leak into this thread


def test_serve_cli_refuses_a_bad_users_file_before_loading_anything(tmp_path):
    from hyperpeft.cli import main as cli_main

    path = tmp_path / "users.jsonl"
    path.write_text('{"user_id": "a", "profile": "x"}\n{"user_id": "a", "profile": "y"}\n')
    with pytest.raises(SystemExit, match="repeats 'a'"):
        cli_main(["serve", "--model", str(tmp_path / "nope"), "--users", str(path)])
