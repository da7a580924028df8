"""Summarizers: the summary prompt sent to an LLM (`hyperpeft.llm`), a local transformers model or a server."""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from .._validation import check_int
from ..embedded import EMBEDDED_BASE_MODEL
from ..llm import LLMError, OpenAIChat, TransformersChat, make_llm
from .cache import text_sha256
from .prompt import SYSTEM_PROMPT

# A summarizer that could not produce a summary (server error, unreachable endpoint, empty answer).
SummarizerError = LLMError


@runtime_checkable
class Summarizer(Protocol):
    """
    Anything that turns summary prompts into summaries.

    `name` identifies the model and its generation settings in the cache key: two summarizers that may write
    different summaries must have different names. An optional `batch_size` attribute tells `ProfileBuilder` how
    many prompts to pass per call (each call's summaries are saved as soon as it returns).
    """

    name: str

    def summarize(self, prompts: list[str]) -> list[str]: ...


class _LLMSummarizer:
    """The summary prompts as user messages (after the system prompt, if any) to an LLM of `hyperpeft.llm`."""

    def __init__(self, llm, max_tokens: int, system_prompt: str | None, name: str) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.name = name
        if system_prompt != SYSTEM_PROMPT:  # the default is covered by PROMPT_VERSION
            self.name += f":system={text_sha256(system_prompt or '')[:12]}"

    def _conversation(self, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def summarize(self, prompts: list[str]) -> list[str]:
        """
        Args:
            prompts (`list[str]`): summary prompts (user messages), e.g. from `build_summary_prompt`.

        Returns:
            `list[str]`: one answer per prompt, in order.

        Raises:
            `SummarizerError`: the LLM could not answer (for a server: its URL and the HTTP status).
        """
        conversations = [self._conversation(prompt) for prompt in prompts]
        return self.llm.complete(conversations, self.max_tokens, desc="Summarizing")


class TransformersSummarizer(_LLMSummarizer):
    """
    Writes summaries with a local chat model: chat template, left padding, greedy decoding, in batches.

    Args:
        model_name_or_path (`str`, defaults to `"smollm2-135m-instruct"`): Hub name, local path or the embedded short
            name; loaded with `hyperpeft.load_base_model` / `load_tokenizer` on first use. It also names the
            summarizer in the cache key, also when `model` is passed.
        batch_size (`int`, defaults to 8): prompts per `generate` call.
        max_new_tokens (`int`, defaults to 96): the summary's length limit in tokens.
        device (`str`, *optional*): where the model runs; defaults to CUDA when available (or the passed model's
            device), else the CPU.
        model (`transformers.PreTrainedModel`, *optional*): an already loaded causal LM.
        tokenizer (`transformers.PreTrainedTokenizerBase`, *optional*): its tokenizer (needs a chat template).
        system_prompt (`str`, *optional*): the system message; `None` sends none (the template's default, if any).
        generation_kwargs (`dict`, *optional*): more `GenerationConfig` fields, e.g. `{"no_repeat_ngram_size": 4}`
            (they become part of `name`, hence of the cache key).

    Example:

    ```python
    >>> from hyperpeft.profiles import TransformersSummarizer, build_summary_prompt
    >>> summarizer = TransformersSummarizer("smollm2-135m-instruct", device="cpu")
    >>> prompt = build_summary_prompt("LaMP-3", [{"input": "Broke after a week.", "output": "1"}])
    >>> summary = summarizer.summarize([prompt])[0]  # a short paragraph, e.g. "This user ..."
    ```
    """

    def __init__(
        self,
        model_name_or_path: str = EMBEDDED_BASE_MODEL,
        batch_size: int = 8,
        max_new_tokens: int = 96,
        device: str | None = None,
        *,
        model: Any | None = None,
        tokenizer: Any | None = None,
        system_prompt: str | None = SYSTEM_PROMPT,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_int("max_new_tokens", max_new_tokens)
        llm = TransformersChat(
            model_name_or_path, batch_size, device, model=model, tokenizer=tokenizer,
            generation_kwargs=generation_kwargs,
        )  # fmt: skip
        name = f"transformers:{model_name_or_path}:greedy:max_new_tokens={max_new_tokens}"
        if llm.generation_kwargs:
            name += ":" + json.dumps(llm.generation_kwargs, sort_keys=True, separators=(",", ":"), default=str)
        super().__init__(llm, max_new_tokens, system_prompt, name)
        self.batch_size = batch_size

    def load(self) -> tuple[Any, Any]:
        """Load the model and tokenizer now (otherwise the first `summarize` does); returns `(model, tokenizer)`."""
        return self.llm.load()


class OpenAISummarizer(_LLMSummarizer):
    """
    Writes summaries with any server that speaks the OpenAI chat-completions API (vLLM, llama.cpp, OpenAI, ...),
    through the official `openai` client (retries with backoff, a timeout, bounded concurrency).

    Args:
        base_url (`str`): the server, e.g. `"http://localhost:8000"` or `"http://localhost:8000/v1"`.
        model (`str`): the model name the server expects.
        api_key (`str`, *optional*): defaults to `$OPENAI_API_KEY` when set, else none.
        timeout (`float`, defaults to 60): seconds per request.
        max_concurrency (`int`, defaults to 4): requests in flight at once.
        max_tokens (`int`, defaults to 256): the summary's length limit in tokens.
        temperature (`float`, defaults to 0.0): sampling temperature (0 is greedy on most servers).
        system_prompt (`str`, *optional*): the system message; `None` sends none.
        max_retries (`int`, defaults to 2): retries of a failed request.

    Example:

    ```python
    >>> from hyperpeft.profiles import OpenAISummarizer
    >>> summarizer = OpenAISummarizer("http://localhost:8000", model="Qwen/Qwen2.5-7B-Instruct")
    >>> summaries = summarizer.summarize(["Describe this user: ..."])  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        max_concurrency: int = 4,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        system_prompt: str | None = SYSTEM_PROMPT,
        max_retries: int = 2,
    ) -> None:
        check_int("max_tokens", max_tokens)
        llm = OpenAIChat(base_url, model, api_key, timeout, max_retries, max_concurrency, temperature)
        super().__init__(
            llm, max_tokens, system_prompt, f"openai:{model}:max_tokens={max_tokens}:temperature={temperature}"
        )
        self.url = llm.url

    @property
    def batch_size(self) -> int:
        """Prompts per `summarize` call from `ProfileBuilder`: a few rounds of concurrent requests."""
        return 4 * self.llm.max_concurrency


def make_summarizer(spec: str | dict | None) -> TransformersSummarizer | OpenAISummarizer | None:
    """`None` (rows must carry `profile_text`), a model name for transformers, or `{"base_url", "model", ...}`."""
    llm = make_llm(spec, "profiles.summarizer")  # validates the spec
    if llm is None:
        return None
    return TransformersSummarizer(spec) if isinstance(llm, TransformersChat) else OpenAISummarizer(**spec)
