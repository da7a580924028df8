"""Trains the tiny test model under torch's FSDP2 (`fully_shard`) or DDP; run by tests/test_distributed.py.

Usage: `torchrun --nproc_per_node 2 train_tiny_fsdp2.py {fsdp2|ddp} OUT STEPS [RESUME_FROM]`. Each rank cycles
through its own seeded batches, so both wrappings see the same data and must reach the same weights. At the
end, rank 0 writes a hyperpeft checkpoint (from the gathered full state dict) and the optimizer state to OUT.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests folder: tiny model builders

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from conftest import PROFILE_DIM, make_base  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from hyperpeft import HyperLoraConfig, HyperPeftModel  # noqa: E402

wrapping, output_dir, steps = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
resume_from = Path(sys.argv[4]) if len(sys.argv) > 4 else None
dist.init_process_group("gloo")
rank = dist.get_rank()
full = StateDictOptions(full_state_dict=True, cpu_offload=True)

torch.manual_seed(0)
if resume_from is None:
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
else:
    model = HyperPeftModel.from_pretrained(make_base(), resume_from, is_trainable=True)
wrapped = fully_shard(model) if wrapping == "fsdp2" else DistributedDataParallel(model)
optimizer = torch.optim.AdamW([p for p in wrapped.parameters() if p.requires_grad], lr=1e-3)
start = 0
if resume_from is not None:
    state = json.loads((resume_from / "optimizer.json").read_text())
    tensors = load_file(resume_from / "optimizer.safetensors")
    for key, slot in state["state"].items():
        slot.update({name: tensors[f"{key}.{name}"] for name in ("exp_avg", "exp_avg_sq", "step")})
    set_optimizer_state_dict(
        wrapped, optimizer, {"state": state["state"], "param_groups": state["param_groups"]}, options=full
    )
    start = state["step"]

generator = torch.Generator().manual_seed(1000 + rank)  # each rank its own four batches, seen in turn
batches = [
    (torch.randint(0, 50, (2, 6), generator=generator), torch.randn(2, PROFILE_DIM, generator=generator))
    for _ in range(4)
]
losses = []
for step in range(start, steps):
    ids, profiles = batches[step % len(batches)]
    loss = wrapped(input_ids=ids, profile_embeddings=profiles, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    losses.append(mean.item() / dist.get_world_size())

weights = get_model_state_dict(wrapped, options=full)  # every rank takes part in the gather
optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=full)
if rank == 0:
    fresh = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    head = "base_model.hypernetwork."  # canonical names: no DDP or FSDP prefix
    fresh.load_hypernetwork_weights({k.removeprefix(head): v for k, v in weights.items() if k.startswith(head)})
    fresh.save_pretrained(output_dir)
    tensors = {
        f"{key}.{name}": value for key, slot in optimizer_state["state"].items() for name, value in slot.items()
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, output_dir / "optimizer.safetensors")
    meta = {
        "step": steps,
        "state": {key: {} for key in optimizer_state["state"]},
        "param_groups": optimizer_state["param_groups"],
    }
    (output_dir / "optimizer.json").write_text(json.dumps(meta))
    (output_dir / "losses.json").write_text(json.dumps(losses))
# rank 1 waits for rank 0's save: a rank that tears gloo down while its peer is still connected can abort at exit
dist.barrier()
dist.destroy_process_group()
# torch's C++ distributed threads can still be joinable when the interpreter tears them down, which aborts the
# process ('terminate called without an active exception') after its work is done and written; leave without
# running those destructors
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
