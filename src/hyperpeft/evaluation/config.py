"""The configuration of `hyperpeft eval`: one dataclass per section of its YAML file, every field also a `--flag`.

A YAML file groups the fields in sections (`data:`, `eval:`, `p2p:`, ...); inside a section a field may drop the
section's prefix (`p2p: {checkpoint: ...}` is the field `p2p_checkpoint`, flag `--p2p_checkpoint`). See
`hyperpeft.cli.arguments` for how files and flags are read.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._validation import check_int, json_mapping
from ..data.sources import DataArguments
from ..profiles.builder import MODES, ProfileArguments

METHODS = ("base", "rag", "pag", "full_history", "mt_lora", "oppu", "p2p", "p2p_other_user")
ABLATIONS = tuple(mode for mode in MODES if mode != "full")


def _check_names(name: str, values: list[str], known: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in known]
    if bad:
        raise ValueError(f"`{name}` has unknown entries {bad}; known: {known}.")


@dataclass
class RunArguments:
    """The run itself (the top level of the YAML file)."""

    out: str = field(default="out/eval", metadata={"help": "Where report.md, report.json and the plots go."})
    workdir: str = field(default="out/eval/work", metadata={"help": "Generated data, summary cache, trained models."})
    seed: int = field(default=0, metadata={"help": "Seed of the training runs and of the ablations' draws."})
    base_model: str = field(default="smollm2-135m-instruct", metadata={"help": "The base model (name or folder)."})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": f"Of {METHODS}."})
    train_dtype: str = field(
        default="float32", metadata={"help": "The frozen base's dtype while training: float32, bfloat16 or auto."}
    )
    train_attention: str | None = field(
        default=None, metadata={"help": "The base's attention while training (e.g. eager on a CPU)."}
    )

    def __post_init__(self) -> None:
        _check_names("methods", self.methods, METHODS)
        if self.train_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"`train_dtype` should be 'auto', 'float32' or 'bfloat16', not {self.train_dtype!r}.")


@dataclass
class EvalArguments:
    """Which rows are answered, and how (the `eval:` section; prefix `eval_`)."""

    prefix = "eval_"

    eval_splits: list[str] | None = field(default=None, metadata={"help": "The test splits (default: all but train)."})
    users_per_task: int | None = field(default=8, metadata={"help": "Evaluated users per task and split (all: null)."})
    queries_per_user: int | None = field(default=1, metadata={"help": "Evaluated queries per user (all: null)."})
    eval_batch_size: int = field(default=16, metadata={"help": "Rows per generate call."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Answer length (default: per task kind)."})
    context_tokens: int = field(default=512, metadata={"help": "Token budget of the RAG and PAG context blocks."})
    history_tokens: int = field(default=1024, metadata={"help": "Token budget of the full-history block."})
    bootstrap_samples: int = field(
        default=1000, metadata={"help": "Resamples of users for the bootstrap intervals and paired tests (0: none)."}
    )
    attribution_encoder: str | None = field(
        default="all-minilm-l6-v2",
        metadata={"help": "Sentence encoder of the author attribution of generated texts (null: no attribution)."},
    )
    gold_nll: bool = field(
        default=True,
        metadata={"help": "Score each method's NLL of the gold answers (teacher-forced, after its own prompt)."},
    )

    def __post_init__(self) -> None:
        check_int("bootstrap_samples", self.bootstrap_samples, minimum=0)
        for name in ("users_per_task", "queries_per_user", "max_new_tokens"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))
        check_int("eval_batch_size", self.eval_batch_size)
        check_int("context_tokens", self.context_tokens, minimum=0)
        check_int("history_tokens", self.history_tokens, minimum=0)


@dataclass
class P2PArguments:
    """The hypernetwork (the `p2p:` section; prefix `p2p_`)."""

    prefix = "p2p_"

    p2p_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A HyperPeftModel folder: loaded when present, else trained here and saved there."},
    )
    profile_encoder: str = field(default="all-minilm-l6-v2", metadata={"help": "The profile encoder."})
    p2p_lora: dict | str | None = field(
        default_factory=dict,
        metadata={"help": "HyperLoraConfig fields of a hypernetwork trained here, e.g. {shared_lora: true} (JSON)."},
    )
    p2p_training: dict | str | None = field(
        default_factory=dict, metadata={"help": "HyperSFTConfig fields over the CPU defaults (JSON)."}
    )
    guidance_scale: float | None = field(
        default=None,
        metadata={
            "help": "Profile guidance of P2P's decoding against `negative_profile` (1: none; docs/evaluation.md)."
        },
    )
    negative_profile: str | None = field(
        default=None, metadata={"help": "The profile guidance decodes away from, e.g. that of a user with no history."}
    )

    def __post_init__(self) -> None:
        if (self.guidance_scale is None) != (self.negative_profile is None):
            given, missing = ("guidance_scale", "negative_profile")[:: 1 if self.negative_profile is None else -1]
            raise ValueError(
                f"`{given}` is set ({getattr(self, given)!r}) but `{missing}` is not: profile guidance needs both "
                "(`p2p: {guidance_scale: 2.0, negative_profile: ...}`); set both or neither."
            )
        if self.guidance_scale is not None and not self.guidance_scale >= 1:
            raise ValueError(f"`guidance_scale` should be >= 1 (1: no guidance), got {self.guidance_scale}.")
        if self.negative_profile is not None and not self.negative_profile.strip():
            raise ValueError("`negative_profile` is empty; give the profile text guidance decodes away from.")
        self.p2p_lora = json_mapping(self.p2p_lora, "p2p_lora") or {}
        self.p2p_training = json_mapping(self.p2p_training, "p2p_training") or {}
        if "profile_encoder" in self.p2p_lora:
            raise ValueError("Set the profile encoder with `p2p: {profile_encoder: ...}`, not inside `p2p_lora`.")
        if self.p2p_lora:  # checked now, not after the data is loaded and profiles built
            self.hyper_lora_config()

    def hyper_lora_config(self):
        """The [`HyperLoraConfig`] of a hypernetwork trained here (raises on an unknown or bad field)."""
        from peft import PeftConfig

        from ..config import HyperLoraConfig

        # HyperLoraConfig's own fields; PEFT's bookkeeping (`inference_mode`, `task_type`, ...) is set by training.
        inherited = {f.name for f in fields(PeftConfig)}
        known = [f.name for f in fields(HyperLoraConfig) if f.name not in inherited and f.name != "profile_encoder"]
        for name in self.p2p_lora:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" Did you mean `{close[0]}`?" if close else f" Known fields: {known}."
                raise ValueError(f"`p2p_lora` has the unknown field `{name}`.{hint}")
        return HyperLoraConfig(profile_encoder=self.profile_encoder, **self.p2p_lora)

    def generation_kwargs(self) -> dict:
        """`generate` arguments of P2P's answers: profile guidance when it is set."""
        if self.guidance_scale is None:
            return {}
        return {"guidance_scale": self.guidance_scale, "negative_profile": self.negative_profile}


@dataclass
class MTLoraArguments:
    """The multi-task LoRA baseline (the `mt_lora:` section; prefix `mt_lora_`)."""

    prefix = "mt_lora_"

    mt_lora_checkpoint: str | None = field(
        default=None, metadata={"help": "A PEFT LoRA folder: loaded when present, else trained here and saved there."}
    )
    mt_lora_lora: dict | str | None = field(default_factory=dict, metadata={"help": "peft.LoraConfig fields (JSON)."})
    mt_lora_training: dict | str | None = field(
        default_factory=lambda: {"max_steps": 90, "per_device_train_batch_size": 8, "warmup_steps": 10},
        metadata={"help": "Training fields over the CPU defaults (JSON)."},
    )

    def __post_init__(self) -> None:
        self.mt_lora_lora = json_mapping(self.mt_lora_lora, "mt_lora_lora") or {}
        self.mt_lora_training = json_mapping(self.mt_lora_training, "mt_lora_training") or {}


@dataclass
class OppuArguments:
    """One LoRA per test user (the `oppu:` section; prefix `oppu_`)."""

    prefix = "oppu_"

    oppu_lora: dict | str | None = field(default_factory=dict, metadata={"help": "peft.LoraConfig fields (JSON)."})
    oppu_training: dict | str | None = field(
        default_factory=lambda: {"num_train_epochs": 2, "per_device_train_batch_size": 4},
        metadata={"help": "Training fields per user over the CPU defaults (JSON)."},
    )

    def __post_init__(self) -> None:
        self.oppu_lora = json_mapping(self.oppu_lora, "oppu_lora") or {}
        self.oppu_training = json_mapping(self.oppu_training, "oppu_training") or {}


@dataclass
class JudgeArguments:
    """The LLM judge of generated texts (the `judge:` section; prefix `judge_`)."""

    prefix = "judge_"

    judge_model: dict | str | None = field(
        default=None, metadata={"help": "A transformers model, or {base_url, model} of a server (JSON); null: none."}
    )
    judge_methods: list[str] | None = field(default=None, metadata={"help": "Judged methods (default: all)."})

    def __post_init__(self) -> None:
        if isinstance(self.judge_model, str) and self.judge_model.lstrip().startswith("{"):
            self.judge_model = json_mapping(self.judge_model, "judge_model")
        _check_names("judge_methods", self.judge_methods or [], METHODS)


@dataclass
class SweepArguments:
    """The k sweep, the profile ablations and the history-length buckets (the `sweeps:` section; prefix `sweep_`)."""

    prefix = "sweep_"

    sweep_split: str | None = field(default=None, metadata={"help": "The split of the sweeps (default: the first)."})
    k_values: list[int] = field(default_factory=list, metadata={"help": "Retrieved items k for P2P and RAG."})
    ablations: list[str] = field(default_factory=list, metadata={"help": f"P2P profile ablations, of {ABLATIONS}."})
    activity_buckets: int = field(default=3, metadata={"help": "Buckets of history length (0: none)."})

    def __post_init__(self) -> None:
        _check_names("ablations", self.ablations, ABLATIONS)
        check_int("activity_buckets", self.activity_buckets, minimum=0)


# section name in the YAML file -> dataclass; `None` is the top level
SECTIONS: dict[str | None, type] = {
    None: RunArguments,
    "data": DataArguments,
    "profiles": ProfileArguments,
    "eval": EvalArguments,
    "p2p": P2PArguments,
    "mt_lora": MTLoraArguments,
    "oppu": OppuArguments,
    "judge": JudgeArguments,
    "sweeps": SweepArguments,
}


@dataclass
class EvalConfig:
    """Every section of an evaluation, as parsed and checked (see `hyperpeft.cli.arguments.parse_config`)."""

    run: RunArguments = field(default_factory=RunArguments)
    data: DataArguments = field(default_factory=DataArguments)
    profiles: ProfileArguments = field(default_factory=ProfileArguments)
    eval: EvalArguments = field(default_factory=EvalArguments)
    p2p: P2PArguments = field(default_factory=P2PArguments)
    mt_lora: MTLoraArguments = field(default_factory=MTLoraArguments)
    oppu: OppuArguments = field(default_factory=OppuArguments)
    judge: JudgeArguments = field(default_factory=JudgeArguments)
    sweeps: SweepArguments = field(default_factory=SweepArguments)

    def __post_init__(self) -> None:
        if "p2p_other_user" in self.run.methods and self.profiles.profile_mode == "random_user":
            raise ValueError(
                "`p2p_other_user` gives each row another user's profile in the run's `profile_mode`, and "
                "`profile_mode='random_user'` is already another user's: use another `profile_mode`, or leave "
                "`p2p_other_user` out of `methods`."
            )

    @classmethod
    def from_sections(cls, sections: dict[str | None, Any]) -> EvalConfig:
        return cls(**{("run" if name is None else name): value for name, value in sections.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the report: the run's fields at the top, one mapping per section."""
        sections = {name: asdict(getattr(self, name)) for name in self.__dataclass_fields__ if name != "run"}
        return {**asdict(self.run), **sections}
