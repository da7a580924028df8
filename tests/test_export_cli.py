"""`hyperpeft export`: one PEFT LoRA folder per user that PEFT loads to the same logits, a manifest, clear errors."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import PROFILE_DIM, has_embedded_models, make_base, perturb
from peft import PeftModel
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.adapter_cache import profile_key
from hyperpeft.cli import main as cli_main
from hyperpeft.serving.export import export_adapters
from hyperpeft.serving.users import read_user_profiles

USERS = {"u1": "likes jazz", "u-2": "writes long formal reviews", "user.3": "asks about cooking"}
IDS = torch.tensor([[5, 6, 7, 8, 9]])


def write_users(path, lines: list) -> str:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_every_user_folder_loads_in_peft_to_the_hyperpeft_logits(tmp_path):
    encoder = ProfileEncoder("fake", model=FakeSentenceModel())
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM, base_model_name_or_path="tiny-llama")
    model = HyperPeftModel(make_base(), config, profile_encoder=encoder).eval()
    perturb(model)
    manifest = export_adapters(model, USERS, tmp_path / "adapters", batch_size=2, source="ckpt")

    saved = json.loads((tmp_path / "adapters" / "manifest.json").read_text())
    assert saved == json.loads(json.dumps(manifest))
    assert saved["base_model"] == "tiny-llama" and saved["r"] == 4 and saved["source_checkpoint"] == "ckpt"
    # each user's folder is named by the user and what the adapter depends on, and found through the manifest
    assert {u: e["profile_sha256"] for u, e in saved["users"].items()} == {u: profile_key(p) for u, p in USERS.items()}
    assert all(re.fullmatch(f"{re.escape(u)}-[0-9a-f]{{16}}", e["folder"]) for u, e in saved["users"].items())
    for user_id, profile in USERS.items():
        folder = tmp_path / "adapters" / saved["users"][user_id]["folder"]
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
        peft_model = PeftModel.from_pretrained(make_base(), folder).eval()
        with torch.no_grad():
            expected = model(input_ids=IDS, profile=profile).logits
            torch.testing.assert_close(peft_model(input_ids=IDS).logits, expected, atol=1e-5, rtol=1e-4)
    # a batch of users gives each the adapter it gets alone
    single = model.lora_state_dict(USERS["u-2"])
    batched = model.lora_state_dicts(list(USERS.values()))[1]
    assert single.keys() == batched.keys()
    for key in single:
        torch.testing.assert_close(single[key], batched[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([{"user_id": "a", "profile": "x"}, {"user_id": "a", "profile": "y"}], "repeats 'a'"),
        ([{"user_id": "Bob", "profile": "x"}, {"user_id": "bob", "profile": "y"}], "repeats 'Bob'"),
        ([{"user_id": "../etc", "profile": "x"}], "'../etc' is not allowed"),
        ([{"user_id": "a b", "profile": "x"}], "'a b' is not allowed"),
        ([{"user_id": 7, "profile": "x"}], "should be a string"),
        ([{"user_id": "a", "profile": "  "}], "empty"),
        ([{"user_id": "a"}], "should be an object with `user_id` and `profile`"),
        (["{not json"], "is not valid JSON"),
        ([""], "holds no users"),
    ],
)
def test_bad_users_files(tmp_path, lines, message):
    path = write_users(tmp_path / "users.jsonl", lines)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_user_profiles(path)


def test_missing_users_file(tmp_path):
    with pytest.raises(ValueError, match="No users file"):
        read_user_profiles(tmp_path / "none.jsonl")


def test_the_cli_refuses_a_bad_users_file_before_loading_anything(tmp_path):
    path = write_users(tmp_path / "users.jsonl", [{"user_id": "a/b", "profile": "x"}])
    with pytest.raises(SystemExit, match="'a/b' is not allowed"):
        cli_main(["export", "--model", str(tmp_path / "nope"), "--profiles", path, "--out", str(tmp_path / "out")])


@pytest.mark.integration
@pytest.mark.skipif(not has_embedded_models(), reason="the embedded model packages are not installed")
def test_the_cli_end_to_end(tmp_path):
    make_base().save_pretrained(tmp_path / "base")
    config = HyperLoraConfig(r=4, lora_alpha=8, profile_dim=384)  # the embedded MiniLM encoder
    model = HyperPeftModel(make_base(), config)
    perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    path = write_users(tmp_path / "users.jsonl", [{"user_id": u, "profile": p} for u, p in USERS.items()])
    out = tmp_path / "adapters"
    args = ["--model", str(tmp_path / "ckpt"), "--profiles", path, "--out", str(out)]
    assert cli_main(["export", *args, "--base-model", str(tmp_path / "base"), "--device", "cpu"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["users"]) == sorted(USERS) and manifest["base_model"] == str(tmp_path / "base")
    peft_model = PeftModel.from_pretrained(make_base(), out / manifest["users"]["u1"]["folder"]).eval()
    with torch.no_grad():
        expected = model.eval()(input_ids=IDS, profile=USERS["u1"]).logits
        torch.testing.assert_close(peft_model(input_ids=IDS).logits, expected, atol=1e-5, rtol=1e-4)
