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


def register_with_peft(config_cls: type, tuner_cls: type, model_cls: type) -> None:
    """
    Register hyperpeft in PEFT (idempotent): the config and tuner classes in PEFT's method mappings, and the causal-LM
    wrapper so that `get_peft_model`, `PeftModel.from_pretrained` and `AutoPeftModelForCausalLM.from_pretrained` give
    a `model_cls` (`HyperPeftModel`) for a hyperpeft config, and PEFT's own `PeftModelForCausalLM` for any other.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if (
        PEFT_TYPE_TO_CONFIG_MAPPING.get(HYPER_LORA) is not config_cls
        or PEFT_TYPE_TO_TUNER_MAPPING.get(HYPER_LORA) is not tuner_cls
    ):
        try:
            from peft.utils import register_peft_method

            register_peft_method(name=PEFT_METHOD_NAME, config_cls=config_cls, model_cls=tuner_cls, prefix=PREFIX)
        except Exception as error:
            raise _bridge_error("register the hyper_lora method", error) from error
    try:
        from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING

        current = MODEL_TYPE_TO_PEFT_MODEL_MAPPING["CAUSAL_LM"]
        if not getattr(current, "_hyperpeft_dispatch", False):
            MODEL_TYPE_TO_PEFT_MODEL_MAPPING["CAUSAL_LM"] = _causal_lm_dispatch(current, config_cls, model_cls)
    except Exception as error:
        raise _bridge_error("route hyperpeft configs to HyperPeftModel", error) from error


def _causal_lm_dispatch(peft_class: type, config_cls: type, model_cls: type) -> type:
    """PEFT's causal-LM wrapper class, except that constructing it with a hyperpeft config gives a `model_cls`."""

    class PeftModelForCausalLM(peft_class):  # PEFT's AutoPeftModel checks the class name
        _hyperpeft_dispatch = True

        def __new__(cls, model, peft_config, *args, **kwargs):
            # An object that is not an instance of `cls` is returned as it is: Python calls no `__init__` on it.
            if isinstance(peft_config, config_cls):
                return model_cls(model, peft_config, *args, **kwargs)
            return peft_class(model, peft_config, *args, **kwargs)

    PeftModelForCausalLM.__qualname__ = peft_class.__qualname__
    PeftModelForCausalLM.__module__ = peft_class.__module__
    return PeftModelForCausalLM
