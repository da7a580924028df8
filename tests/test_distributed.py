"""Two processes under `accelerate launch` (DDP, gloo on this CPU-only machine) train one hypernetwork."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import PROFILE_DIM, make_base

from hyperpeft import HyperPeftModel

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_ddp.py"
CONFIG = Path(__file__).parents[1] / "examples" / "accelerate" / "cpu_ddp_2proc.yaml"


def test_two_processes_train_and_write_one_checkpoint(tmp_path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIG),
        str(SCRIPT),
        str(tmp_path),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["world_size"] == 2
    losses = result["losses"]
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    checkpoints = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-8"]
    loaded = HyperPeftModel.from_pretrained(make_base(), tmp_path / "checkpoint-8")
    out = loaded(input_ids=torch.tensor([[10, 11, 12]]), profile_embeddings=torch.zeros(PROFILE_DIM))
    assert torch.isfinite(out.logits).all()


FSDP2_SCRIPT = Path(__file__).parent / "scripts" / "train_tiny_fsdp2.py"


def _torchrun(wrapping: str, output_dir: Path, steps: int, resume_from: Path | None = None) -> list[float]:
    output_dir.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(FSDP2_SCRIPT)]
    command += [wrapping, str(output_dir), str(steps)] + ([str(resume_from)] if resume_from else [])
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((output_dir / "losses.json").read_text())


def _hypernetwork(checkpoint: Path) -> dict[str, torch.Tensor]:
    return HyperPeftModel.from_pretrained(make_base(), checkpoint).hypernetwork.state_dict()


def test_fsdp2_shards_trains_and_resumes_like_ddp(tmp_path):
    """torch's FSDP2 (`fully_shard`, what Accelerate's FSDP2 plugin calls) over gloo: same losses and weights as
    DDP, a checkpoint from the gathered state dict, and a resumed run that lands where an unbroken one does."""
    ddp = _torchrun("ddp", tmp_path / "ddp", steps=12)
    fsdp = _torchrun("fsdp2", tmp_path / "fsdp2", steps=12)
    assert sum(fsdp[-4:]) < sum(fsdp[:4])  # the same four batches per rank, seen three times: the loss falls
    assert fsdp == pytest.approx(ddp, rel=1e-5)
    trained, reference = _hypernetwork(tmp_path / "fsdp2"), _hypernetwork(tmp_path / "ddp")
    heads = [key for key in trained if key.startswith("heads.") and key.endswith("weight")]
    assert heads and all(trained[key].abs().max() > 0 for key in heads)  # the zero-initialised heads moved
    for key in trained:
        torch.testing.assert_close(trained[key], reference[key], rtol=1e-4, atol=1e-6)

    first_half = _torchrun("fsdp2", tmp_path / "half", steps=6)
    second_half = _torchrun("fsdp2", tmp_path / "resumed", steps=12, resume_from=tmp_path / "half")
    assert first_half + second_half == pytest.approx(fsdp, rel=1e-5)
    resumed = _hypernetwork(tmp_path / "resumed")
    for key in trained:
        torch.testing.assert_close(resumed[key], trained[key], rtol=1e-4, atol=1e-6)
