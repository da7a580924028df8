"""Property-based fuzzing of `hyperpeft serve`'s OpenAPI schema (schemathesis): no request gets a 500 or hangs, and
every error is an OpenAI error object. Bounded: a fixed number of examples per operation, derandomized."""

from __future__ import annotations

import pytest
from conftest import make_tokenizer
from hypothesis import HealthCheck, settings
from test_serving import USERS, build_model

from hyperpeft.serving.server import create_app, serve_in_background

schemathesis = pytest.importorskip("schemathesis")

APP = create_app(build_model(), make_tokenizer(), users={"alice": USERS["alice"]}, max_tokens_limit=8)
schema = schemathesis.openapi.from_dict(APP.openapi())


@pytest.fixture(scope="module")
def url():
    with serve_in_background(APP) as url:
        yield url


@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_fuzzed_request_gets_a_server_error(case, url):
    response = case.call(base_url=url, timeout=60)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:500])
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
