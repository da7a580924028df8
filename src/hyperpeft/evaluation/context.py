"""`RunContext`: what the methods of one evaluation share, made once: the data with profiles, the tokenizer, the base
model, the training settings, and the P2P model."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..data.sources import load_splits
from ..embedded import load_base_model, load_tokenizer
from ..profiles.builder import build_profiles
from ..training.recipes import load_training_base, trainer_config
from .config import EvalConfig


class SkipRun(Exception):
    """The run's data is not on this machine (e.g. an optional `../shared` folder): nothing to do."""


class RunContext:
    """
    The shared state of one evaluation.

    Args:
        config ([`EvalConfig`]): the evaluation's settings.

    Raises:
        [`SkipRun`]: the data folder is absent.
    """

    def __init__(self, config: EvalConfig) -> None:
        self.config = config
        run = config.run
        self.workdir = Path(run.workdir)
        if not config.data.is_present():
            raise SkipRun(f"the data folder {config.data.path!r} is absent")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tokenizer = load_tokenizer(run.base_model)
        splits = load_splits(config.data, self.workdir, config.p2p.profile_encoder, run.seed, test_split_needed=True)
        self.splits: dict[str, Dataset] = build_profiles(splits, config.profiles, self.workdir, run.seed)
        self._p2p: tuple[Any, dict[str, Any]] | None = None

    @property
    def train(self) -> Dataset | None:
        return self.splits.get("train")

    @property
    def k(self) -> int:
        return self.config.profiles.k

    @cached_property
    def base(self):
        """The base model in float32, shared by the prompt-based methods and OPPU (which unwraps its LoRAs again)."""
        return self.base_copy()

    def base_copy(self):
        """A new copy of the base model in float32, for a method that wraps it for good."""
        return load_base_model(self.config.run.base_model).eval()

    def training_base(self):
        """A new copy of the base model to train on, in the run's training dtype and attention."""
        run = self.config.run
        return load_training_base(run.base_model, run.train_dtype, run.train_attention)

    def trainer_config(self, folder: str | Path, overrides: dict[str, Any]):
        """The training settings of a trained method: the CPU defaults, the run's seed, then `overrides`."""
        return trainer_config(str(folder), **{"seed": self.config.run.seed, **overrides})

    def p2p_model(self):
        """The P2P model and what the report says about it, trained or loaded once for every method that uses it."""
        if self._p2p is None:
            from .methods.p2p import train_or_load_p2p

            self._p2p = train_or_load_p2p(self)
        return self._p2p

    def profiles_with(self, rows: Dataset, **changes) -> list[str]:
        """The rows' profiles built with `changes` (e.g. `mode="random_user"`, `k=4`) over the run's settings."""
        return build_profiles({"rows": rows}, self.config.profiles, self.workdir, self.config.run.seed, **changes)[
            "rows"
        ]["profile"]
