"""`evaluate`: every method on the same users, prompts and decoding, scored and reported (the paper's procedure).

    hyperpeft eval --config examples/configs/eval_synthetic.yaml [--users_per_task 4 --oppu_training '{...}' ...]

1. load the data and build each row's profile (summary + BM25 top-k);
2. prepare every method once (train P2P and MT-LoRA, or load their checkpoints);
3. for each test split, let every method answer the same evaluated rows, and score the answers per task (and by an
   LLM judge, for generated texts);
4. the sweeps on one split: retrieved items k for P2P and RAG, and P2P's profile ablations;
5. write `report.md`, `report.json`, each split's per-row answers and scores (`predictions-<split>.jsonl`) and the
   plots to `out`.

Every score of a test split carries a 95% bootstrap interval over users, and P2P is compared with the best baseline
(and its other-user ablation with P2P) by a paired bootstrap; generated texts are also scored by author
attribution (see `hyperpeft.evaluation.attribution`).
"""

from __future__ import annotations

import copy
import gc
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, concatenate_datasets
from transformers.utils import logging

from .._version import __version__
from ..data.tasks import GENERATION, get_task
from .attribution import AuthorAttribution
from .config import EvalConfig
from .context import RunContext
from .judge import judge_scores, make_judge
from .methods import make_method
from .methods.base import Answers
from .methods.prompting import build_contexts, summary_of
from .metrics import HEADLINE, aggregate_rows, attribution_scores, chance_attribution, score_rows
from .uncertainty import bootstrap_intervals, paired_difference, user_resamples

logger = logging.get_logger(__name__)


def evaluate(config: EvalConfig, command: str | None = None, run: RunContext | None = None) -> dict[str, Any]:
    """
    Run the whole comparison; returns the report (also written to `config.run.out`, with `command` as the way to
    rerun it). `run` is the [`RunContext`] to use (made here by default), e.g. to keep the trained models after.

    A `kfold` user split without a `fold` is a cross-validation: every fold trains its own models (in
    `workdir/fold-<i>-of-<folds>-seed-<seed>`, and each checkpoint folder gets a folder of that name) and answers its
    own test users, and the answers of all folds are scored together as one split, `test_kfold`, in which every user
    is a test user once. With a `fold`, the run is that fold alone, in the same folders.
    """
    started = time.perf_counter()
    folds = _cross_validation_folds(config)
    if folds is not None and run is not None:
        raise ValueError("A cross-validation makes one RunContext per fold; do not pass `run`.")
    split = config.data.user_split or {}
    if split.get("method") == "kfold" and "fold" in split and run is None:
        config = _fold_config(config, split["fold"])  # one fold: the same folders as that fold of the whole run
    judge = make_judge(config.judge.judge_model)
    encoder = None
    if config.eval.attribution_encoder:
        from ..encoder import ProfileEncoder

        encoder = ProfileEncoder(config.eval.attribution_encoder)
    results: dict[str, Any] = {}
    predictions: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    if folds is None:
        data_started = time.perf_counter()
        run = run or RunContext(config)
        timings["data_s"] = time.perf_counter() - data_started
        methods, p2p_info = _prepare(config, run, timings)
        split_sizes = _split_sizes(run.splits)
        for split in _test_splits(config, run):
            rows = eval_rows(run.splits[split], config.eval.users_per_task, config.eval.queries_per_user)
            answers = {name: method.answer(rows) for name, method in methods.items()}
            results[split], predictions[split] = _score_split(config, rows, answers, judge, encoder)
        results.update(_sweeps(config, run))
    else:
        rows, answers, p2p_info, split_sizes = _cross_validate(config, folds, timings)
        results["test_kfold"], predictions["test_kfold"] = _score_split(config, rows, answers, judge, encoder)
    timings["total_s"] = time.perf_counter() - started
    report = {
        "command": command or "(called from Python: hyperpeft.evaluation.run.evaluate)",
        "config": config.to_dict(),
        "split_sizes": split_sizes,
        "p2p": p2p_info,
        "judge": judge.name if judge is not None else None,
        "results": results,
        "timings": timings,
        "versions": _versions(),
    }
    from .plots import write_plots
    from .report import markdown_report, write_report

    out = Path(config.run.out)
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = write_plots(report, out)
    write_report(report, markdown_report(report), out, predictions)
    return report


def _prepare(config: EvalConfig, run: RunContext, timings: dict[str, float]) -> tuple[dict, dict]:
    """Every method of the run, prepared (trained or loaded) once, and what the report says about P2P."""
    methods = {name: make_method(name, run) for name in config.run.methods}
    needs_p2p = config.sweeps.k_values or config.sweeps.ablations
    prepared = {name: method.prepare() for name, method in methods.items()}
    p2p_info = prepared.get("p2p") or (run.p2p_model()[1] if needs_p2p else {})
    for name, info in prepared.items():
        if info.get("train_s"):
            timings[f"{name}_train_s"] = timings.get(f"{name}_train_s", 0.0) + info["train_s"]
    return methods, p2p_info


def _split_sizes(splits: dict[str, Dataset], suffix: str = "") -> dict[str, dict[str, int]]:
    return {f"{name}{suffix}": {"rows": len(d), "users": len(set(d["user_id"]))} for name, d in splits.items()}


def _cross_validation_folds(config: EvalConfig) -> int | None:
    """The number of folds when the run is a whole cross-validation (a `kfold` user split without `fold`)."""
    split = config.data.user_split or {}
    if split.get("method") != "kfold" or "fold" in split:
        return None
    if config.eval.eval_splits not in (None, ["test_kfold"]):
        raise ValueError(
            f"A cross-validation has one test split, `test_kfold`, but `eval_splits` is {config.eval.eval_splits}; "
            "leave it out."
        )
    if config.sweeps.k_values or config.sweeps.ablations:
        raise ValueError(
            "The k sweep and the profile ablations run on one split: give the kfold split a `fold` to sweep on, or "
            "leave `sweeps.k_values` and `sweeps.ablations` empty for the cross-validation."
        )
    return split["folds"]


def _check_two_users_per_task(rows: Dataset, fold: int, folds: int) -> None:
    for task, index in _rows_by_task(rows).items():
        users = {rows["user_id"][i] for i in index}
        if len(users) < 2:
            raise ValueError(
                f"Fold {fold} of the {folds}-fold split tests {len(users)} user of task {task!r}, but "
                "`p2p_other_user` gives each row another test user's profile; use fewer folds, or leave "
                "`p2p_other_user` out."
            )


def _fold_config(config: EvalConfig, fold: int) -> EvalConfig:
    """The settings of one fold: its user split, its own workdir and its own checkpoint folders."""
    fold_config = copy.deepcopy(config)
    fold_config.data.user_split = {**config.data.user_split, "fold": fold}
    # Named by the whole split, so that a model trained for other folds (or another seed) is never loaded as this one.
    split = config.data.user_split
    name = f"fold-{fold}-of-{split['folds']}-seed-{split.get('seed', config.run.seed)}"
    fold_config.run.workdir = str(Path(config.run.workdir) / name)
    # The summaries depend on a user's history, not on the split: one cache for every fold.
    fold_config.profiles.summary_cache = config.profiles.summary_cache or str(
        Path(config.run.workdir) / "summaries.sqlite"
    )
    for section, field_name in (("p2p", "p2p_checkpoint"), ("mt_lora", "mt_lora_checkpoint")):
        folder = getattr(getattr(config, section), field_name)
        if folder:
            setattr(getattr(fold_config, section), field_name, str(Path(folder) / name))
    return fold_config


def _cross_validate(config: EvalConfig, folds: int, timings: dict[str, float]):
    """Each fold's methods trained on its training users and answering its test users; the answers pooled."""
    fold_rows, fold_answers, p2p_info, split_sizes = [], [], {"folds": []}, {}
    # every fold's data first (no model yet), so that a fold that cannot be evaluated stops the run before training
    runs = [RunContext(_fold_config(config, fold)) for fold in range(folds)]
    evaluation = config.eval
    tested = [eval_rows(r.splits["test_kfold"], evaluation.users_per_task, evaluation.queries_per_user) for r in runs]
    if "p2p_other_user" in config.run.methods:
        for fold, rows in enumerate(tested):
            _check_two_users_per_task(rows, fold, folds)
    for fold in range(folds):
        logger.warning("Cross-validation: fold %d of %d.", fold + 1, folds)
        run, rows = runs[fold], tested[fold]
        fold_rows.append(rows.add_column("fold", [fold] * len(rows)))
        methods, info = _prepare(run.config, run, timings)
        p2p_info["folds"].append(info)
        split_sizes.update(_split_sizes({"train": run.train}, f" (fold {fold})"))
        fold_answers.append({name: method.answer(rows) for name, method in methods.items()})
        runs[fold] = None
        del methods, run  # one fold's models in memory at a time
        gc.collect()
    rows = concatenate_datasets(fold_rows)
    split_sizes.update(_split_sizes({"test_kfold": rows}))
    answers = {
        name: Answers(
            answers=[a for by_method in fold_answers for a in by_method[name].answers],
            seconds=sum(by_method[name].seconds for by_method in fold_answers),
            prep_s_per_user=_merged(by_method[name].prep_s_per_user for by_method in fold_answers),
            gold_nll=_joined([by_method[name].gold_nll for by_method in fold_answers]),
        )
        for name in fold_answers[0]
    }
    return rows, answers, p2p_info, split_sizes


def _merged(mappings) -> dict[str, float]:
    return {key: value for mapping in mappings for key, value in mapping.items()}


def _joined(lists: list[list | None]) -> list | None:
    return None if any(values is None for values in lists) else [v for values in lists for v in values]


def _test_splits(config: EvalConfig, run: RunContext) -> list[str]:
    splits = config.eval.eval_splits or [s for s in run.splits if s != "train"]
    missing = [s for s in splits if s not in run.splits]
    if missing:
        raise ValueError(f"`eval_splits` names {missing}, but the data has the splits {sorted(run.splits)}.")
    return splits


def _score_split(
    config: EvalConfig, rows: Dataset, answers: dict[str, Answers], judge, encoder=None
) -> tuple[dict[str, Any], list[dict]]:
    """
    Every method's answers to `rows` scored per task with intervals and paired tests, timings and (when asked)
    history-length buckets; and the per-row predictions.
    """
    attribution = _attribution(rows, encoder)
    per_row = {name: scored_rows(rows, a.answers, attribution, a.gold_nll) for name, a in answers.items()}
    scores = {name: aggregate_by_task(rows, per_row[name]) for name in answers}
    if judge is not None:
        for name in config.judge.judge_methods or list(answers):
            _add_judge_scores(judge, rows, answers[name].answers, scores[name])
    result = {
        "rows": len(rows),
        "users": len(set(rows["user_id"])),
        "scores": scores,
        "inference_s_per_row": {name: a.seconds / max(len(rows), 1) for name, a in answers.items()},
        "prep_s_per_user": {name: a.prep_s_per_user for name, a in answers.items() if a.prep_s_per_user},
        "examples": [
            {
                "user_id": rows["user_id"][i],
                "task": rows["task"][i],
                "gold": rows["output"][i],
                **{name: a.answers[i] for name, a in answers.items()},
            }
            for i in range(min(4, len(rows)))
        ],  # fmt: skip
    }
    if config.eval.bootstrap_samples:
        result["intervals"], result["paired"] = _uncertainty(rows, per_row, scores, config)
    if attribution:
        result["attribution_reference"] = _attribution_reference(rows, attribution, config)
    if config.sweeps.activity_buckets:
        bucket, labels = activity_buckets(rows, config.sweeps.activity_buckets)
        per_bucket = {}
        for name, a in answers.items():
            per_bucket[name] = []
            for b in range(len(labels)):
                index = [i for i, x in enumerate(bucket) if x == b]
                per_bucket[name].append(scores_by_task(rows.select(index), [a.answers[i] for i in index]))
        result["activity"] = {"labels": labels, "scores": per_bucket}
    predictions = [
        {
            "row": i, "id": rows["id"][i], "user_id": rows["user_id"][i], "task": rows["task"][i],
            **({"fold": rows["fold"][i]} if "fold" in rows.column_names else {}),
            "input": rows["input"][i], "profile": rows["profile"][i] if "profile" in rows.column_names else None,
            "gold": rows["output"][i],
            "answers": {name: a.answers[i] for name, a in answers.items()},
            "scores": {name: per_row[name][i] for name in answers},
        }
        for i in range(len(rows))
    ]  # fmt: skip
    return result, predictions


def _attribution(rows: Dataset, encoder) -> dict[str, AuthorAttribution]:
    """One author attribution per generation task, its candidates the task's evaluated users."""
    if encoder is None:
        return {}
    found = {}
    for task, index in _rows_by_task(rows).items():
        if get_task(task).metric == GENERATION:
            histories = [rows["history"][i] for i in index]
            found[task] = AuthorAttribution(encoder, [rows["user_id"][i] for i in index], histories)
    return found


def _attribution_reference(rows: Dataset, attribution: dict[str, AuthorAttribution], config: EvalConfig) -> dict:
    """
    Per task, what the attribution gives the users' own texts (the gold outputs, never in their own history), the
    level that real writing reaches on this data; and what a ranking that knows nothing gets.
    """
    found = {}
    for task, index in _rows_by_task(rows).items():
        if task not in attribution:
            continue
        users = [rows["user_id"][i] for i in index]
        ranks = attribution[task].ranks([rows["output"][i] for i in index], users, [rows["input"][i] for i in index])
        gold = [{"attribution_rank": rank} for rank in ranks]
        found[task] = {"candidates": len(attribution[task].candidates), "gold": attribution_scores(gold)}
        found[task]["chance"] = chance_attribution(found[task]["candidates"]) if found[task]["candidates"] else {}
        if config.eval.bootstrap_samples and found[task]["gold"]:
            resamples = user_resamples(users, config.eval.bootstrap_samples, seed=config.run.seed)
            found[task]["gold_intervals"] = bootstrap_intervals(gold, attribution_scores, resamples)
    return found


# Methods that are P2P or its ablations; the others are the baselines P2P is compared with.
_P2P_METHODS = ("p2p", "p2p_other_user")
# Baselines P2P is always compared with, besides the best one: the model without an adapter, and one LoRA for all.
_CONTROLS = ("mt_lora", "base")


def _uncertainty(rows: Dataset, per_row: dict, scores: dict, config: EvalConfig) -> tuple[dict, dict]:
    """95% intervals of every score over users, and paired bootstraps: P2P against the best baseline of each
    compared metric (the task's headline metric and the attribution) and against MT-LoRA and the base model, and
    P2P's other-user ablation against P2P."""
    intervals: dict[str, dict] = {name: {} for name in per_row}
    paired: dict[str, list[dict]] = {}
    for task, index in _rows_by_task(rows).items():
        aggregate = partial(aggregate_rows, get_task(task).metric)
        users = [rows["user_id"][i] for i in index]
        resamples = user_resamples(users, config.eval.bootstrap_samples, seed=config.run.seed)
        task_rows = {name: [per_row[name][i] for i in index] for name in per_row}
        for name, values in task_rows.items():
            intervals[name][task] = bootstrap_intervals(values, aggregate, resamples)
        headline, higher = HEADLINE[get_task(task).metric]
        compared = [(headline, higher), ("attribution_acc1", True), ("attribution_mrr", True), ("gold_nll", False)]
        paired[task] = []
        for metric, higher in compared:
            if "p2p" not in per_row or metric not in scores["p2p"][task]:
                continue
            baselines = [n for n in per_row if n not in _P2P_METHODS and metric in scores[n][task]]
            pairs = []
            if baselines:
                best = (max if higher else min)(baselines, key=lambda n: scores[n][task][metric])
                # the best baseline, and the two controls every P2P claim is about: the base model and MT-LoRA
                controls = [n for n in _CONTROLS if n in baselines and n != best]
                pairs += [("p2p", against) for against in [best, *controls]]
            pairs += [("p2p_other_user", "p2p")] if "p2p_other_user" in per_row else []
            for method, against in pairs:
                test = paired_difference(task_rows[method], task_rows[against], aggregate, metric, resamples)
                paired[task].append({"method": method, "against": against, "metric": metric, **test})
    return intervals, paired


def _add_judge_scores(judge, rows: Dataset, answers: list[str], scores: dict[str, dict]) -> None:
    """The judge's grades of the generated texts, added to their tasks' scores."""
    generation = [i for i, task in enumerate(rows["task"]) if get_task(task).metric == "generation"]
    for task in sorted({rows["task"][i] for i in generation}):
        index = [i for i in generation if rows["task"][i] == task]
        scores[task].update(
            judge_scores(
                judge,
                [summary_of(rows[i]) for i in index],
                [rows["output"][i] for i in index],
                [answers[i] for i in index],
            )  # fmt: skip
        )


def _sweeps(config: EvalConfig, run: RunContext) -> dict[str, Any]:
    """The k sweep (P2P and RAG) and P2P's profile ablations, on one split."""
    sweeps = config.sweeps
    if not (sweeps.k_values or sweeps.ablations):
        return {}
    split = sweeps.sweep_split or _test_splits(config, run)[0]
    rows = eval_rows(run.splits[split], config.eval.users_per_task, config.eval.queries_per_user)
    p2p = make_method("p2p", run)
    p2p.prepare()
    rag = make_method("rag", run)
    results: dict[str, Any] = {}

    def scored(answers: Answers) -> dict[str, dict]:
        return scores_by_task(rows, answers.answers, answers.gold_nll)

    if sweeps.k_values:
        by_k: dict[str, dict] = {"p2p": {}, "rag": {}}
        for k in sweeps.k_values:
            evaluation = config.eval
            contexts = build_contexts(
                "rag", rows, run.tokenizer, k=k, context_tokens=evaluation.context_tokens,
                history_tokens=evaluation.history_tokens,
            )  # fmt: skip
            by_k["rag"][k] = scored(rag.generate(run.base, rows, contexts=contexts))
            profiles = run.profiles_with(rows, k=k, mode="full")
            by_k["p2p"][k] = scored(p2p.generate(p2p.model, rows, f"p2p k={k}", profiles=profiles))
        results["k_sweep"] = {"split": split, "scores": by_k}
    if sweeps.ablations:
        ablations = {"full": scored(p2p.generate(p2p.model, rows, profiles=rows["profile"]))}
        for mode in sweeps.ablations:
            k = max(run.k, 1) if mode == "retrieved" else run.k
            profiles = run.profiles_with(rows, mode=mode, k=k)
            ablations[mode] = scored(p2p.generate(p2p.model, rows, f"p2p {mode}", profiles=profiles))
        results["ablations"] = {"split": split, "scores": ablations}
    return results


def eval_rows(dataset: Dataset, users_per_task: int | None, queries_per_user: int | None) -> Dataset:
    """The first `queries_per_user` rows of the first `users_per_task` users of each task (all when `None`)."""
    users: dict[str, list[str]] = {}
    counts: dict[tuple[str, str], int] = {}
    keep = []
    for i, (user, task) in enumerate(zip(dataset["user_id"], dataset["task"])):
        chosen = users.setdefault(task, [])
        if user not in chosen:
            if users_per_task is not None and len(chosen) >= users_per_task:
                continue
            chosen.append(user)
        counts[(task, user)] = counts.get((task, user), 0) + 1
        if queries_per_user is None or counts[(task, user)] <= queries_per_user:
            keep.append(i)
    return dataset.select(keep)


def _rows_by_task(rows: Dataset) -> dict[str, list[int]]:
    by_task: dict[str, list[int]] = {}
    for i, task in enumerate(rows["task"]):
        by_task.setdefault(task, []).append(i)
    return by_task


def scored_rows(
    rows: Dataset,
    answers: list[str],
    attribution: dict[str, AuthorAttribution] | None = None,
    gold_nll: list[float] | None = None,
) -> list[dict]:
    """
    Each row's scores against its gold output, with the rank of its true author where `attribution` has its task
    (the candidates' history items on the row's own input left out), and the gold answer's NLL when given.
    """
    found: list[dict] = [{} for _ in range(len(rows))]
    golds, users = rows["output"], rows["user_id"]
    inputs = rows["input"] if attribution else None
    for task, index in _rows_by_task(rows).items():
        task_answers = [answers[i] for i in index]
        task_scores = score_rows(task, task_answers, [golds[i] for i in index])
        if attribution and task in attribution:
            ranks = attribution[task].ranks(task_answers, [users[i] for i in index], [inputs[i] for i in index])
            for row_scores, rank in zip(task_scores, ranks):
                row_scores["attribution_rank"] = rank
        for i, row_scores in zip(index, task_scores):
            found[i] = row_scores if gold_nll is None else {**row_scores, "gold_nll": gold_nll[i]}
    return found


def aggregate_by_task(rows: Dataset, per_row: list[dict]) -> dict[str, dict]:
    """Each task's metrics from the rows' scores (as [`scored_rows`] gives them)."""
    return {
        task: aggregate_rows(get_task(task).metric, [per_row[i] for i in index])
        for task, index in _rows_by_task(rows).items()
    }


def scores_by_task(rows: Dataset, answers: list[str], gold_nll: list[float] | None = None) -> dict[str, dict]:
    """Each task's metrics of `answers` against the rows' gold outputs (and of the gold answers' NLL when given)."""
    return aggregate_by_task(rows, scored_rows(rows, answers, gold_nll=gold_nll))


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


def _versions() -> dict[str, str]:
    import peft
    import transformers
    import trl

    return {
        "hyperpeft": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "trl": trl.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
        + ("CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"),
    }  # fmt: skip


__all__ = ["activity_buckets", "aggregate_by_task", "eval_rows", "evaluate", "scored_rows", "scores_by_task"]
