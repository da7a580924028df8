"""Serving many users: hyperpeft's OpenAI-compatible server, per-user adapter folders for vLLM, and PEFT export.

`hyperpeft.serving.server` and its engine need the `serving` extra (fastapi, uvicorn); the adapter cache they use is
part of the core (`hyperpeft.adapter_cache`).
"""
