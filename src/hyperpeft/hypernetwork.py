"""The hypernetwork of Profile-to-PEFT: profile embedding -> LoRA A and B for every targeted module.

For module type m at layer l the input is `[profile embedding ‖ E_mod[m] ‖ E_dep[l]]`; a shared MLP trunk maps it to a
hidden vector and one output head per module type (q_proj and v_proj have different shapes under grouped-query
attention) maps that to a flat vector split into A `[r, in]` and B `[out, r]`. All positions of all users in a batch go
through the trunk in one pass; the only Python loop is over module types (two by default). With `shared_lora` a learned
A and B per targeted module, the same for every user, is added to what the heads write.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from .config import HyperLoraConfig


@dataclass(frozen=True)
class TargetLayout:
    """Where the generated adapters go: the shape of each module type and the layers it appears at.

    Args:
        shapes (`dict[str, tuple[int, int]]`): `(in_features, out_features)` of each module type, in a fixed order.
        depths (`dict[str, tuple[int, ...]]`): the layer index of every wrapped module of that type, in wrap order.
        num_layers (`int`): number of distinct depth indices (size of the depth embedding table).
    """

    shapes: dict[str, tuple[int, int]]
    depths: dict[str, tuple[int, ...]]
    num_layers: int


def parameter_count(config: HyperLoraConfig, layout: TargetLayout) -> int:
    """How many parameters a hypernetwork of `config` for `layout` holds (trunk, heads, embeddings)."""
    width = config.profile_dim + config.module_embedding_dim + config.depth_embedding_dim
    trunk = width * config.hidden_dim + config.hidden_dim
    trunk += (config.num_hidden_layers - 1) * (config.hidden_dim * config.hidden_dim + config.hidden_dim)
    heads = sum((config.hidden_dim + 1) * config.r * (i + o) for i, o in layout.shapes.values())
    embeddings = len(layout.shapes) * config.module_embedding_dim + layout.num_layers * config.depth_embedding_dim
    shared = 0
    if config.shared_lora:
        shared = sum(len(layout.depths[m]) * config.r * (i + o) for m, (i, o) in layout.shapes.items())
    return trunk + 2 * config.hidden_dim + heads + embeddings + shared


def check_size(config: HyperLoraConfig, layout: TargetLayout) -> None:
    """
    Refuse a config whose hypernetwork cannot be right before anything is allocated: a rank above a targeted module's
    smaller side, or more parameters than the machine has memory (a checkpoint's config is untrusted input).
    """
    for module_type, (fan_in, fan_out) in layout.shapes.items():
        if config.r > min(fan_in, fan_out):
            raise ValueError(
                f"`r`={config.r} is larger than {module_type}'s smaller side ({min(fan_in, fan_out)}: in={fan_in}, "
                f"out={fan_out}); a LoRA rank above it adds nothing. Use a smaller `r`."
            )
    needed = 4 * parameter_count(config, layout)
    memory = _physical_memory()
    if memory and needed > memory:
        raise ValueError(
            f"This config's hypernetwork would hold {needed / 2**30:.1f} GiB of float32 parameters, more than this "
            f"machine's {memory / 2**30:.1f} GiB of memory (hidden_dim={config.hidden_dim}, r={config.r}, "
            f"profile_dim={config.profile_dim}); is the config right?"
        )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no bound
        return None


class HyperNetwork(nn.Module):
    """
    Maps a batch of profile embeddings to LoRA weights for every targeted module.

    Args:
        config ([`HyperLoraConfig`]): rank, embedding sizes and trunk size.
        layout ([`TargetLayout`]): module shapes and depths of the base model it generates for.

    Example:

    ```python
    >>> import torch
    >>> from hyperpeft import HyperLoraConfig
    >>> from hyperpeft.hypernetwork import HyperNetwork, TargetLayout
    >>> layout = TargetLayout(
    ...     shapes={"q_proj": (16, 16), "v_proj": (16, 8)}, depths={"q_proj": (0, 1), "v_proj": (0, 1)}, num_layers=2
    ... )
    >>> net = HyperNetwork(HyperLoraConfig(r=4, profile_dim=6), layout)
    >>> lora = net(torch.randn(3, 6))
    >>> a, b = lora["v_proj"]  # A: (users, layers, r, in), B: (users, layers, out, r)
    >>> tuple(a.shape), tuple(b.shape)
    ((3, 2, 4, 16), (3, 2, 8, 4))
    ```
    """

    def __init__(self, config: HyperLoraConfig, layout: TargetLayout):
        super().__init__()
        check_size(config, layout)
        self.r = config.r
        self.profile_dim = config.profile_dim
        self.layout = layout
        self.module_types = list(layout.shapes)

        # z-scoring statistics of the profile embeddings (identity until fitted on training users): sentence
        # encoders share a dominant mean direction and the user-identifying differences are small.
        self.register_buffer("profile_mean", torch.zeros(config.profile_dim))
        self.register_buffer("profile_std", torch.ones(config.profile_dim))

        self.module_embedding = nn.Embedding(len(self.module_types), config.module_embedding_dim)
        self.depth_embedding = nn.Embedding(layout.num_layers, config.depth_embedding_dim)
        # Positions sorted by module type, so each type's outputs are one contiguous slice of the trunk's output.
        module_index = [i for i, m in enumerate(self.module_types) for _ in layout.depths[m]]
        depth_index = [d for m in self.module_types for d in layout.depths[m]]
        self.register_buffer("position_module", torch.tensor(module_index, dtype=torch.long), persistent=False)
        self.register_buffer("position_depth", torch.tensor(depth_index, dtype=torch.long), persistent=False)

        trunk: list[nn.Module] = []
        width = config.profile_dim + config.module_embedding_dim + config.depth_embedding_dim
        for _ in range(config.num_hidden_layers):
            trunk += [nn.Linear(width, config.hidden_dim), nn.SiLU()]
            width = config.hidden_dim
        # LayerNorm keeps the heads' input at unit scale, so Adam's steps change the generated B moderately.
        trunk.append(nn.LayerNorm(config.hidden_dim))
        self.trunk = nn.Sequential(*trunk)
        self.heads = nn.ModuleDict(
            {
                m: nn.Linear(config.hidden_dim, self.r * fan_in + fan_out * self.r)
                for m, (fan_in, fan_out) in layout.shapes.items()
            }
        )
        self.output_scale = 1.0 / math.sqrt(config.hidden_dim)
        # The user-agnostic LoRA, one flat `[A | B]` per wrapped module, learned directly: the heads' bias is
        # multiplied by `output_scale` and would learn the common part 1/output_scale times more slowly.
        self.shared = None
        if config.shared_lora:
            self.shared = nn.ParameterDict(
                {
                    m: nn.Parameter(torch.zeros(len(layout.depths[m]), self.r * fan_in + fan_out * self.r))
                    for m, (fan_in, fan_out) in layout.shapes.items()
                }
            )
        self.reset_heads()

    @torch.no_grad()
    def reset_heads(self) -> None:
        """
        PEFT's LoRA initialisation, generated: A at LoRA scale (std 1/sqrt(in)), B exactly zero, so ΔW = BA = 0. With
        a shared LoRA, that LoRA holds the random A and the heads start at zero: every user starts from one adapter.
        """
        for m, (fan_in, _) in self.layout.shapes.items():
            head = self.heads[m]
            a_rows = self.r * fan_in
            head.weight.zero_()
            head.bias.zero_()
            if self.shared is not None:
                self.shared[m].zero_()
                nn.init.normal_(self.shared[m][:, :a_rows], std=1.0 / math.sqrt(fan_in))
            else:
                # A = output_scale * W_A h with unit-variance h: std(W_A) = 1/sqrt(in) gives std(A) ≈ 1/sqrt(in).
                nn.init.normal_(head.weight[:a_rows], std=1.0 / math.sqrt(fan_in))

    @torch.no_grad()
    def set_profile_statistics(self, embeddings: torch.Tensor) -> None:
        """Z-score future inputs with the mean and standard deviation of `embeddings` (shape `(n, profile_dim)`)."""
        embeddings = embeddings.to(self.profile_mean.device, torch.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.profile_dim or embeddings.shape[0] < 2:
            raise ValueError(
                f"`embeddings` should have shape (n >= 2, {self.profile_dim}) but has shape {tuple(embeddings.shape)}."
            )
        self.profile_mean.copy_(embeddings.mean(0))
        self.profile_std.copy_(embeddings.std(0).clamp_min(1e-6))

    def forward(self, profile_embeddings: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """
        Args:
            profile_embeddings (`torch.Tensor` of shape `(batch, profile_dim)`): one profile embedding per user.

        Returns:
            `dict[str, tuple[torch.Tensor, torch.Tensor]]`: for every module type, A of shape
            `(batch, layers, r, in)` and B of shape `(batch, layers, out, r)`.
        """
        dtype = self.profile_mean.dtype
        e = (profile_embeddings.to(dtype) - self.profile_mean) / self.profile_std  # (B, P)
        batch, positions = e.shape[0], self.position_module.shape[0]
        position_features = torch.cat(
            [self.module_embedding(self.position_module), self.depth_embedding(self.position_depth)], dim=-1
        )  # (N, M + D)
        phi = torch.cat(
            [e[:, None, :].expand(batch, positions, -1), position_features[None].expand(batch, -1, -1)], dim=-1
        )  # (B, N, P + M + D)
        hidden = self.trunk(phi)  # (B, N, H)

        lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        start = 0
        for m in self.module_types:
            fan_in, fan_out = self.layout.shapes[m]
            layers = len(self.layout.depths[m])
            head = self.heads[m]
            # output_scale · (W h + b), computed as W (s·h) + s·b: scaling the small input, not the large output
            flat = nn.functional.linear(
                hidden[:, start : start + layers] * self.output_scale, head.weight, head.bias * self.output_scale
            )  # (B, L_m, r*in + out*r)
            if self.shared is not None:
                flat = flat + self.shared[m]
            a, b = flat.split([self.r * fan_in, fan_out * self.r], dim=-1)
            lora[m] = (a.view(batch, layers, self.r, fan_in), b.view(batch, layers, fan_out, self.r))
            start += layers
        return lora
