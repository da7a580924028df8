"""hyperpeft on the real vLLM engine: `model="<user_id>"` gets the adapter that hyperpeft generates for that user.

One vLLM server (from `.venv-vllm`, made by `scripts/setup-vllm.sh`) is started on 127.0.0.1 for the module, in
float32, on the embedded SmolLM2 with hyperpeft's LoRA resolver, for a checkpoint whose heads are random (non-zero),
so every user's adapter changes the answers. The expected token ids come from `HyperPeftModel.generate` here.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import has_embedded_models

REPO = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("HYPERPEFT_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
PROMPT = "The best way to spend a Sunday is"
MAX_TOKENS = 16
START_TIMEOUT_S = 420
USERS = {
    "u0": "likes jazz and writes short answers",
    "u1": "a formal lawyer who writes long sentences",
    "u2": "loves football and writes in slang",
    "u3": "a poet fond of rhyme",
    "u4": "answers only with numbers",
    "u5": "a chef who talks about food",
    "u6": "a grumpy reviewer",
    "u7": "an excited teenager who uses exclamation marks",
}
LATE_USER = ("late", "a sailor who talks about the sea")
CHANGED_PROFILE = "a gardener who talks about roses"

pytestmark = [pytest.mark.vllm, pytest.mark.integration]


def _vllm_problem() -> str | None:
    if not VLLM_PYTHON.exists():
        return f"vLLM is not installed at {VLLM_PYTHON} (run `bash scripts/setup-vllm.sh`)"
    command = [str(VLLM_PYTHON), "-c", "import vllm, hyperpeft.integrations.vllm"]
    check = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check.returncode:
        return f"{VLLM_PYTHON} cannot import vllm and hyperpeft's plugin: {check.stderr.strip()[-300:]}"
    if not has_embedded_models():
        return "the embedded model packages are not installed"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_users(path: Path, users: dict[str, str]) -> None:
    path.write_text("".join(json.dumps({"user_id": u, "profile": p}) + "\n" for u, p in users.items()))


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


@dataclass
class Served:
    url: str
    client: object
    expected: dict[str, list[int]]  # hyperpeft's greedy tokens by model name
    prompt_ids: list[int]
    eos_token_id: int
    users_file: Path
    adapter_dir: Path

    def tokens(self, model: str) -> list[int]:
        response = self.client.completions.create(
            model=model, prompt=self.prompt_ids, max_tokens=MAX_TOKENS, temperature=0, logprobs=1,
            extra_body={"return_tokens_as_token_ids": True},
        )  # fmt: skip
        tokens = [int(token.removeprefix("token_id:")) for token in response.choices[0].logprobs.tokens]
        return _until_eos(tokens, self.eos_token_id)


def _expected_tokens(tmp: Path) -> tuple[dict[str, list[int]], list[int], int, Path]:
    """A checkpoint with random B heads on SmolLM2, and hyperpeft's own greedy answers for every profile."""
    from hyperpeft import HyperLoraConfig, HyperPeftModel, load_base_model, load_tokenizer

    model = HyperPeftModel(load_base_model("smollm2-135m-instruct"), HyperLoraConfig()).eval()
    model.fit_profile_statistics(list(USERS.values()))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module_type, head in model.hypernetwork.heads.items():
            a_rows = model.hyper_config.r * model.hypernetwork.layout.shapes[module_type][0]
            head.weight[a_rows:].copy_(torch.randn(head.weight[a_rows:].shape, generator=generator) * 0.05)
    model.save_pretrained(tmp / "ckpt")
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    prompt = tokenizer(PROMPT, return_tensors="pt")
    greedy = dict(max_new_tokens=MAX_TOKENS, do_sample=False)
    profiles = {**USERS, LATE_USER[0]: LATE_USER[1], "u1-changed": CHANGED_PROFILE}
    expected = {}
    for name, profile in profiles.items():
        tokens = model.generate(**prompt, profile=profile, **greedy)[0, prompt["input_ids"].shape[1] :].tolist()
        expected[name] = _until_eos(tokens, tokenizer.eos_token_id)
    with model.disable_adapter():
        tokens = model.generate(**prompt, **greedy)[0, prompt["input_ids"].shape[1] :].tolist()
    expected["base"] = _until_eos(tokens, tokenizer.eos_token_id)
    return expected, prompt["input_ids"][0].tolist(), tokenizer.eos_token_id, tmp / "ckpt"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    problem = _vllm_problem()
    if problem:
        pytest.skip(problem)
    from openai import OpenAI

    from hyperpeft.integrations.vllm_launch import vllm_command

    tmp = tmp_path_factory.mktemp("vllm")
    expected, prompt_ids, eos_token_id, checkpoint = _expected_tokens(tmp)
    assert len({tuple(tokens) for tokens in expected.values()}) >= 6, "the users' answers should differ"
    users_file = tmp / "users.jsonl"
    _write_users(users_file, USERS)
    port = _free_port()
    argv, env = vllm_command(
        checkpoint, users_file, adapter_dir=tmp / "adapters", python=str(VLLM_PYTHON), port=port, max_model_len=512
    )
    log = open(tmp / "vllm.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM exited with {process.returncode}:\n{(tmp / 'vllm.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM did not start in {START_TIMEOUT_S} s:\n{(tmp / 'vllm.log').read_text()[-3000:]}")
            time.sleep(2)
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)
        yield Served(url, client, expected, prompt_ids, eos_token_id, users_file, tmp / "adapters")
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
        log.close()


def test_every_user_gets_the_tokens_hyperpeft_generates(served):
    for user in USERS:
        assert served.tokens(user) == served.expected[user], user
    assert served.tokens("base") == served.expected["base"]  # the all-zero adapter answers as the base model


def test_concurrent_users_and_base_requests_each_get_their_own_answer(served):
    names = [*USERS, "base"] * 2
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        answers = list(pool.map(served.tokens, names))
    for name, tokens in zip(names, answers):
        assert tokens == served.expected[name], name


def test_an_unknown_user_is_not_found(served):
    import openai

    for name in ("nobody", "../u1"):
        with pytest.raises(openai.NotFoundError):
            served.tokens(name)


def test_a_user_added_while_the_server_runs_is_served(served):
    user, profile = LATE_USER
    _write_users(served.users_file, {**USERS, user: profile})
    assert served.tokens(user) == served.expected[user]
    files = [f for folder in served.adapter_dir.glob(f"{user}-*") for f in folder.iterdir()]
    assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {"0o644"}  # readable by other users


def test_a_changed_profile_gives_a_new_adapter_once_vllm_drops_the_old_one(served):
    import httpx

    assert served.tokens("u1") == served.expected["u1"]
    _write_users(served.users_file, {**USERS, "u1": CHANGED_PROFILE, LATE_USER[0]: LATE_USER[1]})
    response = httpx.post(f"{served.url}/v1/unload_lora_adapter", json={"lora_name": "u1"}, timeout=30)
    assert response.status_code == 200, response.text
    assert served.tokens("u1") == served.expected["u1-changed"]
    assert len(list(served.adapter_dir.glob("u1-*"))) == 2
