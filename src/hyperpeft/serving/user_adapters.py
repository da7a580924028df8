"""`UserAdapters`: every user's generated LoRA as a PEFT folder on disk, written at the user's first request.

For servers that load LoRA adapters from folders, such as vLLM with hyperpeft's LoRA resolver: a user id is looked up
in a users file, the checkpoint's hypernetwork generates that user's adapter from their profile text (the base model's
weights are not needed, only its architecture), and the folder is written once per content. The checkpoint, the base
model and the profile text together name the folder, so a changed profile or checkpoint gives a new folder and an
unchanged one is found again, across restarts too.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging

from ..cards import adapter_card
from ..checkpoint import (
    WEIGHTS_NAME,
    lora_folder_files,
    read_config_dict,
    resolve_checkpoint,
    write_new_folder,
)
from ..embedded import load_base_model, resolve_base_model
from ..encoder import ProfileEncoder
from ..peft_model import HyperPeftModel
from .export import adapter_folder_name, hypernetwork_fingerprint
from .users import USER_ID_PATTERN, read_user_profiles

logger = logging.get_logger(__name__)


@dataclass
class UserAdaptersStats:
    """Counters since start: adapters generated, found on disk, and names that are no known user."""

    generated: int = 0
    reused: int = 0
    unknown: int = 0


class UserAdapters:
    """
    Writes a user's PEFT LoRA folder from a hyperpeft checkpoint at first use, keyed by content, and finds it after.

    Args:
        checkpoint (`str`): hyperpeft checkpoint folder (or Hub repo) from `HyperPeftModel.save_pretrained`.
        users (`str`): JSONL users file of `{"user_id": ..., "profile": ...}` lines; read again whenever it changes,
            so users added while a server runs are served.
        adapter_dir (`str`): where the adapter folders are written (created if needed).
        base_model_name_or_path (`str`, *optional*): the base model the adapters are served on, recorded in every
            `adapter_config.json`; its config gives the layout (no weights are read). Default: the checkpoint's base.
        zero_adapter_name (`str`, *optional*): a name that resolves to an all-zero adapter, which answers exactly as
            the base model (for servers that must give every request an adapter); `None` for none.
        device (`str`, defaults to `"cpu"`): where the hypernetwork and the profile encoder run.
        profile_encoder ([`ProfileEncoder`], *optional*): the encoder; by default the one the checkpoint names.

    Example:

    ```python
    >>> from hyperpeft.serving.user_adapters import UserAdapters
    >>> adapters = UserAdapters("ckpt", "users.jsonl", "adapters", base_model_name_or_path="models/smollm2")
    >>> adapters.folder("u1")  # written now; the same folder (not regenerated) on the next call
    PosixPath('adapters/u1-3f2a9c1d0b7e6a55')
    >>> adapters.folder("nobody") is None
    True
    ```
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        users: str | os.PathLike,
        adapter_dir: str | os.PathLike,
        base_model_name_or_path: str | None = None,
        zero_adapter_name: str | None = "base",
        device: str = "cpu",
        profile_encoder: ProfileEncoder | None = None,
    ) -> None:
        folder = resolve_checkpoint(checkpoint)
        self.checkpoint = str(checkpoint)
        self.users_path = Path(users)
        self.adapter_dir = Path(adapter_dir)
        self.zero_adapter_name = zero_adapter_name
        self.stats = UserAdaptersStats()
        self._users: dict[str, str] = {}
        self._users_stamp: tuple[int, int] | None = None
        self._read_users()  # a broken users file fails now, not at the first request
        base = base_model_name_or_path
        if base is None:
            base = read_config_dict(folder).get("base_model_name_or_path")
            if not base:
                raise ValueError(
                    f"The checkpoint {str(checkpoint)!r} names no base model; pass `base_model_name_or_path`."
                )
            base = resolve_base_model(base)
        self.base_model_name_or_path = str(base)
        self.model = HyperPeftModel.from_pretrained(
            load_base_model(self.base_model_name_or_path, weights=False), str(folder), profile_encoder=profile_encoder
        )
        self.model.hypernetwork.to(device)
        self.lora_config = self.model.peft_lora_config(self.base_model_name_or_path)
        # the same folder names as `hyperpeft export`: an exported folder is found here, and the other way round
        self._fingerprint = hypernetwork_fingerprint(self.model, self.base_model_name_or_path)
        self._generate_lock = threading.Lock()
        self._folder_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._locks_lock = threading.Lock()

    def profile(self, user_id: str) -> str | None:
        """The user's profile text in the users file as it is now, or `None` for an unknown user."""
        self._read_users()
        return self._users.get(user_id)

    def folder(self, name: str) -> Path | None:
        """
        The PEFT LoRA folder for the user `name` (generated and written if it is not on disk yet), the all-zero
        adapter's folder for `zero_adapter_name`, or `None` when `name` is neither. Thread-safe: concurrent first calls
        for one user generate once.
        """
        if self.zero_adapter_name is not None and name == self.zero_adapter_name:
            return self._write_once(f"{name}-zero-{self._fingerprint[:16]}", self._zero_state, card=None)
        profile = self.profile(name) if USER_ID_PATTERN.fullmatch(name) else None
        if profile is None:
            self.stats.unknown += 1
            return None
        card = str(adapter_card(self.lora_config, name, self.checkpoint))
        folder_name = adapter_folder_name(name, self._fingerprint, profile)
        return self._write_once(folder_name, lambda: self._generate(profile), card)

    def _write_once(self, folder_name: str, make_state, card: str | None) -> Path:
        folder = self.adapter_dir / folder_name
        with self._locks_lock:
            lock = self._folder_locks[folder_name]
        with lock:
            if (folder / WEIGHTS_NAME).is_file():
                self.stats.reused += 1
                return folder
            write_new_folder(folder, lora_folder_files(self.lora_config, make_state(), card))
            self.stats.generated += 1
            logger.info("hyperpeft: wrote the adapter %s", folder)
        return folder

    def _generate(self, profile: str) -> dict[str, torch.Tensor]:
        with self._generate_lock, torch.inference_mode():
            return self.model.lora_state_dicts([profile])[0]

    def _zero_state(self) -> dict[str, torch.Tensor]:
        r = self.model.hyper_config.r
        state = {}
        for name, layer in self.model.base_model.wrapped_modules:
            state[f"base_model.model.{name}.lora_A.weight"] = torch.zeros(r, layer.in_features)
            state[f"base_model.model.{name}.lora_B.weight"] = torch.zeros(layer.out_features, r)
        return state

    def _read_users(self) -> None:
        try:
            info = self.users_path.stat()
        except FileNotFoundError:
            raise ValueError(f"No users file at {str(self.users_path)!r}; pass a JSONL file of users.") from None
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._users_stamp:
            return
        try:
            self._users = read_user_profiles(self.users_path)
        except ValueError:
            if self._users_stamp is None:
                raise
            # A file being rewritten, or a bad edit: keep serving the users read last, and say why.
            logger.exception("hyperpeft: %s could not be read; serving the users read before", self.users_path)
            return
        self._users_stamp = stamp
