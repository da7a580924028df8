"""One way to ask an LLM: a local transformers chat model, or any OpenAI-compatible server through the `openai` client.

Both kinds answer `complete(conversations, max_tokens)`: chat conversations in, one reply each out, in order. The
profile summarizer and the LLM judge are a prompt and a parser around one of them (`hyperpeft.profiles.summarizers`,
`hyperpeft.evaluation.judge`); evaluation answers call [`chat_generate`] with a hyperpeft model and a profile per row.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._validation import check_int

Conversation = list[dict[str, str]]


class LLMError(RuntimeError):
    """An LLM could not answer: a server error, an unreachable endpoint, or a reply without text."""


def chat_generate(
    model,
    tokenizer,
    conversations: Sequence[Conversation],
    max_new_tokens: int,
    batches: Sequence[Sequence[int]] | None = None,
    batch_size: int = 8,
    reply_prefix: str = "",
    batch_kwargs: Callable[[Sequence[int]], dict[str, Any]] | None = None,
    generation_kwargs: dict[str, Any] | None = None,
    desc: str | None = None,
) -> list[str]:
    """
    Greedy replies of a causal LM to chat conversations, in batches: the chat template with the generation prompt
    (and `reply_prefix`, the start of the reply, e.g. `"Score: "`), left padding, special tokens dropped.

    Args:
        model: a causal LM (a hyperpeft model too: pass each batch's profiles through `batch_kwargs`).
        tokenizer: its tokenizer, with a chat template.
        conversations (`list[list[dict]]`): `{"role", "content"}` messages, one conversation per reply.
        max_new_tokens (`int`): the reply's length limit.
        batches (`list[list[int]]`, *optional*): which conversations go together, in which order; by default the
            longest first, `batch_size` at a time, so that each batch pads little.
        batch_size (`int`, defaults to 8): conversations per `generate` call when `batches` is not given.
        reply_prefix (`str`, defaults to `""`): text the reply starts with; it is put after the generation prompt.
        batch_kwargs (`Callable`, *optional*): more `generate` arguments for a batch, given its indices.
        generation_kwargs (`dict`, *optional*): more generation settings for every batch.
        desc (`str`, *optional*): a progress bar's label (no bar when `None` or for a single batch).

    Returns:
        `list[str]`: one reply per conversation, stripped, without the `reply_prefix`.
    """
    import torch
    from tqdm.auto import tqdm

    texts = [
        tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=True) + reply_prefix
        for c in conversations
    ]
    if batches is None:
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    settings = dict(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if getattr(model.generation_config, "eos_token_id", None) is None and tokenizer.eos_token_id is not None:
        settings["eos_token_id"] = tokenizer.eos_token_id
    settings.update(generation_kwargs or {})
    replies = [""] * len(texts)
    device = next(model.parameters()).device
    for batch in tqdm(batches, desc=desc, leave=False, disable=desc is None or len(batches) <= 1):
        encoded = tokenizer(
            [texts[i] for i in batch], return_tensors="pt", padding=True, padding_side="left",
            add_special_tokens=False,  # the chat template has them
        ).to(device)  # fmt: skip
        with torch.inference_mode():
            output = model.generate(**encoded, **settings, **(batch_kwargs(batch) if batch_kwargs else {}))
        for i, row in zip(batch, output[:, encoded["input_ids"].shape[1] :]):
            replies[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    return replies


class TransformersChat:
    """
    A local chat model: greedy decoding in batches with [`chat_generate`].

    Args:
        model_name_or_path (`str`, defaults to `"smollm2-135m-instruct"`): Hub name, local path or the embedded short
            name; loaded with `hyperpeft.load_base_model` / `load_tokenizer` on first use (unless `model` is given).
            It also names the model in `name`.
        batch_size (`int`, defaults to 8): conversations per `generate` call.
        device (`str`, *optional*): where the model runs (default: CUDA when available, else the CPU, or where the
            passed `model` is).
        model, tokenizer (*optional*): an already loaded model and its tokenizer (with a chat template).
        generation_kwargs (`dict`, *optional*): more generation settings, e.g. `{"no_repeat_ngram_size": 4}`.

    Example:

    ```python
    >>> from hyperpeft.llm import TransformersChat
    >>> llm = TransformersChat("smollm2-135m-instruct", device="cpu")
    >>> llm.complete([[{"role": "user", "content": "Name a colour."}]], max_tokens=8)  # doctest: +SKIP
    ['Blue.']
    ```
    """

    supports_reply_prefix = True  # the reply can be started for the model (`reply_prefix`)

    def __init__(
        self,
        model_name_or_path: str = "smollm2-135m-instruct",
        batch_size: int = 8,
        device: str | None = None,
        *,
        model: Any | None = None,
        tokenizer: Any | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.batch_size = check_int("batch_size", batch_size)
        self.device = device
        self.generation_kwargs = dict(generation_kwargs or {})
        self.name = f"transformers:{model_name_or_path}"
        self._model, self._tokenizer = model, tokenizer

    def load(self) -> tuple[Any, Any]:
        """Load the model and tokenizer now (otherwise the first `complete` does); returns `(model, tokenizer)`."""
        import torch

        from .embedded import load_base_model, load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model_name_or_path)
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        if self._model is None:
            self._model = load_base_model(self.model_name_or_path)
            self._model.to(self.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        elif self.device is not None:
            self._model.to(self.device)
        self._model.eval()
        return self._model, self._tokenizer

    def complete(
        self,
        conversations: Sequence[Conversation],
        max_tokens: int,
        reply_prefix: str = "",
        batches: Sequence[Sequence[int]] | None = None,
        desc: str | None = None,
    ) -> list[str]:
        """One greedy reply per conversation (see [`chat_generate`] for `reply_prefix`, `batches` and `desc`)."""
        if not conversations:
            return []
        model, tokenizer = self.load()
        return chat_generate(
            model, tokenizer, conversations, max_tokens, batches=batches, batch_size=self.batch_size,
            reply_prefix=reply_prefix, generation_kwargs=self.generation_kwargs, desc=desc,
        )  # fmt: skip


class OpenAIChat:
    """
    Any server that speaks the OpenAI chat-completions API (vLLM, `hyperpeft serve`, llama.cpp, OpenAI, ...), through
    the official `openai` client: retries with backoff on 429 and 5xx answers and on connection errors, a timeout per
    request, and at most `max_concurrency` requests in flight.

    Args:
        base_url (`str`): the server, with or without `/v1` (`"http://localhost:8000"`).
        model (`str`): the model name the server expects.
        api_key (`str`, *optional*): defaults to `$OPENAI_API_KEY` when set (servers without keys ignore it).
        timeout (`float`, defaults to 60): seconds per request.
        max_retries (`int`, defaults to 2): retries of a failed request (the `openai` client's default).
        max_concurrency (`int`, defaults to 4): requests in flight at once.
        temperature (`float`, defaults to 0.0): sampling temperature (0 is greedy on most servers).

    Example:

    ```python
    >>> from hyperpeft.llm import OpenAIChat
    >>> llm = OpenAIChat("http://localhost:8000", model="Qwen/Qwen2.5-7B-Instruct")
    >>> llm.complete([[{"role": "user", "content": "Name a colour."}]], max_tokens=8)  # doctest: +SKIP
    ```
    """

    supports_reply_prefix = False  # the chat-completions API has no way to start the assistant's reply

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        max_retries: int = 2,
        max_concurrency: int = 4,
        temperature: float = 0.0,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"`base_url` should be an http(s) URL such as 'http://localhost:8000', not {base_url!r}.")
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = check_int("max_retries", max_retries, minimum=0)
        self.max_concurrency = check_int("max_concurrency", max_concurrency)
        self.temperature = temperature
        self.name = f"openai:{model}"
        self._client = None

    @property
    def client(self):
        """The `openai.OpenAI` client (made on first use)."""
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url, api_key=self.api_key or "EMPTY", timeout=self.timeout,
                max_retries=self.max_retries,
            )  # fmt: skip
        return self._client

    def _reply(self, conversation: Conversation, max_tokens: int) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=list(conversation), max_tokens=max_tokens, temperature=self.temperature
            )
        except openai.APIStatusError as error:
            body = " ".join(error.response.text.split())[:500] or "(no body)"
            raise LLMError(f"POST {self.url} returned HTTP {error.status_code}: {body}") from None
        except openai.APIConnectionError as error:
            raise LLMError(f"Could not reach {self.url}: {type(error).__name__}: {error}") from None
        content = response.choices[0].message.content if response.choices else None
        if not isinstance(content, str):
            raise LLMError(f"POST {self.url} answered without text in `choices[0].message.content`: {content!r}")
        return content.strip()

    def complete(self, conversations: Sequence[Conversation], max_tokens: int, desc: str | None = None) -> list[str]:
        """One reply per conversation, in order; an `LLMError` names the URL and the status of a failed request."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._reply(c, max_tokens), conversations))


def make_llm(spec: str | dict | None, what: str = "llm", **kwargs: Any) -> TransformersChat | OpenAIChat | None:
    """
    The LLM a config names: `None`, a transformers model name or path, or `{"base_url": ..., "model": ...}` (and
    optionally `api_key`, `timeout`, `max_retries`, `max_concurrency`) for an OpenAI-compatible server. `what` names
    the config field in the error; `kwargs` go to the transformers model.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        return TransformersChat(spec, **kwargs)
    if isinstance(spec, dict) and {"base_url", "model"} <= spec.keys():
        return OpenAIChat(**spec)
    raise ValueError(f"`{what}` should be null, a model name, or {{base_url: ..., model: ...}}; got {spec!r}.")
