"""`AdapterCache`: generated LoRA weights kept per profile text, so a returning user skips encoder and hypernetwork."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from ._validation import check_int

# One user's adapter: module type -> (A `(layers, r, in)`, B `(layers, out, r)`).
UserAdapter = dict[str, tuple[torch.Tensor, torch.Tensor]]


def profile_key(text: str) -> str:
    """The cache key of a profile text: its sha256 (the text itself is not kept)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class AdapterCacheStats:
    """Counters since the cache was made (`entries` and `bytes` are the current contents)."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    invalidations: int = 0
    entries: int = 0
    bytes: int = 0


class AdapterCache:
    """
    A thread-safe LRU cache of generated adapters keyed by the sha256 of the profile text, bounded in bytes.

    The cache belongs to one model and remembers a fingerprint of its hypernetwork's weights: when the weights change
    (training steps, `load_state_dict`, new profile statistics), every entry is dropped, so a stale adapter is never
    served. Usually made through `HyperPeftModel.enable_adapter_cache(max_bytes=...)`.

    Args:
        max_bytes (`int`): the most tensor bytes (sum of `nbytes` of every A and B) kept; the least recently used
            users are evicted first. An adapter larger than this is not kept at all.

    Example:

    ```python
    >>> import torch
    >>> from hyperpeft.adapter_cache import AdapterCache
    >>> cache = AdapterCache(max_bytes=1024)
    >>> cache.put("likes jazz", {"q_proj": (torch.zeros(2, 4, 8), torch.zeros(2, 8, 4))}, version=0)
    >>> cache.get("likes jazz", version=0)["q_proj"][0].shape
    torch.Size([2, 4, 8])
    >>> cache.stats.hits, cache.stats.bytes
    (1, 512)
    ```
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = check_int("max_bytes", max_bytes, hint=" (bytes)")
        self.stats = AdapterCacheStats()
        self._entries: OrderedDict[str, tuple[UserAdapter, int]] = OrderedDict()
        self._version: object = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, text: str) -> bool:
        return profile_key(text) in self._entries

    def get(self, text: str, version: object) -> UserAdapter | None:
        """The adapter kept for `text` (marked most recently used), or `None`; counts a hit or a miss."""
        key = profile_key(text)
        with self._lock:
            self._check_version(version)
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
            return entry[0]

    def put(self, text: str, adapter: UserAdapter, version: object) -> None:
        """Keep `adapter` for `text`, evicting the least recently used entries until the total fits `max_bytes`."""
        size = sum(a.nbytes + b.nbytes for a, b in adapter.values())
        if size > self.max_bytes:
            return
        adapter = {m: (a.detach(), b.detach()) for m, (a, b) in adapter.items()}
        key = profile_key(text)
        with self._lock:
            self._check_version(version)
            old = self._entries.pop(key, None)
            if old is not None:
                self.stats.bytes -= old[1]
            self._entries[key] = (adapter, size)
            self.stats.bytes += size
            while self.stats.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.stats.bytes -= evicted
                self.stats.evictions += 1
            self.stats.entries = len(self._entries)

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()
            self.stats.entries = self.stats.bytes = 0

    def _check_version(self, version: object) -> None:
        # called with the lock held
        if version != self._version:
            if self._entries:
                self.stats.invalidations += 1
            self._entries.clear()
            self.stats.entries = self.stats.bytes = 0
            self._version = version
