"""Serving many users: a cache of generated adapters, an HTTP server that batches users, and PEFT LoRA export.

Only the cache is imported here; `hyperpeft.serving.server` needs the `serving` extra (fastapi, uvicorn).
"""

from .adapter_cache import AdapterCache, AdapterCacheStats, profile_key

__all__ = ["AdapterCache", "AdapterCacheStats", "profile_key"]
