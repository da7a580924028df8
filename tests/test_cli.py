"""The `hyperpeft` command: config files, overrides, the accelerate hand-off, and short real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import has_embedded_models

from hyperpeft.cli import apply_overrides, launch_command, read_config

ROOT = Path(__file__).parents[1]
needs_embedded = pytest.mark.skipif(not has_embedded_models(), reason="the embedded model packages are not installed")


def test_overrides_are_parsed_as_yaml():
    config = apply_overrides(
        {"training": {"max_steps": 90}},
        ["training.max_steps=3", "training.learning_rate=1e-3", "hyper.target_modules=[q_proj, k_proj]"],
    )
    assert config["training"] == {"max_steps": 3, "learning_rate": 1e-3}
    assert config["hyper"]["target_modules"] == ["q_proj", "k_proj"]


@pytest.mark.parametrize(
    ("override", "message"),
    [("training.max_steps", "should look like"), ("nope.x=1", "unknown section 'nope'"), ("=3", "should look like")],
)
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides({}, [override])


def test_config_files(tmp_path):
    for example in (ROOT / "examples" / "configs").glob("*.yaml"):
        if not example.name.startswith("eval_"):  # `hyperpeft eval` configs: tests/test_evaluation_report.py
            assert read_config(example, [])  # every shipped training example parses and names known sections
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainig: {max_steps: 3}\n")
    with pytest.raises(ValueError, match=r"unknown sections \['trainig'\]"):
        read_config(bad, [])
    with pytest.raises(ValueError, match="No config file"):
        read_config(tmp_path / "missing.yaml", [])


def test_several_processes_hand_off_to_accelerate_launch():
    command = launch_command("c.yaml", ["training.max_steps=3"], 2, "examples/accelerate/cpu_ddp_2proc.yaml")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[3:5] == ["--config_file", "examples/accelerate/cpu_ddp_2proc.yaml"]
    assert command[-5:] == ["hyperpeft.cli", "train", "--config", "c.yaml", "training.max_steps=3"]
    assert "--num_processes" in command and command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("-m", 3) + 1] == "hyperpeft.cli"


@pytest.mark.integration
@needs_embedded
def test_train_command_writes_a_checkpoint(tmp_path):
    config = yaml.safe_load((ROOT / "examples" / "configs" / "synthetic.yaml").read_text())
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(config))
    overrides = [
        f"training.output_dir={tmp_path / 'run'}",
        "training.max_steps=2",
        "training.per_device_train_batch_size=2",
        "training.warmup_steps=0",
        "data.synthetic={train_users: 6, test_random_users: 3, test_ood_users: 3, history_items: 4, queries: 1}",
    ]
    run = subprocess.run(
        [sys.executable, "-m", "hyperpeft.cli", "train", "--config", str(config_path), *overrides],
        capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "HYPER_LORA" and saved["base_model_name_or_path"].endswith("smollm2-135m-instruct")


@pytest.mark.integration
@needs_embedded
def test_main_job_smoke_run(tmp_path):
    from hyperpeft.demo import DemoConfig, run

    report = run(DemoConfig.smoke(str(tmp_path)))
    assert (tmp_path / "results.md").read_text() == report["table"]
    results = json.loads((tmp_path / "results.json").read_text())["results"]
    for split in ("test_random", "test_ood"):
        methods = {m for m in results[split] if not m.startswith("_")}
        assert methods == {"base", "MT-LoRA", "P2P", "P2P, another user's profile"}
        assert set(results[split]["P2P"]) == {"synthetic-tagging", "synthetic-rating", "synthetic-style"}
    adapter = Path(report["two_users"]["exported_adapter"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert len(report["two_users"]["users"]) == 2


def test_main_job_command_line():
    from hyperpeft.demo import DemoConfig, config_from_args

    assert config_from_args([]) == DemoConfig()
    config = config_from_args(["--out", "elsewhere", "--steps", "7", "--seed", "3"])
    assert (config.out, config.steps, config.seed) == ("elsewhere", 7, 3)
    assert config.synthetic == DemoConfig().synthetic  # another seed trains differently on the same users
    assert config_from_args(["--smoke", "--out", "x"]) == DemoConfig.smoke("x")
    for bad in (["--steps", "0"], ["--seed", "-1"]):
        with pytest.raises(SystemExit):
            config_from_args(bad)


def test_main_job_base_dtype():
    import torch

    from hyperpeft.demo import DemoConfig, base_dtype

    assert base_dtype(DemoConfig(base_dtype="float32")) is torch.float32
    assert base_dtype(DemoConfig(base_dtype="bfloat16")) is torch.bfloat16
    assert base_dtype(DemoConfig()) in (torch.bfloat16, torch.float32)  # "auto": bf16 only where it is native
    for bad in ("int8", "fp32", "Tensor"):
        with pytest.raises(ValueError, match=repr(bad)):
            base_dtype(DemoConfig(base_dtype=bad))
