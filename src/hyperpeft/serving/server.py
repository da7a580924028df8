"""`hyperpeft serve`: an OpenAI-compatible HTTP server in which every request wears its own user's generated LoRA.

    hyperpeft serve --model CHECKPOINT [--users users.jsonl] [--host 127.0.0.1] [--port 8000]

It speaks the OpenAI API the way vLLM's server does, so the same client code runs against both: `POST
/v1/completions` and `POST /v1/chat/completions` (streaming with server-sent events or not; `max_tokens`, `stop`,
`temperature`, `top_p`, `seed`, `n`, `logprobs` per request), `GET /v1/models` (the base model and every known user,
as vLLM lists LoRA adapters), `model="<user_id>"` to pick a user, and OpenAI error objects. Users are managed with
`GET/PUT/DELETE /v1/users/{user_id}`. Every sequence decodes in one continuously batched loop
([`ContinuousBatcher`]): a request joins the running batch at the next step and leaves it when it finishes.

Which profile a request gets, first match wins: `profile` (a profile text in the request), `user_id`, `model` naming a
known user, `user` naming a known user; otherwise the base model answers (`model` absent or the base's name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers.utils import logging

from .._validation import check_text
from ..adapter_cache import profile_key
from .engine import ContinuousBatcher, SequenceRequest, SequenceResult, SequenceUpdate
from .protocol import (
    MAX_STOP_STRINGS,
    ChatCompletionRequest,
    CompletionRequest,
    UserBody,
    envelope,
    error_body,
    response_id,
    usage,
)
from .sampling import SamplingParams, TokenLogprob
from .users import MAX_PROFILE_CHARS, check_profile_text, check_user_id, read_user_profiles

logger = logging.get_logger(__name__)

DISCONNECT_POLL_S = 1.0
_UNION_MEMBER = re.compile(r"(str|int|float|bool|dict|list|list\[.*\]|dict\[.*\]|[a-z-]+\[.*\])")


class ApiError(Exception):
    """An error answered as OpenAI's error object with this HTTP status."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, kind: str | None = None, code=None
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code
        self.kind = kind or {404: "not_found_error", 500: "server_error"}.get(status, "invalid_request_error")

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.message, self.kind, self.param, self.code), status_code=self.status)


def create_app(
    model,
    tokenizer,
    users: dict[str, str] | None = None,
    max_batch_size: int = 32,
    batch_window_ms: float = 5.0,
    max_tokens_limit: int = 512,
    model_name: str | None = None,
    max_request_bytes: int = 4 * 2**20,
    max_profile_chars: int = MAX_PROFILE_CHARS,
    max_users: int = 100_000,
):
    """
    Build the FastAPI app around an already loaded model and tokenizer (the decoding loop starts with the app).

    Args:
        model ([`HyperPeftModel`]): the model to serve (put in eval mode here).
        tokenizer: its tokenizer; `/v1/chat/completions` needs a chat template.
        users (`dict[str, str]`, *optional*): user id -> profile text known from the start.
        max_batch_size (`int`), batch_window_ms (`float`): see [`ContinuousBatcher`].
        max_tokens_limit (`int`, defaults to 512): the largest `max_tokens` a request may ask for.
        model_name (`str`, *optional*): the base model's name in `/v1/models` and responses (default: the last part
            of the base model's path or Hub id).
        max_request_bytes (`int`, defaults to 4 MiB): a larger request body is refused with a 413.
        max_profile_chars (`int`, defaults to 20000): a longer profile text is refused with a 400.
        max_users (`int`, defaults to 100000): the most users `PUT /v1/users/{user_id}` may hold.

    Example:

    ```python
    >>> from openai import OpenAI
    >>> from hyperpeft.serving.server import create_app, serve_in_background
    >>> app = create_app(model, tokenizer, users={"u1": "likes short answers"})
    >>> with serve_in_background(app) as url:  # http://127.0.0.1:<free port>
    ...     client = OpenAI(base_url=f"{url}/v1", api_key="unused")
    ...     print(client.completions.create(model="u1", prompt="Hi", max_tokens=8, temperature=0).choices[0].text)
    ```
    """
    model.eval()
    base_path = str(model.hyper_config.base_model_name_or_path or "hyperpeft")
    name = model_name or Path(base_path).name
    max_positions = getattr(model.get_base_model().config, "max_position_embeddings", None)
    sampling_defaults = _sampling_defaults(model)
    known_users: dict[str, str] = {}
    for user_id, profile in (users or {}).items():
        known_users[check_user_id(user_id)] = check_profile_text(profile, f"profile of {user_id!r}", max_profile_chars)
    users_lock = threading.Lock()
    engine = ContinuousBatcher(model, tokenizer, max_batch_size=max_batch_size, batch_window_ms=batch_window_ms)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:  # ready only once a profile can really be turned into an adapter (the encoder loads now, not later)
            await asyncio.to_thread(warm_up, model)
            app.state.not_ready = None
        except Exception as error:
            logger.exception("hyperpeft serve: the warm-up failed; every request will get a 503")
            app.state.not_ready = f"the model cannot make adapters: {type(error).__name__}: {error}"
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)

    app = FastAPI(title="hyperpeft", lifespan=lifespan)
    app.state.engine = engine
    app.state.users = known_users
    app.state.not_ready = "starting"
    app.add_middleware(_BodyLimit, max_bytes=max_request_bytes)

    def ready() -> None:
        if app.state.not_ready:
            raise ApiError(f"The server is not ready: {app.state.not_ready}.", status=503, kind="server_error")

    # ---- errors: always OpenAI's error object ------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = f"{request.method} {request.url.path}: {error.detail}"
        return ApiError(message, status=error.status_code, code=codes.get(error.status_code)).response()

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError):
        problems: dict[str, list[str]] = {}
        for e in error.errors():
            # pydantic names each member of a union it tried (`str`, `list[int]`): one field, several alternatives
            parts = [str(p) for p in e["loc"] if p != "body" and not _UNION_MEMBER.fullmatch(str(p))]
            where = ".".join(parts) or "body"
            message = "is not a field this server supports" if e["type"] == "extra_forbidden" else e["msg"]
            if message not in problems.setdefault(where, []):
                problems[where].append(message)
        text = "; ".join(
            f"`{where}` {messages[0]}" if messages[0].startswith("is not") else f"`{where}`: {', or '.join(messages)}"
            for where, messages in problems.items()
        )
        first = next(iter(problems)).split(".")[0] if problems else None
        return ApiError(f"Invalid request: {text}.", param=first).response()

    # ---- which profile --------------------------------------------------------------------------------------------

    def known(user_id: str | None) -> str | None:
        with users_lock:
            return known_users.get(user_id) if user_id is not None else None

    def select_profile(body) -> tuple[str | None, str]:
        """The request's profile text (`None`: the base model) and the model name its response reports."""
        ready()
        for field, text in body.texts().items():  # checked here, so that no bad text reaches a shared batch
            try:
                check_text(text, field)
            except ValueError as error:
                raise ApiError(str(error), field.split("[")[0]) from None
        if body.profile is not None and body.user_id is not None:
            raise ApiError("Pass at most one of `profile` (a profile text) and `user_id`.", "profile")
        named = known(body.model)
        if body.model is not None and body.model != name and named is None:
            raise ApiError(
                f"The model `{body.model}` does not exist: `GET /v1/models` lists {name!r} and the known users.",
                "model", status=404, code="model_not_found",
            )  # fmt: skip
        answered_as = body.model or name
        if body.profile is not None:
            try:
                return check_profile_text(body.profile, "profile", max_profile_chars), answered_as
            except ValueError as error:
                raise ApiError(str(error), "profile") from None
        if body.user_id is not None:
            profile = known(body.user_id)
            if profile is None:
                raise ApiError(
                    f"Unknown `user_id` {body.user_id!r}; register it with `PUT /v1/users/{{user_id}}` or pass "
                    "`profile`.", "user_id", status=404, code="user_not_found",
                )  # fmt: skip
            if named is not None and body.model != body.user_id:
                raise ApiError(f"`model` {body.model!r} and `user_id` {body.user_id!r} name different users.", "model")
            return profile, answered_as
        if named is not None:
            return named, answered_as
        return known(body.user), answered_as

    # ---- decoding settings ----------------------------------------------------------------------------------------

    def check_request(body, prompts: int) -> None:
        field = body.refused_field()
        if field is not None:
            raise ApiError(
                f"`{field}` = {getattr(body, field)!r} is not supported by this server; leave it out (or at its "
                "default).", field,
            )  # fmt: skip
        if body.stream_options is not None and not body.stream:
            raise ApiError("`stream_options` is only allowed with `stream: true`.", "stream_options")
        if body.n * prompts > engine.max_batch_size:
            raise ApiError(
                f"`n` x prompts = {body.n * prompts} sequences; this server decodes at most {engine.max_batch_size} "
                "at once.", "n",
            )  # fmt: skip
        if len(body.stop_strings()) > MAX_STOP_STRINGS:
            raise ApiError(f"`stop` holds {len(body.stop_strings())} strings; at most {MAX_STOP_STRINGS}.", "stop")

    def sampling(body, max_tokens: int, logprobs: int | None, choice: int) -> SamplingParams:
        temperature = sampling_defaults["temperature"] if body.temperature is None else body.temperature
        top_p = sampling_defaults["top_p"] if body.top_p is None else body.top_p
        seed = None if body.seed is None else body.seed + choice  # each of the `n` choices samples differently
        return SamplingParams(max_tokens, temperature, top_p, seed, body.stop_strings(), logprobs)

    def token_limit(requested: int | None, prompt_tokens: int, param: str) -> int:
        if prompt_tokens == 0:
            raise ApiError("The prompt is empty after tokenization; send some text.", "prompt")
        room = max_positions - prompt_tokens if max_positions else max_tokens_limit
        if requested is None:  # chat without a limit: as much as the model's positions allow, up to the limit
            requested = min(max_tokens_limit, room)
            if requested < 1:
                raise ApiError(f"The prompt has {prompt_tokens} tokens: no room is left for an answer.", "messages")
        if not 1 <= requested <= max_tokens_limit:
            raise ApiError(f"`{param}` should be between 1 and {max_tokens_limit}, not {requested}.", param)
        if max_positions and prompt_tokens + requested > max_positions:
            raise ApiError(
                f"The prompt has {prompt_tokens} tokens; with `{param}` {requested} that exceeds the model's "
                f"{max_positions} positions. Shorten the prompt or lower `{param}`.", param,
            )  # fmt: skip
        return requested

    # ---- running sequences ---------------------------------------------------------------------------------------

    async def updates(sequences: list[SequenceRequest], request: Request) -> AsyncIterator[SequenceUpdate]:
        """The sequences' updates as they come; the sequences are cancelled if the client goes away."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[SequenceUpdate] = asyncio.Queue()
        generation = engine.submit(sequences, lambda update: loop.call_soon_threadsafe(queue.put_nowait, update))
        remaining = len(sequences)
        try:
            while remaining:
                try:
                    update = await asyncio.wait_for(queue.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    continue
                remaining -= update.finish_reason is not None
                yield update
        finally:
            generation.cancel()  # frees the rows at the next step when the client left early (a no-op when done)

    async def run_all(sequences: list[SequenceRequest], request: Request) -> list[SequenceResult]:
        results = [SequenceResult() for _ in sequences]
        async for update in updates(sequences, request):
            results[update.index].add(update)
        failed = [r.error for r in results if r.finish_reason == "error"]
        if failed:
            raise ApiError(f"Generation failed: {failed[0]}", status=500)
        return results

    def token_text(token_id: int) -> str:
        return tokenizer.decode([token_id], skip_special_tokens=False)

    def completion_logprobs(logprobs: tuple[TokenLogprob, ...], offset: int) -> dict[str, Any] | None:
        if not logprobs:
            return None
        tokens = [token_text(lp.token_id) for lp in logprobs]
        offsets = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        return {
            "tokens": tokens,
            "token_logprobs": [lp.logprob for lp in logprobs],
            "top_logprobs": [{token_text(t): v for t, v in lp.top} for lp in logprobs],
            "text_offset": offsets,
        }

    def chat_logprobs(logprobs: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
        def entry(token_id: int, value: float) -> dict[str, Any]:
            token = token_text(token_id)
            return {"token": token, "logprob": value, "bytes": list(token.encode())}

        return [
            {**entry(lp.token_id, lp.logprob), "top_logprobs": [entry(t, v) for t, v in lp.top]} for lp in logprobs
        ]

    def sse(data: dict | str) -> str:
        return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"

    # ---- endpoints ---------------------------------------------------------------------------------------------

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        profile, answered_as = select_profile(body)
        prompts = await anyio.to_thread.run_sync(_tokenize_prompts, tokenizer, body.prompt)
        check_request(body, len(prompts))
        sequences = []
        for ids in prompts:
            limit = token_limit(body.max_tokens, len(ids), "max_tokens")
            for choice in range(body.n):
                params = sampling(body, limit, body.logprobs, choice)
                sequences.append(SequenceRequest(tuple(ids), profile, params))
        prompt_tokens = sum(len(ids) for ids in prompts)
        id_ = response_id("cmpl")
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                offsets, tokens = [0] * len(sequences), 0
                extra = {"usage": None} if include_usage else {}
                async for update in updates(sequences, request):
                    if update.finish_reason == "error":
                        yield sse(error_body(f"Generation failed: {update.error}", "server_error"))
                        return
                    tokens += len(update.token_ids)
                    logprobs = completion_logprobs(update.logprobs, offsets[update.index])
                    offsets[update.index] += sum(len(token_text(lp.token_id)) for lp in update.logprobs)
                    choice = {"index": update.index, "text": update.text, "logprobs": logprobs,
                              "finish_reason": update.finish_reason}  # fmt: skip
                    yield sse(envelope("text_completion", id_, answered_as, [choice], **extra))
                if include_usage:
                    yield sse(envelope("text_completion", id_, answered_as, [], usage=usage(prompt_tokens, tokens)))
                yield sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")
        results = await run_all(sequences, request)
        choices = [
            {"index": i, "text": r.text, "logprobs": completion_logprobs(tuple(r.logprobs), 0),
             "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ]  # fmt: skip
        completion_tokens = sum(len(r.token_ids) for r in results)
        return envelope("text_completion", id_, answered_as, choices, usage=usage(prompt_tokens, completion_tokens))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        if not getattr(tokenizer, "chat_template", None):
            raise ApiError("This tokenizer has no chat template; use `/v1/completions` with a plain prompt.")
        profile, answered_as = select_profile(body)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        check_request(body, 1)
        ids = await anyio.to_thread.run_sync(_chat_prompt, tokenizer, body.template_messages())
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        limit = token_limit(body.max_completion_tokens or body.max_tokens, len(ids), param)
        sequences = [
            SequenceRequest(tuple(ids), profile, sampling(body, limit, logprobs, choice)) for choice in range(body.n)
        ]
        id_ = response_id("chatcmpl")
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                extra = {"usage": None} if include_usage else {}
                tokens = 0

                def chunk(index: int, delta: dict, finish: str | None = None, lp=None) -> str:
                    choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish}
                    return sse(envelope("chat.completion.chunk", id_, answered_as, [choice], **extra))

                for index in range(len(sequences)):
                    yield chunk(index, {"role": "assistant", "content": ""})
                async for update in updates(sequences, request):
                    if update.finish_reason == "error":
                        yield sse(error_body(f"Generation failed: {update.error}", "server_error"))
                        return
                    tokens += len(update.token_ids)
                    lp = {"content": chat_logprobs(update.logprobs)} if logprobs is not None else None
                    if update.text or update.logprobs:
                        yield chunk(update.index, {"content": update.text}, lp=lp)
                    if update.finish_reason is not None:
                        yield chunk(update.index, {}, update.finish_reason)
                if include_usage:
                    yield sse(envelope("chat.completion.chunk", id_, answered_as, [], usage=usage(len(ids), tokens)))
                yield sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")
        results = await run_all(sequences, request)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": r.text},
             "logprobs": {"content": chat_logprobs(tuple(r.logprobs))} if logprobs is not None else None,
             "finish_reason": r.finish_reason}
            for i, r in enumerate(results)
        ]  # fmt: skip
        completion_tokens = sum(len(r.token_ids) for r in results)
        return envelope("chat.completion", id_, answered_as, choices, usage=usage(len(ids), completion_tokens))

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        with users_lock:
            ids = list(known_users)
        return {"object": "list", "data": [model_card(name)] + [model_card(u) for u in ids]}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != name and known(model_id) is None:
            raise ApiError(f"The model `{model_id}` does not exist.", "model", status=404, code="model_not_found")
        return model_card(model_id)

    def model_card(model_id: str) -> dict[str, Any]:
        base = model_id == name
        return {
            "id": model_id, "object": "model", "created": started, "owned_by": "hyperpeft",
            "root": base_path if base else name, "parent": None if base else name,
        }  # fmt: skip

    @app.get("/v1/users")
    async def list_users() -> dict[str, Any]:
        with users_lock:
            entries = [{"user_id": u, "profile_sha256": profile_key(p)} for u, p in known_users.items()]
        return {"object": "list", "data": entries}

    @app.get("/v1/users/{user_id}")
    async def get_user(user_id: str) -> dict[str, Any]:
        profile = known(user_id)
        if profile is None:
            raise ApiError(f"Unknown user {user_id!r}.", "user_id", status=404, code="user_not_found")
        return {"user_id": user_id, "profile": profile, "profile_sha256": profile_key(profile)}

    @app.put("/v1/users/{user_id}")
    async def put_user(user_id: str, body: UserBody) -> dict[str, Any]:
        try:
            check_user_id(user_id)
        except (TypeError, ValueError) as error:
            raise ApiError(str(error), "user_id") from None
        try:
            check_profile_text(body.profile, "profile", max_profile_chars)
        except (TypeError, ValueError) as error:
            raise ApiError(str(error), "profile") from None
        if user_id == name:
            raise ApiError(f"{user_id!r} is the base model's name; choose another user id.", "user_id")
        with users_lock:
            if user_id not in known_users and len(known_users) >= max_users:
                raise ApiError(f"This server holds at most {max_users} users; remove some first.", "user_id")
            known_users[user_id] = body.profile
        return {"user_id": user_id, "profile_sha256": profile_key(body.profile)}

    @app.delete("/v1/users/{user_id}")
    async def delete_user(user_id: str) -> dict[str, Any]:
        with users_lock:
            if known_users.pop(user_id, None) is None:
                raise ApiError(f"Unknown user {user_id!r}.", "user_id", status=404, code="user_not_found")
        return {"user_id": user_id, "object": "user", "deleted": True}

    @app.get("/health")
    async def health():
        if app.state.not_ready:
            return JSONResponse({"status": "not ready", "reason": app.state.not_ready}, status_code=503)
        cache = model.adapter_cache
        with users_lock:
            count = len(known_users)
        steps = engine.stats.rows_per_step
        return {
            "status": "ok",
            "model": name,
            "users": count,
            "steps": engine.stats.steps,
            "prefills": engine.stats.prefills,
            "largest_batch": max(steps, default=0),
            "adapter_cache": None if cache is None else vars(cache.stats),
        }

    return app


def warm_up(model) -> None:
    """Load the profile encoder and run the hypernetwork once, so that the first request finds both ready."""
    with torch.inference_mode(), model.without_adapter_cache():
        model.base_model.generate_lora("a warm-up profile")


class _BodyLimit:
    """ASGI middleware: a request body over `max_bytes` (announced or streamed) is answered with a 413."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise StarletteHTTPException(413, f"the request body is larger than {self.max_bytes} bytes")
            return message

        await self.app(scope, counted_receive, send)

    async def _refuse(self, scope, receive, send) -> None:
        message = f"The request body is larger than this server's limit of {self.max_bytes} bytes."
        await ApiError(message, status=413, code="request_too_large").response()(scope, receive, send)


def _sampling_defaults(model) -> dict[str, float]:
    """OpenAI's defaults (temperature 1, top_p 1), or the model's generation config where it sets them (as vLLM)."""
    config = model.get_base_model().generation_config
    diff = config.to_diff_dict() if config is not None else {}
    return {"temperature": float(diff.get("temperature", 1.0)), "top_p": float(diff.get("top_p", 1.0))}


def _tokenize_prompts(tokenizer, prompt) -> list[list[int]]:
    """`prompt` as token-id lists: a string, a list of strings, token ids or a list of token-id lists."""
    if isinstance(prompt, str):
        return [tokenizer(prompt)["input_ids"]]
    if prompt and all(isinstance(p, str) for p in prompt):
        return [tokenizer(p)["input_ids"] for p in prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    else:
        prompts = list(prompt)
    vocabulary = len(tokenizer)
    for ids in prompts:
        bad = [t for t in ids if not 0 <= t < vocabulary]
        if bad:
            raise ApiError(f"`prompt` holds token ids outside 0..{vocabulary - 1}: {bad[:5]}.", "prompt")
    if not prompts:
        raise ApiError("`prompt` is an empty list; send some text.", "prompt")
    return prompts


def _chat_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # jinja raises its own errors for messages the template refuses
        raise ApiError(f"The chat template refused these `messages`: {error}", "messages") from None
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@contextmanager
def serve_in_background(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a thread (port 0: a free port); yields the base URL and stops the server after."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hyperpeft-uvicorn", daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - start > timeout:
            sock.close()
            raise RuntimeError(f"The server did not start on {host}:{port} within {timeout} s.")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hyperpeft serve", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--model", required=True, help="hyperpeft checkpoint folder or Hub repo (from `save_pretrained`)")
    add("--base-model", default=None, help="base model name or folder (default: the one named in the checkpoint)")
    add("--tokenizer", default=None, help="tokenizer name or folder (default: the base model's)")
    add("--users", default=None, help='JSONL file of {"user_id": ..., "profile": ...} lines known from the start')
    add("--served-model-name", default=None, help="the base model's name in /v1/models (default: its folder name)")
    add("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    add("--port", type=int, default=8000, help="port to listen on")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs")
    add("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="base model dtype (default float32)")
    add("--max-batch-size", type=int, default=32, help="most sequences decoding at once")
    add("--batch-window-ms", type=float, default=5.0, help="how long an idle server waits to batch the first requests")
    add("--max-tokens-limit", type=int, default=512, help="the largest max_tokens a request may ask for")
    add("--adapter-cache-mb", type=float, default=1024, help="adapter cache size in MiB (0 turns it off)")
    add("--max-request-bytes", type=int, default=4 * 2**20, help="larger request bodies get a 413")
    add("--max-profile-chars", type=int, default=MAX_PROFILE_CHARS, help="longer profile texts get a 400")
    add("--max-users", type=int, default=100_000, help="the most users the server holds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn

    from ..embedded import load_base_model, load_tokenizer
    from ..peft_model import HyperPeftModel

    try:
        users = read_user_profiles(args.users) if args.users else {}
    except ValueError as error:
        raise SystemExit(f"hyperpeft serve: {error}") from None
    dtype = getattr(torch, args.dtype) if args.dtype else torch.float32
    if args.base_model:
        model = HyperPeftModel.from_pretrained(load_base_model(args.base_model, dtype=dtype), args.model)
    else:
        model = HyperPeftModel.from_pretrained(args.model, dtype=dtype)
    model.to(args.device).eval()
    if args.adapter_cache_mb > 0:
        model.enable_adapter_cache(max_bytes=int(args.adapter_cache_mb * 2**20))
    tokenizer = load_tokenizer(args.tokenizer or args.base_model or model.hyper_config.base_model_name_or_path)
    try:  # before listening: a server that cannot make adapters should not start
        warm_up(model)
    except Exception as error:
        raise SystemExit(
            f"hyperpeft serve: the model cannot make adapters ({type(error).__name__}: {error})."
        ) from None
    app = create_app(
        model,
        tokenizer,
        users=users,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_tokens_limit=args.max_tokens_limit,
        model_name=args.served_model_name,
        max_request_bytes=args.max_request_bytes,
        max_profile_chars=args.max_profile_chars,
        max_users=args.max_users,
    )
    print(f"hyperpeft serve: {len(users)} users known; listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
