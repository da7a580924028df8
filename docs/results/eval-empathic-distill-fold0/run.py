"""Fold 0 of `eval_empathic.yaml` with P2P trained to change its predictions the way reading the profile does.

The base model reading a speaker's profile text in its prompt finds the speaker's real essay more likely than with
another speaker's profile (`../eval-empathic/profile_in_context.py`: +0.051 nats per token over the 135 test rows),
but a P2P hypernetwork trained on the SFT loss alone carries none of that to unseen speakers: with ~38 training
speakers per fold it fits identities. Here each training row is seen twice by the student (the base model wearing the
generated LoRA, no profile in its prompt), once with the row's own profile and once with another training speaker's
(the same query, `random_user`), and twice by the teacher (the frozen base model with that profile text as a context
block, as PAG puts one). The loss is the own row's SFT loss plus `WEIGHT` times the squared error between the two
differences, per answer token:

    [log p_student(y | own) - log p_student(y | other)] - [log p_teacher(y | own) - log p_teacher(y | other)]

so the profile has to move the adapter's predictions the way reading it moves the base model's, for pairs of any two
training speakers on any essay, while the SFT loss alone decides the part that every speaker shares. Everything else
is `hyperpeft eval`; the base model and MT-LoRA are the cross-validation's (same fold, same checkpoint):

    .venv/bin/python docs/results/eval-empathic-distill-fold0/run.py --config examples/configs/eval_empathic.yaml \
        --user_split '{"method": "kfold", "folds": 3, "seed": 0, "fold": 0}' \
        --methods base mt_lora p2p p2p_other_user --out out/eval-empathic-distill-f0 \
        --workdir out/eval-empathic-distill-f0/work --p2p_checkpoint out/eval-empathic-distill-f0/work/p2p \
        --mt_lora_checkpoint out/eval-empathic-cv/work/mt-lora-adapter

`DISTILL_WEIGHT=10` in the environment sets `WEIGHT` (1 by default). `shift_fit.py` beside this file says how well
the trained student matches the teacher's shifts.
"""

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging

from hyperpeft.cli.eval import main
from hyperpeft.data.tasks import chat_messages
from hyperpeft.evaluation.likelihood import _prompt_and_answer_ids
from hyperpeft.evaluation.methods import p2p
from hyperpeft.peft_model import HyperPeftModel
from hyperpeft.training import HyperSFTTrainer
from hyperpeft.training.collator import HyperDataCollator
from hyperpeft.training.recipes import ready_for_evaluation, sft_rows

WEIGHT = float(os.environ.get("DISTILL_WEIGHT", "1"))  # the committed report: 1
PAIR_COLUMNS = ("other_profile", "teacher_own", "teacher_other")
logger = logging.get_logger("hyperpeft")


@dataclass
class PairCollator(HyperDataCollator):
    """Also carries each row's other profile and the teacher's two prompts (token ids, with the profile in context)."""

    def torch_call(self, examples):
        extra = {name: [example.pop(name) for example in examples] for name in PAIR_COLUMNS}
        return {**super().torch_call(examples), **extra}


class ContextDistillTrainer(HyperSFTTrainer):
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns += [c for c in PAIR_COLUMNS if c not in self._signature_columns]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        other = inputs.pop("other_profile")
        teacher_prompts = inputs.pop("teacher_own") + inputs.pop("teacher_other")
        ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        n = len(ids)
        student = model(
            input_ids=ids.repeat(2, 1), attention_mask=mask.repeat(2, 1), labels=labels.repeat(2, 1),
            profile=inputs["profile"] + other, use_cache=False, fused_lm_head=True,
        )  # fmt: skip
        answers = [row[label != -100] for row, label in zip(ids, labels)]
        tokens = torch.tensor([len(a) for a in answers])
        student_lp = _per_row(student.log_probs, student.label_mask)
        with torch.no_grad(), model.disable_adapter():
            teacher_lp = _teacher_log_probs(model, teacher_prompts, answers + answers, self.data_collator.pad_token_id)
        sft = torch.stack([-lp.sum() / max(len(lp), 1) for lp in student_lp[:n]])
        shift = []
        for i in range(n):
            wanted = teacher_lp[i] - teacher_lp[n + i]
            shift.append(((student_lp[i] - student_lp[n + i]) - wanted).pow(2).mean())
        keep = tokens > 0
        loss_sft, loss_shift = sft[keep].mean(), torch.stack(shift)[keep].mean()
        self._parts = (loss_sft.item(), loss_shift.item())
        return loss_sft + WEIGHT * loss_shift

    def log(self, logs, *args, **kwargs):
        if getattr(self, "_parts", None) and "loss" in logs:
            logs["sft"], logs["shift_mse"] = self._parts
        return super().log(logs, *args, **kwargs)


def _per_row(log_probs: torch.Tensor, label_mask: torch.Tensor) -> list[torch.Tensor]:
    """Each row's answer-token log-probabilities, in order."""
    return [lp[m] for lp, m in zip(log_probs, label_mask.bool())]


def _teacher_log_probs(model, prompts, answers, pad) -> list[torch.Tensor]:
    sequences = [torch.cat([torch.tensor(p), a.cpu()]) for p, a in zip(prompts, answers)]
    width = max(map(len, sequences))
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, (prompt, sequence) in enumerate(zip(prompts, sequences)):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
        labels[row, len(prompt) : len(sequence)] = sequence[len(prompt) :]
    device = next(model.parameters()).device
    out = model(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), labels=labels.to(device),
        use_cache=False, fused_lm_head=True,
    )  # fmt: skip
    return _per_row(out.log_probs, out.label_mask)


def train_or_load_distilled(run):
    settings = run.config.p2p
    folder = Path(settings.p2p_checkpoint)
    if (folder / "adapter_config.json").exists():
        model = HyperPeftModel.from_pretrained(run.base_copy(), str(folder))
        p2p._check_checkpoint_matches(model.peft_config[model.active_adapter], folder, settings)
        return model.eval(), {"checkpoint": str(folder), "trained_here": False}
    torch.manual_seed(run.config.run.seed)
    train = run.train
    other = run.profiles_with(train, mode="random_user")
    teacher = [
        [_prompt_and_answer_ids(run.tokenizer, chat_messages(t, x, c), y)[0] for t, x, c, y in rows]
        for rows in (
            zip(train["task"], train["input"], train["profile"], train["output"]),
            zip(train["task"], train["input"], other, train["output"]),
        )
    ]
    rows = sft_rows(train).add_column("other_profile", other)
    rows = rows.add_column("teacher_own", teacher[0]).add_column("teacher_other", teacher[1])
    model = HyperPeftModel(run.training_base(), settings.hyper_lora_config())
    args = run.trainer_config(folder, settings.p2p_training)
    logger.warning("P2P (context distillation, weight %s): training %s steps ...", WEIGHT, args.max_steps)
    start = time.perf_counter()
    trainer = ContextDistillTrainer(model=model, args=args, train_dataset=rows, processing_class=run.tokenizer)
    trainer.data_collator = PairCollator(
        pad_token_id=trainer.data_collator.pad_token_id, profile_column=args.profile_column
    )
    # the other profiles are encoded once too (the encoder caches every text)
    model.base_model.get_profile_encoder().encode(list(dict.fromkeys(other)), show_progress_bar=True)
    trainer.train()
    train_s = time.perf_counter() - start
    trainer.save_model(str(folder))
    ready_for_evaluation(model)
    return model.eval(), {"checkpoint": str(folder), "trained_here": True, "train_s": train_s}


if __name__ == "__main__":
    p2p.train_or_load_p2p = train_or_load_distilled
    sys.exit(main(sys.argv[1:]))
