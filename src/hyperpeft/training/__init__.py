"""Training a hypernetwork across many users with TRL: `HyperSFTTrainer`, its config, collator and batch sampler.

- `trainer`: `HyperSFTConfig` and `HyperSFTTrainer` (TRL's `SFTTrainer` with few hooks changed), and the
  `RowMeanSFTTrainer` the LoRA baselines train with;
- `collator`: pads token batches and carries each row's profile;
- `sampler`: task-balanced batches;
- `state`: optimizer, scheduler and RNG state of a checkpoint as safetensors and JSON (never a pickle);
- `recipes`: the one place training settings and training rows are made.
"""

from .collator import HyperDataCollator
from .sampler import TaskBalancedSampler
from .trainer import HyperSFTConfig, HyperSFTTrainer, RowMeanSFTTrainer

__all__ = ["HyperDataCollator", "HyperSFTConfig", "HyperSFTTrainer", "RowMeanSFTTrainer", "TaskBalancedSampler"]
