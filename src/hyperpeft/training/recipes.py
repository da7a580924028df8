"""The one place training settings and training rows are made: P2P, the multi-task LoRA and OPPU train with these.

- `training_defaults` / `trainer_config`: CPU-sized `HyperSFTConfig` fields with a caller's overrides on top;
- `sft_rows`: rows of the common schema as TRL prompt-completion conversations (the evaluation's own prompts), with
  each row's task (task-balanced batches) and, for P2P, its profile;
- `train_dtype`, `load_training_base`, `ready_for_evaluation`: the frozen base in bfloat16 where the processor
  computes it natively, with eager attention on a CPU, and back to float32 and SDPA for decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from datasets import Dataset

from ..data.tasks import chat_messages
from .trainer import HyperSFTConfig


def training_defaults(output_dir: str, **overrides: Any) -> dict[str, Any]:
    """
    CPU-friendly `HyperSFTConfig` fields (no checkpoints, no reporting, no gradient checkpointing on short rows, fp32
    on a CPU, the per-row loss), with `overrides` on top, e.g. `max_steps=90, learning_rate=1e-3`.
    """
    defaults = dict(
        output_dir=output_dir,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=1e-3,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=0,
        max_grad_norm=1.0,
        save_strategy="no",
        report_to=[],
        activation_checkpointing=False,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        max_length=256,
        dataloader_num_workers=0,
        seed=0,
        loss_per_row=True,
    )
    return {**defaults, **overrides}


def trainer_config(output_dir: str, **overrides: Any) -> HyperSFTConfig:
    """
    The `HyperSFTConfig` of [`training_defaults`]. The multi-task LoRA and OPPU train with it too (TRL's
    `SFTTrainer` reads its `SFTConfig` fields; hyperpeft's batching and loss mixins read the others), so that every
    trained method sees the same batches and the same per-row loss.

    Example:

    ```python
    >>> from hyperpeft.training.recipes import trainer_config
    >>> trainer_config("out/p2p", max_steps=100, learning_rate=3e-4).loss_per_row
    True
    ```
    """
    return HyperSFTConfig(**training_defaults(output_dir, **overrides))


def sft_rows(rows: Dataset, with_profile: bool = True) -> Dataset:
    """
    TRL prompt-completion conversations with the evaluation's own prompts (no user context in the prompt), each
    row's `task` and, when `with_profile`, its `profile` (the column `ProfileBuilder` writes).
    """
    return conversation_rows(rows["task"], rows["input"], rows["output"], rows["profile"] if with_profile else None)


def conversation_rows(
    tasks: Sequence[str], inputs: Sequence[str], outputs: Sequence[str], profiles: Sequence[str] | None = None
) -> Dataset:
    """[`sft_rows`] from parallel lists (e.g. a user's history items for OPPU)."""
    if not len(tasks) == len(inputs) == len(outputs) or (profiles is not None and len(profiles) != len(tasks)):
        raise ValueError("`tasks`, `inputs`, `outputs` (and `profiles`) should have one entry per row.")
    columns = {
        "prompt": [chat_messages(t, x) for t, x in zip(tasks, inputs)],
        "completion": [[{"role": "assistant", "content": y}] for y in outputs],
    }
    if profiles is not None:
        columns["profile"] = list(profiles)
    columns["task"] = list(tasks)
    return Dataset.from_dict(columns)


def train_dtype(name: str = "auto") -> torch.dtype:
    """
    The frozen base model's dtype for training: `"float32"`, `"bfloat16"`, or `"auto"`, bfloat16 where the GPU or
    the CPU (AMX, AVX512-BF16) computes it natively, else float32 (on other CPUs bfloat16 is emulated and slower).
    """
    if name != "auto":
        dtype = getattr(torch, name, None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"`train_dtype` should be 'auto', 'float32' or 'bfloat16', not {name!r}.")
        return dtype
    native = torch.cuda.is_available() or torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else torch.float32


def load_training_base(name_or_path: str, dtype: str = "float32", attention: str | None = None):
    """The base model to train on: `dtype` as [`train_dtype`] reads it, and `attention` (e.g. `"eager"`: on a CPU,
    SDPA's backward costs more than the rest of short rows' layers)."""
    from ..embedded import load_base_model

    kwargs = {"attn_implementation": attention} if attention else {}
    return load_base_model(name_or_path, dtype=train_dtype(dtype), **kwargs)


def ready_for_evaluation(model) -> None:
    """Back to float32 and SDPA attention after training on a CPU: batched greedy decoding is faster that way there."""
    if next(model.parameters()).device.type == "cpu":
        model.float()
        model.get_base_model().set_attn_implementation("sdpa")
