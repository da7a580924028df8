"""The one bridge between hyperpeft and PEFT's closed method registry.

PEFT keeps its methods in the `PeftType` enum and refuses to register a name that is not in it, and the enum cannot be
extended through a public API. This module adds the `HYPER_LORA` member at import time and registers hyperpeft's config
and tuner classes, so that `get_peft_model`, `PeftConfig.from_pretrained`, `PeftModel.from_pretrained` and `unload`
work for hyperpeft checkpoints. It touches PEFT internals, so it lives here alone, is tested, and raises a clear error
that names the PEFT version if those internals change.
"""

from __future__ import annotations

import peft
from peft.utils import PeftType

PEFT_TYPE_NAME = "HYPER_LORA"
PEFT_METHOD_NAME = "hyper_lora"
PREFIX = "hyper_lora_"


def _bridge_error(step: str, error: Exception) -> RuntimeError:
    return RuntimeError(
        f"hyperpeft could not {step} with peft {peft.__version__} ({type(error).__name__}: {error}). This PEFT "
        "release changed the internals that hyperpeft's registry bridge relies on; install a PEFT version that "
        "hyperpeft supports (`pip install 'peft>=0.17,<0.22'`) or upgrade hyperpeft."
    )


def _add_peft_type_member() -> PeftType:
    """Add `PeftType.HYPER_LORA` to PEFT's enum (idempotent) and return it."""
    if PEFT_TYPE_NAME in PeftType.__members__:
        return PeftType[PEFT_TYPE_NAME]
    try:
        # Build the member the way `enum` does for a `str` mixin, then enter it in the lookup tables that
        # `PeftType[...]`, `PeftType(...)`, iteration and attribute access read.
        member = str.__new__(PeftType, PEFT_TYPE_NAME)
        member._name_ = PEFT_TYPE_NAME
        member._value_ = PEFT_TYPE_NAME
        member.__objclass__ = PeftType
        member.__init__(PEFT_TYPE_NAME)
        PeftType._member_map_[PEFT_TYPE_NAME] = member
        PeftType._value2member_map_[PEFT_TYPE_NAME] = member
        PeftType._member_names_.append(PEFT_TYPE_NAME)
        type.__setattr__(PeftType, PEFT_TYPE_NAME, member)
    except Exception as error:  # any change in enum or PEFT internals ends up here
        raise _bridge_error("add HYPER_LORA to `peft.PeftType`", error) from error
    if PeftType(PEFT_TYPE_NAME) is not member or member not in list(PeftType):
        raise _bridge_error("add HYPER_LORA to `peft.PeftType`", LookupError("the new member is not visible"))
    return member


HYPER_LORA: PeftType = _add_peft_type_member()


def register_with_peft(config_cls: type, tuner_cls: type) -> None:
    """Register hyperpeft's config and tuner classes in PEFT's mappings (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if (
        PEFT_TYPE_TO_CONFIG_MAPPING.get(HYPER_LORA) is config_cls
        and PEFT_TYPE_TO_TUNER_MAPPING.get(HYPER_LORA) is tuner_cls
    ):
        return
    try:
        from peft.utils import register_peft_method

        register_peft_method(name=PEFT_METHOD_NAME, config_cls=config_cls, model_cls=tuner_cls, prefix=PREFIX)
    except Exception as error:
        raise _bridge_error("register the hyper_lora method", error) from error
