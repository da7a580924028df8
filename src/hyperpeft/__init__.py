"""hyperpeft: Profile-to-PEFT. A hypernetwork writes a personal LoRA adapter for every user in one forward pass.

The names below are imported on first use, so that `import hyperpeft` (and the `hyperpeft` command) start at once.
hyperpeft registers itself with PEFT as soon as PEFT is imported, whichever is imported first, so that
`peft.get_peft_model`, `PeftModel.from_pretrained` and `AutoPeftModelForCausalLM` know hyperpeft checkpoints.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from ._version import __version__ as __version__

# public name -> the module that defines it
_EXPORTS = {
    "HyperLoraConfig": ".config",
    "EMBEDDED_BASE_MODEL": ".embedded",
    "EMBEDDED_PROFILE_ENCODER": ".embedded",
    "load_base_model": ".embedded",
    "load_tokenizer": ".embedded",
    "ProfileEncoder": ".encoder",
    "HyperNetwork": ".hypernetwork",
    "TargetLayout": ".hypernetwork",
    "HyperLoraLinear": ".layer",
    "HyperLoraModel": ".tuner",
    "HyperPeftModel": ".peft_model",
    "AdapterCache": ".adapter_cache",
    "HyperSFTConfig": ".training",
    "HyperSFTTrainer": ".training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hyperpeft' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    _complete_pending_registration()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


_registration_pending = False


def _register_with_peft() -> None:
    global _registration_pending
    from .config import HyperLoraConfig
    from .peft_model import HyperPeftModel
    from .registry import register_with_peft
    from .tuner import HyperLoraModel

    register_with_peft(HyperLoraConfig, HyperLoraModel, HyperPeftModel)
    _registration_pending = False


def _complete_pending_registration() -> None:
    """Register now if PEFT was imported in the middle of importing a hyperpeft module (see `_RegisterAfterPeft`)."""
    if _registration_pending:
        _register_with_peft()


class _RegisterAfterPeft(importlib.abc.MetaPathFinder):
    """Finds nothing itself: the spec of `peft` it hands on registers hyperpeft once that module has run.

    It stays in place until `peft` is really imported: a check such as transformers' `is_peft_available()` asks for
    the spec without importing it.
    """

    _finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "peft" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec("peft")
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module) -> None:
            global _registration_pending
            exec_module(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                _register_with_peft()
            except ImportError:
                # PEFT was imported by a hyperpeft module that is itself still being imported: the registration
                # completes when a `HyperLoraConfig` is made or a name of this package is first used.
                _registration_pending = True

        spec.loader.exec_module = exec_and_register
        return spec


if "peft" in sys.modules:
    _register_with_peft()
else:
    sys.meta_path.insert(0, _RegisterAfterPeft())
