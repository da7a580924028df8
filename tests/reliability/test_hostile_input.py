"""Hostile text in every text field of every entry point (a lone surrogate, a NUL character, 10 MB) is refused where
it enters, with an error naming the field, and the users who share the server meanwhile get their own answers."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from conftest import make_tokenizer
from figures import record
from test_serving import USERS, alone, build_model, text_of

from hyperpeft import ProfileEncoder
from hyperpeft.data.loaders import load_rows
from hyperpeft.serving.export import export_adapters
from hyperpeft.serving.server import create_app, serve_in_background
from hyperpeft.serving.users import read_user_profiles

HOSTILE = {
    "lone surrogate": "likes jazz \udfff",
    "NUL": "likes\x00jazz",
    "10 MB": "w5 " * (10 * 2**20 // 3 + 1),
}
ANSWER = {"lone surrogate": (400, "lone surrogate"), "NUL": (400, "NUL character"), "10 MB": (413, "larger than")}

COMPLETION = {"model": "tiny-llama", "prompt": "w1 w2", "max_tokens": 4, "temperature": 0}
CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "w1 w2"}], "max_tokens": 4, "temperature": 0}
# (route, field OpenAI's error names, how the hostile text goes into the body)
FIELDS = [
    ("/v1/completions", "prompt", lambda t: {**COMPLETION, "prompt": t}),
    ("/v1/completions", "prompt", lambda t: {**COMPLETION, "prompt": ["w1 w2", t]}),
    ("/v1/completions", "profile", lambda t: {**COMPLETION, "profile": t}),
    ("/v1/completions", "user_id", lambda t: {**COMPLETION, "user_id": t}),
    ("/v1/completions", "model", lambda t: {**COMPLETION, "model": t}),
    ("/v1/completions", "user", lambda t: {**COMPLETION, "user": t}),
    ("/v1/completions", "stop", lambda t: {**COMPLETION, "stop": ["w9", t]}),
    ("/v1/chat/completions", "messages", lambda t: {**CHAT, "messages": [{"role": "user", "content": t}]}),
    (
        "/v1/chat/completions",
        "messages",
        lambda t: {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": t}]}]},
    ),
    (
        "/v1/chat/completions",
        "messages",
        lambda t: {**CHAT, "messages": [{"role": "user", "content": "w1", "name": t}]},
    ),
    ("/v1/chat/completions", "profile", lambda t: {**CHAT, "profile": t}),
    ("/v1/chat/completions", "stop", lambda t: {**CHAT, "stop": t}),
    ("/v1/users/mallory", "profile", lambda t: {"profile": t}),
]


def raw_json(body: dict) -> bytes:
    # json.dumps escapes a lone surrogate as \udfff, as a hostile client would send it (httpx's encoder cannot)
    return json.dumps(body).encode("ascii")


@pytest.fixture(scope="module")
def served():
    model, tokenizer = build_model(), make_tokenizer()
    app = create_app(model, tokenizer, users={"alice": USERS["alice"]}, max_tokens_limit=16)
    with serve_in_background(app) as url:
        yield url, model, tokenizer


def test_hostile_text_in_every_http_field_is_refused_alone_and_neighbours_get_their_answers(served):
    url, model, tokenizer = served
    neighbours = [("alice", {"model": "alice"}), ("bob", {"profile": USERS["bob"]}), (None, {})]
    expected = {
        user: text_of(tokenizer, alone(model, tokenizer, USERS.get(user), "w3 w4 w5", 6)) for user, _ in neighbours
    }
    assert len(set(expected.values())) == 3  # else a neighbour given another's adapter would go unnoticed

    def hostile(case):
        (route, field, body), kind = case
        method = "PUT" if route.startswith("/v1/users") else "POST"
        response = httpx.request(
            method, url + route, content=raw_json(body(HOSTILE[kind])), headers={"content-type": "application/json"},
            timeout=60,
        )  # fmt: skip
        return case, response

    def neighbour(who):
        user, extra = who
        body = {**COMPLETION, "prompt": "w3 w4 w5", "max_tokens": 6, **extra}
        return user, httpx.post(url + "/v1/completions", json=body, timeout=60)

    cases = [(field, kind) for field in FIELDS for kind in HOSTILE]
    with ThreadPoolExecutor(8) as pool:
        attacks = [pool.submit(hostile, case) for case in cases]
        friends = [pool.submit(neighbour, neighbours[i % 3]) for i in range(2 * len(cases))]
        for future in attacks:
            ((route, field, _), kind), response = future.result()
            status, words = ANSWER[kind]
            assert response.status_code == status, (route, field, kind, response.text[:300])
            error = response.json()["error"]
            assert words in error["message"], (route, field, kind, error)
            if status == 400:
                assert error["param"] == field and f"`{field}" in error["message"], (route, field, kind, error)
        for future in friends:
            user, response = future.result()
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["text"] == expected[user], user
    assert httpx.get(url + "/v1/users/mallory").status_code == 404  # a refused PUT stores nothing
    record("hostile_http", fields=len(FIELDS), requests=len(cases), neighbour_requests=len(friends), wrong_answers=0)


@pytest.mark.parametrize("path", ["/v1/users/%ED%B3%BF", "/v1/users/a%00b"])  # not UTF-8; a NUL
def test_hostile_user_ids_in_the_path(served, path):
    url, _, _ = served
    response = httpx.put(url + path, json={"profile": "likes jazz"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "user_id", response.text
    for method in ("GET", "DELETE"):  # no such user can exist
        response = httpx.request(method, url + path)
        assert response.status_code == 404 and response.json()["error"]["param"] == "user_id", response.text


def test_a_10_mb_body_without_a_length_is_refused_while_it_streams(served):
    url, _, _ = served
    body = raw_json({**COMPLETION, "prompt": HOSTILE["10 MB"]})
    chunks = (body[i : i + 2**16] for i in range(0, len(body), 2**16))  # chunked transfer: no Content-Length
    response = httpx.post(url + "/v1/completions", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["error"]["message"]
    assert httpx.get(url + "/health").status_code == 200


def test_a_profile_over_the_limit_is_a_400_naming_the_limit(served):
    url, _, _ = served
    response = httpx.post(url + "/v1/completions", json={**COMPLETION, "profile": "jazz " * 5000})
    assert response.status_code == 400 and "at most 20000" in response.json()["error"]["message"]


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_text_in_a_users_file(tmp_path, kind):
    path = tmp_path / "users.jsonl"
    lines = [{"user_id": "alice", "profile": "likes jazz"}, {"user_id": "mallory", "profile": HOSTILE[kind]}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    words = {"10 MB": "at most 20000"}.get(kind, ANSWER[kind][1])
    with pytest.raises(ValueError, match=rf"users.jsonl:2: `profile` .*{words}"):
        read_user_profiles(path)


def test_bytes_that_are_not_utf8_in_a_users_file(tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_bytes(b'{"user_id": "alice", "profile": "likes \xff jazz"}\n')
    with pytest.raises(ValueError, match=r"users.jsonl is not UTF-8 text \(byte 39\)"):
        read_user_profiles(path)


def test_line_separators_inside_a_json_string_are_text_not_line_breaks(tmp_path):
    profile = "likes jazz\u2028and\x85rock"  # str.splitlines would cut a line at both
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps({"user_id": "alice", "profile": profile}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_user_profiles(path) == {"alice": profile}
    row = {"id": "q1", "user_id": "ann", "task": "reddit", "input": profile, "output": "Hey", "history": [profile]}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_rows(str(tmp_path / "rows.jsonl"))[0]["input"] == profile


@pytest.mark.parametrize("key", ["input", "output", "profile_text", "history"])
@pytest.mark.parametrize("kind", ["lone surrogate", "NUL"])
def test_hostile_text_in_a_data_file(tmp_path, key, kind):
    row = {"id": "q1", "user_id": "ann", "task": "reddit", "input": "Hi!", "output": "Hey", "history": ["yo"]}
    row[key] = [HOSTILE[kind]] if key == "history" else HOSTILE[kind]
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=rf"row 0.*{ANSWER[kind][1]}"):
        load_rows(str(path))


@pytest.mark.parametrize("kind", ["lone surrogate", "NUL"])
def test_hostile_text_in_the_python_api(tmp_path, kind):
    model, bad = build_model(), HOSTILE[kind]
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    message = rf"`profile\[1\]` holds a {ANSWER[kind][1]}"
    with pytest.raises(ValueError, match=message):
        model.generate(input_ids=ids, profile=["likes jazz", bad], max_new_tokens=2)
    with pytest.raises(ValueError, match=message):
        model(input_ids=ids, profile=["likes jazz", bad])
    with pytest.raises(ValueError, match=message):
        model.lora_state_dicts(["likes jazz", bad])
    with pytest.raises(ValueError, match=rf"`profile\[0\]` holds a {ANSWER[kind][1]}"):
        ProfileEncoder("fake", model=model.profile_encoder.model).encode(bad)
    with pytest.raises(ValueError, match=rf"`profile of 'mallory'` holds a {ANSWER[kind][1]}"):
        export_adapters(model, {"alice": "likes jazz", "mallory": bad}, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # the model is unharmed: the next call answers as a fresh model would
    assert torch.equal(
        model.generate(input_ids=ids, profile=["likes jazz", "writes formally"], max_new_tokens=3, do_sample=False),
        build_model().generate(
            input_ids=ids, profile=["likes jazz", "writes formally"], max_new_tokens=3, do_sample=False
        ),
    )


def test_a_10_mb_profile_in_the_python_api_is_read_as_its_encoder_reads_it():
    # The Python API sets no length limit (the caller owns the batch; the encoder reads its first tokens), the server,
    # the users file and export do (20000 characters).
    model = build_model()
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    together = model.generate(
        input_ids=ids, profile=[HOSTILE["10 MB"], "likes jazz"], max_new_tokens=3, do_sample=False
    )
    second = model.generate(input_ids=ids[1:], profile="likes jazz", max_new_tokens=3, do_sample=False)
    assert torch.equal(together[1:], second)
    with pytest.raises(ValueError, match="at most 20000"):
        export_adapters(model, {"mallory": HOSTILE["10 MB"]}, "unused")


@pytest.mark.parametrize(
    "user_id, words",
    [
        ("../evil", "is not allowed"),
        ("/tmp/abs", "is not allowed"),
        ("a/b", "is not allowed"),
        (".hidden", "is not allowed"),
        ("a" * 129, "is not allowed"),
        ("", "is not allowed"),
        ("caf\u00e9", "is not allowed"),
        (7, "should be a string"),
    ],
)
def test_hostile_export_ids_write_nothing(tmp_path, user_id, words):
    model, out = build_model(), tmp_path / "out"
    with pytest.raises((TypeError, ValueError), match=words):
        export_adapters(model, {"alice": "likes jazz", user_id: "likes jazz"}, out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_ids_that_differ_only_in_case_or_name_the_manifest(tmp_path):
    model, out = build_model(), tmp_path / "out"
    with pytest.raises(ValueError, match="'Bob' and 'bob' differ only in case"):
        export_adapters(model, {"Bob": "likes jazz", "bob": "likes rock"}, out)
    manifest = export_adapters(model, {"manifest.json": "likes jazz", "alice": "likes rock"}, out)
    assert (out / "manifest.json").is_file() and (out / manifest["users"]["manifest.json"]["folder"]).is_dir()
