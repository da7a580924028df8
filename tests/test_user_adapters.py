"""`UserAdapters` (what hyperpeft's vLLM resolver serves) and `hyperpeft vllm`'s command line, without vLLM."""

from __future__ import annotations

import json
import os
import threading

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb
from peft import PeftModel
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder, load_base_model
from hyperpeft.integrations.vllm_launch import ResolverSettings, vllm_command, vllm_lora_rank
from hyperpeft.serving.user_adapters import UserAdapters

USERS = {"u1": "likes jazz", "u2": "writes long formal reviews"}
IDS = torch.tensor([[5, 6, 7, 8, 9]])


def write_users(path, users: dict[str, str]) -> str:
    path.write_text("".join(json.dumps({"user_id": u, "profile": p}) + "\n" for u, p in users.items()))
    return str(path)


@pytest.fixture
def setup(tmp_path):
    """A tiny base saved as a folder, a hyperpeft checkpoint with non-zero heads, and a users file."""
    base_folder = tmp_path / "base"
    make_base().save_pretrained(base_folder)
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM)
    model = HyperPeftModel(load_base_model(str(base_folder)), config, profile_encoder=encoder()).eval()
    perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    users = write_users(tmp_path / "users.jsonl", USERS)
    return model, str(base_folder), str(tmp_path / "ckpt"), users


def encoder() -> ProfileEncoder:
    return ProfileEncoder("fake", model=FakeSentenceModel())


def user_adapters(setup, tmp_path, **kwargs) -> UserAdapters:
    _, base, ckpt, users = setup
    return UserAdapters(
        ckpt, users, tmp_path / "adapters", base_model_name_or_path=base, profile_encoder=encoder(), **kwargs
    )


def test_a_users_folder_loads_in_peft_to_that_users_logits(setup, tmp_path):
    model, base, _, _ = setup
    adapters = user_adapters(setup, tmp_path)
    assert next(adapters.model.base_model.model.parameters()).device.type == "meta"  # no base weights were read
    for user_id, profile in USERS.items():
        folder = adapters.folder(user_id)
        saved = json.loads((folder / "adapter_config.json").read_text())
        assert saved["peft_type"] == "LORA" and saved["base_model_name_or_path"] == base and saved["r"] == 4
        peft_model = PeftModel.from_pretrained(load_base_model(base), folder).eval()
        with torch.no_grad():
            expected = model(input_ids=IDS, profile=profile).logits
            torch.testing.assert_close(peft_model(input_ids=IDS).logits, expected, atol=1e-5, rtol=1e-4)
    # adapters generated without the base weights are the very tensors generated with them
    generated = adapters.model.lora_state_dicts([USERS["u1"]])[0]
    for key, tensor in model.lora_state_dicts([USERS["u1"]])[0].items():
        assert torch.equal(generated[key], tensor), key
    with torch.no_grad():
        first, second = (model(input_ids=IDS, profile=p).logits for p in USERS.values())
    assert not torch.allclose(first, second, atol=1e-3)  # the two users really differ


def test_folders_are_keyed_by_content_and_written_once(setup, tmp_path):
    adapters = user_adapters(setup, tmp_path)
    first = adapters.folder("u1")
    assert adapters.folder("u1") == first and adapters.stats.generated == 1 and adapters.stats.reused == 1
    assert adapters.folder("nobody") is None and adapters.folder("../u1") is None and adapters.stats.unknown == 2
    # a changed profile gives a new folder; a new user is served without a restart
    write_users(tmp_path / "users.jsonl", {**USERS, "u1": "hates jazz", "u3": "asks about cooking"})
    changed = adapters.folder("u1")
    assert changed != first and first.is_dir() and adapters.folder("u3") is not None
    # another process (or a restart) finds the folders again instead of generating
    again = user_adapters(setup, tmp_path)
    assert again.folder("u1") == changed and again.stats.generated == 0
    assert oct(changed.stat().st_mode & 0o777) == "0o755"
    assert {oct(f.stat().st_mode & 0o777) for f in changed.iterdir()} == {"0o644"}
    assert not [p for p in (tmp_path / "adapters").iterdir() if p.name.startswith(".")]  # no staging left behind


def test_concurrent_first_requests_generate_once(setup, tmp_path):
    adapters = user_adapters(setup, tmp_path)
    barrier = threading.Barrier(8)
    folders = []

    def first_request() -> None:
        barrier.wait()
        folders.append(adapters.folder("u2"))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(set(folders)) == 1 and len(folders) == 8
    assert adapters.stats.generated == 1 and adapters.stats.reused == 7


def test_the_zero_adapter_answers_as_the_base_model(setup, tmp_path):
    _, base, _, _ = setup
    folder = user_adapters(setup, tmp_path, zero_adapter_name="base").folder("base")
    peft_model = PeftModel.from_pretrained(load_base_model(base), folder).eval()
    with torch.no_grad():
        assert torch.equal(peft_model(input_ids=IDS).logits, make_base()(input_ids=IDS).logits)
    assert user_adapters(setup, tmp_path, zero_adapter_name=None).folder("base") is None


def test_a_broken_users_file_fails_at_start_and_keeps_the_last_good_one_later(setup, tmp_path):
    adapters = user_adapters(setup, tmp_path)
    (tmp_path / "users.jsonl").write_text('{"user_id": "u1", "profile": ')  # a file caught mid-write
    assert adapters.profile("u1") == USERS["u1"]
    with pytest.raises(ValueError, match="is not valid JSON"):
        user_adapters(setup, tmp_path)


def test_vllm_command_and_settings(setup, tmp_path):
    _, base, ckpt, users = setup
    argv, env = vllm_command(ckpt, users, adapter_dir=tmp_path / "a", python="py", port=8123, environ={})
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in argv and argv[argv.index("--model") + 1] == base
    assert argv[argv.index("--max-lora-rank") + 1] == "8" and argv[argv.index("--port") + 1] == "8123"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    settings = ResolverSettings.from_environment(env)
    assert settings.checkpoint == os.path.abspath(ckpt) and settings.users == os.path.abspath(users)
    assert settings.adapter_dir == str((tmp_path / "a").resolve()) and settings.base_model == base
    assert ResolverSettings.from_environment({}) is None
    with pytest.raises(ValueError, match="HYPERPEFT_VLLM_USERS"):
        ResolverSettings.from_environment({"HYPERPEFT_VLLM_CHECKPOINT": ckpt})
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 9, 64)] == [1, 8, 8, 16, 64]
