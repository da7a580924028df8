"""`ContinuousBatcher`: one decoding loop for many users, which sequences join and leave at every step.

Every sequence in the running batch wears its own user's generated LoRA (per-row LoRA), keeps its own decoding
settings (`SamplingParams`: token limit, stop strings, temperature, top-p, seed, log-probabilities) and leaves the
batch the step it finishes. New sequences are prefilled together between two decoding steps and join the batch then:
their key/value cache is left-padded to the batch's length (or the batch's to theirs) and concatenated, so a request
that arrives while others decode waits for at most one step and one prefill, not for the whole batch to finish.
"""

from __future__ import annotations

import inspect
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer
from transformers.utils import logging

from .._validation import check_int
from .detokenizer import IncrementalDetokenizer
from .sampling import SamplingParams, TokenLogprob, next_tokens

logger = logging.get_logger(__name__)

Lora = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SequenceRequest:
    """One sequence to generate: its prompt's token ids, its user's profile (`None`: the base model) and settings."""

    prompt_ids: tuple[int, ...]
    profile: str | None
    params: SamplingParams


@dataclass(frozen=True)
class SequenceUpdate:
    """
    What one step added to sequence `index` of a generation: new text (held back while it could begin a stop string),
    the new token ids and their log-probabilities, and, on its last update, why it ended: `"stop"` (end of sequence
    or a stop string), `"length"` (`max_tokens` reached), `"abort"` (cancelled) or `"error"` (with `error`).
    """

    index: int
    text: str = ""
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None
    error: str | None = None


class Generation:
    """A submitted request's sequences; `cancel()` drops them from the batch at the next step (a client left)."""

    def __init__(self, sequences: list[SequenceRequest], on_update: Callable[[SequenceUpdate], None]) -> None:
        self.sequences = sequences
        self.on_update = on_update
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@dataclass
class _Row:
    generation: Generation
    index: int
    request: SequenceRequest
    detokenizer: IncrementalDetokenizer
    generator: torch.Generator | None
    last_token: int = -1
    generated: int = 0
    finished: bool = False


@dataclass
class EngineStats:
    """Counters since start: decoding steps, prefills, and the rows of every decoding step."""

    steps: int = 0
    prefills: int = 0
    sequences: int = 0
    rows_per_step: list[int] = field(default_factory=list)


class ContinuousBatcher:
    """
    Runs every submitted sequence in one continuously batched decoding loop on a worker thread.

    Args:
        model ([`HyperPeftModel`]): the model (put in eval mode here).
        tokenizer: its tokenizer (for the end-of-sequence token and incremental decoding).
        max_batch_size (`int`, defaults to 32): the most sequences decoding at once; more wait for a free row.
        batch_window_ms (`float`, defaults to 5): how long an idle loop waits after a first request for others to
            prefill together with it.

    Example:

    ```python
    >>> batcher = ContinuousBatcher(model, tokenizer)
    >>> batcher.start()
    >>> results = batcher.generate([SequenceRequest((5, 6, 7), "likes jazz", SamplingParams(max_tokens=8))])
    >>> results[0].finish_reason
    'length'
    ```
    """

    def __init__(self, model, tokenizer, max_batch_size: int = 32, batch_window_ms: float = 5.0) -> None:
        check_int("max_batch_size", max_batch_size)
        if not isinstance(batch_window_ms, (int, float)) or batch_window_ms < 0:
            raise ValueError(f"`batch_window_ms` should be a number >= 0, not {batch_window_ms!r}.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1000
        self.stats = EngineStats()
        self._tuner = model.base_model
        self._base = model.get_base_model()
        self._device = next(model.parameters()).device
        self._dtype = next(self._base.parameters()).dtype
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self._eos = set(eos) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
        self._cache_argument = "cache" if "cache" in inspect.signature(self._base.forward).parameters else None
        probe = DynamicCache(config=self._base.config)
        if any(type(layer) is not DynamicLayer for layer in probe.layers):
            raise ValueError(
                f"{type(self._base).__name__} uses sliding-window or other special cache layers; hyperpeft's server "
                "batches full-attention models (Llama, Qwen2, Mistral without sliding windows)."
            )
        self._waiting: deque[Generation] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # the running batch: rows, their key/value cache, attention mask and LoRA weights, all in the same row order
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None
        self._lora: Lora | None = None

    @property
    def running(self) -> int:
        """How many sequences are in the decoding batch now."""
        return len(self._rows)

    # ---- submitting ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="hyperpeft-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            with self._condition:
                self._stopping = True
                self._condition.notify()
            self._thread.join()
            self._thread = None

    def submit(self, sequences: list[SequenceRequest], on_update: Callable[[SequenceUpdate], None]) -> Generation:
        """
        Queue a request's sequences; `on_update` is called on the worker thread with every `SequenceUpdate`, each
        sequence's last one carrying its `finish_reason`. Returns the [`Generation`], whose `cancel()` drops it.
        """
        if not 1 <= len(sequences) <= self.max_batch_size:
            raise ValueError(
                f"A request may hold 1 to {self.max_batch_size} sequences (prompts x `n`), not {len(sequences)}."
            )
        generation = Generation(sequences, on_update)
        with self._condition:
            self._waiting.append(generation)
            self._condition.notify()
        return generation

    def generate(self, sequences: list[SequenceRequest], timeout: float | None = None) -> list[SequenceResult]:
        """Submit `sequences` and wait for all of them (the loop must be running); one result per sequence."""
        results = [SequenceResult() for _ in sequences]
        done = threading.Semaphore(0)

        def collect(update: SequenceUpdate) -> None:
            results[update.index].add(update)
            if update.finish_reason is not None:
                done.release()

        self.submit(sequences, collect)
        for _ in sequences:
            if not done.acquire(timeout=timeout):
                raise TimeoutError(f"The sequences did not finish within {timeout} s.")
        return results

    # ---- the loop ------------------------------------------------------------------------------------------------

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                new = self._take_waiting()
                if new is None:
                    return
                try:
                    if new:
                        self._prefill(new)
                    if self._rows:
                        self._step()
                except Exception as error:  # the batch's tensors are in an unknown state: answer its rows, start over
                    logger.exception("hyperpeft: a decoding step failed for %d sequences", len(self._rows) + len(new))
                    for row in self._rows + new:
                        self._finish(row, "error", error=f"{type(error).__name__}: {error}")
                    self._rows, self._cache, self._mask, self._lora = [], None, None, None

    def _take_waiting(self) -> list[_Row] | None:
        """The rows that join at this step boundary (blocking while nothing runs); `None` when stopping."""
        with self._condition:
            while not self._rows and not self._waiting and not self._stopping:
                self._condition.wait()
            if self._stopping:
                return None
            if not self._rows and self.batch_window_s:  # idle: give requests sent together a moment to arrive
                deadline = time.monotonic() + self.batch_window_s
                while len(self._waiting) < self.max_batch_size and (left := deadline - time.monotonic()) > 0:
                    self._condition.wait(left)
            new: list[_Row] = []
            free = self.max_batch_size - len(self._rows)
            while self._waiting and len(self._waiting[0].sequences) <= free - len(new):
                generation = self._waiting.popleft()
                if generation.cancelled:
                    continue
                for index, request in enumerate(generation.sequences):
                    detokenizer = IncrementalDetokenizer(self.tokenizer, request.params.stop)
                    new.append(_Row(generation, index, request, detokenizer, request.params.generator()))
            return new

    def _prefill(self, rows: list[_Row]) -> None:
        """Run the new rows' prompts (with their own adapters), choose their first tokens and add them to the batch."""
        try:
            lora = self._lora_for([row.request.profile for row in rows])
        except Exception:  # find the rows whose adapter fails: they get the error, their neighbours go on
            rows = [row for row in rows if self._lora_or_fail(row)]
            if not rows:
                return
            lora = self._lora_for([row.request.profile for row in rows])
        self.stats.prefills += 1
        self.stats.sequences += len(rows)
        width = max(len(row.request.prompt_ids) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = [[pad] * (width - len(r.request.prompt_ids)) + list(r.request.prompt_ids) for r in rows]
        mask = [[0] * (width - len(r.request.prompt_ids)) + [1] * len(r.request.prompt_ids) for r in rows]
        input_ids = torch.tensor(ids, device=self._device)
        attention_mask = torch.tensor(mask, device=self._device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self._base.config)
        logits = self._forward(input_ids, attention_mask, position_ids, cache, lora)
        self._join(rows, cache, attention_mask, lora)
        self._advance(logits, first=len(self._rows) - len(rows))

    def _step(self) -> None:
        """One decoding step for every row of the batch."""
        self.stats.steps += 1
        self.stats.rows_per_step.append(len(self._rows))
        input_ids = torch.tensor([[row.last_token] for row in self._rows], device=self._device)
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self._rows), 1)], dim=1)
        position_ids = self._mask.sum(-1, keepdim=True) - 1
        logits = self._forward(input_ids, self._mask, position_ids, self._cache, self._lora)
        self._advance(logits, first=0)

    def _forward(self, input_ids, attention_mask, position_ids, cache, lora) -> torch.Tensor:
        cache_kwargs = {self._cache_argument: cache} if self._cache_argument else {"past_key_values": cache}
        with self._tuner.use_lora(lora):
            output = self._base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1, **cache_kwargs,
            )  # fmt: skip
        return output.logits[:, -1]

    def _advance(self, logits: torch.Tensor, first: int) -> None:
        """Choose the next token of rows `first:` from `logits`, tell their clients, and drop the rows that ended."""
        rows = self._rows[first:]
        params = [row.request.params for row in rows]
        tokens, logprobs = next_tokens(logits, params, [row.generator for row in rows])
        for row, token, logprob in zip(rows, tokens, logprobs):
            if row.generation.cancelled:
                self._finish(row, "abort")
            elif token in self._eos:
                self._finish(row, "stop", text=row.detokenizer.finish())
            else:
                row.last_token, row.generated = token, row.generated + 1
                text = row.detokenizer.push(token)
                update = dict(token_ids=(token,), logprobs=(logprob,) if logprob is not None else ())
                if row.detokenizer.stopped:
                    self._finish(row, "stop", text=text, **update)
                elif row.generated >= row.request.params.max_tokens:
                    self._finish(row, "length", text=text + row.detokenizer.finish(), **update)
                else:
                    self._tell(row, SequenceUpdate(row.index, text, **update))
        self._keep([i for i, row in enumerate(self._rows) if not row.finished])

    # ---- the batch's tensors ---------------------------------------------------------------------------------------

    def _lora_or_fail(self, row: _Row) -> bool:
        """Whether the row's adapter can be made; a row whose profile fails gets its error alone."""
        try:
            self._lora_for([row.request.profile])
            return True
        except Exception as error:
            logger.warning("hyperpeft: the adapter of one sequence failed: %s", error)
            self._finish(row, "error", error=f"{type(error).__name__}: {error}")
            return False

    def _lora_for(self, profiles: list[str | None]) -> Lora:
        """LoRA weights for these rows, in the base model's dtype: generated for profiles, all-zero for `None`."""
        texts = [p for p in profiles if p is not None]
        parts = [self._tuner.generate_lora(texts)] if texts else []
        if len(texts) < len(profiles):
            parts.append(self._tuner.zero_lora(1))
        counter = itertools.count()
        index = torch.tensor([next(counter) if p is not None else len(texts) for p in profiles])
        return {
            m: tuple(torch.cat([part[m][k] for part in parts]).index_select(0, index.to(parts[0][m][k].device))
                     .to(self._dtype) for k in (0, 1))
            for m in parts[0]
        }  # fmt: skip

    def _join(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor, lora: Lora) -> None:
        """Append prefilled rows to the batch, left-padding whichever cache is shorter."""
        if not self._rows:
            self._rows, self._cache, self._mask, self._lora = rows, cache, mask, lora
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for layer, new in zip(self._cache.layers, cache.layers):
            layer.keys = torch.cat([_pad_left(layer.keys, width), _pad_left(new.keys, width)])
            layer.values = torch.cat([_pad_left(layer.values, width), _pad_left(new.values, width)])
        self._mask = torch.cat([_pad_left(self._mask, width, dim=1), _pad_left(mask, width, dim=1)])
        self._lora = {m: (torch.cat([a, lora[m][0]]), torch.cat([b, lora[m][1]])) for m, (a, b) in self._lora.items()}
        self._rows = self._rows + rows

    def _keep(self, keep: list[int]) -> None:
        """Keep only rows `keep` of the batch, and drop cache columns that are padding in every remaining row."""
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._lora = [], None, None, None
            return
        index = torch.tensor(keep, device=self._device)
        self._rows = [self._rows[i] for i in keep]
        self._mask = self._mask.index_select(0, index)
        self._lora = {m: (a.index_select(0, index), b.index_select(0, index)) for m, (a, b) in self._lora.items()}
        start = int(self._mask.any(0).nonzero()[0])  # leading columns no remaining row attends to
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]

    # ---- telling the client --------------------------------------------------------------------------------------

    def _finish(self, row: _Row, reason: str, text: str = "", error: str | None = None, **update) -> None:
        row.finished = True
        self._tell(row, SequenceUpdate(row.index, text, finish_reason=reason, error=error, **update))

    def _tell(self, row: _Row, update: SequenceUpdate) -> None:
        try:
            row.generation.on_update(update)
        except Exception:  # a client that cannot be told any more (its connection is gone): stop its sequences
            logger.warning("hyperpeft: could not deliver an update; cancelling that request", exc_info=True)
            row.generation.cancel()


def _pad_left(tensor: torch.Tensor, width: int, dim: int = -2) -> torch.Tensor:
    """Zero-pad `tensor` at the start of `dim` (the sequence axis of a cache or mask) to `width`."""
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 1 - (dim % tensor.dim())) + [missing, 0]
    return functional.pad(tensor, pad)


@dataclass
class SequenceResult:
    """A whole sequence, gathered from its updates (see `ContinuousBatcher.generate`)."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None

    def add(self, update: SequenceUpdate) -> None:
        self.text += update.text
        self.token_ids += update.token_ids
        self.logprobs += update.logprobs
        if update.finish_reason is not None:
            self.finish_reason, self.error = update.finish_reason, update.error
