"""A save is all-or-nothing: SIGKILL at every file-system step of `save_pretrained`, `export_adapters` and trainer
checkpointing, and what remains loads as the old version or the new one, never a mix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from conftest import PROFILE_DIM, make_base, perturb
from faults import killed_at
from figures import record
from safetensors.torch import load_file
from test_adapter_cache import FakeSentenceModel

from hyperpeft import HyperLoraConfig, HyperPeftModel, ProfileEncoder
from hyperpeft.serving.export import MANIFEST_NAME, export_adapters

HERE = Path(__file__).parent
USERS = {"u1": "likes jazz", "u2": "writes long formal reviews", "u3": "asks about cooking"}


def hyper_model(hidden_dim: int, seed: int) -> HyperPeftModel:
    config = HyperLoraConfig(r=4, profile_dim=PROFILE_DIM, hidden_dim=hidden_dim)
    model = HyperPeftModel(make_base(), config, profile_encoder=ProfileEncoder("fake", model=FakeSentenceModel()))
    perturb(model, seed=seed)
    return model.eval()


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> bool:
    same = a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    return same and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_a_killed_save_pretrained_leaves_the_old_or_the_new_checkpoint(tmp_path):
    narrow, wide = hyper_model(16, seed=1), hyper_model(48, seed=2)  # a wide hypernetwork saved over a narrow one
    versions = {"old": narrow.hypernetwork.state_dict(), "new": wide.hypernetwork.state_dict()}
    pristine, folder = tmp_path / "pristine", tmp_path / "ckpt"
    narrow.save_pretrained(pristine)
    seen = []
    for step in range(1, 100):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(pristine, folder)
        killed = killed_at(step, lambda: wide.save_pretrained(folder))
        loaded = HyperPeftModel.from_pretrained(make_base(), folder).hypernetwork.state_dict()
        version = next(name for name, state in versions.items() if same_tensors(loaded, state))  # else StopIteration
        seen.append(version)
        if not killed:
            break
    assert seen[-1] == "new" and "old" in seen and len(seen) >= 4  # every step of the save was tried
    wide.save_pretrained(folder)  # a later save removes what the killed ones left behind
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert {oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {"0o644"}  # readable, as PEFT's files are
    record("kills", save_pretrained={"killed": len(seen) - 1, "old": seen.count("old"), "new": seen.count("new")})


def test_a_killed_export_leaves_the_old_or_the_new_export(tmp_path):
    old_model, new_model = hyper_model(16, seed=1), hyper_model(16, seed=2)
    expected = {
        name: dict(zip(USERS, model.lora_state_dicts(list(USERS.values()))))
        for name, model in (("old", old_model), ("new", new_model))
    }
    pristine, out = tmp_path / "pristine", tmp_path / "adapters"
    export_adapters(old_model, USERS, pristine)
    seen = []
    for step in range(1, 200):
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(pristine, out)
        killed = killed_at(step, lambda: export_adapters(new_model, USERS, out))
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        folders = {u: out / entry["folder"] for u, entry in manifest["users"].items()}
        states = {u: load_file(folder / "adapter_model.safetensors") for u, folder in folders.items()}
        # generated in a child with one thread: equal to the rounding of another summation order, no more
        version = next(v for v in expected if all(same_tensors(states[u], expected[v][u], 1e-6) for u in USERS))
        assert all(json.loads((f / "adapter_config.json").read_text())["r"] == 4 for f in folders.values())
        seen.append(version)
        if not killed:
            break
    assert seen[-1] == "new" and "old" in seen and len(seen) >= 4
    record("kills", export={"killed": len(seen) - 1, "old": seen.count("old"), "new": seen.count("new")})
    export_adapters(new_model, USERS, out)  # a later export removes staging folders and unlisted versions
    listed = {entry["folder"] for entry in json.loads((out / MANIFEST_NAME).read_text())["users"].values()}
    assert {p.name for p in out.iterdir()} == listed | {MANIFEST_NAME}


def _train(mode: str, *paths: Path) -> str:
    command = [sys.executable, str(HERE / "train_and_die.py"), mode, *map(str, paths)]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def _checkpoint_state(folder: Path) -> dict[str, torch.Tensor]:
    return {**load_file(folder / "adapter_model.safetensors"), **load_file(folder / "optimizer.safetensors")}


def test_a_killed_trainer_checkpoint_leaves_complete_checkpoints_that_resume_to_the_same_run(tmp_path):
    reference, run, survivors = tmp_path / "reference", tmp_path / "run", tmp_path / "survivors"
    _train("reference", reference)  # checkpoint-1, -2, -3 and the final weights, uninterrupted
    kills = json.loads(_train("kills", run, survivors))["kills"]  # the save of checkpoint-2, killed at every step
    assert kills >= 4
    kinds = sorted(p.name for p in survivors.iterdir())
    assert kinds == ["checkpoint-1", "checkpoint-1+checkpoint-2"], kinds  # never a half-written checkpoint-2
    record("kills", trainer_checkpoint={"killed": kills, "survivor_kinds": kinds})
    final = load_file(reference / "final" / "adapter_model.safetensors")
    for kind in kinds:
        survivor = survivors / kind
        for name in kind.split("+"):  # every visible checkpoint is whole, and is the reference run's
            assert same_tensors(_checkpoint_state(survivor / name), _checkpoint_state(reference / name)), name
        _train("resume", survivor)  # from either survivor, training reaches the reference's third step
        resumed = load_file(survivor / "final" / "adapter_model.safetensors")
        for key, tensor in final.items():
            torch.testing.assert_close(resumed[key], tensor, atol=1e-6, rtol=1e-5)
