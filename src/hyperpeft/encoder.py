"""`ProfileEncoder`: profile texts -> embeddings with a frozen sentence-transformers model, cached by text."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from transformers.utils import logging

from ._validation import check_text
from .embedded import EMBEDDED_PROFILE_ENCODER, resolve_encoder

logger = logging.get_logger(__name__)

# `profile_encoder="hidden-states:<causal LM>"`: a profile is the mean of the LM's last hidden states over its tokens
# (the paper's Table 4 embeds profiles with the base model itself). The LM is any name `load_base_model` takes.
HIDDEN_STATES_PREFIX = "hidden-states:"
# Profiles are a summary plus k history items: longer inputs are cut here, as a sentence encoder's window cuts them.
HIDDEN_STATES_MAX_TOKENS = 1024


def check_profile_texts(texts: object, name: str = "profile") -> list[str]:
    """Return `texts` as a list of non-empty strings, or raise a `TypeError`/`ValueError` that names the bad item."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"`{name}` should be a string or a list of strings, not {type(texts).__name__}.")
    if not texts:
        raise ValueError(f"`{name}` is an empty list; pass one profile text per batch row.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"`{name}[{i}]` should be a string but is {type(text).__name__}: {text!r}.")
        check_text(text, f"{name}[{i}]")
        if not text.strip():
            raise ValueError(f"`{name}[{i}]` is empty; every user needs a non-empty profile text.")
    return list(texts)


class HiddenStateEncoder:
    """
    A sentence-transformers style encoder made of a causal LM: a text's embedding is the mean of the LM's last hidden
    states over its tokens (padding left out). Written here rather than as a sentence-transformers model because
    sentence-transformers 6 wraps the text of a chat LM in its chat template.

    Args:
        base (`str`): the causal LM, as `load_base_model` takes it (Hub id, folder, or the embedded short name).
        device (`str`, *optional*): where it runs (default: the CPU).
    """

    def __init__(self, base: str, device: str | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer

        from .embedded import resolve_base_model

        if not base:
            raise ValueError(
                f"`profile_encoder` {HIDDEN_STATES_PREFIX!r} names no model; add one, e.g. "
                f"'{HIDDEN_STATES_PREFIX}smollm2-135m-instruct'."
            )
        path = resolve_base_model(base)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "right"  # the real tokens keep positions 0..n-1, as when encoded alone
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = torch.device(device or "cpu")
        self.max_seq_length = HIDDEN_STATES_MAX_TOKENS  # named as sentence-transformers names a model's window
        # the decoder without its LM head; float32, as the profile encoder is frozen and small next to the base
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval().to(self.device)

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False, **kwargs: Any):
        from tqdm.auto import tqdm

        # batches of like lengths pad less (the states of a text do not depend on its batch)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        means = []
        for start in tqdm(range(0, len(texts), batch_size), desc="hidden states", disable=not show_progress_bar):
            batch = self.tokenizer(
                [texts[i] for i in order[start : start + batch_size]], padding=True, truncation=True,
                max_length=self.max_seq_length, return_tensors="pt",
            ).to(self.device)  # fmt: skip
            states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].to(states.dtype)
            means.append((states * mask).sum(1) / mask.sum(1).clamp_min(1))
        if not means:
            return torch.empty(0, self.get_embedding_dimension())
        return torch.cat(means)[torch.argsort(torch.tensor(order))]


class ProfileEncoder:
    """
    Encodes profile texts with a sentence-transformers model, in batches, with an in-memory LRU cache keyed by text.

    The encoder is frozen: it is not an `nn.Module` of the wrapped model and is never saved in a checkpoint.

    An encoder reads a text only up to its window (`max_seq_length`: 256 tokens for all-MiniLM-L6-v2) and embeds
    that start; the first texts it cuts are named in a warning, as a summary plus k history items can be longer.

    Args:
        model_name_or_path (`str`, defaults to `"all-minilm-l6-v2"`): sentence-transformers name or local path, the
            embedded short name, or `"hidden-states:<causal LM>"` (e.g. `"hidden-states:smollm2-135m-instruct"`):
            the mean of that LM's last hidden states over the profile's tokens, as wide as its hidden size.
        instruction (`str`, *optional*): text put before every profile (for instruction-tuned encoders).
        batch_size (`int`, defaults to 64): texts per encoder call.
        device (`str`, *optional*): where the encoder runs; sentence-transformers picks one if unset.
        cache_size (`int`, defaults to 100000): number of distinct texts whose embedding is kept.
        model (*optional*): an already loaded model with a sentence-transformers style `encode` method.

    Example:

    ```python
    >>> from hyperpeft import ProfileEncoder
    >>> encoder = ProfileEncoder("all-minilm-l6-v2")
    >>> encoder.encode(["likes short answers", "writes in slang"]).shape
    torch.Size([2, 384])
    ```
    """

    def __init__(
        self,
        model_name_or_path: str = EMBEDDED_PROFILE_ENCODER,
        instruction: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        cache_size: int = 100_000,
        model: Any | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.instruction = instruction
        self.batch_size = batch_size
        self.device = device
        self.cache_size = cache_size
        self._model = model
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_cut = False

    @property
    def model(self) -> Any:
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            if self.model_name_or_path.startswith(HIDDEN_STATES_PREFIX):
                self._model = HiddenStateEncoder(self.model_name_or_path[len(HIDDEN_STATES_PREFIX) :], self.device)
            else:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(resolve_encoder(self.model_name_or_path), device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        """Width of the embeddings this encoder produces."""
        model = self.model
        # sentence-transformers 6 renamed the method; older releases only have the long name
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: str | Sequence[str], show_progress_bar: bool = False) -> torch.Tensor:
        """
        Args:
            texts (`str` or `list[str]`): non-empty profile texts.
            show_progress_bar (`bool`): show a progress bar while encoding texts that are not cached.

        Returns:
            `torch.Tensor` of shape `(len(texts), dim)`, float32, on the CPU.
        """
        texts = check_profile_texts(texts)
        unique = list(dict.fromkeys(texts))
        with self._lock:
            found = {t: self._cache[t] for t in unique if t in self._cache}
        missing = [t for t in unique if t not in found]
        if missing:
            found.update(zip(missing, self._encode(missing, show_progress_bar)))
        with self._lock:
            for text, embedding in found.items():
                self._cache[text] = embedding
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.stack([found[t] for t in texts])

    def _encode(self, texts: list[str], show_progress_bar: bool) -> torch.Tensor:
        inputs = [self.instruction + t for t in texts] if self.instruction else texts
        self._warn_if_cut(inputs)
        embeddings = self.model.encode(
            inputs, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=show_progress_bar
        )
        return torch.as_tensor(embeddings).detach().to("cpu", torch.float32)

    def _warn_if_cut(self, texts: list[str]) -> None:
        """Warn (once) when texts are longer than the encoder reads: their ends would not reach the hypernetwork."""
        tokenizer, window = getattr(self.model, "tokenizer", None), getattr(self.model, "max_seq_length", None)
        if self._warned_cut or tokenizer is None or not isinstance(window, int):
            return  # a model without a known window (e.g. a test double) cuts nothing we can see
        lengths = [len(ids) for ids in tokenizer(texts, verbose=False)["input_ids"]]  # verbose: no 512-token warning
        cut = [n for n in lengths if n > window]
        if cut:
            self._warned_cut = True
            logger.warning(
                "%d of %d texts are longer than the profile encoder %r reads (%d tokens; the longest has %d): "
                "it embeds only their start, so their later history items do not reach the hypernetwork. Shorten "
                "the profiles (a smaller `k` or `item_chars` for `ProfileBuilder`) or pick an encoder with a longer "
                "window ('%s<causal LM>' reads %d). Shown once per encoder.",
                len(cut), len(texts), self.model_name_or_path, window, max(cut), HIDDEN_STATES_PREFIX,
                HIDDEN_STATES_MAX_TOKENS,
            )  # fmt: skip
