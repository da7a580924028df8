"""`HyperLoraLinear`: an `nn.Linear` plus a LoRA update whose A and B differ for every row of the batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


class GeneratedLora:
    """The LoRA weights generated for the batch being run, shared by every wrapped layer of one model.

    `weights` maps a module type to `(A, B)` with A of shape `(users, layers, r, in)` and B `(users, layers, out, r)`;
    `users` is the batch size, or 1 when one profile serves every row. `None` means no profile is set.

    Setting `weights` also fills `layers`: for each module type, one `(Aᵀ, Bᵀ)` per layer position, shaped for the
    matmuls of [`HyperLoraLinear.forward`] (`(users, in, r)` and `(users, r, out)`, or `(in, r)` and `(r, out)` for a
    single profile). These views are made once per batch, not in every layer at every decoding step, where their cost
    would add up to a measurable share of a GPU decoding step.
    """

    def __init__(self) -> None:
        self._weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self.layers: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None

    @property
    def weights(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
        return self._weights

    @weights.setter
    def weights(self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        self._weights = weights
        if weights is None:
            self.layers = None
            return
        self.layers = {}
        for module_type, (a, b) in weights.items():
            a_t, b_t = a.transpose(-1, -2), b.transpose(-1, -2)
            if a.shape[0] == 1:  # one profile for every row: plain 2-D matmuls
                a_t, b_t = a_t[0], b_t[0]
            self.layers[module_type] = list(zip(a_t.unbind(-3), b_t.unbind(-3)))  # one pair per layer position

    @contextmanager
    def holding(self, other: GeneratedLora) -> Iterator[None]:
        """Hold `other`'s weights and per-layer views while the block runs, then this holder's own again."""
        saved = self._weights, self.layers
        self._weights, self.layers = other._weights, other.layers
        try:
            yield
        finally:
            self._weights, self.layers = saved


class HyperLoraLayer(BaseTunerLayer):
    # The adapter weights are generated per batch by the hypernetwork, so the layer stores none of its own.
    adapter_layer_names = ()
    other_param_names = ("module_type", "position", "scaling")


class HyperLoraLinear(nn.Module, HyperLoraLayer):
    """
    Wraps an `nn.Linear` (kept as `base_layer`) and adds `scaling · (x Aᵀ) Bᵀ` with the A and B of each row's user.

    Args:
        base_layer (`nn.Linear`): the wrapped layer; its weights are never trained.
        adapter_name (`str`): PEFT adapter name.
        module_type (`str`): which output head of the hypernetwork serves this layer (e.g. `"q_proj"`).
        scaling (`float`): `lora_alpha / r`.
        lora_dropout (`float`): dropout on the LoRA branch's input.
        generated ([`GeneratedLora`]): the shared holder the hypernetwork's output is read from.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        adapter_name: str,
        module_type: str,
        scaling: float,
        lora_dropout: float,
        generated: GeneratedLora,
    ) -> None:
        super().__init__()
        self.base_layer = base_layer
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.module_type = module_type
        self.position = 0  # index among the layers of this module type; set once all targets are wrapped
        self.scaling = scaling
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self._generated = generated
        self._merged_delta: torch.Tensor | None = None

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        weights = self._generated.weights
        if weights is None:
            return None
        a, b = weights[self.module_type]
        return a[:, self.position], b[:, self.position]  # (users, r, in), (users, out, r)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # Decoding runs this for every wrapped layer at every token: as few tensor operations as the maths allows.
        result = self.base_layer(x, *args, **kwargs)
        layers = self._generated.layers
        if layers is None or self.disable_adapters or self.merged:
            return result
        a_t, b_t = layers[self.module_type][self.position]
        if a_t.dtype != x.dtype:
            a_t, b_t = a_t.to(x.dtype), b_t.to(x.dtype)
        if self.training:
            x = self.lora_dropout(x)
        if a_t.dim() == 2:  # one profile for every row: two plain matmuls, the second adding to `result`
            hidden = x.reshape(-1, self.in_features) @ a_t  # (B·T, r)
            flat = torch.addmm(result.reshape(-1, self.out_features), hidden, b_t, alpha=self.scaling)
            return flat.view(result.shape)
        rows = x.shape[0]
        if a_t.shape[0] != rows:
            raise ValueError(
                f"The batch has {rows} rows but LoRA weights were generated for {a_t.shape[0]} profiles; pass one "
                "profile per row (or a single profile for all rows)."
            )
        if x.dim() == 3:  # (B, T, in): result + scaling · (x Aᵀ) Bᵀ, with the addition inside the second kernel
            return torch.baddbmm(result, torch.bmm(x, a_t), b_t, alpha=self.scaling)
        hidden = torch.bmm(x.reshape(rows, -1, self.in_features), a_t)
        flat = torch.baddbmm(result.reshape(rows, -1, self.out_features), hidden, b_t, alpha=self.scaling)
        return flat.view(result.shape)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = scaling · B A of the single profile that is set, in the base weight's dtype."""
        weights = self._weights()
        if weights is None or weights[0].shape[0] != 1:
            raise ValueError("Merging needs exactly one profile to be set; use `merge_profile(profile)`.")
        a, b = weights
        delta = (b[0].float() @ a[0].float()) * self.scaling  # (out, in)
        return delta.to(self.base_layer.weight.dtype)

    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add the current profile's ΔW to the base weight; with `safe_merge`, refuse a result with NaN or inf."""
        if self.merged:
            warnings.warn("A profile is already merged into this layer; unmerge it first.", stacklevel=2)
            return
        delta = self.get_delta_weight().to(self.base_layer.weight.device)
        if safe_merge:
            merged = self.base_layer.weight.data + delta
            if not torch.isfinite(merged).all():
                raise ValueError(
                    f"Merging the profile's adapter into {self.module_type} (layer position {self.position}) gives "
                    "NaN or inf weights; the hypernetwork's output is broken for this profile."
                )
            self.base_layer.weight.data = merged
        else:
            self.base_layer.weight.data += delta
        self._merged_delta = delta
        self.merged_adapters.append(self._active_adapter if isinstance(self._active_adapter, str) else "default")

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged ΔW again."""
        if not self.merged:
            warnings.warn("Nothing is merged into this layer.", stacklevel=2)
            return
        self.base_layer.weight.data -= self._merged_delta
        self._merged_delta = None
        self.merged_adapters = []

    def __repr__(self) -> str:
        return "hyper_lora." + super().__repr__()
