"""Checkpoints: save -> load bit for bit, atomic writes, clear errors, Hub resolution and upload (no network)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb, profiles
from safetensors.torch import load_file

import hyperpeft.checkpoint as checkpoint
from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.checkpoint import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME


def trained_model(arch: str = "llama", shared_lora: bool = False) -> HyperPeftModel:
    config = HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, shared_lora=shared_lora)
    model = HyperPeftModel(make_base(arch), config).eval()
    perturb(model)
    model.hypernetwork.set_profile_statistics(profiles(10, seed=9) * 3 + 1)
    return model


@pytest.mark.parametrize("shared_lora", [False, True])
def test_save_load_reproduces_outputs_bit_for_bit(tmp_path, arch, shared_lora):
    model = trained_model(arch, shared_lora)
    ids = torch.randint(3, 96, (2, 6), generator=torch.Generator().manual_seed(0))
    users = profiles(2)
    expected = model(input_ids=ids, profile_embeddings=users).logits
    model.save_pretrained(tmp_path / "ckpt")

    assert sorted(os.listdir(tmp_path / "ckpt")) == [MODEL_CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    loaded = HyperPeftModel.from_pretrained(make_base(arch), tmp_path / "ckpt")
    assert torch.equal(loaded(input_ids=ids, profile_embeddings=users).logits, expected)
    assert not any(p.requires_grad for p in loaded.parameters())  # loaded for inference by default
    trainable = HyperPeftModel.from_pretrained(make_base(arch), tmp_path / "ckpt", is_trainable=True)
    assert all(p.requires_grad for p in trainable.hypernetwork.parameters())


def test_checkpoint_holds_the_hypernetwork_only(tmp_path):
    model = trained_model()
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / WEIGHTS_NAME)
    assert tensors and all(k.startswith("base_model.hypernetwork.") for k in tensors)
    base_names = {n for n, _ in model.base_model.model.named_parameters()}
    assert not any(k.removeprefix("base_model.") in base_names or "base_layer" in k for k in tensors)
    assert (
        sum(t.numel() for t in tensors.values())
        == sum(p.numel() for p in model.hypernetwork.parameters()) + 2 * PROFILE_DIM
    )
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    assert config["peft_type"] == "HYPER_LORA" and config["r"] == 4
    assert "hyperpeft" in (tmp_path / MODEL_CARD_NAME).read_text()


def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = trained_model()
    model.save_pretrained(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    perturb(model, seed=7)  # different weights, so a partial write would show

    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd):  # the second file fails to reach the disk
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        model.save_pretrained(tmp_path)
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before  # same files, same bytes, no temporary files left behind
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)
    model.save_pretrained(tmp_path)
    assert (tmp_path / WEIGHTS_NAME).read_bytes() != before[WEIGHTS_NAME]


def test_save_keeps_other_files_and_refuses_pickles(tmp_path):
    (tmp_path / "trainer_state.json").write_text("{}")
    model = trained_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "trainer_state.json").read_text() == "{}"
    with pytest.raises(ValueError, match="safetensors only"):
        model.save_pretrained(tmp_path, safe_serialization=False)


def test_missing_and_corrupt_files(tmp_path):
    model = trained_model()
    model.save_pretrained(tmp_path / "ok")

    with pytest.raises(ValueError, match="not a directory|Could not find"):
        HyperPeftModel.from_pretrained(make_base(), tmp_path / "nothing-here")

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tmp_path / "ok", no_weights)
    (no_weights / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=f"has no {WEIGHTS_NAME}"):
        HyperPeftModel.from_pretrained(make_base(), no_weights)

    no_config = tmp_path / "no-config"
    shutil.copytree(tmp_path / "ok", no_config)
    (no_config / CONFIG_NAME).unlink()
    with pytest.raises(ValueError, match=f"has no {CONFIG_NAME}"):
        HyperPeftModel.from_pretrained(make_base(), no_config)

    bad_json = tmp_path / "bad-json"
    shutil.copytree(tmp_path / "ok", bad_json)
    (bad_json / CONFIG_NAME).write_text('{"r": 4,')
    with pytest.raises(ValueError, match="not valid JSON"):
        HyperPeftModel.from_pretrained(make_base(), bad_json)

    truncated = tmp_path / "truncated"
    shutil.copytree(tmp_path / "ok", truncated)
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="could not be read as safetensors"):
        HyperPeftModel.from_pretrained(make_base(), truncated)

    bad_value = tmp_path / "bad-value"
    shutil.copytree(tmp_path / "ok", bad_value)
    config = json.loads((bad_value / CONFIG_NAME).read_text())
    (bad_value / CONFIG_NAME).write_text(json.dumps({**config, "r": 0}))
    with pytest.raises(ValueError, match="invalid config.*`r` should be a positive integer"):
        HyperPeftModel.from_pretrained(make_base(), bad_value)

    lora = tmp_path / "plain-lora"
    shutil.copytree(tmp_path / "ok", lora)
    (lora / CONFIG_NAME).write_text(json.dumps({**config, "peft_type": "LORA"}))
    with pytest.raises(ValueError, match="not a hyperpeft checkpoint"):
        HyperPeftModel.from_pretrained(make_base(), lora)

    # weights with a shared LoRA under a config without one (and the other way round) name the disagreement
    trained_model(shared_lora=True).save_pretrained(tmp_path / "shared")
    for folder, shared_lora, has in (("shared", False, "has"), ("ok", True, "lacks")):
        edited = tmp_path / f"edited-{folder}"
        shutil.copytree(tmp_path / folder, edited)
        saved = json.loads((edited / CONFIG_NAME).read_text())
        (edited / CONFIG_NAME).write_text(json.dumps({**saved, "shared_lora": shared_lora}))
        with pytest.raises(ValueError, match=f"{has} a shared LoRA .* shared_lora={shared_lora}: its adapter_config"):
            HyperPeftModel.from_pretrained(make_base(), edited)


def test_checkpoint_for_another_base_model_names_the_shape(tmp_path):
    trained_model().save_pretrained(tmp_path)
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=96,
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(
        ValueError, match=r"made for another base model: `heads\.q_proj\.weight` has shape \(256, 256\)"
    ):
        HyperPeftModel.from_pretrained(other, tmp_path)


def test_from_pretrained_without_a_base_rebuilds_it_from_the_config(tmp_path, monkeypatch):
    model = trained_model()
    model.hyper_config.base_model_name_or_path = "tiny-test-base"
    model.save_pretrained(tmp_path)
    requested = []

    def fake_loader(name, dtype):
        requested.append(name)
        return make_base()

    monkeypatch.setattr("hyperpeft.peft_model.load_base_model", fake_loader)
    ids = torch.randint(3, 96, (1, 5))
    loaded = HyperPeftModel.from_pretrained(str(tmp_path))
    assert requested == ["tiny-test-base"]
    user = profiles(1)[0]
    assert torch.equal(
        loaded(input_ids=ids, profile_embeddings=user).logits, model(input_ids=ids, profile_embeddings=user).logits
    )


def _fake_hub_cache(cache: Path, repo_id: str, source: Path) -> None:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    for name in os.listdir(source):
        shutil.copy(source / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)


def test_hub_repo_id_resolves_from_the_local_cache_offline(tmp_path):
    model = trained_model()
    model.save_pretrained(tmp_path / "ckpt")
    _fake_hub_cache(tmp_path / "hub", "org/p2p-tiny", tmp_path / "ckpt")
    loaded = HyperPeftModel.from_pretrained(make_base(), "org/p2p-tiny", cache_dir=tmp_path / "hub")
    ids = torch.randint(3, 96, (1, 5))
    user = profiles(1)[0]
    assert torch.equal(
        loaded(input_ids=ids, profile_embeddings=user).logits, model(input_ids=ids, profile_embeddings=user).logits
    )


def test_missing_hub_repo_gives_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Could not find the checkpoint 'org/does-not-exist'"):
        HyperPeftModel.from_pretrained(make_base(), "org/does-not-exist", cache_dir=tmp_path)


def test_push_to_hub_uploads_the_saved_files(tmp_path, monkeypatch):
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False, repo_type=None):
            uploaded["repo"] = repo_id

        def upload_folder(self, repo_id, folder_path, **kwargs):
            uploaded["files"] = sorted(os.listdir(folder_path))
            uploaded["weights"] = load_file(Path(folder_path) / WEIGHTS_NAME)
            return "commit"

    monkeypatch.setattr("hyperpeft.peft_model.HfApi", FakeApi)
    monkeypatch.setattr("hyperpeft.peft_model.hub_constants.HF_HUB_OFFLINE", False)
    model = trained_model()
    assert model.push_to_hub("org/name") == "commit"
    assert uploaded["repo"] == "org/name"
    assert uploaded["files"] == [MODEL_CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    for key, value in model.hypernetwork.state_dict().items():
        assert torch.equal(uploaded["weights"]["base_model.hypernetwork." + key], value)


def test_push_to_hub_offline_fails_early(monkeypatch):
    monkeypatch.setattr("hyperpeft.peft_model.hub_constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        trained_model().push_to_hub("org/name")
