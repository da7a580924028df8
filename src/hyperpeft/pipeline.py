"""From a data description to trainable rows: load a source into the row schema, add profiles, format for TRL.

Used by the `hyperpeft train` command and the main job; each step is also usable on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from .data import loaders
from .data.synthetic import LAMP_CODES, SyntheticConfig, generate_rows, write_lamp_layout
from .evaluation.generation import chat_messages
from .profiles import ProfileBuilder, make_summarizer

SOURCES = ("synthetic", "lamp", "oppu", "longlamp", "empathic", "reddit", "rows")


def load_source(data: dict[str, Any], workdir: str | Path) -> dict[str, Dataset]:
    """
    Rows of the common schema, by split, from a `data` description:

    - `{"source": "synthetic", "synthetic": {...SyntheticConfig fields}}`: the synthetic users, written in the LaMP
      layout under `workdir/data` and read back with the LaMP loader (splits `train`, `test_random`, `test_ood`);
    - `{"source": "lamp", "path": folder, "task": "2M", "splits": ["train", "dev"]}` and likewise `oppu`, `longlamp`
      (`path`, `task`), `empathic` (`path`), `reddit` (`path`) and `rows` (`path` of a JSON/JSONL file of rows): one
      `train` split unless `splits` names the LaMP files to read.
    """
    source = data.get("source", "synthetic")
    if source not in SOURCES:
        raise ValueError(f"`data.source` should be one of {SOURCES} but is {source!r}.")
    if source == "synthetic":
        config = SyntheticConfig(**data.get("synthetic", {}))
        folder = Path(workdir) / "data"
        write_lamp_layout(generate_rows(config), folder)
        splits = {}
        for split in ("train", "test_random", "test_ood"):
            parts = [loaders.load_lamp(folder / t, LAMP_CODES[t], split=split, task_name=t) for t in config.tasks]
            splits[split] = concatenate_datasets(parts)
        return splits
    if "path" not in data:
        raise ValueError(f"`data.path` is needed for the {source!r} source.")
    path = data["path"]
    if source == "lamp":
        return {s: loaders.load_lamp(path, data["task"], split=s) for s in data.get("splits", ["train"])}
    if source == "oppu":
        return {"train": loaders.load_oppu(path, data["task"])}
    if source == "longlamp":
        return {"train": loaders.load_longlamp(path, data["task"])}
    if source == "empathic":
        return {"train": loaders.load_empathic_conversations(path)}
    if source == "reddit":
        return {"train": loaders.load_reddit_style(path)}
    return {"train": loaders.load_rows(path)}


def add_profiles(splits: dict[str, Dataset], profiles: dict[str, Any], workdir: str | Path) -> dict[str, Dataset]:
    """Add the `profile` column to every split (summary + BM25 top-k, or an ablation `mode`)."""
    builder = ProfileBuilder(
        make_summarizer(profiles.get("summarizer")),
        cache_path=profiles.get("cache_path", Path(workdir) / "summaries.sqlite"),
        k=profiles.get("k", 2),
        mode=profiles.get("mode", "full"),
        seed=profiles.get("seed", 0),
    )
    return {split: builder.build(rows, show_progress=False) for split, rows in splits.items()}


def sft_rows(dataset: Dataset) -> Dataset:
    """Prompt-completion conversations, the way TRL trains on them, keeping each row's profile and task."""
    return Dataset.from_dict(
        {
            "prompt": [chat_messages(t, x) for t, x in zip(dataset["task"], dataset["input"])],
            "completion": [[{"role": "assistant", "content": y}] for y in dataset["output"]],
            "profile": dataset["profile"],
            "task": dataset["task"],
        }
    )
