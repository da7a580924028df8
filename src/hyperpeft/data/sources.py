"""`DataArguments` and `load_splits`: from a data description (the `data:` section of a config) to row splits.

The source's own splits are kept (the synthetic users have `train`, `test_random` and `test_ood`; LaMP has the files
named in `lamp_splits`); a source that has only `train` rows can be split by user (`user_split`), so that no test user
has a training row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets
from transformers.utils import logging

from .._validation import json_mapping
from . import loaders
from .synthetic import LAMP_CODES, SyntheticConfig, generate_rows, write_lamp_layout

logger = logging.get_logger(__name__)

SOURCES = ("synthetic", "lamp", "oppu", "longlamp", "empathic", "reddit", "rows")


@dataclass
class DataArguments:
    """
    Where the rows come from (the `data:` section of a `hyperpeft train` or `hyperpeft eval` config).

    Args:
        source (`str`, defaults to `"synthetic"`): one of `SOURCES`.
        path (`str`, *optional*): the data folder or file (every source but `synthetic`).
        task (`str`, *optional*): the LaMP / LongLaMP task (`"2M"`, `"product_review"`, ...).
        lamp_splits (`list[str]`, defaults to `["train"]`): the LaMP files to read (`train`, `dev`, `test`).
        synthetic (`dict`, *optional*): `SyntheticConfig` fields for the synthetic users.
        user_split (`dict`, *optional*): split a source that has only `train` rows by user: `method` (`random`,
            `ood` or `kfold`), `test_users` (random, ood), `folds` and `fold` (kfold), `seed`, `by_task`. For
            `hyperpeft eval`, a `kfold` split without `fold` runs every fold and pools their test users.
        max_input_chars (`int`, *optional*): cut longer inputs (news articles) to this many characters.
        with_profile_text_only (`bool`, defaults to `False`): keep only the rows that carry a `profile_text`.
    """

    source: str = field(default="synthetic", metadata={"help": f"The data source: one of {SOURCES}."})
    path: str | None = field(default=None, metadata={"help": "The data folder or file (all but synthetic)."})
    task: str | None = field(default=None, metadata={"help": "The LaMP or LongLaMP task, e.g. 2M."})
    lamp_splits: list[str] = field(default_factory=lambda: ["train"], metadata={"help": "The LaMP files to read."})
    synthetic: dict | str | None = field(
        default=None, metadata={"help": "SyntheticConfig fields for the synthetic users (JSON on a command line)."}
    )
    user_split: dict | str | None = field(
        default=None,
        metadata={"help": "Split train rows by user: {method, test_users, folds, fold, seed, by_task} (JSON)."},
    )
    max_input_chars: int | None = field(default=None, metadata={"help": "Cut longer inputs to this many characters."})
    with_profile_text_only: bool = field(default=False, metadata={"help": "Keep only rows with a profile_text."})

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"`source` should be one of {SOURCES} but is {self.source!r}.")
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"`path` is needed for the {self.source!r} source.")
        if self.source in ("lamp", "oppu", "longlamp") and not self.task:
            raise ValueError(f"`task` is needed for the {self.source!r} source, e.g. `task: 2M`.")
        self.synthetic = json_mapping(self.synthetic, "synthetic")
        self.user_split = json_mapping(self.user_split, "user_split")
        # checked now, not after the data is generated
        self.synthetic_config = SyntheticConfig(**(self.synthetic or {})) if self.source == "synthetic" else None
        split = self.user_split or {}
        known = {"random": {"test_users"}, "ood": {"test_users"}, "kfold": {"folds", "fold"}}
        method = split.get("method", "random")
        if method not in known:
            raise ValueError(f"`user_split.method` should be one of {sorted(known)} but is {method!r}.")
        unknown = sorted(set(split) - {"method", "seed", "by_task"} - known[method])
        if unknown:
            keys = ", ".join(["method", "seed", "by_task", *sorted(known[method])])
            raise ValueError(
                f"`user_split` has keys {unknown} that a {method!r} split does not take; it takes {keys}."
            )
        if method == "kfold":
            if "folds" not in split:
                raise ValueError("A `kfold` user split needs `folds`, e.g. `user_split: {method: kfold, folds: 3}`.")
            folds = split["folds"]
            if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
                raise ValueError(f"`user_split.folds` should be an integer of at least 2 but is {folds!r}.")
            fold = split.get("fold", 0)
            if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
                raise ValueError(f"`user_split.fold` should be an integer in 0..{folds - 1} but is {fold!r}.")

    def is_present(self) -> bool:
        """Whether the data is on this machine (the synthetic users always are)."""
        return self.source == "synthetic" or Path(self.path).exists()


def load_source(data: DataArguments, workdir: str | Path) -> dict[str, Dataset]:
    """
    Rows of the common schema, by split: the synthetic users are written in the LaMP layout under `workdir/data` and
    read back with the LaMP loader (splits `train`, `test_random`, `test_ood`); LaMP gives the files of
    `lamp_splits`; every other source one `train` split.
    """
    if data.source == "synthetic":
        folder = Path(workdir) / "data"
        write_lamp_layout(generate_rows(data.synthetic_config), folder)
        splits = {}
        for split in ("train", "test_random", "test_ood"):
            tasks = data.synthetic_config.tasks
            parts = [loaders.load_lamp(folder / t, LAMP_CODES[t], split=split, task_name=t) for t in tasks]
            splits[split] = concatenate_datasets(parts)
        return splits
    if data.source == "lamp":
        return {s: loaders.load_lamp(data.path, data.task, split=s) for s in data.lamp_splits}
    load = {
        "oppu": lambda: loaders.load_oppu(data.path, data.task),
        "longlamp": lambda: loaders.load_longlamp(data.path, data.task),
        "empathic": lambda: loaders.load_empathic_conversations(data.path),
        "reddit": lambda: loaders.load_reddit_style(data.path),
        "rows": lambda: loaders.load_rows(data.path),
    }[data.source]
    return {"train": load()}


def load_splits(
    data: DataArguments, workdir: str | Path, encoder_name: str, seed: int, test_split_needed: bool = False
) -> dict[str, Dataset]:
    """
    The source's splits, with `with_profile_text_only` and `max_input_chars` applied. A source that has only `train`
    rows is split by user into `train` and `test_<method>` when `user_split` is given or a test split is needed
    (`test_split_needed`, as for an evaluation; the users are embedded with `encoder_name` by their profile text,
    else their first history items).
    """
    splits = load_source(data, workdir)
    if data.with_profile_text_only:  # e.g. the few Empathic Conversations speakers without demographics
        for name, rows in splits.items():
            kept = rows.filter(lambda row: row["profile_text"] is not None)
            logger.warning("%s: %d of %d rows have a profile_text and are kept.", name, len(kept), len(rows))
            splits[name] = kept
    if data.user_split is not None and set(splits) != {"train"}:
        raise ValueError(
            f"`user_split` splits a source that has only train rows, but {data.source!r} comes with the splits "
            f"{sorted(splits)}; leave `user_split` out."
        )
    if set(splits) == {"train"} and (data.user_split is not None or test_split_needed):
        splits = split_by_user(splits["train"], data.user_split or {}, encoder_name, seed)
    if data.max_input_chars:  # long inputs (news articles) cut so that CPU training and prompting stay short
        splits = {
            n: rows.map(lambda row: {"input": row["input"][: data.max_input_chars]}) for n, rows in splits.items()
        }
    return splits


def split_by_user(rows: Dataset, split: dict[str, Any], encoder_name: str, seed: int) -> dict[str, Dataset]:
    """
    `train` and `test_<method>`: no test user has a training row (for `random` and `ood`, users are embedded by their
    profile text; `kfold` needs its `fold`).
    """
    from ..encoder import ProfileEncoder
    from .splits import kfold_split, split_users

    method = split.get("method", "random")
    if method == "kfold":
        if "fold" not in split:
            raise ValueError(f"A `kfold` user split of one run needs `fold` (0 .. {split['folds'] - 1}).")
        train, test = kfold_split(
            rows, split["folds"], split["fold"], seed=split.get("seed", seed), by_task=split.get("by_task", True)
        )
        return {"train": train, "test_kfold": test}
    users: dict[str, str] = {}
    for user, text, history in zip(rows["user_id"], rows["profile_text"], rows["history"]):
        users.setdefault(user, text or " ".join(item["output"] for item in history[:8]) or user)
    vectors = ProfileEncoder(encoder_name).encode(list(users.values()))
    train, test = split_users(
        rows, dict(zip(users, vectors)), method=method, test_users=split.get("test_users"),
        seed=split.get("seed", seed), by_task=split.get("by_task", True),
    )  # fmt: skip
    return {"train": train, f"test_{method}": test}
