"""Optimizer, scheduler and RNG state of a training checkpoint, as safetensors and JSON instead of pickles.

`transformers.Trainer` keeps these in `optimizer.pt`, `scheduler.pt` and `rng_state.pth`, which resuming unpickles.
hyperpeft checkpoints store the tensors in `optimizer.safetensors` (the non-tensor parts in its metadata) and the
rest in JSON, so that resuming never loads a pickle.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from ..checkpoint import serialize_json, serialize_tensors, write_files_atomically

OPTIMIZER_FILE = "optimizer.safetensors"
SCHEDULER_FILE = "scheduler.json"


def rng_file(process_index: int, world_size: int) -> str:
    return "rng_state.json" if world_size <= 1 else f"rng_state_{process_index}.json"


def save_optimizer_and_scheduler(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value
            else:
                other.setdefault(str(param_id), {})[name] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "other_state": json.dumps(other)}
    files = {OPTIMIZER_FILE: serialize_tensors(tensors, metadata=metadata)}
    if scheduler is not None:
        files[SCHEDULER_FILE] = serialize_json(scheduler.state_dict())
    write_files_atomically(folder, files)


def load_optimizer_and_scheduler(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> bool:
    """Restore both states; False when `folder` has no hyperpeft optimizer file (nothing is changed then)."""
    folder = Path(folder)
    if not (folder / OPTIMIZER_FILE).is_file():
        return False
    with safe_open(folder / OPTIMIZER_FILE, framework="pt") as handle:
        metadata = handle.metadata()
        state: dict[int, dict[str, Any]] = {}
        for key in handle.keys():
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = handle.get_tensor(key)
    for param_id, values in json.loads(metadata["other_state"]).items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    if scheduler is not None and (folder / SCHEDULER_FILE).is_file():
        scheduler.load_state_dict(json.loads((folder / SCHEDULER_FILE).read_text()))
    return True


def save_rng_state(folder: str | Path, process_index: int = 0, world_size: int = 1) -> None:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "cpu": torch.random.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.random.get_rng_state_all()]
    write_files_atomically(folder, {rng_file(process_index, world_size): serialize_json(state)})


def load_rng_state(folder: str | Path, process_index: int = 0, world_size: int = 1) -> bool:
    """Restore the RNG states saved by `save_rng_state`; False when there is no such file."""
    file = Path(folder) / rng_file(process_index, world_size)
    if not file.is_file():
        return False
    state = json.loads(file.read_text())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.random.set_rng_state(torch.tensor(state["cpu"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.random.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    return True
