"""`HyperLoraModel`: the PEFT tuner that wraps the target layers and owns the hypernetwork.

It follows PEFT's `BaseTuner` contract, so `get_peft_model(base, HyperLoraConfig())` builds it, and it is where a
profile becomes LoRA weights: `forward(..., profile_embeddings=...)` and `generate(..., profile=...)` run the
hypernetwork once for the batch, put its output where the wrapped layers read it, and run the base model.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import _get_submodules
from torch import nn

from .adapter_cache import AdapterCache
from .config import HyperLoraConfig
from .encoder import ProfileEncoder, check_profile_texts
from .guidance import profile_guidance
from .hypernetwork import HyperNetwork, TargetLayout
from .layer import GeneratedLora, HyperLoraLayer, HyperLoraLinear
from .registry import PREFIX

Profile = str | list[str] | torch.Tensor

_COMPUTE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_LAYER_INDEX = re.compile(r"\.(\d+)(?:\.|$)")


def _linear_module_names(model: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


class HyperLoraModel(BaseTuner):
    """
    PEFT tuner for Profile-to-PEFT. Usually built through [`HyperPeftModel`] or `peft.get_peft_model`.

    Args:
        model (`transformers.PreTrainedModel`): the base causal LM; it is frozen.
        config ([`HyperLoraConfig`]): what to generate.
        adapter_name (`str`, defaults to `"default"`): PEFT adapter name (one hypernetwork per model).

    Example:

    ```python
    >>> import torch
    >>> from peft import get_peft_model
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from hyperpeft import HyperLoraConfig
    >>> base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                     num_attention_heads=4, num_key_value_heads=2))
    >>> model = get_peft_model(base, HyperLoraConfig(r=4, profile_dim=8))
    >>> out = model(input_ids=torch.tensor([[1, 2, 3]]), profile_embeddings=torch.randn(1, 8))
    >>> out.logits.shape
    torch.Size([1, 3, 64])
    ```
    """

    prefix: str = PREFIX
    tuner_layer_cls = HyperLoraLayer
    target_module_mapping: dict[str, list[str]] = {}
    uses_shared_state = True

    # ---- PEFT's BaseTuner contract -------------------------------------------------------------------------------

    def _pre_injection_hook(self, model: nn.Module, config: HyperLoraConfig, adapter_name: str) -> None:
        if len(getattr(self, "peft_config", {})) > 1:
            raise ValueError("hyperpeft supports one hypernetwork per model; wrap a fresh base model instead.")
        if any(isinstance(module, HyperLoraLinear) for module in model.modules()):
            raise ValueError(
                "This base model is already wrapped by hyperpeft; call `.unload()` on the earlier model first, or "
                "load a fresh base model."
            )
        if isinstance(config.target_modules, list):
            names = _linear_module_names(model)
            unknown = [t for t in config.target_modules if t.rsplit(".", 1)[-1] not in names]
            if unknown:
                raise ValueError(
                    f"`target_modules` {unknown} do not exist in {type(model).__name__}. Its nn.Linear modules are: "
                    f"{names}."
                )
        self._generated = GeneratedLora()
        self._lock = threading.RLock()
        self._wrapped: list[tuple[str, HyperLoraLinear, int]] = []
        self.profile_encoder: ProfileEncoder | None = None
        self.adapter_cache: AdapterCache | None = None
        self._probes: dict[tuple, torch.Tensor] = {}  # for the cache's fingerprint (`_cache_version`)

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args, **kwargs) -> None:
        try:
            super().inject_adapter(model, adapter_name, *args, **kwargs)
        except Exception:
            self._restore_base_layers(model)
            raise

    def _restore_base_layers(self, model: nn.Module) -> None:
        """Put back the layers wrapped so far: a wrapping that fails gives the caller's model back as it was."""
        for key, layer, _ in getattr(self, "_wrapped", []):
            parent, _, name = _get_submodules(model, key)
            setattr(parent, name, layer.get_base_layer())
        self._wrapped = []

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs) -> None:
        if isinstance(target, HyperLoraLinear):
            raise ValueError(f"{current_key} is already wrapped by hyperpeft; one hypernetwork per model.")
        if not isinstance(target, nn.Linear):
            raise TypeError(
                f"Target module {current_key} is a {type(target).__name__}; hyperpeft wraps only nn.Linear modules."
            )
        match = _LAYER_INDEX.search(current_key)
        depth = int(match.group(1)) if match else 0
        new_module = HyperLoraLinear(
            target,
            adapter_name,
            module_type=target_name,
            scaling=config.scaling,
            lora_dropout=config.lora_dropout,
            generated=self._generated,
        )
        self._replace_module(parent, target_name, new_module, target)
        self._wrapped.append((current_key, new_module, depth))

    def _post_injection_hook(self, model: nn.Module, config: HyperLoraConfig, adapter_name: str) -> None:
        try:
            self._build_hypernetwork(model, config)
        except Exception:  # e.g. a checkpoint's config too large for this machine
            self._restore_base_layers(model)
            raise

    def _build_hypernetwork(self, model: nn.Module, config: HyperLoraConfig) -> None:
        shapes: dict[str, tuple[int, int]] = {}
        depths: dict[str, list[int]] = {}
        for key, layer, depth in self._wrapped:
            shape = (layer.in_features, layer.out_features)
            if shapes.setdefault(layer.module_type, shape) != shape:
                raise ValueError(
                    f"{key} has shape (in={shape[0]}, out={shape[1]}) but other `{layer.module_type}` modules have "
                    f"(in={shapes[layer.module_type][0]}, out={shapes[layer.module_type][1]}); hyperpeft needs one "
                    "shape per module type. Narrow `target_modules`."
                )
            layer.position = len(depths.setdefault(layer.module_type, []))
            depths[layer.module_type].append(depth)
        dense = {d: i for i, d in enumerate(sorted({d for ds in depths.values() for d in ds}))}
        layout = TargetLayout(
            shapes=shapes,
            depths={m: tuple(dense[d] for d in ds) for m, ds in depths.items()},
            num_layers=len(dense),
        )
        device = next(model.parameters()).device
        # A base on the meta device (its architecture without weights) still gets a real hypernetwork: generating and
        # exporting adapters needs only the layout, not the base weights.
        self.hypernetwork = HyperNetwork(config, layout).to("cpu" if device.type == "meta" else device)
        self.hypernetwork.requires_grad_(not config.inference_mode)
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model, "name_or_path", None) or None

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        # The wrapped layers hold no weights; the hypernetwork (created after injection) is the only trainable part.
        for parameter in model.parameters():
            parameter.requires_grad = False

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        super().set_adapter(adapter_name, inference_mode=inference_mode)
        if "hypernetwork" in self._modules:  # PEFT calls this once before the hypernetwork exists
            self.hypernetwork.requires_grad_(not inference_mode)

    @property
    def wrapped_modules(self) -> list[tuple[str, HyperLoraLinear]]:
        """`(name, layer)` of every wrapped module, names relative to the base model."""
        return [(key, layer) for key, layer, _ in self._wrapped]

    # ---- profiles -> LoRA weights --------------------------------------------------------------------------------

    def get_profile_encoder(self) -> ProfileEncoder:
        """The profile encoder named in the config, loaded on first use (or the one set on `profile_encoder`)."""
        if self.profile_encoder is None:
            config: HyperLoraConfig = self.peft_config[self.active_adapters[0]]
            self.profile_encoder = ProfileEncoder(config.profile_encoder, instruction=config.profile_instruction)
        return self.profile_encoder

    def embed_profiles(self, profile: Profile, batch_size: int | None = None) -> torch.Tensor:
        """
        Turn `profile` into embeddings of shape `(n, profile_dim)`: `n = 1` for one string or a 1-D tensor (one user
        for every row), else one per row, which must match `batch_size` when it is given.
        """
        profile_dim = self.hypernetwork.profile_dim
        if isinstance(profile, torch.Tensor):
            embeddings = profile[None] if profile.ndim == 1 else profile
            if embeddings.ndim != 2 or embeddings.shape[1] != profile_dim:
                raise ValueError(
                    f"Profile embeddings should have shape (batch, {profile_dim}) or ({profile_dim},) but have shape "
                    f"{tuple(profile.shape)}; encode profiles with the config's encoder, or pass profile texts."
                )
            if not torch.is_floating_point(embeddings):
                raise TypeError(f"Profile embeddings should be floating point, not {embeddings.dtype}.")
            if not torch.isfinite(embeddings).all():
                raise ValueError("Profile embeddings contain NaN or inf values.")
            many = profile.ndim == 2
        else:
            texts = check_profile_texts(profile)
            encoder = self.get_profile_encoder()
            embeddings = encoder.encode(texts)
            if embeddings.shape[1] != profile_dim:
                raise ValueError(
                    f"The profile encoder {encoder.model_name_or_path!r} makes {embeddings.shape[1]}-d embeddings but "
                    f"the hypernetwork expects profile_dim={profile_dim}; use the encoder it was trained with."
                )
            many = not isinstance(profile, str)
        if many:
            _check_rows(embeddings.shape[0], batch_size)
        return embeddings.to(self.hypernetwork.profile_mean.device)

    def generate_lora(
        self, profile: Profile, batch_size: int | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """
        Run the hypernetwork: per module type, A `(n, layers, r, in)` and B `(n, layers, out, r)`.

        With an adapter cache enabled (`enable_adapter_cache`) and no gradients needed, profile texts whose adapter is
        cached skip the encoder and the hypernetwork; the others are generated together in one pass and cached.
        """
        if self.adapter_cache is None or isinstance(profile, torch.Tensor) or self._needs_gradients():
            return self.hypernetwork(self.embed_profiles(profile, batch_size))
        texts = check_profile_texts(profile)
        if not isinstance(profile, str):
            _check_rows(len(texts), batch_size)
        return self._cached_lora(texts)

    def _cached_lora(self, texts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        cache = self.adapter_cache
        unique = list(dict.fromkeys(texts))
        self.get_profile_encoder()  # loaded before the fingerprint is taken: loading it changes the fingerprint
        version = self._cache_version()
        found = {t: adapter for t in unique if (adapter := cache.get(t, version)) is not None}
        missing = [t for t in unique if t not in found]
        if missing:
            with torch.no_grad():
                lora = self.hypernetwork(self.embed_profiles(missing))
            # Kept only if no weight changed while they were generated: else they may mix old and new weights.
            unchanged = self._cache_version() == version
            for i, text in enumerate(missing):
                # clones, so a cached user does not keep the whole batch's tensors alive
                found[text] = {m: (a[i].clone(), b[i].clone()) for m, (a, b) in lora.items()}
                if unchanged:
                    cache.put(text, found[text], version)
        return {
            m: (torch.stack([found[t][m][0] for t in texts]), torch.stack([found[t][m][1] for t in texts]))
            for m in self.hypernetwork.module_types
        }

    def enable_adapter_cache(self, max_bytes: int = 1 << 30) -> AdapterCache:
        """
        Keep generated adapters per profile text (LRU, at most `max_bytes` of tensors), so that a returning user's
        text skips the encoder and the hypernetwork. Used whenever no gradients are needed (generation, inference);
        a forward that may train the hypernetwork bypasses it. Changing the hypernetwork's weights empties it.
        Returns the cache, whose `stats` count hits, misses and evictions.
        """
        self.adapter_cache = AdapterCache(max_bytes)
        return self.adapter_cache

    def disable_adapter_cache(self) -> None:
        """Stop caching generated adapters and free the cached ones."""
        self.adapter_cache = None

    def _needs_gradients(self) -> bool:
        return torch.is_grad_enabled() and any(p.requires_grad for p in self.hypernetwork.parameters())

    def _cache_version(self) -> tuple:
        """
        A fingerprint of everything a generated adapter depends on: the encoder, and every tensor of the hypernetwork
        by storage, in-place version and content. Optimizer steps, `load_state_dict` and `copy_` bump a tensor's
        version; a change through `.data` does not (it is another tensor on the same storage), so each tensor's content
        is part of it too: its sum, and its dot product with a fixed random vector (which tells a permutation apart).
        """
        tensors = list(itertools.chain(self.hypernetwork.parameters(), self.hypernetwork.buffers()))
        config: HyperLoraConfig = self.peft_config[self.active_adapters[0]]
        encoder = (config.profile_encoder, config.profile_instruction, id(self.profile_encoder))
        with torch.no_grad():
            sums = []
            for tensor in tensors:
                flat = tensor.detach().reshape(-1).float()
                sums += [flat.sum(), torch.dot(flat, self._probe(flat))]
            content = torch.stack(sums).tolist() if sums else []
        return (encoder, tuple((t.data_ptr(), t._version) for t in tensors), tuple(content))

    def _probe(self, flat: torch.Tensor) -> torch.Tensor:
        """A fixed random vector as long as `flat`, on its device (made once per length)."""
        key = (flat.numel(), flat.device)
        if key not in self._probes:
            generator = torch.Generator().manual_seed(flat.numel())
            self._probes[key] = torch.rand(flat.numel(), generator=generator).to(flat.device) + 0.5
        return self._probes[key]

    @contextmanager
    def use_profile(self, profile: Profile | None, batch_size: int | None = None, expand: int = 1) -> Iterator[None]:
        """Generate the LoRA weights for `profile` and keep them in place while the block runs.

        Calls are serialized by a lock, so threads sharing one model each get their own profile's weights. In training
        the weights stay in place after the block, because gradient checkpointing re-runs the forward during backward;
        the next call replaces them, and `release_profile()` drops them.
        """
        with self._lock:
            if profile is None:
                if not (self._adapters_disabled() or self._any_merged()):
                    raise ValueError(
                        "hyperpeft needs a profile for every call: pass `profile=` (text or embeddings) or "
                        "`profile_embeddings=`; use `with model.disable_adapter():` to run the base model."
                    )
                self._generated.weights = None
                yield
                return
            weights = self.generate_lora(profile, batch_size)
            if expand > 1 and next(iter(weights.values()))[0].shape[0] > 1:
                # beam search / several return sequences repeat each row: repeat its weights alike
                weights = {
                    m: (a.repeat_interleave(expand, 0), b.repeat_interleave(expand, 0))
                    for m, (a, b) in weights.items()
                }
            with self.use_lora(weights):
                yield

    @contextmanager
    def use_lora(self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        """
        Keep already generated LoRA weights (from `generate_lora`, one row per batch row or one for all) in place while
        the block runs, e.g. across the decoding steps of one batch. Serialized with `use_profile` by the same lock.
        """
        with self._lock:
            if self._any_merged():
                raise ValueError("A profile is merged into the base weights; call `unmerge_adapter()` first.")
            self._generated.weights = self._cast_for_compute(weights)
            try:
                yield
            finally:
                if not (self.training and torch.is_grad_enabled()):
                    self._generated.weights = None

    def _cast_for_compute(
        self, weights: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Without gradients, the weights cast to the base layers' dtype once, rather than in every layer at every
        decoding step (quantized weights: left alone)."""
        dtype = self._wrapped[0][1].base_layer.weight.dtype
        if not torch.is_grad_enabled() and dtype in _COMPUTE_DTYPES:
            return {m: (a.to(dtype), b.to(dtype)) for m, (a, b) in weights.items()}
        return weights

    def zero_lora(self, rows: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """All-zero LoRA weights for `rows` rows, shaped as `generate_lora`'s: rows that answer as the base model."""
        r, device = self.hypernetwork.r, self.hypernetwork.profile_mean.device
        return {
            m: (
                torch.zeros(rows, len(self.hypernetwork.layout.depths[m]), r, fan_in, device=device),
                torch.zeros(rows, len(self.hypernetwork.layout.depths[m]), fan_out, r, device=device),
            )
            for m, (fan_in, fan_out) in self.hypernetwork.layout.shapes.items()
        }

    def release_profile(self) -> None:
        """Drop generated weights kept for backward (call after the optimizer step in custom training loops)."""
        with self._lock:
            self._generated.weights = None

    def _adapters_disabled(self) -> bool:
        return all(layer.disable_adapters for _, layer, _ in self._wrapped)

    def _any_merged(self) -> bool:
        return any(layer.merged for _, layer, _ in self._wrapped)

    # ---- forward / generate ---------------------------------------------------------------------------------------

    def forward(
        self, *args: Any, profile_embeddings: torch.Tensor | None = None, profile: Profile | None = None, **kwargs: Any
    ):
        if profile is not None and profile_embeddings is not None:
            raise ValueError("Pass either `profile` or `profile_embeddings`, not both.")
        profile = profile_embeddings if profile_embeddings is not None else profile
        with self.use_profile(profile, batch_size=_batch_size(args, kwargs)):
            return self.model(*args, **kwargs)

    def generate(
        self,
        *args: Any,
        profile: Profile | None = None,
        profile_embeddings: torch.Tensor | None = None,
        negative_profile: Profile | None = None,
        **kwargs,
    ):
        if profile is not None and profile_embeddings is not None:
            raise ValueError("Pass either `profile` or `profile_embeddings`, not both.")
        profile = profile_embeddings if profile_embeddings is not None else profile
        generation_config = kwargs.get("generation_config") or self.model.generation_config
        expand = max(kwargs.get("num_beams") or generation_config.num_beams or 1, 1) * max(
            kwargs.get("num_return_sequences") or generation_config.num_return_sequences or 1, 1
        )
        batch_size = _batch_size(args, kwargs)
        if negative_profile is not None and profile is None:
            raise ValueError(
                "`negative_profile` guides away from it towards the row's own `profile`; pass `profile=` too (with "
                "adapters disabled or a profile merged there is nothing to guide)."
            )
        # generation needs no gradients: the adapters are generated without a graph (and may come from the cache)
        with torch.no_grad(), self.use_profile(profile, batch_size=batch_size, expand=expand):
            if negative_profile is not None:
                negative = self._cast_for_compute(self.generate_lora(negative_profile, batch_size))
                kwargs = profile_guidance(
                    self.model, self._generated, negative, args, kwargs, generation_config, expand
                )
            return self.model.generate(*args, **kwargs)

    # ---- merging ---------------------------------------------------------------------------------------------------

    def merge_profile(self, profile: str | torch.Tensor, safe_merge: bool = True) -> None:
        """Merge one user's generated adapter into the base weights (undo with `unmerge_adapter()`)."""
        check_single_profile(profile)
        with self._lock:
            if self._any_merged():
                raise ValueError("A profile is already merged; call `unmerge_adapter()` first.")
            with torch.no_grad():
                self._generated.weights = self.generate_lora(profile)
            try:
                if safe_merge:  # check every layer before touching any weight, so a refusal changes nothing
                    for key, layer, _ in self._wrapped:
                        if not torch.isfinite(layer.base_layer.weight + layer.get_delta_weight()).all():
                            raise ValueError(
                                f"Merging this profile's adapter into {key} gives NaN or inf weights; the "
                                "hypernetwork's output is broken for this profile. Nothing was merged."
                            )
                for _, layer, _ in self._wrapped:
                    layer.merge()
            finally:
                self._generated.weights = None

    def merge_and_unload(
        self, profile: str | torch.Tensor | None = None, progressbar: bool = False, safe_merge: bool = True, **kwargs
    ):
        """Merge `profile`'s adapter (or the one already merged) and return the plain base model."""
        if profile is not None:
            self.merge_profile(profile, safe_merge=safe_merge)
        elif not self._any_merged():
            raise ValueError("Pass the `profile` whose adapter should be merged.")
        return self._unload_and_optionally_merge(merge=False, progressbar=progressbar)


def check_single_profile(profile: object) -> None:
    """One user's profile is a string or a 1-D embedding; anything else gets a `TypeError`/`ValueError`."""
    if isinstance(profile, torch.Tensor) and profile.ndim != 1:
        raise ValueError(f"Pass one user's profile: a string or a 1-D embedding, not shape {tuple(profile.shape)}.")
    if not isinstance(profile, (str, torch.Tensor)):
        raise TypeError(f"`profile` should be one string or a 1-D embedding, not {type(profile).__name__}.")


def _check_rows(profiles: int, batch_size: int | None) -> None:
    if batch_size is not None and profiles != batch_size:
        raise ValueError(
            f"Got {profiles} profiles for a batch of {batch_size} rows; pass one profile per row, or a single string "
            "(or 1-D embedding) for all rows."
        )


def _batch_size(args: tuple, kwargs: dict) -> int | None:
    for value in (*args[:1], kwargs.get("input_ids"), kwargs.get("inputs_embeds")):
        if isinstance(value, torch.Tensor):
            return value.shape[0]
    return None
