"""`HyperLoraConfig`: what the hypernetwork generates, and from which profile encoder."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from peft import PeftConfig
from peft.utils import TaskType

from ._validation import check_int
from .registry import HYPER_LORA

DEFAULT_TARGET_MODULES = ("q_proj", "v_proj")


@dataclass
class HyperLoraConfig(PeftConfig):
    """
    Configuration of a Profile-to-PEFT hypernetwork that writes one LoRA adapter per user profile.

    The LoRA fields keep PEFT's names and meanings (`r`, `lora_alpha`, `lora_dropout`, `target_modules`); the
    hypernetwork reads a profile embedding of width `profile_dim` made by the sentence encoder `profile_encoder`.

    Args:
        r (`int`, defaults to 8): LoRA rank of every generated adapter.
        lora_alpha (`float`, defaults to 16): LoRA scaling numerator; the update is scaled by `lora_alpha / r`.
        lora_dropout (`float`, defaults to 0.0): dropout on the LoRA branch's input during training.
        target_modules (`list[str]`, defaults to `["q_proj", "v_proj"]`): names (or name suffixes) of the
            `nn.Linear` modules that receive a generated adapter.
        profile_encoder (`str`, defaults to `"all-minilm-l6-v2"`): sentence-transformers model name or local path
            that turns profile texts into embeddings; `"all-minilm-l6-v2"` is the embedded default.
        profile_dim (`int`, defaults to 384): width of the profile embedding.
        profile_instruction (`str`, *optional*): text put before every profile when it is encoded (for
            instruction-tuned encoders such as Qwen3-Embedding).
        module_embedding_dim (`int`, defaults to 32): size of the learned embedding of each target module type.
        depth_embedding_dim (`int`, defaults to 32): size of the learned embedding of each layer index.
        hidden_dim (`int`, defaults to 256): width of the hypernetwork's MLP trunk.
        num_hidden_layers (`int`, defaults to 2): number of linear layers in the trunk.
        shared_lora (`bool`, defaults to `False`): add a LoRA of every targeted module that all users share, learned
            directly (at the full learning rate, like a multi-task LoRA's), to which the heads add each user's
            residual. The heads' own bias is scaled by `1 / sqrt(hidden_dim)` and so learns that much more slowly;
            with a shared LoRA the profile only has to explain how a user differs from everyone.
        base_model_name_or_path (`str`, *optional*): the base model the hypernetwork was made for; filled in from
            the base model when the hypernetwork is attached.

    Example:

    ```python
    >>> from hyperpeft import HyperLoraConfig
    >>> config = HyperLoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    >>> config.scaling
    2.0
    ```
    """

    r: int = field(default=8, metadata={"help": "LoRA rank of every generated adapter."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha; the update is scaled by lora_alpha / r."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch input while training."})
    target_modules: list[str] | str | None = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={"help": "Names or name suffixes of the nn.Linear modules that receive a generated adapter."},
    )
    profile_encoder: str = field(
        default="all-minilm-l6-v2",
        metadata={"help": "sentence-transformers model (name or local path) that embeds profile texts."},
    )
    profile_dim: int = field(default=384, metadata={"help": "Width of the profile embedding."})
    profile_instruction: str | None = field(
        default=None, metadata={"help": "Optional text put before every profile when it is encoded."}
    )
    module_embedding_dim: int = field(default=32, metadata={"help": "Size of the learned module-type embedding."})
    depth_embedding_dim: int = field(default=32, metadata={"help": "Size of the learned layer-depth embedding."})
    hidden_dim: int = field(default=256, metadata={"help": "Width of the hypernetwork's MLP trunk."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Number of linear layers in the MLP trunk."})
    shared_lora: bool = field(
        default=False,
        metadata={"help": "Add a LoRA shared by all users, learned at the full rate; the heads add each user's part."},
    )

    def __post_init__(self):
        import hyperpeft  # the package facade: finishes registering hyperpeft with PEFT if that had to wait

        hyperpeft._complete_pending_registration()
        if self.task_type is None:
            self.task_type = TaskType.CAUSAL_LM
        super().__post_init__()
        self.peft_type = HYPER_LORA
        for name in (
            "r",
            "profile_dim",
            "module_embedding_dim",
            "depth_embedding_dim",
            "hidden_dim",
            "num_hidden_layers",
        ):
            check_int(name, getattr(self, name))
        alpha = self.lora_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (0 < alpha < math.inf):
            raise ValueError(f"`lora_alpha` should be a positive number but the value passed is {self.lora_alpha!r}.")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` should be in [0, 1) but the value passed is {self.lora_dropout!r}.")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = sorted(self.target_modules)
        if isinstance(self.target_modules, str):
            if not self.target_modules:
                raise ValueError("`target_modules` should name at least one module, e.g. ['q_proj', 'v_proj'].")
        elif (
            not isinstance(self.target_modules, list)
            or not self.target_modules
            or not all(isinstance(name, str) and name for name in self.target_modules)
        ):
            raise ValueError(
                "`target_modules` should be a non-empty list of module names such as ['q_proj', 'v_proj'] "
                f"but the value passed is {self.target_modules!r}."
            )
        if not isinstance(self.profile_encoder, str) or not self.profile_encoder:
            raise ValueError(
                "`profile_encoder` should be a sentence-transformers model name or path, e.g. 'all-minilm-l6-v2', "
                f"but the value passed is {self.profile_encoder!r}."
            )
        if not isinstance(self.shared_lora, bool):
            raise TypeError(f"`shared_lora` should be True or False, not {self.shared_lora!r}.")
        if self.profile_instruction is not None and not isinstance(self.profile_instruction, str):
            raise TypeError(f"`profile_instruction` should be a string or None, not {type(self.profile_instruction)}.")

    @property
    def scaling(self) -> float:
        """The factor `lora_alpha / r` that multiplies every generated update."""
        return self.lora_alpha / self.r
