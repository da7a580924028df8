"""PEFT interoperability: the registry bridge, get_peft_model, PeftModel.from_pretrained, unload, and export_lora."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PROFILE_DIM, make_base, perturb, profiles
from peft import LoraConfig, PeftConfig, PeftModel, PeftType, get_peft_model

import hyperpeft.registry as registry
from hyperpeft import HyperLoraConfig, HyperLoraModel, HyperPeftModel


def test_peft_type_is_registered():
    assert PeftType("HYPER_LORA") is PeftType.HYPER_LORA
    assert PeftType.HYPER_LORA in list(PeftType)
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.HYPER_LORA] is HyperLoraConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.HYPER_LORA] is HyperLoraModel
    registry.register_with_peft(HyperLoraConfig, HyperLoraModel, HyperPeftModel)  # idempotent


def test_bridge_failure_names_the_peft_version(monkeypatch):
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    def broken(**kwargs):
        raise KeyError("internals moved")

    monkeypatch.delitem(PEFT_TYPE_TO_CONFIG_MAPPING, PeftType.HYPER_LORA)
    monkeypatch.setattr("peft.utils.register_peft_method", broken)
    import peft

    with pytest.raises(RuntimeError, match=f"peft {peft.__version__}.*internals moved"):
        registry.register_with_peft(HyperLoraConfig, HyperLoraModel, HyperPeftModel)


def test_get_peft_model_builds_the_hypernetwork():
    model = get_peft_model(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    assert isinstance(model.base_model, HyperLoraModel)
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.base_model.hypernetwork.parameters())
    ids = torch.randint(3, 96, (2, 5))
    out = model(input_ids=ids, profile_embeddings=profiles(2))
    assert out.logits.shape == (2, 5, 96)
    generated = model.generate(input_ids=ids, profile=profiles(2), max_new_tokens=2, do_sample=False)
    assert generated.shape == (2, 7)


def test_peft_loads_a_hyperpeft_checkpoint(tmp_path):
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM)).eval()
    perturb(model)
    model.save_pretrained(tmp_path)
    assert isinstance(PeftConfig.from_pretrained(tmp_path), HyperLoraConfig)
    loaded = PeftModel.from_pretrained(make_base(), tmp_path)
    ids = torch.randint(3, 96, (2, 5))
    users = profiles(2)
    assert torch.equal(
        loaded(input_ids=ids, profile_embeddings=users).logits, model(input_ids=ids, profile_embeddings=users).logits
    )


def test_unload_gives_back_the_base_model():
    reference = make_base()
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    perturb(model)
    base = model.unload()
    assert not any("HyperLora" in type(m).__name__ for m in base.modules())
    ids = torch.randint(3, 96, (1, 5))
    assert torch.equal(base(input_ids=ids).logits, reference(input_ids=ids).logits)


@pytest.mark.parametrize(
    "target_modules", [["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]]
)
def test_exported_adapter_reproduces_the_logits_through_plain_peft(tmp_path, arch, target_modules):
    model = HyperPeftModel(
        make_base(arch), HyperLoraConfig(r=4, lora_alpha=8, profile_dim=PROFILE_DIM, target_modules=target_modules)
    ).eval()
    perturb(model, std=0.3)
    user = profiles(1)[0]
    model.export_lora(user, tmp_path / "user")

    config = json.loads((tmp_path / "user" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert isinstance(PeftConfig.from_pretrained(tmp_path / "user"), LoraConfig)
    plain = PeftModel.from_pretrained(make_base(arch), tmp_path / "user").eval()
    ids = torch.randint(3, 96, (2, 9), generator=torch.Generator().manual_seed(4))
    expected = model(input_ids=ids, profile_embeddings=user).logits
    got = plain(input_ids=ids).logits
    with plain.disable_adapter():
        base = plain(input_ids=ids).logits
    assert (got - base).abs().max() > 1e-2  # the adapter does something
    assert (got - expected).abs().max() <= 1e-4


def test_export_refuses_several_profiles(tmp_path):
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    with pytest.raises(ValueError, match="one user's profile"):
        model.export_lora(profiles(2), tmp_path)


def test_peft_entry_points_give_the_full_hyperpeft_model(tmp_path):
    from peft import AutoPeftModelForCausalLM

    make_base().save_pretrained(tmp_path / "base")
    config = HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, base_model_name_or_path=str(tmp_path / "base"))
    model = HyperPeftModel(make_base(), config).eval()
    perturb(model)
    model.save_pretrained(tmp_path / "ckpt")
    ids = torch.randint(3, 96, (2, 5))
    users = profiles(2)
    expected = model(input_ids=ids, profile_embeddings=users).logits
    built = get_peft_model(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    loaded = PeftModel.from_pretrained(make_base(), tmp_path / "ckpt")
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    for peft_model in (built, loaded, auto):
        assert type(peft_model) is HyperPeftModel  # export_lora, save_pretrained, HyperSFTTrainer all work on it
    for peft_model in (loaded, auto):
        assert not peft_model.training and not any(p.requires_grad for p in peft_model.parameters())
        assert torch.equal(peft_model(input_ids=ids, profile_embeddings=users).logits, expected)
    assert type(PeftModel.from_pretrained(make_base(), tmp_path / "ckpt", is_trainable=True)) is HyperPeftModel
    # an exported adapter is a plain PEFT LoRA for the same base, which PEFT's auto class loads too
    auto.export_lora(users[0], tmp_path / "user")
    plain = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "user")
    assert type(plain).__name__ == "PeftModelForCausalLM" and not isinstance(plain, HyperPeftModel)
    torch.testing.assert_close(plain(input_ids=ids[:1]).logits, expected[:1], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="one hypernetwork per model"):
        loaded.load_adapter(tmp_path / "ckpt", adapter_name="second")


@pytest.mark.parametrize("order", ["hyperpeft first", "peft first", "submodule first", "availability check first"])
def test_hyperpeft_registers_with_peft_whichever_is_imported_first(order):
    import subprocess
    import sys

    imports = {
        "hyperpeft first": "import hyperpeft; import peft",
        "peft first": "import peft; import hyperpeft",
        "submodule first": "from hyperpeft.config import HyperLoraConfig; import peft; HyperLoraConfig()",
        # transformers' is_peft_available() asks for peft's spec without importing it
        "availability check first": "import importlib.util, hyperpeft; importlib.util.find_spec('peft'); import peft",
    }[order]
    code = (
        f"{imports}\nfrom peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING\n"
        "print(PEFT_TYPE_TO_CONFIG_MAPPING['HYPER_LORA'].__name__, PEFT_TYPE_TO_TUNER_MAPPING['HYPER_LORA'].__name__)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["HyperLoraConfig", "HyperLoraModel"]


def test_importing_hyperpeft_and_its_command_loads_no_framework():
    import subprocess
    import sys

    code = "import sys, hyperpeft, hyperpeft.cli; print(sorted({'torch', 'peft', 'transformers'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"  # so `hyperpeft --help` answers at once
