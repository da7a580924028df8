"""`hyperpeft serve` over real HTTP on 127.0.0.1 with the official `openai` client: per-user answers in one batch,
streaming, per-request limits, stops and sampling, vLLM-style names, and OpenAI errors for everything refused."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch
from conftest import PROFILE_DIM, make_base, make_tokenizer, perturb
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.serving.engine import ContinuousBatcher
from hyperpeft.serving.server import create_app, serve_in_background

USERS = {"alice": "writes tersely about jazz records", "bob": "long formal reviews of hiking boots"}
PROMPTS = ["w1 w2 w3", "w10 w11 w12 w13 w14 w15 w16", "w40"]
EOS = 2


def build_model() -> HyperPeftModel:
    encoder = ProfileEncoder("fake", model=FakeSentenceModel())
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM, base_model_name_or_path="tiny-llama")
    model = HyperPeftModel(make_base(), config, profile_encoder=encoder)
    perturb(model, std=1.0)
    model.enable_adapter_cache(max_bytes=1 << 24)
    return model.eval()


@pytest.fixture(scope="module")
def server():
    model, tokenizer = build_model(), make_tokenizer()
    app = create_app(model, tokenizer, users={"alice": USERS["alice"]}, max_tokens_limit=32)
    with serve_in_background(app) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        yield client, app, model, tokenizer, url


def alone(model, tokenizer, profile: str | None, prompt: str, max_tokens: int) -> list[int]:
    """The greedy tokens `HyperPeftModel.generate` gives one user alone (no server, no batch), cut at the EOS."""
    ids = tokenizer(prompt, return_tensors="pt")
    kwargs = dict(max_new_tokens=max_tokens, do_sample=False, pad_token_id=0, eos_token_id=EOS)
    with torch.inference_mode():
        if profile is None:
            with model.disable_adapter():
                out = model.generate(**ids, **kwargs)
        else:
            out = model.generate(**ids, profile=profile, **kwargs)
    tokens = out[0, ids["input_ids"].shape[1] :].tolist()
    return tokens[: tokens.index(EOS)] if EOS in tokens else tokens


def text_of(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_health_and_models(server):
    client, _, _, _, url = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "tiny-llama" and "alice" in ids  # the base model, then the users (as vLLM lists LoRA adapters)
    assert client.models.retrieve("alice").parent == "tiny-llama"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody")


def test_interleaved_concurrent_users_each_get_their_single_user_answer_streamed_or_not(server):
    client, app, model, tokenizer, _ = server
    requests = []
    for prompt in PROMPTS:
        for user in ("alice", "bob", None):
            requests.append((user, prompt, 3 if prompt == "w40" else 6))  # different limits in one batch, too
    expected = {r: alone(model, tokenizer, USERS.get(r[0]), r[1], r[2]) for r in requests}
    assert expected[("alice", PROMPTS[0], 6)] != expected[("bob", PROMPTS[0], 6)]  # else the test proves nothing
    assert expected[("alice", PROMPTS[0], 6)] != expected[(None, PROMPTS[0], 6)]
    steps_before = len(app.state.engine.stats.rows_per_step)

    def send(indexed):
        index, (user, prompt, max_tokens) = indexed
        # the three ways to name a user: `model` (vLLM's), `user_id` held by the server, or a `profile` text sent
        who = {"model": "alice"} if user == "alice" else {"model": "tiny-llama"}
        extra = {"profile": USERS["bob"]} if user == "bob" else {}
        ask = dict(prompt=prompt, max_tokens=max_tokens, temperature=0, extra_body=extra, **who)
        if index % 2:  # every other request streams, in the same batches as the others
            text, usage = "", None
            for chunk in client.completions.create(**ask, stream=True, stream_options={"include_usage": True}):
                text += chunk.choices[0].text if chunk.choices else ""
                usage = chunk.usage or usage
            return text, usage.completion_tokens
        answer = client.completions.create(**ask)
        assert answer.object == "text_completion"
        return answer.choices[0].text, answer.usage.completion_tokens

    for _ in range(2):
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(send, enumerate(requests)))
        for request, (text, tokens) in zip(requests, answers):
            assert text == text_of(tokenizer, expected[request]), request
            assert tokens == len(expected[request])
    assert max(app.state.engine.stats.rows_per_step[steps_before:]) > 1  # several users really shared one step


def test_user_id_and_user_fields_select_a_known_user_with_a_documented_precedence(server):
    client, _, model, tokenizer, _ = server
    expected = text_of(tokenizer, alone(model, tokenizer, USERS["alice"], "w5 w6", 5))
    base = text_of(tokenizer, alone(model, tokenizer, None, "w5 w6", 5))
    ask = dict(model="tiny-llama", prompt="w5 w6", max_tokens=5, temperature=0)
    assert client.completions.create(**ask, extra_body={"user_id": "alice"}).choices[0].text == expected
    assert client.completions.create(**ask, user="alice").choices[0].text == expected
    assert client.completions.create(**ask, user="someone-else").choices[0].text == base
    # `profile` first: a profile text wins over `model`
    answer = client.completions.create(**{**ask, "model": "alice"}, extra_body={"profile": USERS["bob"]})
    assert answer.choices[0].text == text_of(tokenizer, alone(model, tokenizer, USERS["bob"], "w5 w6", 5))


def test_streaming_text_equals_the_non_streamed_text(server):
    client, _, _, _, _ = server
    for settings in (dict(temperature=0), dict(temperature=1.0, top_p=0.9, seed=7)):
        ask = dict(model="alice", prompt="w3 w4 w5", max_tokens=12, **settings)
        whole = client.completions.create(**ask)
        chunks = list(client.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        assert len(chunks) > 3  # tokens left one by one, not in one piece
        assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
        messages = [{"role": "user", "content": "w7 w8"}]
        chat = dict(model="alice", messages=messages, max_tokens=10, **settings)
        whole = client.chat.completions.create(**chat)
        chunks = list(client.chat.completions.create(**chat, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_stops_and_limits_hold_per_row_in_one_mixed_batch(server):
    client, app, model, tokenizer, _ = server
    full = alone(model, tokenizer, USERS["alice"], "w1 w2 w3", 12)
    words = text_of(tokenizer, full).split()
    assert len(words) == 12
    stop_word = next(w for w in words[3:] if w not in words[:3])  # a word that first appears after the third
    cut = " ".join(words[: words.index(stop_word)])
    cases = [
        (dict(stop=[stop_word, "never-appears"]), cut, "stop"),
        (dict(stop=stop_word, max_tokens=2), " ".join(words[:2]), "length"),
        (dict(max_tokens=5), " ".join(words[:5]), "length"),
        (dict(max_tokens=12), " ".join(words), "length"),
    ]

    def send(case):
        settings, _, _ = case
        return client.completions.create(
            model="alice", prompt="w1 w2 w3", temperature=0, **{"max_tokens": 12, **settings}
        )  # fmt: skip

    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(send, cases))
    for (settings, text, reason), answer in zip(cases, answers):
        assert answer.choices[0].text.strip() == text, settings
        assert answer.choices[0].finish_reason == reason, settings
    assert answers[2].usage.completion_tokens == 5  # a finished row stops counting


def test_sampling_is_reproducible_per_seed_and_n_gives_n_choices(server):
    client, _, _, _, _ = server
    ask = dict(model="alice", prompt="w9", max_tokens=10, temperature=1.0)
    first = client.completions.create(**ask, seed=3, n=3)
    again = client.completions.create(**ask, seed=3, n=3)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1, 2] and len({c.text for c in first.choices}) > 1
    other = client.completions.create(**ask, seed=4)
    assert other.choices[0].text != first.choices[0].text
    prompts = client.completions.create(model="alice", prompt=["w1 w2", "w3"], max_tokens=3, temperature=0)
    assert len(prompts.choices) == 2


def test_logprobs_of_greedy_tokens_are_the_top_choices(server):
    client, _, _, _, _ = server
    answer = client.completions.create(model="alice", prompt="w2 w3", max_tokens=4, temperature=0, logprobs=2)
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == answer.usage.completion_tokens == 4
    for token, value, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs):
        assert value <= 0 and len(top) == 2 and max(top.values()) == pytest.approx(value) and token in top
    chat = client.chat.completions.create(
        model="alice", messages=[{"role": "user", "content": "w2"}], max_tokens=3, temperature=0, logprobs=True,
        top_logprobs=1,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(entry.top_logprobs[0].logprob == entry.logprob for entry in content)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(frequency_penalty=0.5), "frequency_penalty"),
        (dict(presence_penalty=1.0), "presence_penalty"),
        (dict(logit_bias={"5": 10}), "logit_bias"),
        (dict(echo=True), "echo"),
        (dict(suffix="w9"), "suffix"),
        (dict(best_of=3), "best_of"),
        (dict(extra_body={"top_k": 5}), "top_k"),
        (dict(extra_body={"min_tokens": 2}), "min_tokens"),
        (dict(stream_options={"include_usage": True}), "stream_options"),
    ],
)
def test_every_unsupported_completion_field_is_a_400_naming_it(server, kwargs, field):
    client, _, _, _, _ = server
    with pytest.raises(openai.BadRequestError, match=f"`{field}`"):
        client.completions.create(model="alice", prompt="w1", max_tokens=2, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]), "tools"),
        (dict(response_format={"type": "json_object"}), "response_format"),
        (dict(top_logprobs=2), "top_logprobs"),
        (dict(extra_body={"chat_template_kwargs": {}}), "chat_template_kwargs"),
        (dict(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]), "messages"),
    ],
)
def test_every_unsupported_chat_field_is_a_400_naming_it(server, kwargs, field):
    client, _, _, _, _ = server
    kwargs = {"messages": [{"role": "user", "content": "w1"}], **kwargs}
    with pytest.raises(openai.BadRequestError, match=f"`{field}"):
        client.chat.completions.create(model="alice", max_tokens=2, **kwargs)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": "w1", "profile": "x", "user_id": "alice"}, 400, "at most one of `profile`"),
        ({"prompt": "w1", "user_id": "nobody"}, 404, "Unknown `user_id` 'nobody'"),
        ({"prompt": "w1", "model": "nobody"}, 404, "The model `nobody` does not exist"),
        ({"prompt": "w1", "profile": "   "}, 400, "empty"),
        ({"prompt": "w1", "max_tokens": "5"}, 400, "`max_tokens`"),
        ({"prompt": "w1", "max_tokens": 0}, 400, "`max_tokens`"),
        ({"prompt": "w1", "max_tokens": 33}, 400, "between 1 and 32, not 33"),
        ({"prompt": "w1", "temperature": 3}, 400, "`temperature`"),
        ({"prompt": "w1", "n": 40}, 400, "at most 32"),
        ({"prompt": [999]}, 400, "outside 0..95"),
        ({"prompt": 12}, 400, "`prompt`"),
        ({}, 400, "`prompt`: Field required"),
        ({"prompt": " ".join(["w1"] * 120), "max_tokens": 20}, 400, "exceeds the model's 128"),
    ],
)
def test_bad_completion_requests(server, body, status, message):
    _, _, _, _, url = server
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}


def test_unknown_routes_and_methods_get_openai_error_objects(server):
    _, _, _, _, url = server
    for response, status in ((httpx.get(f"{url}/v1/nothing"), 404), (httpx.get(f"{url}/v1/completions"), 405)):
        assert response.status_code == status
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    response = httpx.post(f"{url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "error" in response.json()


def test_users_can_be_added_listed_read_and_removed(server):
    client, _, model, tokenizer, url = server
    assert httpx.put(f"{url}/v1/users/carol-1", json={"profile": USERS["bob"]}).status_code == 200
    assert "carol-1" in [u["user_id"] for u in httpx.get(f"{url}/v1/users").json()["data"]]
    assert httpx.get(f"{url}/v1/users/carol-1").json()["profile"] == USERS["bob"]
    messages = [{"role": "user", "content": "w5 w6 w7"}]
    chat = client.chat.completions.create(model="carol-1", messages=messages, max_tokens=5, temperature=0)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat.object == "chat.completion" and chat.model == "carol-1"
    assert chat.choices[0].message.content == text_of(tokenizer, alone(model, tokenizer, USERS["bob"], prompt, 5))
    assert httpx.delete(f"{url}/v1/users/carol-1").json()["deleted"] is True
    assert httpx.get(f"{url}/v1/users/carol-1").status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="carol-1", messages=messages, max_tokens=5)
    assert httpx.put(f"{url}/v1/users/a%20b", json={"profile": "x"}).status_code == 400
    assert httpx.put(f"{url}/v1/users/dave", json={"profile": ""}).status_code == 400


def test_a_client_that_disconnects_frees_its_row(server):
    _, app, _, _, url = server
    body = {"model": "alice", "prompt": "w1", "max_tokens": 32, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as response:
        next(response.iter_lines())  # the first token arrived; now leave
    deadline = time.monotonic() + 20
    while app.state.engine.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.engine.running == 0


def test_a_late_request_joins_the_running_batch_instead_of_waiting_for_it(server):
    client, app, _, _, _ = server
    long_done = threading.Event()

    def long_request():
        client.completions.create(model="alice", prompt="w1", max_tokens=32, temperature=0)
        long_done.set()

    thread = threading.Thread(target=long_request)
    thread.start()
    while not app.state.engine.running:
        time.sleep(0.001)
    client.completions.create(model="tiny-llama", prompt="w2", max_tokens=2, temperature=0)
    short_finished_first = not long_done.is_set()
    thread.join(60)
    assert short_finished_first


def test_engine_refuses_bad_settings():
    model, tokenizer = build_model(), make_tokenizer()
    with pytest.raises(ValueError, match="max_batch_size"):
        ContinuousBatcher(model, tokenizer, max_batch_size=0)
    with pytest.raises(ValueError, match="batch_window_ms"):
        ContinuousBatcher(model, tokenizer, batch_window_ms=-1)


def test_serve_cli_refuses_a_bad_users_file_before_loading_anything(tmp_path):
    from hyperpeft.cli import main as cli_main

    path = tmp_path / "users.jsonl"
    path.write_text('{"user_id": "a", "profile": "x"}\n{"user_id": "a", "profile": "y"}\n')
    with pytest.raises(SystemExit, match="repeats 'a'"):
        cli_main(["serve", "--model", str(tmp_path / "nope"), "--users", str(path)])
