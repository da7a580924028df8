"""The evaluation report: markdown tables in the paper's shape (tasks x methods, the best in bold, a time row) and the
same numbers as JSON, written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..checkpoint import write_files_atomically
from ..data.tasks import CLASSIFICATION, GENERATION, RATING, get_task
from .metrics import HEADLINE

# The metrics shown per task kind, with whether higher is better.
SHOWN = {
    CLASSIFICATION: (("accuracy", True), ("f1", True), ("gold_nll", False)),
    RATING: (("mae", False), ("rmse", False), ("gold_nll", False)),
    GENERATION: (
        ("rouge1", True), ("rougeL", True), ("judge", True), ("attribution_acc1", True), ("attribution_mrr", True),
        ("gold_nll", False),
    ),
}  # fmt: skip
METRIC_NAMES = {"attribution_acc1": "author acc@1", "attribution_mrr": "author MRR", "gold_nll": "gold NLL / token"}
NAMES = {
    "base": "Base", "rag": "RAG", "pag": "PAG", "full_history": "Full history", "mt_lora": "MT-LoRA",
    "oppu": "OPPU", "p2p": "P2P", "p2p_other_user": "P2P, another user's profile",
    "full": "P2P (summary + top-k)", "random_user": "another user's profile",
    "shuffled": "profile words shuffled", "summary": "summary only", "retrieved": "retrieved items only",
    "history": "full history only",
}  # fmt: skip


def _cell(value: float | None, best: bool, interval: list[float] | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"**{value:.3f}**" if best else f"{value:.3f}"
    return f"{text} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else text


def score_table(
    scores: dict[str, dict[str, dict]],
    columns: list[str] | None = None,
    intervals: dict | None = None,
    ablations: tuple[str, ...] = (),
) -> list[str]:
    """
    Rows (task, metric), one column per method (or ablation); the best of each row in bold, not counting the
    `ablations` (which are there to lose); with `intervals` (method -> task -> metric -> [low, high]), each score
    followed by its 95% interval.
    """
    columns = columns or list(scores)
    tasks = sorted({t for column in columns for t in scores[column]})
    lines = [
        "| task | metric | " + " | ".join(NAMES.get(c, str(c)) for c in columns) + " |",
        "| --- | --- |" + " ---: |" * len(columns),
    ]
    for task in tasks:
        for metric, higher in SHOWN[get_task(task).metric]:
            values = [scores[c].get(task, {}).get(metric) for c in columns]
            present = [v for v in values if v is not None and not math.isnan(v)]
            ranked = [v for c, v in zip(columns, values) if c not in ablations and v is not None and not math.isnan(v)]
            if not present:
                continue
            best = (max(ranked) if higher else min(ranked)) if ranked else None
            arrow = "↑" if higher else "↓"
            ties_everywhere = len(set(ranked)) <= 1  # nothing is best when all are equal
            bounds = [(intervals or {}).get(c, {}).get(task, {}).get(metric) for c in columns]
            cells = [
                _cell(v, c not in ablations and v is not None and not ties_everywhere and v == best, b)
                for c, v, b in zip(columns, values, bounds)
            ]
            lines.append(f"| {task} | {METRIC_NAMES.get(metric, metric)} {arrow} | " + " | ".join(cells) + " |")
        unparseable = [scores[c].get(task, {}).get("unparseable") for c in columns]
        if any(unparseable):
            lines.append(f"| {task} | unparseable | " + " | ".join(str(u) for u in unparseable) + " |")
        judged = [scores[c].get(task, {}).get("judge_unparseable") for c in columns]
        if any(judged):
            lines.append(f"| {task} | judge unparseable | " + " | ".join(str(u) for u in judged) + " |")
    return lines


def headline_table(report: dict[str, Any], ablations: tuple[str, ...] = ("p2p_other_user",)) -> str:
    """
    One table per test split: methods x tasks, each task's headline metric, the best in bold (not counting the
    `ablations`, which are there to lose).
    """
    lines = []
    methods = report["config"]["methods"]
    for split, result in report["results"].items():
        if split in ("k_sweep", "ablations") or not methods:
            continue
        scores = result["scores"]
        tasks = sorted({t for m in methods for t in scores[m]})
        headline = {t: HEADLINE[get_task(t).metric] for t in tasks}
        best = {}
        for task, (metric, higher) in headline.items():
            compared = [scores[m][task][metric] for m in methods if m not in ablations]
            best[task] = max(compared) if higher else min(compared)
        queries = scores[methods[0]][tasks[0]]["n"]
        directions = ", ".join(f"{t}: {m} {'higher' if h else 'lower'} is better" for t, (m, h) in headline.items())
        lines += [f"\n**{split}** ({queries} queries per task; {directions})\n"]
        lines += ["| method | " + " | ".join(tasks) + " |", "| --- |" + " --- |" * len(tasks)]
        for method in methods:
            cells = []
            for task, (metric, _) in headline.items():
                value = scores[method][task][metric]
                interval = result.get("intervals", {}).get(method, {}).get(task, {}).get(metric)
                cells.append(_cell(value, method not in ablations and value == best[task], interval))
            lines.append(f"| {NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(paired: dict[str, list[dict]]) -> list[str]:
    """The paired bootstraps: each comparison's difference, its 95% interval and whether the interval excludes 0."""
    lines = [
        "Paired bootstrap over users (the same users drawn for both methods): method minus the one it is compared "
        "with; for MAE and the gold NLL lower is better, for the others higher.",
        "",
        "| task | metric | method | against | difference | 95% interval | p | excludes 0 |",
        "| --- | --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for task, tests in sorted(paired.items()):
        for t in tests:
            low, high = t["interval"]
            lines.append(
                f"| {task} | {METRIC_NAMES.get(t['metric'], t['metric'])} | {NAMES.get(t['method'], t['method'])} | "
                f"{NAMES.get(t['against'], t['against'])} | {t['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | "
                f"{t['p']:.3f} | {'yes' if low > 0 or high < 0 else 'no'} |"
            )
    return lines


def attribution_reference(reference: dict[str, dict]) -> list[str]:
    """One line per task: the attribution of the users' own texts (the level real writing reaches) and chance."""
    lines = []
    for task, found in sorted(reference.items()):
        if not found.get("gold"):
            continue
        gold, chance, bounds = found["gold"], found["chance"], found.get("gold_intervals", {})
        cells = [
            f"{METRIC_NAMES[m]} {_cell(gold[m], False, bounds.get(m))} (chance {chance[m]:.3f})"
            for m in ("attribution_acc1", "attribution_mrr")
        ]
        lines += [
            "",
            f"{task}: the users' own texts (the gold answers) are attributed with {' and '.join(cells)}, among "
            f"{found['candidates']} candidates: the level that the users' real writing reaches on this metric.",
        ]
    return lines


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report as markdown."""
    config, results = report["config"], report["results"]
    methods = config["methods"]
    evaluation = config["eval"]
    lines = [
        f"# Evaluation: {config['data'].get('source', 'synthetic')} data",
        "",
        f"Command: `{report['command']}`",
        "",
        *[f"Note: {note}\n" for note in report.get("notes", [])],
        f"Base model {config['base_model']}; greedy decoding, the same prompts and token limits for every method; "
        f"k = {config['profiles'].get('k', 2)} retrieved items; RAG/PAG context budget {evaluation['context_tokens']} "
        f"tokens, full-history budget {evaluation['history_tokens']} tokens; seed {config['seed']}. "
        + _guidance_line(config.get("p2p", {}))
        + f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}.",
        "",
        "Data: "
        + ", ".join(f"{s} {v['rows']} rows / {v['users']} users" for s, v in report["split_sizes"].items())
        + ". Evaluated: "
        + ("every user" if evaluation["users_per_task"] is None else f"up to {evaluation['users_per_task']} users")
        + f" per task, {evaluation['queries_per_user']} queries per user.",
    ]
    if report.get("judge"):
        lines += ["", f"Judge: {report['judge']} (1-5; replies without a grade are left out of the mean and counted)."]
    for split, result in results.items():
        if split in ("k_sweep", "ablations") or not methods:
            continue
        lines += ["", f"## {split} ({result['rows']} rows, {result['users']} users)", ""]
        if result.get("intervals"):
            samples = evaluation.get("bootstrap_samples")
            lines += [f"Each score with its 95% bootstrap interval over users ({samples} resamples).", ""]
        lines += score_table(result["scores"], methods, result.get("intervals"), ablations=("p2p_other_user",))
        times = result["inference_s_per_row"]
        lines.append("| time | inference ms / row | " + " | ".join(f"{1000 * times[m]:.0f}" for m in methods) + " |")
        prep = result["prep_s_per_user"]
        cells = [f"{sum(prep[m].values()) / len(prep[m]):.3f}" if prep.get(m) else "-" for m in methods]
        lines.append("| time | adapter prep s / user | " + " | ".join(cells) + " |")
        lines += attribution_reference(result.get("attribution_reference", {}))
        if result.get("paired"):
            lines += ["", *paired_table(result["paired"])]
        if result.get("activity") and len(result["activity"]["labels"]) > 1:
            activity = result["activity"]
            lines += ["", f"By history length ({', '.join(activity['labels'])} items):", ""]
            for b, label in enumerate(activity["labels"]):
                per = {m: activity["scores"][m][b] for m in methods}
                lines += ["", f"History {label} items:", ""] + score_table(per, methods, ablations=("p2p_other_user",))
    if "k_sweep" in results:
        sweep = results["k_sweep"]
        lines += ["", f"## Retrieved items k ({sweep['split']})", ""]
        for method, by_k in sweep["scores"].items():
            lines += ["", f"{NAMES[method]}:", ""]
            lines += score_table({f"k={k}": v for k, v in by_k.items()})
    if "ablations" in results:
        ablation = results["ablations"]
        lines += ["", f"## P2P profile ablations ({ablation['split']})", ""]
        lines += score_table(ablation["scores"])
    if report.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["plots"]]
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in report["timings"].items())]
    return "\n".join(lines) + "\n"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_report(
    report: dict[str, Any], markdown: str, out: str | Path, predictions: dict[str, list[dict]] | None = None
) -> None:
    """
    `report.md`, `report.json` and, with `predictions` (split -> rows), one `predictions-<split>.jsonl` per split
    (each row's input, gold output, every method's answer and its scores), all written atomically together.
    """
    files = {
        "report.md": markdown.encode(),
        "report.json": (json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n").encode(),
    }
    for split, rows in (predictions or {}).items():
        lines = [json.dumps(_jsonable(row), ensure_ascii=False) for row in rows]
        files[f"predictions-{split}.jsonl"] = ("\n".join(lines) + "\n").encode()
    write_files_atomically(out, files)


def _guidance_line(p2p: dict) -> str:
    """The header's sentence on P2P's profile guidance, when the run used it."""
    if p2p.get("guidance_scale") is None:
        return ""
    return (
        f"P2P and its other-user ablation decode with profile guidance: scale {p2p['guidance_scale']} against the "
        f"profile {p2p['negative_profile']!r} (the gold NLL is the model's own, unguided). "
    )
