"""`hyperpeft serve`: an OpenAI-style HTTP server that batches requests from many users into one `generate`.

    hyperpeft serve --model CHECKPOINT [--users users.jsonl] [--host 127.0.0.1] [--port 8000]

Every request names its user (`profile` text, or a `user_id` whose profile the server holds). A worker thread takes
the requests that arrive within `batch_window_ms` (at most `max_batch_size`), left-pads their prompts and runs ONE
greedy `generate` in which every row wears its own user's generated LoRA; each answer is the one that user would get
alone. Endpoints: `POST /v1/completions`, `POST /v1/chat/completions`, `PUT /v1/users/{user_id}`, `GET /health`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from transformers import GenerationConfig
from transformers.utils import logging

from .adapter_cache import profile_key
from .users import check_profile_text, check_user_id, read_user_profiles

logger = logging.get_logger(__name__)

DEFAULT_MAX_TOKENS = 16


@dataclass
class _Job:
    input_ids: list[int]
    profile: str
    max_tokens: int
    future: concurrent.futures.Future


@dataclass
class Completion:
    """What one request gets back: the new tokens (cut at the first end-of-sequence token) and why they ended."""

    token_ids: list[int]
    finish_reason: str  # "stop" (end of sequence) or "length" (max_tokens reached)


class DynamicBatcher:
    """
    Queues requests from any thread and answers them from one worker thread, in batches of different users.

    The worker waits for a first request, then collects more for up to `batch_window_ms` (at most `max_batch_size`),
    and runs one greedy `model.generate` for all of them with one profile per row, generating as many tokens as the
    longest request asks for (greedy decoding is causal, so a shorter request's tokens are a prefix of that).

    Args:
        model ([`HyperPeftModel`]): the model; it should be in eval mode.
        tokenizer: its tokenizer (its pad and end-of-sequence tokens are used).
        max_batch_size (`int`, defaults to 32): the most requests in one `generate`.
        batch_window_ms (`float`, defaults to 5): how long to wait for more requests after the first one.
    """

    def __init__(self, model, tokenizer, max_batch_size: int = 32, batch_window_ms: float = 5.0) -> None:
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size <= 0:
            raise ValueError(f"`max_batch_size` should be a positive integer, not {max_batch_size!r}.")
        if not isinstance(batch_window_ms, (int, float)) or batch_window_ms < 0:
            raise ValueError(f"`batch_window_ms` should be a number >= 0, not {batch_window_ms!r}.")
        self.model = model
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1000
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError(
                "The tokenizer has neither a pad nor an end-of-sequence token; set `tokenizer.pad_token`."
            )
        self.device = next(model.parameters()).device
        self.batch_sizes: list[int] = []  # rows of every batch run so far
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="hyperpeft-batcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, input_ids: list[int], profile: str, max_tokens: int) -> concurrent.futures.Future:
        """Queue one request; the future resolves to a [`Completion`]."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put(_Job(list(input_ids), profile, max_tokens, future))
        return future

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, stopping = [job], False
            deadline = time.monotonic() + self.batch_window_s
            while len(jobs) < self.max_batch_size:
                try:
                    job = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._run_batch(jobs)
            if stopping:
                return

    def _run_batch(self, jobs: list[_Job]) -> None:
        try:
            completions = self.generate(
                [j.input_ids for j in jobs], [j.profile for j in jobs], [j.max_tokens for j in jobs]
            )
        except Exception as error:  # answer every waiting request rather than leaving it hanging
            logger.exception("generation failed for a batch of %d requests", len(jobs))
            for job in jobs:
                job.future.set_exception(error)
            return
        self.batch_sizes.append(len(jobs))
        for job, completion in zip(jobs, completions):
            job.future.set_result(completion)

    def generate(self, prompts: list[list[int]], profiles: list[str], max_tokens: list[int]) -> list[Completion]:
        """One greedy `generate` for all rows: prompts left-padded, one profile per row."""
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        config = GenerationConfig(
            max_new_tokens=max(max_tokens),
            do_sample=False,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
        )
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, profile=profiles, generation_config=config
            )
        completions = []
        for row, limit in zip(output[:, width:].tolist(), max_tokens):
            row = row[:limit]
            if self.eos_token_id is not None and self.eos_token_id in row:
                completions.append(Completion(row[: row.index(self.eos_token_id)], "stop"))
            else:
                completions.append(Completion(row, "length"))
        return completions


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields this server ignores (`n`, `user`...)

    model: StrictStr | None = None
    max_tokens: StrictInt = DEFAULT_MAX_TOKENS
    temperature: float | None = None
    profile: StrictStr | None = None
    user_id: StrictStr | None = None


class CompletionBody(_Body):
    prompt: StrictStr


class ChatMessage(BaseModel):
    role: StrictStr
    content: StrictStr


class ChatBody(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


class UserBody(BaseModel):
    profile: StrictStr


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def create_app(
    model,
    tokenizer,
    users: dict[str, str] | None = None,
    max_batch_size: int = 32,
    batch_window_ms: float = 5.0,
    max_tokens_limit: int = 512,
    model_name: str | None = None,
):
    """
    Build the FastAPI app around an already loaded model and tokenizer (the batcher starts with the app).

    Args:
        model ([`HyperPeftModel`]): the model to serve (put in eval mode here).
        tokenizer: its tokenizer; `/v1/chat/completions` needs a chat template.
        users (`dict[str, str]`, *optional*): user id -> profile text known from the start.
        max_batch_size (`int`), batch_window_ms (`float`): see [`DynamicBatcher`].
        max_tokens_limit (`int`, defaults to 512): the largest `max_tokens` a request may ask for.
        model_name (`str`, *optional*): the name reported in responses (default: the base model's name).

    Example:

    ```python
    >>> from hyperpeft.serving.server import create_app, serve_in_background
    >>> app = create_app(model, tokenizer, users={"u1": "likes short answers"})
    >>> with serve_in_background(app) as url:  # http://127.0.0.1:<free port>
    ...     httpx.post(f"{url}/v1/completions", json={"prompt": "Hi", "user_id": "u1", "max_tokens": 8}).json()
    ```
    """
    model.eval()
    name = model_name or str(model.hyper_config.base_model_name_or_path or "hyperpeft")
    max_positions = getattr(model.base_model.model.config, "max_position_embeddings", None)
    known_users: dict[str, str] = {}
    for user_id, profile in (users or {}).items():
        known_users[check_user_id(user_id)] = check_profile_text(profile, f"the profile of {user_id!r}")
    users_lock = threading.Lock()
    batcher = DynamicBatcher(model, tokenizer, max_batch_size=max_batch_size, batch_window_ms=batch_window_ms)

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="hyperpeft", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.users = known_users

    @app.exception_handler(_BadRequest)
    async def bad_request(request: Request, error: _BadRequest):
        body = {"error": {"message": error.message, "type": "invalid_request_error", "param": error.param}}
        return JSONResponse(body, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"`{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}`: {e['msg']}" for e in error.errors()
        )
        message = f"Invalid request: {problems}."
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None}}, 400)

    def resolve_profile(body: _Body) -> str:
        if (body.profile is None) == (body.user_id is None):
            raise _BadRequest("Pass exactly one of `profile` (the user's profile text) or `user_id`.", "profile")
        if body.profile is not None:
            try:
                return check_profile_text(body.profile)
            except ValueError as error:
                raise _BadRequest(str(error), "profile") from None
        with users_lock:
            profile = known_users.get(body.user_id)
        if profile is None:
            raise _BadRequest(
                f"Unknown `user_id` {body.user_id!r}; register it with `PUT /v1/users/{{user_id}}` or pass `profile`.",
                "user_id",
                status=404,
            )
        return profile

    def check_sampling(body: _Body, prompt_tokens: int) -> None:
        if body.temperature not in (None, 0, 0.0):
            raise _BadRequest(
                f"`temperature` {body.temperature!r} is not supported: this server decodes greedily; pass 0 or leave "
                "it out.",
                "temperature",
            )
        if not 1 <= body.max_tokens <= max_tokens_limit:
            raise _BadRequest(
                f"`max_tokens` should be between 1 and {max_tokens_limit}, not {body.max_tokens}.", "max_tokens"
            )
        if prompt_tokens == 0:
            raise _BadRequest("The prompt is empty after tokenization; send some text.", "prompt")
        if max_positions and prompt_tokens + body.max_tokens > max_positions:
            raise _BadRequest(
                f"The prompt has {prompt_tokens} tokens; with `max_tokens` {body.max_tokens} that exceeds the model's "
                f"{max_positions} positions. Shorten the prompt or lower `max_tokens`.",
                "max_tokens",
            )

    async def complete(body: _Body, input_ids: list[int]) -> tuple[Completion, dict[str, int]]:
        profile = resolve_profile(body)
        check_sampling(body, len(input_ids))
        completion = await asyncio.wrap_future(batcher.submit(input_ids, profile, body.max_tokens))
        usage = {
            "prompt_tokens": len(input_ids),
            "completion_tokens": len(completion.token_ids),
            "total_tokens": len(input_ids) + len(completion.token_ids),
        }
        return completion, usage

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> dict[str, Any]:
        input_ids = tokenizer(body.prompt, add_special_tokens=False)["input_ids"]
        completion, usage = await complete(body, input_ids)
        text = tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": completion.finish_reason}
        return _response("cmpl", "text_completion", name, choice, usage)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody) -> dict[str, Any]:
        if not getattr(tokenizer, "chat_template", None):
            raise _BadRequest("This tokenizer has no chat template; use `/v1/completions` with a plain prompt.")
        messages = [m.model_dump() for m in body.messages]
        try:
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as error:  # jinja raises its own errors for messages the template refuses
            raise _BadRequest(f"The chat template refused these `messages`: {error}", "messages") from None
        input_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion, usage = await complete(body, input_ids)
        text = tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": completion.finish_reason}
        return _response("chatcmpl", "chat.completion", name, choice, usage)

    @app.put("/v1/users/{user_id}")
    async def put_user(user_id: str, body: UserBody) -> dict[str, Any]:
        try:
            check_user_id(user_id)
            check_profile_text(body.profile)
        except (TypeError, ValueError) as error:
            raise _BadRequest(str(error), "user_id" if "user_id" in str(error) else "profile") from None
        with users_lock:
            known_users[user_id] = body.profile
        return {"user_id": user_id, "profile_sha256": profile_key(body.profile)}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        cache = model.adapter_cache
        with users_lock:
            count = len(known_users)
        return {
            "status": "ok",
            "model": name,
            "users": count,
            "batches": len(batcher.batch_sizes),
            "largest_batch": max(batcher.batch_sizes, default=0),
            "adapter_cache": None if cache is None else vars(cache.stats),
        }

    return app


def _response(prefix: str, kind: str, model: str, choice: dict, usage: dict) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


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
    add("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    add("--port", type=int, default=8000)
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add("--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="base model dtype")
    add("--max-batch-size", type=int, default=32, help="most requests in one generate")
    add("--batch-window-ms", type=float, default=5.0, help="how long to wait for more requests after the first")
    add("--max-tokens-limit", type=int, default=512, help="the largest max_tokens a request may ask for")
    add("--adapter-cache-mb", type=float, default=1024, help="adapter cache size in MiB (0 turns it off)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn

    from ..embedded import load_base_model, load_tokenizer
    from ..model import HyperPeftModel

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
    app = create_app(
        model,
        tokenizer,
        users=users,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_tokens_limit=args.max_tokens_limit,
    )
    print(f"hyperpeft serve: {len(users)} users known; listening on http://{args.host}:{args.port}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
