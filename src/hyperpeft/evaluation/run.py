"""`hyperpeft eval`: every personalization method on the same users, prompts and decoding, in one command.

    hyperpeft eval --config examples/configs/eval_synthetic.yaml [eval.users_per_task=4 oppu.num_train_epochs=1 ...]

Reads a YAML config (sections in `SECTIONS`, defaults in `DEFAULTS`), loads the data and profiles, prepares the
trained methods (P2P from a checkpoint or trained here, MT-LoRA, OPPU per user), answers the evaluated rows with
every method, scores them, and writes `report.md`, `report.json` and PNG plots to `out`.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers.utils import logging

from ..data.tasks import get_task
from .generation import generate_answers
from .judge import judge_scores, make_judge
from .methods import PROMPT_METHODS, build_contexts, summary_of
from .metrics import score_task

logger = logging.get_logger(__name__)

METHODS = ("base", "rag", "pag", "full_history", "mt_lora", "oppu", "p2p")
METHOD_NAMES = {
    "base": "Base", "rag": "RAG", "pag": "PAG", "full_history": "Full history", "mt_lora": "MT-LoRA",
    "oppu": "OPPU", "p2p": "P2P",
}  # fmt: skip
ABLATIONS = ("random_user", "shuffled", "summary", "retrieved", "history")
SECTIONS = (
    "out", "workdir", "seed", "base_model", "data", "profiles", "eval", "methods", "p2p", "mt_lora", "oppu", "judge",
    "sweeps",
)  # fmt: skip

DEFAULTS: dict[str, Any] = {
    "out": "out/eval",  # report.md, report.json, plots
    "workdir": "out/eval/work",  # generated data, summary cache, trained P2P
    "seed": 0,
    "base_model": "smollm2-135m-instruct",
    # as `hyperpeft.pipeline.load_source`, plus `split`, `max_input_chars` and `with_profile_text_only`
    "data": {"source": "synthetic"},
    "profiles": {"k": 2, "summarizer": None},  # as `hyperpeft.pipeline.add_profiles`
    "eval": {
        "splits": None,  # default: every split but `train`
        "users_per_task": 8,
        "queries_per_user": 1,
        "batch_size": 16,
        "max_new_tokens": None,  # default: per metric kind (generation.MAX_NEW_TOKENS)
        "context_tokens": 512,  # RAG / PAG block budget
        "history_tokens": 1024,  # full-history block budget
    },
    "methods": list(METHODS),
    "p2p": {"checkpoint": None, "profile_encoder": "all-minilm-l6-v2", "training": {}},
    "mt_lora": {
        "checkpoint": None,
        "lora": {},
        "training": {"max_steps": 90, "per_device_train_batch_size": 8, "warmup_steps": 10},
    },
    "oppu": {"lora": {}, "training": {"num_train_epochs": 2, "per_device_train_batch_size": 4}},
    "judge": {"model": None, "methods": None},  # a model name or {base_url, model}; methods default: all
    "sweeps": {"split": None, "k_values": [], "ablations": [], "activity_buckets": 3},
}


class SkipRun(Exception):
    """The run's data is not on this machine (e.g. an optional `../shared` folder): nothing to do."""


# ------------------------------------------------------------------------------------------------------------ config


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(merged.get(key), dict) and isinstance(value, dict) else value
        )
    return merged


def read_eval_config(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """The YAML file over `DEFAULTS`, then `section.key=value` overrides (values parsed as YAML)."""
    from ..cli import read_config

    config = read_config(path, list(overrides), sections=SECTIONS)
    config = _merge(DEFAULTS, config)
    bad = [m for m in config["methods"] if m not in METHODS]
    if bad:
        raise ValueError(f"`methods` has unknown entries {bad}; known: {METHODS}.")
    bad = [m for m in config["sweeps"]["ablations"] if m not in ABLATIONS]
    if bad:
        raise ValueError(f"`sweeps.ablations` has unknown entries {bad}; known: {ABLATIONS}.")
    return config


# -------------------------------------------------------------------------------------------------------------- data


def _clip_inputs(dataset: Dataset, max_chars: int | None) -> Dataset:
    """Long inputs (news articles) cut to `max_chars` characters so that CPU training and prompting stay short."""
    if not max_chars:
        return dataset
    return dataset.map(lambda row: {"input": row["input"][:max_chars]})


def load_data(config: dict[str, Any]) -> dict[str, Dataset]:
    """The splits with profiles: the source's own splits, or a user split of its `train` rows (`data.split`)."""
    from ..pipeline import add_profiles, load_source

    data = dict(config["data"])
    split, max_chars = data.pop("split", None), data.pop("max_input_chars", None)
    with_profile_text_only = data.pop("with_profile_text_only", False)
    if data.get("source", "synthetic") != "synthetic" and "path" in data and not Path(data["path"]).exists():
        raise SkipRun(f"the data folder {data['path']!r} is absent")
    splits = load_source(data, config["workdir"])
    if with_profile_text_only:  # e.g. the few Empathic Conversations speakers without demographics
        for name, rows in splits.items():
            kept = rows.filter(lambda row: row["profile_text"] is not None)
            logger.warning("%s: %d of %d rows have a profile_text and are kept.", name, len(kept), len(rows))
            splits[name] = kept
    if set(splits) == {"train"}:
        splits = split_by_user(splits["train"], split or {}, config["p2p"]["profile_encoder"], config["seed"])
    splits = {name: _clip_inputs(rows, max_chars) for name, rows in splits.items()}
    return add_profiles(splits, config["profiles"], config["workdir"])


def split_by_user(rows: Dataset, split: dict[str, Any], encoder_name: str, seed: int) -> dict[str, Dataset]:
    """`train` and `test_<method>`: no test user has a training row (users embedded by their profile text)."""
    from ..data.splits import split_users
    from ..encoder import ProfileEncoder

    method = split.get("method", "random")
    users: dict[str, str] = {}
    for user, text, history in zip(rows["user_id"], rows["profile_text"], rows["history"]):
        users.setdefault(user, text or " ".join(item["output"] for item in history[:8]) or user)
    vectors = ProfileEncoder(encoder_name).encode(list(users.values()))
    embeddings = dict(zip(users, vectors))
    train, test = split_users(
        rows, embeddings, method=method, test_users=split.get("test_users"), seed=split.get("seed", seed),
        by_task=split.get("by_task", True),
    )  # fmt: skip
    return {"train": train, f"test_{method}": test}


def eval_rows(dataset: Dataset, users_per_task: int | None, queries_per_user: int | None) -> Dataset:
    """The first `queries_per_user` rows of the first `users_per_task` users of each task (all when `None`)."""
    users: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    keep = []
    for i, (user, task) in enumerate(zip(dataset["user_id"], dataset["task"])):
        chosen = users.setdefault(task, [])
        if user not in chosen:
            if users_per_task is not None and len(chosen) >= users_per_task:
                continue
            chosen.append(user)
        counts[user] = counts.get(user, 0) + 1
        if queries_per_user is None or counts[user] <= queries_per_user:
            keep.append(i)
    return dataset.select(keep)


# ----------------------------------------------------------------------------------------------------------- methods


def _seed(config: dict[str, Any]) -> None:
    torch.manual_seed(config["seed"])


def _trainer_args(config: dict[str, Any], folder: Path, spec: dict[str, Any]):
    """
    P2P's and MT-LoRA's training settings: `spec["training"]` over the CPU-friendly defaults, per-row loss unless it
    says otherwise. MT-LoRA takes a `HyperSFTConfig` too, for its batching and loss fields: the same batches as P2P.
    """
    from ..trainer import HyperSFTConfig
    from .mt_lora import training_defaults

    return HyperSFTConfig(
        **training_defaults(str(folder), **{"seed": config["seed"], "loss_per_row": True, **spec["training"]})
    )


def prepare_p2p(config: dict[str, Any], train: Dataset, tokenizer) -> tuple[Any, dict[str, Any]]:
    """A P2P model from `p2p.checkpoint` when that folder exists, else trained here on `train` and saved there."""
    from ..config import HyperLoraConfig
    from ..embedded import load_base_model
    from ..peft_model import HyperPeftModel
    from ..pipeline import sft_rows
    from ..trainer import HyperSFTTrainer

    spec = config["p2p"]
    folder = Path(spec.get("checkpoint") or Path(config["workdir"]) / "p2p")
    if (folder / "adapter_config.json").exists():
        logger.warning("P2P: loading the checkpoint in %s.", folder)
        model = HyperPeftModel.from_pretrained(load_base_model(config["base_model"]), str(folder))
        return model.eval(), {"checkpoint": str(folder), "trained_here": False}
    _seed(config)
    model = HyperPeftModel(
        load_base_model(config["base_model"]), HyperLoraConfig(profile_encoder=spec["profile_encoder"])
    )
    args = _trainer_args(config, folder, spec)
    logger.warning("P2P: training the hypernetwork (%s steps) ...", args.max_steps)
    start = time.perf_counter()
    trainer = HyperSFTTrainer(model=model, args=args, train_dataset=sft_rows(train), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(folder))
    return model.eval(), {"checkpoint": str(folder), "trained_here": True, "train_s": time.perf_counter() - start}


def prepare_mt_lora(config: dict[str, Any], train: Dataset, tokenizer, timings: dict[str, float]):
    """MT-LoRA from `mt_lora.checkpoint` (a PEFT LoRA folder) when it exists, else trained here on `train` and saved
    there (or in `workdir/mt-lora`)."""
    from peft import PeftModel

    from ..embedded import load_base_model
    from .mt_lora import train_mt_lora

    spec = config["mt_lora"]
    base = load_base_model(config["base_model"])
    folder = Path(spec.get("checkpoint") or Path(config["workdir"]) / "mt-lora")
    if (folder / "adapter_config.json").exists():
        logger.warning("MT-LoRA: loading the adapter in %s.", folder)
        return PeftModel.from_pretrained(base, str(folder)).eval()
    _seed(config)
    start = time.perf_counter()
    args = _trainer_args(config, folder, spec)
    model = train_mt_lora(base, tokenizer, train, args, spec.get("lora"))
    timings["mt_lora_train_s"] = time.perf_counter() - start
    model.save_pretrained(str(folder))  # safetensors; a rerun loads it instead of training again
    return model


def p2p_prep_seconds(model, rows: Dataset) -> dict[str, float]:
    """Per user, the seconds to encode their profile and generate their LoRA (one user at a time, no cache)."""
    tuner = model.base_model
    cache = getattr(tuner, "adapter_cache", None)
    if cache is not None:
        tuner.adapter_cache = None  # time the real work, not a cache hit
    seconds = {}
    profiles = dict(zip(rows["user_id"], rows["profile"]))
    with torch.no_grad():
        tuner.generate_lora(next(iter(profiles.values())))  # warm-up: loads the encoder
        for user, profile in profiles.items():
            start = time.perf_counter()
            tuner.generate_lora(profile)
            seconds[user] = time.perf_counter() - start
    if cache is not None:
        tuner.adapter_cache = cache
    return seconds


class Runner:
    """Holds the models and answers rows with one method at a time, timing each."""

    def __init__(self, config: dict[str, Any], tokenizer, base, p2p=None, mt_lora=None) -> None:
        self.config, self.tokenizer, self.base, self.p2p, self.mt_lora = config, tokenizer, base, p2p, mt_lora
        self.evaluation = config["eval"]

    def _generate(self, model, rows: Dataset, desc: str, **kwargs) -> tuple[list[str], float]:
        start = time.perf_counter()
        answers = generate_answers(
            model, self.tokenizer, rows["task"], rows["input"], batch_size=self.evaluation["batch_size"],
            max_new_tokens=self.evaluation["max_new_tokens"], desc=desc, **kwargs,
        )  # fmt: skip
        return answers, time.perf_counter() - start

    def prompt_method(self, method: str, rows: Dataset, k: int | None = None) -> tuple[list[str], float]:
        contexts = build_contexts(
            method, rows, self.tokenizer, k=self.config["profiles"].get("k", 2) if k is None else k,
            context_tokens=self.evaluation["context_tokens"], history_tokens=self.evaluation["history_tokens"],
        )  # fmt: skip
        return self._generate(self.base, rows, method, contexts=contexts)

    def p2p_answers(self, rows: Dataset, profiles: list[str] | None = None, desc: str = "p2p"):
        return self._generate(self.p2p, rows, desc, profiles=profiles if profiles is not None else rows["profile"])

    def mt_lora_answers(self, rows: Dataset):
        return self._generate(self.mt_lora, rows, "mt_lora")


def _scores(rows: Dataset, answers: list[str]) -> dict[str, dict]:
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(rows["task"]):
        by_task.setdefault(task, []).append(i)
    golds = rows["output"]
    return {
        task: score_task(task, [answers[i] for i in idx], [golds[i] for i in idx]) for task, idx in by_task.items()
    }


def _profiles_with(config: dict[str, Any], rows: Dataset, **changes) -> list[str]:
    from ..pipeline import add_profiles

    profiles = {**config["profiles"], "seed": config["seed"], **changes}
    return add_profiles({"eval": rows}, profiles, config["workdir"])["eval"]["profile"]


def activity_buckets(rows: Dataset, n_buckets: int) -> tuple[list[int], list[str]]:
    """Each row's bucket of history length (quantile edges over the rows) and the buckets' labels."""
    lengths = [len(h or []) for h in rows["history"]]
    values = sorted(set(lengths))
    n = max(1, min(n_buckets, len(values)))
    edges = [values[min(len(values) - 1, (len(values) * j) // n)] for j in range(1, n)]
    bucket = [sum(length >= e for e in edges) for length in lengths]
    bounds = [min(values), *edges, max(values) + 1]
    labels = [f"{bounds[j]}-{bounds[j + 1] - 1}" for j in range(n)]
    return bucket, labels


# --------------------------------------------------------------------------------------------------------------- run


def evaluate(config: dict[str, Any], command: str | None = None) -> dict[str, Any]:
    """Run the whole comparison; returns the report (also written to `out`, with `command` as the way to rerun it)."""
    from .._version import __version__
    from ..embedded import load_base_model, load_tokenizer
    from .mt_lora import training_arguments
    from .oppu import run_oppu
    from .plots import write_plots
    from .report import markdown_report, write_report

    started = time.perf_counter()
    out, workdir = Path(config["out"]), Path(config["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    methods = config["methods"]
    tokenizer = load_tokenizer(config["base_model"])
    splits = load_data(config)
    train = splits.get("train")
    test_splits = config["eval"]["splits"] or [s for s in splits if s != "train"]
    missing = [s for s in test_splits if s not in splits]
    if missing:
        raise ValueError(f"`eval.splits` names {missing}, but the data has the splits {sorted(splits)}.")
    timings: dict[str, float] = {"data_s": time.perf_counter() - started}

    _seed(config)
    base = load_base_model(config["base_model"])
    p2p, p2p_info, mt_lora = None, {}, None
    needs_p2p = "p2p" in methods or config["sweeps"]["k_values"] or config["sweeps"]["ablations"]
    if needs_p2p:
        p2p, p2p_info = prepare_p2p(config, train, tokenizer)
    if "mt_lora" in methods:
        mt_lora = prepare_mt_lora(config, train, tokenizer, timings)
    if p2p_info.get("train_s"):
        timings["p2p_train_s"] = p2p_info["train_s"]
    runner = Runner(config, tokenizer, base, p2p, mt_lora)
    judge = make_judge(config["judge"]["model"])
    judged_methods = config["judge"]["methods"] or methods

    results: dict[str, Any] = {}
    for split in test_splits:
        rows = eval_rows(splits[split], config["eval"]["users_per_task"], config["eval"]["queries_per_user"])
        answers: dict[str, list[str]] = {}
        seconds: dict[str, float] = {}
        prep: dict[str, dict[str, float]] = {}
        for method in methods:
            if method in PROMPT_METHODS:
                answers[method], seconds[method] = runner.prompt_method(method, rows)
            elif method == "mt_lora":
                answers[method], seconds[method] = runner.mt_lora_answers(rows)
            elif method == "p2p":
                prep["p2p"] = p2p_prep_seconds(p2p, rows)
                answers[method], seconds[method] = runner.p2p_answers(rows)
            elif method == "oppu":
                spec = config["oppu"]
                args = training_arguments(
                    str(workdir / "oppu"), seed=config["seed"], disable_tqdm=True, logging_strategy="no",
                    **spec["training"],
                )  # fmt: skip
                result = run_oppu(
                    base, tokenizer, rows, args, spec["lora"], config["eval"]["batch_size"],
                    config["eval"]["max_new_tokens"],
                )  # fmt: skip
                answers[method], seconds[method] = result.answers, result.generate_seconds
                prep["oppu"] = result.train_seconds
        scores = {method: _scores(rows, answers[method]) for method in methods}
        if judge is not None:
            generation = [i for i, task in enumerate(rows["task"]) if get_task(task).metric == "generation"]
            for method in judged_methods:
                for task in sorted({rows["task"][i] for i in generation}):
                    index = [i for i in generation if rows["task"][i] == task]
                    scores[method][task].update(
                        judge_scores(
                            judge,
                            [summary_of(rows[i]) for i in index],
                            [rows["output"][i] for i in index],
                            [answers[method][i] for i in index],
                        )  # fmt: skip
                    )
        results[split] = {
            "rows": len(rows),
            "users": len(set(rows["user_id"])),
            "scores": scores,
            "inference_s_per_row": {m: seconds[m] / max(len(rows), 1) for m in methods},
            "prep_s_per_user": prep,
            "examples": [
                {
                    "user_id": rows["user_id"][i],
                    "task": rows["task"][i],
                    "gold": rows["output"][i],
                    **{m: answers[m][i] for m in methods},
                }
                for i in range(min(4, len(rows)))
            ],  # fmt: skip
        }
        bucket_count = config["sweeps"]["activity_buckets"]
        if bucket_count:
            bucket, labels = activity_buckets(rows, bucket_count)
            results[split]["activity"] = {"labels": labels, "scores": {}}
            for method in methods:
                per_bucket = []
                for b in range(len(labels)):
                    index = [i for i, x in enumerate(bucket) if x == b]
                    per_bucket.append(_scores(rows.select(index), [answers[method][i] for i in index]))
                results[split]["activity"]["scores"][method] = per_bucket
    sweep_split = config["sweeps"]["split"] or test_splits[0]
    sweep_rows = eval_rows(splits[sweep_split], config["eval"]["users_per_task"], config["eval"]["queries_per_user"])
    if config["sweeps"]["k_values"]:
        k_sweep: dict[str, dict] = {"p2p": {}, "rag": {}}
        for k in config["sweeps"]["k_values"]:
            k_sweep["rag"][k] = _scores(sweep_rows, runner.prompt_method("rag", sweep_rows, k=k)[0])
            profiles = _profiles_with(config, sweep_rows, k=k, mode="full")
            k_sweep["p2p"][k] = _scores(sweep_rows, runner.p2p_answers(sweep_rows, profiles, f"p2p k={k}")[0])
        results["k_sweep"] = {"split": sweep_split, "scores": k_sweep}
    if config["sweeps"]["ablations"]:
        ablations = {"full": _scores(sweep_rows, runner.p2p_answers(sweep_rows)[0])}
        for mode in config["sweeps"]["ablations"]:
            k = max(config["profiles"].get("k", 2), 1) if mode == "retrieved" else config["profiles"].get("k", 2)
            profiles = _profiles_with(config, sweep_rows, mode=mode, k=k)
            ablations[mode] = _scores(sweep_rows, runner.p2p_answers(sweep_rows, profiles, f"p2p {mode}")[0])
        results["ablations"] = {"split": sweep_split, "scores": ablations}
    timings["total_s"] = time.perf_counter() - started
    report = {
        "command": command or "(called from Python: hyperpeft.evaluation.run.evaluate)",
        "config": config,
        "split_sizes": {name: {"rows": len(d), "users": len(set(d["user_id"]))} for name, d in splits.items()},
        "p2p": p2p_info,
        "judge": judge.name if judge is not None else None,
        "results": results,
        "timings": timings,
        "versions": _versions(__version__),
    }
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, out)
    write_report(report, markdown_report(report), out)
    return report


def _versions(hyperpeft_version: str) -> dict[str, str]:
    import peft
    import transformers
    import trl

    return {
        "hyperpeft": hyperpeft_version, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "trl": trl.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        + ("CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hyperpeft eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML file; see examples/configs/eval_*.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value entries that override the file")
    args = parser.parse_args(argv)
    try:
        config = read_eval_config(args.config, args.overrides)
    except ValueError as error:
        parser.error(str(error))
    try:
        report = evaluate(config, command="hyperpeft eval " + " ".join(sys.argv[1:] if argv is None else argv))
    except SkipRun as reason:
        print(f"Skipped: {reason}; nothing to evaluate.")
        return 0
    print((Path(config["out"]) / "report.md").read_text())
    print(f"wrote {config['out']}/report.md, report.json and {len(report['plots'])} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
