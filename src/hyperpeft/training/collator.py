"""`HyperDataCollator`: TRL's language-modeling collator that also carries each row's profile."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


@dataclass
class HyperDataCollator(DataCollatorForLanguageModeling):
    """
    Pads token batches like TRL's `DataCollatorForLanguageModeling` and passes each row's profile along: profile texts
    as `profile` (a list of strings, embedded by the model's encoder, which caches each text) or precomputed
    embeddings as `profile_embeddings` (a float tensor, one row per example).

    Args:
        pad_token_id (`int`): token used for padding.
        profile_column (`str`, defaults to `"profile"`): the column holding each row's profile text or embedding.

    Example:

    ```python
    >>> from hyperpeft.training.collator import HyperDataCollator
    >>> collator = HyperDataCollator(pad_token_id=0)
    >>> rows = [{"input_ids": [1, 2, 3], "profile": "likes jazz"}, {"input_ids": [4, 5], "profile": "hates jazz"}]
    >>> batch = collator(rows)
    >>> batch["input_ids"].tolist(), batch["profile"]
    ([[1, 2, 3], [4, 5, 0]], ['likes jazz', 'hates jazz'])
    ```
    """

    profile_column: str = "profile"

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if self.padding_free:
            raise ValueError("hyperpeft cannot train padding-free: one flattened row would mix several users.")
        missing = [i for i, example in enumerate(examples) if example.get(self.profile_column) is None]
        if missing:
            raise ValueError(
                f"Examples {missing} have no `{self.profile_column}`; every training row needs its user's profile "
                "(keep the column through preparation, or set `profile_column`)."
            )
        profiles = [example[self.profile_column] for example in examples]
        token_examples = [{k: v for k, v in example.items() if k != self.profile_column} for example in examples]
        batch = super().torch_call(token_examples)
        if all(isinstance(profile, str) for profile in profiles):
            batch["profile"] = profiles
        else:
            batch["profile_embeddings"] = torch.tensor(profiles, dtype=torch.float32)
        return batch
