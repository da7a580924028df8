"""The `hyperpeft` command: one way to configure (YAML sections and --flags), the accelerate hand-off, real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import has_embedded_models

from hyperpeft.cli.arguments import parse_config
from hyperpeft.cli.train import launch_command, sections

ROOT = Path(__file__).parents[1]
needs_embedded = pytest.mark.skipif(not has_embedded_models(), reason="the embedded model packages are not installed")


def parse_train(tmp_path, settings: dict | None, *flags: str) -> dict:
    argv = list(flags)
    if settings is not None:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(settings))
        argv = ["--config", str(tmp_path / "c.yaml"), *argv]
    return parse_config(sections(), argv, "hyperpeft train", "test")


def test_flags_override_the_file_and_reach_every_section(tmp_path):
    settings = {"training": {"output_dir": str(tmp_path / "o"), "max_steps": 90}, "hyper": {"r": 4}}
    parsed = parse_train(tmp_path, settings, "--max_steps", "3", "--learning_rate", "1e-3", "--lora_alpha", "8")
    assert parsed["training"].max_steps == 3 and parsed["training"].learning_rate == 1e-3
    assert parsed["hyper"].r == 4 and parsed["hyper"].lora_alpha == 8
    assert parsed["data"].source == "synthetic" and parsed["profiles"].k == 2  # defaults kept
    flat = parse_train(tmp_path, {"output_dir": str(tmp_path / "o"), "r": 2, "k": 0})  # sections are optional
    assert flat["hyper"].r == 2 and flat["profiles"].k == 0


@pytest.mark.parametrize(
    ("settings", "flags", "message"),
    [
        ({"trainig": {"max_steps": 3}}, [], r"unknown setting `trainig`. Did you mean `training`\?"),
        ({"training": {"max_step": 3}}, [], r"`training.max_step` is not a setting.*Did you mean `max_steps`\?"),
        (None, ["--max_step", "3"], r"unknown argument `--max_step`. Did you mean `--max_steps`\?"),
        ({"hyper": {"r": 0}}, [], r"`r` should be a positive integer but the value passed is 0"),
        ({"data": {"source": "lamp"}}, [], r"`path` is needed for the 'lamp' source"),
        ({"profiles": {"profile_mode": "everything"}}, [], r"`profile_mode` should be one of"),
        ({"training": {"packing": True}}, [], r"`packing=True` would put several users' rows into one sequence"),
    ],
)
def test_bad_settings_are_named_before_anything_runs(tmp_path, capsys, settings, flags, message):
    base = {"training": {"output_dir": str(tmp_path / "o")}}
    for section, values in (settings or {}).items():
        base.setdefault(section, {}).update(values)
    with pytest.raises(SystemExit):
        parse_train(tmp_path, base, *flags)
    assert __import__("re").search(message, capsys.readouterr().err)


def test_every_shipped_config_parses(tmp_path):
    from hyperpeft.evaluation.config import SECTIONS as EVAL_SECTIONS

    for example in sorted((ROOT / "examples" / "configs").glob("*.yaml")):
        kind = EVAL_SECTIONS if example.name.startswith("eval_") else sections()
        # the GPU example's bf16 is refused by transformers on a machine without one, unless told to use the CPU
        extra = [] if example.name.startswith("eval_") else ["--output_dir", str(tmp_path / "o"), "--use_cpu", "true"]
        assert parse_config(kind, ["--config", str(example), *extra], "hyperpeft", "test"), example
    with pytest.raises(SystemExit):
        parse_config(sections(), ["--config", str(tmp_path / "missing.yaml")], "hyperpeft", "test")


def test_several_processes_hand_off_to_accelerate_launch():
    command = launch_command(["--config", "c.yaml", "--max_steps", "3"], 2, "examples/accelerate/cpu_ddp_2proc.yaml")
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[3:5] == ["--config_file", "examples/accelerate/cpu_ddp_2proc.yaml"]
    assert command[-6:] == ["hyperpeft.cli", "train", "--config", "c.yaml", "--max_steps", "3"]
    assert "--num_processes" in command and command[command.index("--num_processes") + 1] == "2"
    assert command[command.index("-m", 3) + 1] == "hyperpeft.cli"


def test_the_command_answers_help_and_version_without_loading_a_framework():
    run = subprocess.run([sys.executable, "-m", "hyperpeft.cli", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("hyperpeft ")
    run = subprocess.run([sys.executable, "-m", "hyperpeft.cli", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and all(command in run.stdout for command in ("train", "eval", "serve", "vllm"))


@pytest.mark.integration
@needs_embedded
def test_train_command_writes_a_checkpoint(tmp_path):
    users = dict(train_users=6, test_random_users=3, test_ood_users=3, history_items=4, queries=1)
    flags = [
        "--config", str(ROOT / "examples" / "configs" / "synthetic.yaml"),
        "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--per_device_train_batch_size", "2",
        "--warmup_steps", "0", "--logging_steps", "1",
        "--synthetic", json.dumps(users),
    ]  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "hyperpeft.cli", "train", *flags],
        capture_output=True, text=True, timeout=900, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "HYPER_LORA" and saved["base_model_name_or_path"].endswith("smollm2-135m-instruct")


@pytest.mark.integration
@needs_embedded
def test_main_job_smoke_run(tmp_path):
    from hyperpeft.cli.demo import parse_args as demo_parse_args
    from hyperpeft.cli.demo import run

    report = run(demo_parse_args(["--smoke", "--out", str(tmp_path)]))
    assert (tmp_path / "results.md").read_text() == report["table"]
    results = json.loads((tmp_path / "report.json").read_text())["results"]
    for split in ("test_random", "test_ood"):
        assert set(results[split]["scores"]) == {"base", "mt_lora", "p2p", "p2p_other_user"}
        assert set(results[split]["scores"]["p2p"]) == {"synthetic-tagging", "synthetic-rating", "synthetic-style"}
    adapter = Path(report["two_users"]["exported_adapter"])
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert len(report["two_users"]["users"]) == 2


def test_main_job_command_line():
    from hyperpeft.cli.demo import parse_args as demo_parse_args

    config = demo_parse_args([])
    assert config.run.out == config.run.workdir == "out/demo" and config.eval.queries_per_user == 2
    assert config.p2p.p2p_training["learning_rate"] == 3e-4 and config.mt_lora.mt_lora_training["max_steps"] == 100
    config = demo_parse_args(["--out", "elsewhere", "--steps", "7", "--seed", "3"])
    assert (config.run.out, config.run.workdir, config.run.seed) == ("elsewhere", "elsewhere", 3)
    assert config.p2p.p2p_training["max_steps"] == config.mt_lora.mt_lora_training["max_steps"] == 7
    assert config.data.synthetic_config == demo_parse_args([]).data.synthetic_config  # another seed, the same users
    assert demo_parse_args(["--smoke"]).data.synthetic_config.train_users == 12
    for bad in (["--steps", "0"], ["--seed", "x"], ["--eval_batch_size", "0"]):
        with pytest.raises(SystemExit):
            demo_parse_args(bad)


def test_training_dtype():
    import torch

    from hyperpeft.training.recipes import train_dtype

    assert train_dtype("float32") is torch.float32 and train_dtype("bfloat16") is torch.bfloat16
    assert train_dtype("auto") in (torch.bfloat16, torch.float32)  # "auto": bf16 only where it is native
    for bad in ("int8", "fp32", "Tensor"):
        with pytest.raises(ValueError, match=repr(bad)):
            train_dtype(bad)
