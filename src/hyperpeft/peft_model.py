"""`HyperPeftModel`: a PEFT model whose LoRA adapter is written per user by a hypernetwork."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import HfApi
from huggingface_hub import constants as hub_constants
from peft import LoraConfig, PeftModelForCausalLM
from peft.utils import TaskType
from transformers.utils import logging

from ._version import __version__
from .adapter_cache import AdapterCache
from .cards import adapter_card, checkpoint_card
from .checkpoint import (
    CONFIG_NAME,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    read_config_dict,
    read_weights,
    resolve_checkpoint,
    serialize_json,
    serialize_tensors,
    write_files_atomically,
    write_lora_folder,
)
from .config import HyperLoraConfig
from .embedded import load_base_model
from .encoder import ProfileEncoder
from .hypernetwork import HyperNetwork
from .registry import PEFT_TYPE_NAME
from .tuner import Profile, check_single_profile

logger = logging.get_logger(__name__)

_WEIGHTS_PREFIX = "base_model.hypernetwork."
# the config fields that decide the hypernetwork's tensor shapes, which a checkpoint's config must state
_SHAPE_FIELDS = (
    "r", "target_modules", "profile_dim", "module_embedding_dim", "depth_embedding_dim", "hidden_dim",
    "num_hidden_layers",
)  # fmt: skip


class HyperPeftModel(PeftModelForCausalLM):
    """
    A causal LM wearing a LoRA adapter that a hypernetwork generates from each user's profile.

    The base model is frozen; only the hypernetwork trains. Every row of a batch can belong to a different user.
    It is a `peft.PeftModel`, so PEFT tooling (`print_trainable_parameters`, `disable_adapter`, `unload`) and
    Trainer/TRL treat it as one.

    Args:
        model (`transformers.PreTrainedModel`): the base causal LM (Llama, Qwen2, Mistral style).
        peft_config ([`HyperLoraConfig`]): what to generate.
        adapter_name (`str`, defaults to `"default"`): PEFT adapter name.
        profile_encoder ([`ProfileEncoder`], *optional*): encoder for profile texts; by default the one named in the
            config is loaded on first use.

    Example:

    ```python
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from hyperpeft import HyperLoraConfig, HyperPeftModel
    >>> base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                     num_attention_heads=4, num_key_value_heads=2))
    >>> model = HyperPeftModel(base, HyperLoraConfig(r=4, profile_dim=8))
    >>> ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    >>> out = model(input_ids=ids, profile_embeddings=torch.randn(2, 8))  # one user per row
    >>> out.logits.shape
    torch.Size([2, 3, 64])
    ```
    """

    def __init__(
        self,
        model: torch.nn.Module,
        peft_config: HyperLoraConfig,
        adapter_name: str = "default",
        profile_encoder: ProfileEncoder | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(peft_config, HyperLoraConfig):
            raise TypeError(f"`peft_config` should be a HyperLoraConfig, not {type(peft_config).__name__}.")
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"`model` should be a transformers causal LM, not {type(model).__name__}.")
        with warnings.catch_warnings():  # PEFT reads transformers 5's deprecated name here; not the caller's to fix
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            super().__init__(model, peft_config, adapter_name, **kwargs)
        if profile_encoder is not None:
            self.base_model.profile_encoder = profile_encoder

    @property
    def hypernetwork(self) -> HyperNetwork:
        """The hypernetwork: the only trainable part."""
        return self.base_model.hypernetwork

    @property
    def hyper_config(self) -> HyperLoraConfig:
        return self.peft_config[self.active_adapter]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        profile_embeddings: torch.Tensor | None = None,
        profile: Profile | None = None,
        **kwargs: Any,
    ):
        """
        Run the base model with each row's generated LoRA.

        Args:
            input_ids, attention_mask, **kwargs: as for the base model (`labels` gives the loss).
            profile_embeddings (`torch.Tensor` of shape `(batch, profile_dim)`): one user per row.
            profile (`str`, `list[str]` or `torch.Tensor`): profile texts instead (encoded with the profile encoder).
        """
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            profile_embeddings=profile_embeddings,
            profile=profile,
            **kwargs,
        )

    def generate(
        self, *args: Any, profile: Profile | None = None, negative_profile: Profile | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """
        `transformers` generation with each row's generated LoRA.

        Args:
            profile (`str`, `list[str]` or `torch.Tensor`): one string (or 1-D embedding) for all rows, or one per row.
            negative_profile (`str`, `list[str]` or `torch.Tensor`, *optional*): profile guidance, with
                `guidance_scale` g >= 1: each token is chosen from `negative + g · (own − negative)` log-probabilities,
                the second pass running the same prompt with this profile's adapter (e.g. that of a user with no
                history). It amplifies what the user's profile changes, at the cost of a second forward per token;
                one sequence per row (no beams).
            *args, **kwargs: as for the base model's `generate` (`input_ids`, `attention_mask`, `max_new_tokens`...).

        Example:

        ```python
        >>> import torch
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> from hyperpeft import HyperLoraConfig, HyperPeftModel
        >>> base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
        ...                                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
        >>> model = HyperPeftModel(base, HyperLoraConfig(r=4, profile_dim=8)).eval()
        >>> ids = model.generate(input_ids=torch.tensor([[1, 2, 3]]), profile=torch.randn(8),
        ...                      negative_profile=torch.zeros(8), guidance_scale=2.0, max_new_tokens=4,
        ...                      eos_token_id=None)
        >>> ids.shape
        torch.Size([1, 7])
        ```
        """
        if negative_profile is not None:
            kwargs["negative_profile"] = negative_profile
        return super().generate(*args, profile=profile, **kwargs)

    # ---- serving many users ----------------------------------------------------------------------------------------

    def enable_adapter_cache(self, max_bytes: int = 1 << 30) -> AdapterCache:
        """
        Cache generated adapters by profile text (LRU, at most `max_bytes` of tensors): a returning user skips the
        profile encoder and the hypernetwork. Used whenever no gradients are needed (`generate`, `torch.no_grad()`);
        changing the hypernetwork's weights empties it.

        Args:
            max_bytes (`int`, defaults to 1 GiB): the most bytes of A and B tensors kept.

        Returns:
            [`~serving.AdapterCache`]: the cache; `cache.stats` counts hits, misses and evictions.

        Example:

        ```python
        >>> cache = model.enable_adapter_cache(max_bytes=256 * 2**20)
        >>> ids = model.generate(**inputs, profile=["likes jazz", "writes tersely"], max_new_tokens=8)
        >>> cache.stats.misses, cache.stats.hits
        (2, 0)
        ```
        """
        return self.base_model.enable_adapter_cache(max_bytes)

    def disable_adapter_cache(self) -> None:
        """Stop caching generated adapters and free the cached ones."""
        self.base_model.disable_adapter_cache()

    @contextmanager
    def without_adapter_cache(self) -> Iterator[None]:
        """Generate every adapter anew while the block runs (to time the work itself); the cache stays as it was."""
        tuner = self.base_model
        cache, tuner.adapter_cache = tuner.adapter_cache, None
        try:
            yield
        finally:
            tuner.adapter_cache = cache

    @property
    def adapter_cache(self) -> AdapterCache | None:
        """The adapter cache, or `None` when caching is off."""
        return self.base_model.adapter_cache

    # ---- one user's adapter ---------------------------------------------------------------------------------------

    def fit_profile_statistics(self, profiles: list[str] | torch.Tensor) -> None:
        """Z-score future profile embeddings with the statistics of these (training users') profiles."""
        embeddings = self.base_model.embed_profiles(profiles)
        self.hypernetwork.set_profile_statistics(embeddings)

    @torch.no_grad()
    def lora_state_dict(self, profile: str | torch.Tensor) -> dict[str, torch.Tensor]:
        """One user's adapter as a PEFT LoRA state dict (`...q_proj.lora_A.weight` `[r, in]`, `lora_B` `[out, r]`)."""
        check_single_profile(profile)
        return self.lora_state_dicts([profile] if isinstance(profile, str) else profile[None])[0]

    @torch.no_grad()
    def lora_state_dicts(self, profiles: list[str] | torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Several users' adapters as PEFT LoRA state dicts, generated in one encoder and hypernetwork pass."""
        lora = self.base_model.generate_lora(profiles)
        states = []
        for user in range(next(iter(lora.values()))[0].shape[0]):
            state: dict[str, torch.Tensor] = {}
            for name, layer in self.base_model.wrapped_modules:
                a, b = lora[layer.module_type]
                state[f"base_model.model.{name}.lora_A.weight"] = a[user, layer.position].float().cpu()
                state[f"base_model.model.{name}.lora_B.weight"] = b[user, layer.position].float().cpu()
            states.append(state)
        return states

    def peft_lora_config(self, base_model_name_or_path: str | None = None) -> LoraConfig:
        """The `peft.LoraConfig` that an exported adapter carries (same rank, alpha, dropout and target modules)."""
        config = self.hyper_config
        return LoraConfig(
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.target_modules,
            task_type=TaskType.CAUSAL_LM,
            base_model_name_or_path=base_model_name_or_path or config.base_model_name_or_path,
            bias="none",
        )

    def export_lora(self, profile: str | torch.Tensor, save_directory: str | os.PathLike) -> Path:
        """
        Write one user's generated adapter as an ordinary PEFT LoRA folder (`adapter_config.json` +
        `adapter_model.safetensors`) that `peft.PeftModel.from_pretrained(base, path)` and PEFT-compatible servers
        load without hyperpeft. For many users, `hyperpeft export` batches the hypernetwork and writes a manifest.

        Example:

        ```python
        >>> model.export_lora("writes short, lowercase replies", "out/user-42")
        >>> from peft import PeftModel
        >>> peft_model = PeftModel.from_pretrained(base, "out/user-42")
        ```
        """
        lora_config = self.peft_lora_config()
        card = str(adapter_card(lora_config))
        return write_lora_folder(save_directory, lora_config, self.lora_state_dict(profile), card=card)

    # ---- checkpoints ----------------------------------------------------------------------------------------------

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        is_main_process: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Save the hypernetwork's weights (safetensors), its config (JSON) and a model card, atomically: a failed save
        leaves an earlier checkpoint in `save_directory` intact. The base model is never written.

        Args:
            save_directory (`str`): the folder (created if needed).
            safe_serialization (`bool`): must be True; hyperpeft writes safetensors only.
            is_main_process (`bool`): only the main process writes (for distributed training).
        """
        if not safe_serialization:
            raise ValueError("hyperpeft writes safetensors only; leave `safe_serialization=True`.")
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` {save_directory!r} is a file; pass a folder.")
        if not is_main_process:
            return
        config_dict = dataclasses.asdict(self.hyper_config)
        config_dict["inference_mode"] = True
        tensors = {_WEIGHTS_PREFIX + k: v for k, v in self.hypernetwork.state_dict().items()}
        files = {
            WEIGHTS_NAME: serialize_tensors(tensors, metadata={"format": "pt", "hyperpeft_version": __version__}),
            CONFIG_NAME: serialize_json(config_dict),
        }
        if not (Path(save_directory) / MODEL_CARD_NAME).exists():
            files[MODEL_CARD_NAME] = str(checkpoint_card(self.hyper_config)).encode()
        write_files_atomically(save_directory, files)

    @classmethod
    def from_pretrained(
        cls,
        model: torch.nn.Module | str | os.PathLike,
        model_id: str | os.PathLike | None = None,
        adapter_name: str = "default",
        is_trainable: bool = False,
        profile_encoder: ProfileEncoder | None = None,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> HyperPeftModel:
        """
        Load a hyperpeft checkpoint from a folder or a Hub repo.

        `from_pretrained("ckpt")` rebuilds the base model named in the checkpoint's config (`dtype` applies);
        `from_pretrained(base, "ckpt")` puts the hypernetwork onto a base model already loaded.

        Example:

        ```python
        >>> from hyperpeft import HyperPeftModel
        >>> model = HyperPeftModel.from_pretrained("ckpt")               # base model rebuilt from the config
        >>> model = HyperPeftModel.from_pretrained(base, "org/name")     # onto a loaded base, from the Hub
        ```
        """
        if model_id is None:
            if not isinstance(model, (str, os.PathLike)):
                raise TypeError("Pass the checkpoint: `from_pretrained(path)` or `from_pretrained(base_model, path)`.")
            model, model_id = None, model
        folder = resolve_checkpoint(model_id, revision=revision, token=token, cache_dir=cache_dir)
        config = _config_from_dict(read_config_dict(folder), folder)
        weights = read_weights(folder)
        if model is None:
            if not config.base_model_name_or_path:
                raise ValueError(
                    f"The checkpoint {model_id!r} does not name its base model; load it onto one with "
                    "`HyperPeftModel.from_pretrained(base_model, path)`."
                )
            model = load_base_model(config.base_model_name_or_path, dtype=dtype)
        config.inference_mode = not is_trainable
        peft_model = cls(model, config, adapter_name, profile_encoder=profile_encoder, **kwargs)
        try:
            peft_model.load_hypernetwork_weights(weights, model_id)
        except Exception:
            peft_model.base_model.unload()  # give the caller's base model back unwrapped, ready for another try
            raise
        if not is_trainable:
            peft_model.eval()
            peft_model.hypernetwork.requires_grad_(False)
        return peft_model

    def load_adapter(
        self,
        model_id: str | os.PathLike,
        adapter_name: str = "default",
        is_trainable: bool = False,
        revision: str | None = None,
        token: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> torch.nn.modules.module._IncompatibleKeys:
        """
        Load a hyperpeft checkpoint's hypernetwork weights into this model. PEFT's `PeftModel.from_pretrained` and
        `AutoPeftModelForCausalLM.from_pretrained` call this after building the model from the checkpoint's config;
        a hyperpeft checkpoint is one hypernetwork, so `adapter_name` must be the model's own.
        """
        if adapter_name != self.active_adapter:
            raise ValueError(
                f"hyperpeft holds one hypernetwork per model (adapter {self.active_adapter!r}); `adapter_name` "
                f"{adapter_name!r} cannot add another. Load the checkpoint onto a fresh base model instead."
            )
        folder = resolve_checkpoint(model_id, revision=revision, token=token, cache_dir=cache_dir)
        self.load_hypernetwork_weights(read_weights(folder), model_id)
        self.hypernetwork.requires_grad_(is_trainable)
        if not is_trainable:
            self.eval()
        return torch.nn.modules.module._IncompatibleKeys(missing_keys=[], unexpected_keys=[])

    def load_hypernetwork_weights(self, weights: dict[str, torch.Tensor], source: object = "the weights") -> None:
        """
        Load the hypernetwork's tensors (as `save_pretrained` writes them, with or without the
        `base_model.hypernetwork.` prefix), refusing a checkpoint made for another base model or another version.
        """
        expected = self.hypernetwork.state_dict()
        found = {k.removeprefix(_WEIGHTS_PREFIX): v for k, v in weights.items()}
        missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
        if (missing or unexpected) and all(k.startswith("shared.") for k in missing + unexpected):
            has = "has" if unexpected else "lacks"
            raise ValueError(
                f"The checkpoint {source!s} {has} a shared LoRA (`shared.*` weights) but its config says "
                f"shared_lora={self.hyper_config.shared_lora}: its adapter_config.json and weights disagree, so it is "
                "corrupt or was edited by hand."
            )
        if missing or unexpected:
            raise ValueError(
                f"The checkpoint {source!s} does not fit this hypernetwork: missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}; it was written by another hyperpeft version or is corrupt."
            )
        for key, tensor in expected.items():
            if found[key].shape != tensor.shape:
                if found["profile_mean"].shape != expected["profile_mean"].shape:  # the config itself disagrees
                    raise ValueError(
                        f"The checkpoint {source!s} reads {found['profile_mean'].shape[0]}-d profile embeddings but "
                        f"its config says profile_dim={self.hyper_config.profile_dim}; the checkpoint is corrupt."
                    )
                raise ValueError(
                    f"The checkpoint {source!s} was made for another base model: `{key}` has shape "
                    f"{tuple(found[key].shape)} there but {tuple(tensor.shape)} for this base model "
                    f"({self.hypernetwork.layout.shapes}, {self.hypernetwork.layout.num_layers} layers). Load it onto "
                    f"{self.hyper_config.base_model_name_or_path!r}."
                )
        self.hypernetwork.load_state_dict(found, strict=True)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload hyperpeft checkpoint",
        revision: str | None = None,
        create_pr: bool = False,
        **kwargs: Any,
    ):
        """Upload the same files `save_pretrained` writes to the Hub repo `repo_id` (created if needed)."""
        if hub_constants.HF_HUB_OFFLINE:
            raise ValueError(
                "Cannot push to the Hub while HF_HUB_OFFLINE is set; save with `save_pretrained(folder)` instead."
            )
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            try:
                api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
                return api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    commit_message=commit_message,
                    revision=revision,
                    create_pr=create_pr,
                )
            except OSError as error:  # no network: httpx/requests connection errors are OSErrors underneath
                raise ValueError(
                    f"Could not reach the Hub to push {repo_id!r} ({error}); check the network, or save locally "
                    "with `save_pretrained(folder)`."
                ) from error


def _config_from_dict(data: dict, folder: Path) -> HyperLoraConfig:
    if data.get("peft_type") != PEFT_TYPE_NAME:
        raise ValueError(
            f"{folder / CONFIG_NAME} has peft_type {data.get('peft_type')!r}, not {PEFT_TYPE_NAME!r}: it is not a "
            "hyperpeft checkpoint (a plain PEFT adapter loads with `peft.PeftModel.from_pretrained`)."
        )
    missing = [name for name in _SHAPE_FIELDS if name not in data]
    if missing:  # a default would silently build a hypernetwork of another shape than the one saved
        raise ValueError(
            f"{folder / CONFIG_NAME} has no {missing}: a checkpoint's config must say the shape of its hypernetwork; "
            "the file is incomplete or was not written by `save_pretrained`."
        )
    fields = {f.name for f in dataclasses.fields(HyperLoraConfig)}
    unknown = sorted(data.keys() - fields)
    if unknown:
        logger.warning("Ignoring unknown config keys %s in %s", unknown, folder / CONFIG_NAME)
    data = {k: v for k, v in data.items() if k in fields and k != "peft_type"}
    try:
        return HyperLoraConfig(**data)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{folder / CONFIG_NAME} holds an invalid config: {error}") from error
