"""hyperpeft: Profile-to-PEFT. A hypernetwork writes a personal LoRA adapter for every user in one forward pass."""

from ._version import __version__ as __version__
from .config import HyperLoraConfig
from .embedded import EMBEDDED_BASE_MODEL, EMBEDDED_PROFILE_ENCODER, load_base_model, load_tokenizer
from .encoder import ProfileEncoder
from .hypernetwork import HyperNetwork, TargetLayout
from .layer import HyperLoraLinear
from .model import HyperPeftModel
from .registry import register_with_peft
from .tuner import HyperLoraModel

register_with_peft(HyperLoraConfig, HyperLoraModel)

__all__ = [
    "EMBEDDED_BASE_MODEL",
    "EMBEDDED_PROFILE_ENCODER",
    "HyperLoraConfig",
    "HyperLoraLinear",
    "HyperLoraModel",
    "HyperNetwork",
    "HyperPeftModel",
    "ProfileEncoder",
    "TargetLayout",
    "load_base_model",
    "load_tokenizer",
]
