"""hyperpeft inside vLLM: a LoRA resolver that writes a user's adapter at their first request.

vLLM calls a registered `LoRAResolver` when a request names a `model` it has not loaded (with
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`). This one reads the name as a user id, looks the user's profile up in a users
file, generates the adapter with the hypernetwork of a hyperpeft checkpoint, writes it as a PEFT LoRA folder and
hands vLLM that folder: a user never seen before is personalised at their first request, with no training and no
export step. vLLM keeps the adapter loaded under the user's name from then on.

It is a vLLM general plugin (entry point `vllm.general_plugins`: `hyperpeft = hyperpeft.integrations.vllm:register`),
active only when `HYPERPEFT_VLLM_CHECKPOINT` is set:

- `HYPERPEFT_VLLM_CHECKPOINT`: the hyperpeft checkpoint folder (unset: the plugin does nothing).
- `HYPERPEFT_VLLM_USERS` (required): the JSONL users file, `{"user_id": ..., "profile": ...}` per line, read again
  whenever it changes.
- `HYPERPEFT_VLLM_ADAPTER_DIR`: where generated adapter folders are written (default `$HYPERPEFT_CACHE/vllm-adapters`).
- `HYPERPEFT_VLLM_ZERO_ADAPTER`: a model name served by an all-zero adapter, which answers as the base model (default
  `base`; empty for none).
- `HYPERPEFT_VLLM_DEVICE`: where the hypernetwork and the profile encoder run (default `cpu`).
- `HYPERPEFT_VLLM_BASE_MODEL`: vLLM's `--model`; when set, the checkpoint is loaded while vLLM starts instead of at the
  first request.

`hyperpeft vllm` (see `hyperpeft.integrations.vllm_launch`) starts vLLM with these set.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import zlib

from transformers.utils import logging
from vllm import envs
from vllm.lora.request import LoRARequest
from vllm.lora.resolver import LoRAResolver, LoRAResolverRegistry

from ..serving.user_adapters import UserAdapters
from .vllm_launch import ResolverSettings

logger = logging.get_logger(__name__)

RESOLVER_NAME = "hyperpeft"


class HyperLoraResolver(LoRAResolver):
    """
    Resolves `model="<user_id>"` to that user's generated PEFT LoRA folder (`None`, vLLM's 404, for unknown names).

    vLLM loads plugins in every process, and only its API server resolves adapters, so the checkpoint and the profile
    encoder are loaded on first use (`preload` starts that in a background thread). The hypernetwork runs in a worker
    thread, so the server's event loop keeps answering other requests meanwhile.

    Args:
        settings ([`ResolverSettings`]): where the checkpoint, the users and the adapter folders are.
    """

    def __init__(self, settings: ResolverSettings) -> None:
        self.settings = settings
        self._adapters: UserAdapters | None = None
        self._load_lock = threading.Lock()

    def preload(self, base_model_name: str) -> None:
        """Load the checkpoint and the encoder in a daemon thread, so the first user does not wait for them."""

        def load() -> None:
            try:
                self.adapters(base_model_name).model.base_model.get_profile_encoder().encode(["warm-up"])
            except Exception:  # the first request will raise it again, where vLLM reports it
                logger.exception("hyperpeft: preloading the resolver's checkpoint failed")

        threading.Thread(target=load, name="hyperpeft-preload", daemon=True).start()

    def adapters(self, base_model_name: str) -> UserAdapters:
        """The `UserAdapters` for vLLM's base model (loaded on first use)."""
        with self._load_lock:
            if self._adapters is None:
                self._adapters = UserAdapters(
                    self.settings.checkpoint,
                    self.settings.users,
                    self.settings.adapter_dir,
                    base_model_name_or_path=base_model_name,
                    zero_adapter_name=self.settings.zero_adapter_name,
                    device=self.settings.device,
                )
            return self._adapters

    async def resolve_lora(self, base_model_name: str, lora_name: str) -> LoRARequest | None:
        folder = await asyncio.to_thread(lambda: self.adapters(base_model_name).folder(lora_name))
        if folder is None:
            return None
        # vLLM replaces the id with its own counter; a positive stable one is still required here
        return LoRARequest(
            lora_name=lora_name,
            lora_int_id=zlib.crc32(folder.name.encode()) + 1,
            lora_path=str(folder),
            base_model_name=base_model_name,
        )


def register() -> None:
    """vLLM's plugin entry point: register the resolver when `HYPERPEFT_VLLM_CHECKPOINT` is set (idempotent)."""
    settings = ResolverSettings.from_environment()
    if settings is None:
        return
    if not envs.VLLM_ALLOW_RUNTIME_LORA_UPDATING:
        raise ValueError(
            "hyperpeft's LoRA resolver is only called with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True; set it (and "
            "--enable-lora), or unset HYPERPEFT_VLLM_CHECKPOINT."
        )
    if RESOLVER_NAME in LoRAResolverRegistry.get_supported_resolvers():
        return
    resolver = HyperLoraResolver(settings)
    LoRAResolverRegistry.register_resolver(RESOLVER_NAME, resolver)
    if settings.base_model and multiprocessing.parent_process() is None:  # the API server, not an engine process
        resolver.preload(settings.base_model)
