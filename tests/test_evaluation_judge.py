"""The LLM judge: strict score parsing, the mean over parseable replies, a local model and an OpenAI-like server."""

from __future__ import annotations

import json
import math
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import local_http_server, make_base, make_tokenizer

from hyperpeft.evaluation.judge import (
    OpenAIJudge,
    TransformersJudge,
    judge_prompt,
    judge_scores,
    make_judge,
    parse_score,
)


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 4", 4),
        ("score=2", 2),
        ("5", 5),
        ("**3** because it is generic", 3),
        ("4/5", 4),
        ("Score: 6", None),
        ("Score: 4.5", None),
        ("I would give it a 4", None),  # the grade must come first
        ("", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score


class _FixedJudge:
    def __init__(self, replies):
        self.replies, self.prompts = replies, []

    def complete(self, prompts):
        self.prompts += prompts
        return self.replies[: len(prompts)]


def test_judge_scores_average_parseable_replies_and_count_the_rest():
    judge = _FixedJudge(["Score: 5", "nonsense", "Score: 2"])
    scores = judge_scores(judge, ["likes cats"] * 3, ["ref a", "ref b", "ref c"], ["ans a", "ans b", "ans c"])
    assert scores == {"judge": 3.5, "judged": 2, "judge_unparseable": 1}  # (5 + 2) / 2
    assert "likes cats" in judge.prompts[0] and "ref a" in judge.prompts[0] and "ans a" in judge.prompts[0]
    none = judge_scores(_FixedJudge(["?"]), ["p"], ["r"], ["a"])
    assert math.isnan(none["judge"]) and none["judge_unparseable"] == 1
    with pytest.raises(ValueError, match="one entry per answer"):
        judge_scores(judge, ["p"], ["r", "r"], ["a"])


def test_rubric_sees_profile_reference_and_answer():
    prompt = judge_prompt("writes tersely", "Sad news.", "So sad.")
    assert "writes tersely" in prompt and "Sad news." in prompt and "So sad." in prompt and "Score: N" in prompt


def test_transformers_judge_replies_start_with_the_score_prefix():
    judge = TransformersJudge("tiny", batch_size=2, model=make_base(), tokenizer=make_tokenizer())
    replies = judge.complete(["w1 w2", "w3", "w4 w5 w6"])
    assert len(replies) == 3 and all(reply.startswith("Score: ") for reply in replies)


class _JudgeServer(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        grade = "Score: 4" if "good answer" in body["messages"][-1]["content"] else "no idea"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": grade}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    _JudgeServer.requests = []
    with local_http_server(_JudgeServer) as url:
        yield url


def test_openai_judge_against_a_local_server(judge_server):
    judge = make_judge({"base_url": judge_server, "model": "judge-model"})
    assert isinstance(judge, OpenAIJudge)
    scores = judge_scores(judge, ["p", "p"], ["r", "r"], ["a good answer", "a bad one"])
    assert scores == {"judge": 4.0, "judged": 1, "judge_unparseable": 1}
    assert all(r["model"] == "judge-model" and r["temperature"] == 0.0 for r in _JudgeServer.requests)


def test_openai_judge_errors_name_the_url():
    judge = OpenAIJudge("http://127.0.0.1:9", model="m", timeout=2)
    with pytest.raises(RuntimeError, match="127.0.0.1:9"):
        judge.complete(["x"])
    with pytest.raises(ValueError, match="`base_url` should be an http"):
        OpenAIJudge("localhost:8000", model="m")
    with pytest.raises(ValueError, match="`judge` should be null"):
        make_judge(3)
