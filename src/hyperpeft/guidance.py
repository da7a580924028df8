"""Profile guidance: decoding that amplifies what a user's generated adapter changes.

Each token is chosen from `negative + g · (own − negative)` log-probabilities, where `own` comes from the row's own
adapter and `negative` from the same prompt under another profile's adapter (e.g. that of a user with no history):
classifier-free guidance where the condition is the adapter rather than the prompt, as context-aware decoding does for
a context. transformers' `UnbatchedClassifierFreeGuidanceLogitsProcessor` runs the second pass, with its own cache.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, LogitsProcessorList, UnbatchedClassifierFreeGuidanceLogitsProcessor

from .layer import GeneratedLora

Weights = dict[str, tuple[torch.Tensor, torch.Tensor]]


def profile_guidance(
    model: nn.Module,
    generated: GeneratedLora,
    negative_weights: Weights,
    args: tuple,
    kwargs: dict[str, Any],
    generation_config: GenerationConfig,
    expand: int,
) -> dict[str, Any]:
    """
    `generate`'s kwargs with the guidance processor first in `logits_processor` (transformers' own and the sampling
    processors still run, in their usual places). Called inside `use_profile`, with the rows' own adapters in
    `generated`; `model` is the wrapped base model, `negative_weights` the negative profile's adapter.
    """
    scale = kwargs.pop("guidance_scale") if "guidance_scale" in kwargs else generation_config.guidance_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale < 1:
        raise ValueError(
            f"`negative_profile` needs `guidance_scale` >= 1 (1: no guidance), got {scale!r}; pass e.g. "
            "`guidance_scale=2.0`, or drop `negative_profile`."
        )
    if expand > 1:
        raise ValueError(
            f"`negative_profile` guides one sequence per row, but {expand} are asked for per row (`num_beams` x "
            "`num_return_sequences`); set both to 1."
        )
    if kwargs.get("negative_prompt_ids") is not None:
        raise ValueError("Pass either `negative_profile` or `negative_prompt_ids`, not both.")
    input_ids = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input_ids")
    if input_ids is None:
        raise ValueError("`negative_profile` needs `input_ids` (the prompt that both passes read).")
    negative = _NegativeProfileModel(model, generated, negative_weights)
    guidance = UnbatchedClassifierFreeGuidanceLogitsProcessor(
        float(scale), negative, unconditional_ids=input_ids, unconditional_attention_mask=kwargs.get("attention_mask")
    )
    # transformers would add its own guidance (against the prompt's last token alone) for a `guidance_scale` left set
    if kwargs.get("generation_config") is not None:
        kwargs["generation_config"] = copy.deepcopy(kwargs["generation_config"])
        kwargs["generation_config"].guidance_scale = None
    elif generation_config.guidance_scale is not None:
        kwargs["guidance_scale"] = None
    kwargs["logits_processor"] = LogitsProcessorList([guidance, *(kwargs.get("logits_processor") or [])])
    return kwargs


class _NegativeProfileModel:
    """
    The base model under the negative profile's adapter, called by the guidance processor between two decoding steps
    of the guided batch: it puts the negative adapter in place for the call and the rows' own back after it.
    """

    def __init__(self, model: nn.Module, generated: GeneratedLora, weights: Weights) -> None:
        self.model, self.generated = model, generated
        self.negative = GeneratedLora()
        self.negative.weights = weights  # its per-layer views are made once, not at every step

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        if attention_mask is not None:
            # the positions the guided pass gives left-padded rows (the processor passes none)
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            kwargs["position_ids"] = positions[:, -input_ids.shape[1] :]
        with self.generated.holding(self.negative):
            # only the last position's logits are read: the prompt pass need not make the others
            return self.model(input_ids, attention_mask=attention_mask, logits_to_keep=1, **kwargs)
