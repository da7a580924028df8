"""Trains the tiny test model with HyperSFTTrainer; run under `accelerate launch` by tests/test_distributed.py."""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests folder: tiny model and tokenizer builders

import torch  # noqa: E402
from conftest import PROFILE_DIM, make_base, make_tokenizer  # noqa: E402
from test_trainer import make_args, toy_rows  # noqa: E402

from hyperpeft import HyperLoraConfig, HyperPeftModel  # noqa: E402
from hyperpeft.training import HyperSFTTrainer  # noqa: E402

output_dir = Path(sys.argv[1])
torch.manual_seed(0)
model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
args = make_args(output_dir, max_steps=8, save_strategy="steps", save_steps=8, per_device_train_batch_size=2)
trainer = HyperSFTTrainer(model=model, args=args, train_dataset=toy_rows(users=16), processing_class=make_tokenizer())
trainer.train()
if trainer.accelerator.is_main_process:
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    world = trainer.accelerator.num_processes
    (output_dir / "result.json").write_text(json.dumps({"losses": losses, "world_size": world}))
# every rank waits for the main process's write, then all leave the process group together
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
# torch's C++ distributed threads can still be joinable when the interpreter tears them down, which aborts the
# process ('terminate called without an active exception') after its work is done and written; leave without
# running those destructors
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
