"""Model cards are `huggingface_hub.ModelCard`s that name a base a third party can load: the Hub id where the weights
are the Hub's, the Hub model the embedded weights were quantized from (with their provenance), never a local path."""

from __future__ import annotations

import json

from conftest import PROFILE_DIM, make_base, perturb
from huggingface_hub import ModelCard
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.cards import adapter_card, base_model_of, checkpoint_card
from hyperpeft.embedded import EMBEDDED_BASE_ORIGIN
from hyperpeft.serving.export import MANIFEST_NAME, export_adapters


def test_the_base_model_as_the_hub_knows_it(tmp_path):
    assert base_model_of("HuggingFaceTB/SmolLM2-135M-Instruct")[0] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    hub_id, text = base_model_of("/home/someone/.cache/hyperpeft/smollm2-135m-instruct")  # the embedded folder
    assert hub_id == EMBEDDED_BASE_ORIGIN and "Q4_1 GGUF" in text and "hyperpeft save-base" in text
    (tmp_path / "my-base").mkdir()
    assert base_model_of(str(tmp_path / "my-base")) == (
        None,
        f"The base model is the local folder `{tmp_path / 'my-base'}`.",
    )


def test_a_checkpoint_card_round_trips_through_model_card(tmp_path):
    config = HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, base_model_name_or_path="org/base")
    card = checkpoint_card(config, {"steps": 7, "dataset": "tiny users", "evaluation": {"eval_loss": 1.25}})
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.library_name == "hyperpeft" and loaded.data.base_model == "org/base"
    assert "- steps: 7" in loaded.text and "| eval_loss | 1.25 |" in loaded.text


def test_every_exported_adapter_and_checkpoint_has_a_card(tmp_path):
    config = HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, base_model_name_or_path="org/base")
    model = HyperPeftModel(make_base(), config, profile_encoder=ProfileEncoder("fake", model=FakeSentenceModel()))
    perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    assert ModelCard.load(tmp_path / "ckpt" / "README.md").data.base_model == "org/base"
    manifest = export_adapters(model, {"u1": "likes jazz", "u2": "writes formally"}, tmp_path / "out", source="ckpt")
    for user, entry in manifest["users"].items():
        card = ModelCard.load(tmp_path / "out" / entry["folder"] / "README.md")
        assert card.data.library_name == "peft" and card.data.base_model == "org/base"
        assert f"the user `{user}`" in card.text and "hyperpeft checkpoint `ckpt`" in card.text
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["source_checkpoint"] == "ckpt"
    single = model.export_lora("likes jazz", tmp_path / "one")
    assert ModelCard.load(single / "README.md").data.library_name == "peft"
    assert str(adapter_card(model.peft_lora_config())).startswith("---\n")
