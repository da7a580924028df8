"""HyperLoraConfig: PEFT's names and defaults, validation with clear errors, JSON round-trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
from peft import PeftConfig, PeftType

from hyperpeft import HyperLoraConfig


def test_defaults_follow_the_paper():
    config = HyperLoraConfig()
    assert (config.r, config.lora_alpha, config.target_modules) == (8, 16, ["q_proj", "v_proj"])
    assert config.peft_type is PeftType.HYPER_LORA and config.task_type == "CAUSAL_LM"
    assert config.profile_encoder == "all-minilm-l6-v2" and config.profile_dim == 384
    assert config.scaling == 2.0
    assert isinstance(config, PeftConfig)


def test_json_round_trip(tmp_path):
    config = HyperLoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj"],
        profile_dim=1024,
        profile_instruction="Represent the user: ",
        hidden_dim=128,
        num_hidden_layers=3,
        base_model_name_or_path="Qwen/Qwen2.5-7B-Instruct",
    )
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "HYPER_LORA" and data["profile_dim"] == 1024
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, HyperLoraConfig)
    assert dataclasses.asdict(loaded) == dataclasses.asdict(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, r"`r` should be a positive integer but the value passed is 0"),
        ({"r": 2.5}, r"`r` should be a positive integer"),
        ({"lora_alpha": -1}, r"`lora_alpha` should be a positive number but the value passed is -1"),
        ({"lora_dropout": 1.0}, r"`lora_dropout` should be in \[0, 1\)"),
        ({"target_modules": []}, r"`target_modules` should be a non-empty list"),
        ({"target_modules": ["q_proj", ""]}, r"`target_modules` should be a non-empty list"),
        ({"profile_dim": -3}, r"`profile_dim` should be a positive integer but the value passed is -3"),
        ({"hidden_dim": 0}, r"`hidden_dim` should be a positive integer"),
        ({"num_hidden_layers": 0}, r"`num_hidden_layers` should be a positive integer"),
        ({"profile_encoder": ""}, r"`profile_encoder` should be a sentence-transformers model name or path"),
    ],
)
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HyperLoraConfig(**kwargs)


def test_profile_instruction_must_be_text():
    with pytest.raises(TypeError, match="profile_instruction"):
        HyperLoraConfig(profile_instruction=3)
