"""A checkpoint is untrusted input (it may come from the Hub): a hostile or broken config or weights file is refused
with an error naming the value, before anything is sized from it, and the caller's base model is left as it was."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb
from figures import record
from safetensors.torch import load_file, save_file

from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.layer import HyperLoraLinear

CONFIGS = [  # (what the config is changed to, words the error must hold)
    ({"hidden_dim": 67108864}, "GiB of float32 parameters, more than this machine's"),  # asked for 21.5 GB before
    ({"num_hidden_layers": 10**9}, "GiB of float32 parameters"),
    ({"profile_dim": 2**40}, "GiB of float32 parameters"),
    ({"module_embedding_dim": 2**36}, "GiB of float32 parameters"),
    ({"r": 2**24}, "larger than q_proj's smaller side"),  # asked for 512 GB before
    ({"r": -1}, "`r`"),
    ({"r": "8"}, "`r`"),
    ({"r": True}, "`r`"),
    ({"r": 8.5}, "`r`"),
    ({"hidden_dim": 0}, "`hidden_dim`"),
    ({"lora_alpha": float("nan")}, "`lora_alpha`"),
    ({"lora_dropout": 2.0}, "`lora_dropout`"),
    ({"target_modules": []}, "should be a non-empty list of module names"),
    ({"target_modules": ["no_such_proj"]}, "no_such_proj"),
    ({"peft_type": "LORA"}, "is not a hyperpeft checkpoint"),
    ({"profile_dim": PROFILE_DIM + 1}, "its config says profile_dim=9; the checkpoint is corrupt"),
    ({"r": None}, "`r`"),
]
MISSING = ["r", "hidden_dim", "profile_dim", "target_modules"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, hidden_dim=16))
    perturb(model)
    model.save_pretrained(folder)
    return folder


def tampered(checkpoint, tmp_path, change=None, drop=None, text=None):
    folder = tmp_path / "tampered"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes((checkpoint / "adapter_model.safetensors").read_bytes())
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    config.update(change or {})
    config.pop(drop, None)
    text = json.dumps(config).encode() if text is None else text.encode() if isinstance(text, str) else text
    (folder / "adapter_config.json").write_bytes(text)
    return folder


def refused(folder, words, good) -> None:
    base = make_base()
    with pytest.raises((TypeError, ValueError), match=re.escape(words)):
        HyperPeftModel.from_pretrained(base, folder)
    assert not any(isinstance(module, HyperLoraLinear) for module in base.modules())  # left unwrapped
    HyperPeftModel.from_pretrained(base, good)  # so a retry with a good checkpoint works


@pytest.mark.parametrize("change, words", CONFIGS, ids=[next(iter(c)) + "=" + str(v) for c, v in CONFIGS])
def test_hostile_config_values(checkpoint, tmp_path, change, words):
    refused(tampered(checkpoint, tmp_path, change=change), words, checkpoint)


@pytest.mark.parametrize("field", MISSING)
def test_a_config_without_a_shape_field(checkpoint, tmp_path, field):
    refused(tampered(checkpoint, tmp_path, drop=field), f"has no ['{field}']", checkpoint)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[" * 100_000 + "]" * 100_000, "is not valid JSON (RecursionError)"),
        ('{"r": 4,', "is not valid JSON"),
        ("[]", "should hold a JSON object, not list"),
        (b'{"r": 4, "hidden_dim": "\xff"}', "is not valid JSON (UnicodeDecodeError)"),
    ],
    ids=["nested 100000 deep", "truncated", "a list", "not UTF-8"],
)
def test_broken_config_files(checkpoint, tmp_path, text, words):
    refused(tampered(checkpoint, tmp_path, text=text), words, checkpoint)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(checkpoint, tmp_path, value):
    folder = tampered(checkpoint, tmp_path)
    weights = load_file(folder / "adapter_model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name].clone().view(-1).index_fill_(0, torch.tensor([0]), value).view_as(weights[name])
    save_file(weights, folder / "adapter_model.safetensors")
    refused(folder, f"the tensor `{name}` holds NaN or inf values", checkpoint)


def test_unknown_config_keys_are_ignored_with_a_warning_as_peft_does(checkpoint, tmp_path, caplog):
    folder = tampered(checkpoint, tmp_path, change={"surprise": 1})
    HyperPeftModel.from_pretrained(make_base(), folder)
    assert "Ignoring unknown config keys ['surprise']" in caplog.text


def test_a_weights_file_that_is_not_safetensors(checkpoint, tmp_path):
    folder = tampered(checkpoint, tmp_path)
    (folder / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95 not safetensors, maybe a pickle")
    refused(folder, "adapter_model.safetensors", checkpoint)


def test_every_case_was_tried():
    record("malicious_checkpoints", configs=len(CONFIGS), missing_fields=len(MISSING), broken_files=4, weights=3)


def test_a_recorded_base_path_that_does_not_exist_is_named(checkpoint, tmp_path):
    folder = tampered(checkpoint, tmp_path, change={"base_model_name_or_path": "/nowhere/my-base"})
    with pytest.raises(ValueError, match=re.escape("No base model folder at '/nowhere/my-base'")):
        HyperPeftModel.from_pretrained(folder)  # no base given: it is rebuilt from the recorded path


@pytest.mark.parametrize(
    "journal",
    [
        {"../outside.txt": {"staged": "..outside.txt.x.tmp", "sha256": "0" * 64}},
        {"adapter_config.json": {"staged": "../../outside.txt", "sha256": "0" * 64}},
        {"adapter_config.json": {"staged": ".adapter_config.json./../../outside.tmp", "sha256": "0" * 64}},
        ["not", "a", "mapping"],
    ],
    ids=["target outside", "staged outside", "staged through a subfolder", "a list"],
)
def test_a_save_journal_naming_files_outside_the_folder_is_refused(checkpoint, tmp_path, journal):
    folder = tampered(checkpoint, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (folder / ".hyperpeft-journal-0123456789ab.json").write_text(json.dumps(journal))
    with pytest.raises(ValueError, match="broken save journal"):
        HyperPeftModel.from_pretrained(make_base(), folder)
    assert outside.read_text() == "keep me" and (folder / "adapter_config.json").is_file()
