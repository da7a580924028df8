"""hyperpeft: Profile-to-PEFT. A hypernetwork writes a personal LoRA adapter for every user in one forward pass."""

__version__ = "0.1.0.dev0"

from .config import HyperLoraConfig  # noqa: E402
from .embedded import EMBEDDED_BASE_MODEL, EMBEDDED_PROFILE_ENCODER, load_base_model, load_tokenizer  # noqa: E402
from .encoder import ProfileEncoder  # noqa: E402
from .hypernetwork import HyperNetwork, TargetLayout  # noqa: E402
from .layer import HyperLoraLinear  # noqa: E402
from .model import HyperPeftModel  # noqa: E402
from .registry import register_with_peft  # noqa: E402
from .tuner import HyperLoraModel  # noqa: E402

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
