"""Profile-to-PEFT: the hypernetwork's adapter from each row's profile; and the ablation that gives each row another
test user's profile (the margin P2P keeps there is what the profile itself does not explain)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from ...peft_model import HyperPeftModel
from ...training import HyperSFTTrainer
from ...training.recipes import ready_for_evaluation, sft_rows
from .base import Answers, Method

logger = logging.get_logger(__name__)


def prep_seconds(model: HyperPeftModel, rows) -> dict[str, float]:
    """Per user, the seconds to encode their profile and generate their LoRA (one user at a time, no adapter cache)."""
    profiles = dict(zip(rows["user_id"], rows["profile"]))
    seconds = {}
    with torch.no_grad(), model.without_adapter_cache():
        model.base_model.generate_lora(next(iter(profiles.values())))  # warm-up: loads the encoder
        for user, profile in profiles.items():
            start = time.perf_counter()
            model.base_model.generate_lora(profile)
            seconds[user] = time.perf_counter() - start
    return seconds


class _HypernetworkMethod(Method):
    """A method that answers with the run's hypernetwork: every answer decodes with the run's profile guidance (the
    `p2p` rows, the other-user ablation and the sweeps alike)."""

    def generate(self, model, rows, desc: str | None = None, **kwargs: Any) -> Answers:
        return super().generate(model, rows, desc, generation_kwargs=self.run.config.p2p.generation_kwargs(), **kwargs)


class P2P(_HypernetworkMethod):
    """P2P: loaded from `p2p_checkpoint` when that folder exists, else trained on the run's training rows there."""

    def prepare(self) -> dict[str, Any]:
        self.model, info = self.run.p2p_model()
        return info

    def answer(self, rows) -> Answers:
        answers = self.generate(self.model, rows, profiles=rows["profile"])
        answers.prep_s_per_user = prep_seconds(self.model, rows)
        return answers


class P2POtherUser(_HypernetworkMethod):
    """
    The same hypernetwork, each row given another test user's profile of the same task (`random_user` profiles), in
    the run's `profile_mode`: only the user changes, not the kind of profile the hypernetwork was trained on.
    """

    def prepare(self) -> dict[str, Any]:
        self.model, _ = self.run.p2p_model()
        return {}

    def answer(self, rows) -> Answers:
        mode = self.run.config.profiles.profile_mode
        other = self.run.profiles_with(rows, mode="random_user", other_user_mode=mode)
        return self.generate(self.model, rows, profiles=other)


def train_or_load_p2p(run) -> tuple[HyperPeftModel, dict[str, Any]]:
    """The run's P2P model: `p2p_checkpoint` when that folder holds one, else trained here (and saved there)."""
    settings = run.config.p2p
    folder = Path(settings.p2p_checkpoint or run.workdir / "p2p")
    if settings.p2p_checkpoint and (folder / "adapter_config.json").exists():
        logger.warning("P2P: loading the checkpoint in %s.", folder)
        model = HyperPeftModel.from_pretrained(run.base_copy(), str(folder))
        _check_checkpoint_matches(model.peft_config[model.active_adapter], folder, settings)
        return model.eval(), {"checkpoint": str(folder), "trained_here": False}
    torch.manual_seed(run.config.run.seed)
    model = HyperPeftModel(run.training_base(), settings.hyper_lora_config())
    args = run.trainer_config(folder, settings.p2p_training)
    logger.warning("P2P: training the hypernetwork (%s steps) ...", args.max_steps)
    start = time.perf_counter()
    trainer = HyperSFTTrainer(
        model=model, args=args, train_dataset=sft_rows(run.train), processing_class=run.tokenizer
    )
    trainer.train()
    train_s = time.perf_counter() - start
    trainer.save_model(str(folder))
    ready_for_evaluation(model)
    return model.eval(), {"checkpoint": str(folder), "trained_here": True, "train_s": train_s}


def _check_checkpoint_matches(saved, folder: Path, settings) -> None:
    """Refuse a checkpoint (its loaded config `saved`) made with other `p2p` settings than the run asks for."""
    wanted = {"profile_encoder": settings.profile_encoder, **settings.p2p_lora}
    for name, value in wanted.items():
        if getattr(saved, name) != value:
            raise ValueError(
                f"The P2P checkpoint in {folder} has `{name}`={getattr(saved, name)!r}, but this run asks for "
                f"{value!r}; point `p2p.checkpoint` at another folder to train one with these settings."
            )
