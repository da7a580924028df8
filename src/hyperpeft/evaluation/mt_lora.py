"""The multi-task LoRA baseline (MT-LoRA): one ordinary PEFT LoRA trained on every training row, without any user
context; and the LoRA training both it and OPPU use."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import PreTrainedTokenizerBase
from trl import SFTConfig

from ..trainer import RowMeanSFTTrainer
from .generation import chat_messages

# The paper's LoRA for every trained method (r = 8 on q_proj and v_proj); alpha 16 as in the main job.
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


def training_defaults(output_dir: str, **overrides: Any) -> dict[str, Any]:
    """
    CPU-friendly `trl.SFTConfig` fields (no checkpoints, no reporting, no gradient checkpointing on short rows, fp32 on
    a CPU), with `overrides` on top, e.g. `max_steps=90, learning_rate=1e-3`.
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
        gradient_checkpointing=False,
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        max_length=256,
        dataloader_num_workers=0,
        seed=0,
    )
    return {**defaults, **overrides}


def training_arguments(output_dir: str, **overrides: Any) -> SFTConfig:
    """`trl.SFTConfig` from [`training_defaults`]."""
    return SFTConfig(**training_defaults(output_dir, **overrides))


def prompt_completion_rows(tasks: Sequence[str], inputs: Sequence[str], outputs: Sequence[str]) -> Dataset:
    """
    TRL prompt-completion conversations with the evaluation's own prompts (and no user context), and each row's task
    (for task-balanced batches).
    """
    if not len(tasks) == len(inputs) == len(outputs):
        raise ValueError("`tasks`, `inputs` and `outputs` should have one entry per row.")
    return Dataset.from_dict(
        {
            "prompt": [chat_messages(t, x) for t, x in zip(tasks, inputs)],
            "completion": [[{"role": "assistant", "content": y}] for y in outputs],
            "task": list(tasks),
        }
    )


def train_lora(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    rows: Dataset,
    args: SFTConfig,
    lora: Mapping[str, Any] | None = None,
) -> PeftModel:
    """
    Train a fresh PEFT LoRA on `model` (wrapped in place; `PeftModel.unload()` gives the base back) with TRL and the
    per-row loss that P2P is trained with. `rows` are prompt-completion conversations.
    """
    config = LoraConfig(**{**DEFAULT_LORA, **dict(lora or {})}, task_type="CAUSAL_LM")
    trainer = RowMeanSFTTrainer(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=config
    )
    trainer.train()
    return trainer.model.eval()


def train_mt_lora(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    train: Dataset,
    args: SFTConfig,
    lora: Mapping[str, Any] | None = None,
) -> PeftModel:
    """
    MT-LoRA: one LoRA trained on all training rows (`task`, `input`, `output` columns of the common schema) without
    user context, so it learns each task but nobody in particular.

    Args:
        model: the base causal LM (wrapped in place).
        tokenizer: its tokenizer (with a chat template).
        train (`datasets.Dataset`): training rows of the common schema.
        args (`trl.SFTConfig`): e.g. from [`training_arguments`]. A [`HyperSFTConfig`] also works and adds its
            `tasks_per_batch` and `task_weights`; pass it `loss_per_row=True` (its default is False) to keep the
            per-row loss that a plain `SFTConfig` gets here.
        lora (`dict`, *optional*): `peft.LoraConfig` fields over `DEFAULT_LORA`.

    Returns:
        `peft.PeftModel`: the trained model, in eval mode.

    Example:

    ```python
    >>> from hyperpeft.embedded import load_base_model, load_tokenizer
    >>> args = training_arguments("out/mt-lora", max_steps=90)
    >>> model = train_mt_lora(load_base_model(), load_tokenizer(), train_rows, args)  # doctest: +SKIP
    ```
    """
    torch.manual_seed(args.seed)
    rows = prompt_completion_rows(train["task"], train["input"], train["output"])
    return train_lora(model, tokenizer, rows, args, lora)
