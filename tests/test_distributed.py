"""Two processes under `accelerate launch` (DDP, gloo on this CPU-only machine) train one hypernetwork."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
