"""Calls to an OpenAI-compatible chat endpoint, shared by the summarizer and the judge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


def map_prompts(
    prompts: Sequence[str],
    request: Callable[[httpx.Client, str], str],
    api_key: str | None,
    timeout: float,
    max_concurrency: int,
) -> list[str]:
    """`request(client, prompt)` for every prompt, at most `max_concurrency` at once on one HTTP client; in order."""
    import httpx

    if not prompts:
        return []
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=timeout, headers=headers) as client:
        with ThreadPoolExecutor(max_workers=min(max_concurrency, len(prompts))) as pool:
            return list(pool.map(lambda prompt: request(client, prompt), prompts))
