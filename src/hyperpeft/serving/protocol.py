"""The OpenAI request bodies `hyperpeft serve` accepts, and the response and stream chunk objects it sends.

Every field means what it means in OpenAI's API and in vLLM's OpenAI server. A field the server does not implement is
refused with a 400 that names it: either it is unknown here (`extra="forbid"`), or it is an OpenAI field the server
accepts only at its neutral value (`NEUTRAL`), such as `frequency_penalty: 0`, so that nothing is silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# OpenAI fields accepted only at these values (what leaves decoding unchanged): field -> allowed values.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "echo": (False,),
    "suffix": ("",),
    "tools": ([],),
    "tool_choice": ("none",),
    "functions": ([],),
    "function_call": ("none",),
    "parallel_tool_calls": (True, False),  # meaningless without tools, which are refused
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "store": (False,),
    "service_tier": ("auto", "default"),
}
MAX_LOGPROBS = 20
MAX_STOP_STRINGS = 16


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _RequestBody(_Strict):
    """Fields of both endpoints. `profile` and `user_id` are hyperpeft's; everything else is OpenAI's."""

    model: str | None = None
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    profile: str | None = None
    user_id: str | None = None
    # accepted only at their neutral values (see NEUTRAL)
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    def refused_field(self) -> str | None:
        """The first field set to a value this server does not implement, or `None`."""
        for name in self.model_fields_set:
            value = getattr(self, name)
            if name in NEUTRAL and value is not None and value not in NEUTRAL[name]:
                return name
        return None

    def texts(self) -> dict[str, str]:
        """Every text of the request by field name (`check_text` refuses lone surrogates and NUL characters)."""
        texts = {name: getattr(self, name) for name in ("model", "user", "user_id") if getattr(self, name) is not None}
        texts.update({f"stop[{i}]": stop for i, stop in enumerate(self.stop_strings())})
        return texts

    def stop_strings(self) -> tuple[str, ...]:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(stop)


class CompletionRequest(_RequestBody):
    """`POST /v1/completions`: `prompt` is a string, a list of strings, token ids or a list of token-id lists."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None

    def texts(self) -> dict[str, str]:
        texts = super().texts()
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        texts.update({f"prompt[{i}]": p for i, p in enumerate(prompts) if isinstance(p, str)})
        return texts

    def refused_field(self) -> str | None:
        if self.best_of is not None and self.best_of != self.n:
            return "best_of"
        return super().refused_field()


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatCompletionRequest(_RequestBody):
    """`POST /v1/chat/completions`: the tokenizer's chat template turns `messages` into the prompt."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    functions: list[dict] | None = None
    function_call: str | dict | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict | None = None
    modalities: list[str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    metadata: dict[str, str] | None = None

    def refused_field(self) -> str | None:
        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs"
        return super().refused_field()

    def texts(self) -> dict[str, str]:
        texts = super().texts()
        for i, message in enumerate(self.messages):
            texts[f"messages[{i}].content"] = message.text()
            if message.name is not None:
                texts[f"messages[{i}].name"] = message.name
        return texts

    def template_messages(self) -> list[dict[str, str]]:
        """The messages as the chat template takes them (`developer` is OpenAI's newer name for `system`)."""
        messages = []
        for message in self.messages:
            entry = {"role": "system" if message.role == "developer" else message.role, "content": message.text()}
            if message.name is not None:
                entry["name"] = message.name
            messages.append(entry)
        return messages


class UserBody(_Strict):
    """`PUT /v1/users/{user_id}`."""

    profile: str


# ---- responses -----------------------------------------------------------------------------------------------------


def response_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def envelope(kind: str, id_: str, model: str, choices: list[dict], **extra) -> dict:
    """An OpenAI response or stream chunk: `{"id", "object", "created", "model", "choices", **extra}`."""
    return {"id": id_, "object": kind, "created": int(time.time()), "model": model, "choices": choices, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None, code=None) -> dict:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
