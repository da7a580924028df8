"""The multi-task LoRA baseline (MT-LoRA): one ordinary PEFT LoRA trained on every training row, without any user
context; and the LoRA training both it and OPPU use."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from transformers import PreTrainedTokenizerBase
from transformers.utils import logging
from trl import SFTConfig

from ...training import RowMeanSFTTrainer
from ...training.recipes import ready_for_evaluation, sft_rows
from .base import Answers, Method

logger = logging.get_logger(__name__)

# The paper's LoRA for every trained method (r = 8 on q_proj and v_proj); alpha 16 as in the main job.
DEFAULT_LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0}


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
        args (`trl.SFTConfig`): e.g. `hyperpeft.training.recipes.trainer_config(...)`, whose batching and loss fields
            (`tasks_per_batch`, `task_weights`, `loss_per_row`) give it the same batches and loss as P2P.
        lora (`dict`, *optional*): `peft.LoraConfig` fields over `DEFAULT_LORA`.

    Returns:
        `peft.PeftModel`: the trained model, in eval mode.

    Example:

    ```python
    >>> from hyperpeft.embedded import load_base_model, load_tokenizer
    >>> from hyperpeft.training.recipes import trainer_config
    >>> args = trainer_config("out/mt-lora", max_steps=90)
    >>> model = train_mt_lora(load_base_model(), load_tokenizer(), train_rows, args)  # doctest: +SKIP
    ```
    """
    torch.manual_seed(args.seed)
    return train_lora(model, tokenizer, sft_rows(train, with_profile=False), args, lora)


class MTLoRA(Method):
    """The multi-task LoRA: loaded from `mt_lora_checkpoint` when that folder exists, else trained and saved there."""

    def prepare(self) -> dict[str, Any]:
        run, settings = self.run, self.run.config.mt_lora
        folder = Path(settings.mt_lora_checkpoint or run.workdir / "mt-lora")
        if settings.mt_lora_checkpoint and (folder / "adapter_config.json").exists():
            logger.warning("MT-LoRA: loading the adapter in %s.", folder)
            self.model = PeftModel.from_pretrained(run.base_copy(), str(folder)).eval()
            return {"checkpoint": str(folder), "trained_here": False}
        start = time.perf_counter()
        args = run.trainer_config(folder, settings.mt_lora_training)
        self.model = train_mt_lora(run.training_base(), run.tokenizer, run.train, args, settings.mt_lora_lora)
        train_s = time.perf_counter() - start
        self.model.save_pretrained(str(folder))  # safetensors; a rerun with this checkpoint loads it
        run.tokenizer.save_pretrained(str(folder))
        ready_for_evaluation(self.model)
        return {"checkpoint": str(folder), "trained_here": True, "train_s": train_s}

    def answer(self, rows) -> Answers:
        return self.generate(self.model, rows)
