"""`HyperSFTTrainer`: TRL's `SFTTrainer` training a Profile-to-PEFT hypernetwork across many users.

It changes few of TRL's hooks, and says which: the profile and task columns survive dataset preparation
(`_set_signature_columns_if_needed`), the collator carries each row's profile (`HyperDataCollator`), batches mix
several tasks (`_get_train_sampler`), the weights kept for gradient checkpointing are released after each step
(`training_step`), checkpoints are hyperpeft folders whose optimizer, scheduler and RNG states are safetensors and
JSON (`_save_optimizer_and_scheduler`, `_save_rng_state` and their loaders, `_load_from_checkpoint`), the model card
says what was trained (`create_model_card`), and an opt-in per-row loss (`compute_loss`, `loss_per_row=True`).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.logging import get_logger
from huggingface_hub import constants as hub_constants
from transformers import trainer_utils
from trl import SFTConfig, SFTTrainer

from .._validation import check_int
from ..cards import checkpoint_card
from ..checkpoint import read_weights, write_files_atomically
from ..peft_model import HyperPeftModel
from .collator import HyperDataCollator
from .sampler import TaskBalancedSampler, check_task_weights
from .state import (
    OPTIMIZER_FILE,
    load_optimizer_and_scheduler,
    load_rng_state,
    save_optimizer_and_scheduler,
    save_rng_state,
)

logger = get_logger(__name__)

STAGING_FOLDER = ".staging"
rotate_checkpoints = getattr(trainer_utils, "rotate_checkpoints", None)


@dataclass
class HyperSFTConfig(SFTConfig):
    """
    Configuration of [`HyperSFTTrainer`]: TRL's `SFTConfig` plus the fields below.

    Parameters that control the profiles:
        profile_column (`str`, defaults to `"profile"`): column with each row's profile text (or a precomputed
            embedding as a list of floats).
        fit_profile_statistics (`bool`, defaults to `True`): before training, z-score the hypernetwork's input with
            the mean and standard deviation of the training rows' distinct profile embeddings.

    Parameters that control the loss:
        loss_per_row (`bool`, defaults to `False`): average each row's loss over its answer tokens, then over rows
            (TRL averages over all answer tokens of the batch, so a 25-token answer outweighs a 1-token label).

    Parameters that control batching:
        task_column (`str`, defaults to `"task"`): column naming each row's task.
        tasks_per_batch (`int`, defaults to 4): how many tasks every batch mixes (fewer when the data has fewer);
            tasks are drawn with probability proportional to their weight.
        task_weights (`dict[str, float]`, *optional*): each task's weight, used both to draw a batch's tasks and to
            split its rows among them (at least one row each). Tasks it does not name weigh 1, whatever their size:
            with three tasks in batches of 8, `{"rating": 2.0}` gives rating 4 rows and the others 2 each. Without
            it, tasks are drawn with probability proportional to the square root of their number of rows (the
            paper's choice) and share each batch evenly.

    Parameters that control the model card:
        dataset_description (`str`, *optional*): what the training data is, written in the model card that
            `save_model` writes to `output_dir` (e.g. "LaMP-2M train split, 3,000 users").

    <Tip>

    Defaults that differ from `SFTConfig`: `logging_steps=0.1` (the loss is logged ten times in any run), and,
    following the paper, `learning_rate=2e-5`,
    `per_device_train_batch_size=8` with `gradient_accumulation_steps=4` (batch 32), `bf16=False` unless set (the
    hypernetwork trains in fp32; the base model keeps its dtype), and `packing=False`, `padding_free=False` enforced
    (either would put several users in one row). `2e-5` suits ~20k GPU steps; short CPU runs need a higher rate
    (the main job uses 3e-4).

    </Tip>
    """

    profile_column: str = field(default="profile", metadata={"help": "Column with each row's profile."})
    fit_profile_statistics: bool = field(
        default=True, metadata={"help": "Z-score profile embeddings with training-profile statistics."}
    )
    task_column: str = field(default="task", metadata={"help": "Column naming each row's task."})
    tasks_per_batch: int = field(default=4, metadata={"help": "Number of tasks mixed in every batch."})
    # TRL sets the deprecated name to True, which makes transformers warn on every config; the default is TRL's
    # (True, in __post_init__), set under the new name, and the old one warns only when it is really passed.
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "Deprecated alias of `activation_checkpointing` (transformers 5).",
            "nargs": "?",
            "const": True,
        },
    )
    dataset_description: str | None = field(
        default=None, metadata={"help": "What the training data is, for the model card written to output_dir."}
    )
    task_weights: dict | str | None = field(
        default=None,
        metadata={"help": "Each task's share of a batch's rows, e.g. '{\"rating\": 2.0}' (JSON on a command line)."},
    )
    loss_per_row: bool = field(
        default=False,
        metadata={
            "help": "Average the loss over each row's answer tokens, then over rows, so that long answers do not "
            "outweigh short ones when tasks' answers differ in length."
        },
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate (paper: 2e-5)."})
    logging_steps: float = field(
        default=0.1,
        metadata={"help": "Log every N steps, or below 1 a fraction of the run (0.1: ten times, however long it is)."},
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Rows per device and step."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Steps accumulated per update."})
    bf16: bool | None = field(default=False, metadata={"help": "Mixed precision bf16 (off by default)."})

    def __post_init__(self):
        if self.packing:
            raise ValueError("`packing=True` would put several users' rows into one sequence; hyperpeft needs False.")
        if self.padding_free:
            raise ValueError("`padding_free=True` flattens a batch into one row of several users; leave it False.")
        check_int("tasks_per_batch", self.tasks_per_batch)
        if isinstance(self.task_weights, str):  # from a command line
            try:
                self.task_weights = json.loads(self.task_weights)
            except json.JSONDecodeError as error:
                raise ValueError(f"`task_weights` should be a JSON object but is {self.task_weights!r}.") from error
        check_task_weights(self.task_weights)
        if self.gradient_checkpointing is None and self.activation_checkpointing is None:
            self.activation_checkpointing = True  # TRL's default, under transformers' name for it
        super().__post_init__()


class TaskBalancedBatchesMixin:
    """
    For TRL's `SFTTrainer`: when the training rows have a task column (`args.task_column`, `"task"` for configs
    without the field), batches come from a [`TaskBalancedSampler`] with `args.tasks_per_batch` and
    `args.task_weights` (4 and the square-root default for configs without the fields); the column is kept through
    preparation for that.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        weights = getattr(self.args, "task_weights", None)
        if weights and self._has_task_column(self.train_dataset):  # unknown names fail now, not at `train()`
            check_task_weights(weights, self.train_dataset.unique(self._task_column()))

    def _task_column(self) -> str:
        return getattr(self.args, "task_column", "task")

    def _has_task_column(self, dataset) -> bool:
        return self._task_column() in (getattr(dataset, "column_names", None) or [])

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._task_column() not in self._signature_columns:
            self._signature_columns.append(self._task_column())

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self._has_task_column(dataset):
            return super()._get_train_sampler(train_dataset)
        return TaskBalancedSampler(
            dataset[self._task_column()],
            batch_size=self.args.per_device_train_batch_size,
            tasks_per_batch=getattr(self.args, "tasks_per_batch", 4),
            seed=self.args.seed,
            task_weights=getattr(self.args, "task_weights", None),
        )


class RowMeanLossMixin:
    """
    For TRL's `SFTTrainer`: when `args.loss_per_row` is on (always, for configs without the field), the loss is each
    row's mean negative log-likelihood over its answer tokens, averaged over rows. TRL's entropy and token-accuracy
    metrics are not logged in this mode.
    """

    def _row_mean(self) -> bool:
        return getattr(self.args, "loss_per_row", True)

    @property
    def loss_is_scaled_for_ga(self) -> bool | None:
        return False if self._row_mean() else None  # the Trainer then divides by the accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._row_mean():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        tokens = outputs.label_mask.sum(-1)
        per_row = -outputs.log_probs.sum(-1) / tokens.clamp(min=1)  # log_probs are zero off the answer
        return per_row[tokens > 0].mean()


class TrainingArgsAsJsonMixin:
    """
    Saves the training arguments as `training_args.json` instead of transformers' `training_args.bin`, a pickle
    that nobody should have to unpickle to read how a checkpoint was trained.
    """

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            write_files_atomically(folder, {"training_args.json": self.args.to_json_string().encode()})
            (folder / "training_args.bin").unlink(missing_ok=True)


class RowMeanSFTTrainer(TrainingArgsAsJsonMixin, TaskBalancedBatchesMixin, RowMeanLossMixin, SFTTrainer):
    """
    TRL's `SFTTrainer` with the per-row loss and task-balanced batches: the fair baseline for a `HyperSFTTrainer` with
    `loss_per_row=True`.
    """


class HyperSFTTrainer(TrainingArgsAsJsonMixin, TaskBalancedBatchesMixin, RowMeanLossMixin, SFTTrainer):
    """
    TRL's `SFTTrainer` for a [`HyperPeftModel`]: the SFT loss of the base model wearing each row's generated LoRA,
    only the hypernetwork optimised. Rows need a prompt and a completion (TRL's formats; the loss is on the
    completion by default) plus a profile column.

    Args:
        model ([`HyperPeftModel`]): the model to train (pass the model, not a `peft_config`).
        args ([`HyperSFTConfig`]): training arguments.
        **kwargs: as for `trl.SFTTrainer` (`train_dataset`, `eval_dataset`, `processing_class`, `callbacks`, ...).

    Example:

    ```python
    >>> trainer = HyperSFTTrainer(model=model, args=HyperSFTConfig("out"), train_dataset=rows, processing_class=tok)
    >>> trainer.train()
    ```
    """

    def __init__(self, model: HyperPeftModel, args: HyperSFTConfig | None = None, data_collator=None, **kwargs):
        if not isinstance(model, HyperPeftModel):
            raise TypeError(f"`model` should be a HyperPeftModel, not {type(model).__name__}.")
        if kwargs.get("peft_config") is not None:
            raise ValueError("Pass the HyperPeftModel as `model`; `peft_config` is for plain PEFT methods.")
        if args is None:
            args = HyperSFTConfig("hyperpeft-sft")
        if not isinstance(args, HyperSFTConfig):
            raise TypeError(f"`args` should be a HyperSFTConfig, not {type(args).__name__}.")
        if args.push_to_hub and hub_constants.HF_HUB_OFFLINE:  # fail now, not after hours of training
            raise ValueError(
                "`push_to_hub=True` needs the Hub but HF_HUB_OFFLINE is set; unset it, or train with "
                "push_to_hub=False and upload later with `HyperPeftModel.push_to_hub`."
            )
        for split in ("train_dataset", "eval_dataset"):
            dataset = kwargs.get(split)
            if dataset is not None and args.profile_column not in getattr(
                dataset, "column_names", [args.profile_column]
            ):
                raise ValueError(
                    f"`{split}` has no `{args.profile_column}` column (it has {dataset.column_names}); add each row's "
                    "profile text, or set `profile_column`."
                )
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        if data_collator is None:
            self.data_collator = HyperDataCollator(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=args.pad_to_multiple_of,
                profile_column=args.profile_column,
            )
        self._embed_profiles_once()

    def _embed_profiles_once(self) -> None:
        """Encode every distinct profile text once (the encoder caches them) and fit the z-scoring statistics."""
        if self.train_dataset is None:
            return
        column = self.args.profile_column
        train = _distinct(self.train_dataset[column])
        eval_sets = self.eval_dataset.values() if isinstance(self.eval_dataset, dict) else [self.eval_dataset]
        texts = [p for p in train if isinstance(p, str)]
        for dataset in eval_sets:
            if dataset is not None:
                texts += [p for p in _distinct(dataset[column]) if isinstance(p, str)]
        if texts:
            self.model.base_model.get_profile_encoder().encode(_distinct(texts), show_progress_bar=True)
        if self.args.fit_profile_statistics and len(train) >= 2:
            self.model.fit_profile_statistics(train if isinstance(train[0], str) else torch.tensor(train))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()  # the task column, through TaskBalancedBatchesMixin
        if self.args.profile_column not in self._signature_columns:
            self._signature_columns.append(self.args.profile_column)

    def training_step(self, *args, **kwargs):
        try:
            return super().training_step(*args, **kwargs)
        finally:
            # kept through backward for gradient checkpointing; not needed once the gradients exist
            self.model.base_model.release_profile()

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, tags=None) -> None:
        """
        Write the checkpoint's model card (`huggingface_hub.ModelCard`) to `output_dir`: base model, encoder, the
        training data (`dataset_name`: a description, or the Hub id of a dataset), rows per task, steps and the
        latest evaluation numbers. `save_model` writes it after training; `push_to_hub` uploads it.
        """
        if not self.is_world_process_zero():
            return
        training: dict[str, object] = {"steps": self.state.global_step}
        if dataset_name:
            training["dataset"] = dataset_name
        if self.train_dataset is not None and self.args.task_column in self.train_dataset.column_names:
            training["rows per task"] = dict(sorted(Counter(self.train_dataset[self.args.task_column]).items()))
        evaluation = [log for log in self.state.log_history if any(k.startswith("eval_") for k in log)]
        if evaluation:
            training["evaluation"] = {k: v for k, v in evaluation[-1].items() if k.startswith("eval_")}
        card = checkpoint_card(self.model.hyper_config, training)
        write_files_atomically(self.args.output_dir, {"README.md": str(card).encode()})

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        if output_dir is None or Path(output_dir) == Path(self.args.output_dir):  # the training's own folder
            self.create_model_card(dataset_name=self.args.dataset_description)

    # Checkpoints hold no pickles: optimizer, scheduler and RNG states go to safetensors and JSON (training_state.py).
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:  # sharded states keep their own format
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_optimizer_and_scheduler(output_dir, self.optimizer, self.lr_scheduler)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and not load_optimizer_and_scheduler(checkpoint, self.optimizer, self.lr_scheduler):
            logger.warning(f"{checkpoint} has no {OPTIMIZER_FILE}; the optimizer starts fresh.")

    def _save_rng_state(self, output_dir: str) -> None:
        save_rng_state(output_dir, self.args.process_index, self.args.world_size)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None and not load_rng_state(checkpoint, self.args.process_index, self.args.world_size):
            logger.warning(f"{checkpoint} has no RNG state for this process; resuming is not bit-reproducible.")

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        target = model if model is not None else self.model
        target.load_hypernetwork_weights(read_weights(Path(resume_from_checkpoint)), resume_from_checkpoint)

    # A checkpoint folder appears whole: everything is written into `<output_dir>/.staging/checkpoint-N` first and
    # renamed into place at the end, so a run killed mid-save leaves the previous checkpoints as they were, and
    # `resume_from_checkpoint=True` (the newest `checkpoint-N`) always finds a complete one.
    def _save_checkpoint(self, model, trial) -> None:
        run_dir = Path(super()._get_output_dir(trial=trial))
        staging = run_dir / STAGING_FOLDER
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # a folder that a killed save left half-written
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = None
        self.accelerator.wait_for_everyone()  # every process has written its files (its RNG state, say)
        if self.args.should_save:
            name = f"checkpoint-{self.state.global_step}"
            final = run_dir / name
            if final.exists():  # saved again at the same step (a resumed run): the new one replaces it
                old = run_dir / f".replaced-{name}"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                (staging / name).rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                (staging / name).rename(final)
            best = self.state.best_model_checkpoint
            if best and Path(best).parent == staging:
                self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            shutil.rmtree(staging, ignore_errors=True)
            if rotate_checkpoints is not None:
                rotate_checkpoints(
                    output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                    best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False,
                )  # fmt: skip
            else:  # transformers before 5: a Trainer method
                self._rotate_checkpoints(use_mtime=False, output_dir=str(run_dir))
        self.accelerator.wait_for_everyone()

    def _get_output_dir(self, trial) -> str:
        return str(getattr(self, "_staging", None) or super()._get_output_dir(trial=trial))


def _distinct(profiles: list) -> list:
    """Distinct profiles in first-seen order; embeddings (lists of floats) compared by value."""
    return list({(tuple(p) if isinstance(p, list) else p): p for p in profiles}.values())
