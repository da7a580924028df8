"""PNG plots of an evaluation report (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..checkpoint import write_files_atomically
from ..data.tasks import get_task
from .metrics import HEADLINE
from .report import NAMES


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _figure().close(fig)
    write_files_atomically(out, {name: buffer.getvalue()})
    return str(out / name)


def cumulative_prep_plot(seconds: dict[str, list[float]], out: str | Path, name: str = "adapter-prep.png") -> str:
    """
    Cumulative adapter-preparation time against the number of users, one line per method (`{"P2P": [s, ...]}`, each
    list the measured seconds of user 1, 2, ...). Log scale: P2P and OPPU differ by orders of magnitude.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for method, values in seconds.items():
        total, cumulative = 0.0, []
        for value in values:
            total += value
            cumulative.append(total)
        ax.plot(range(1, len(cumulative) + 1), cumulative, marker="o", markersize=3, label=method)
    ax.set_xlabel("users")
    ax.set_ylabel("cumulative adapter preparation (s)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, Path(out), name)


def _headline(task: str, scores: dict) -> float | None:
    metric, _ = HEADLINE[get_task(task).metric]
    return scores.get(task, {}).get(metric)


def write_plots(report: dict[str, Any], out: str | Path) -> list[str]:
    """Every plot the report's numbers allow: preparation time, metric vs k, metric per activity bucket."""
    out, results, written = Path(out), report["results"], []
    plt = _figure()
    prep: dict[str, list[float]] = {}
    for result in results.values():
        for method, per_user in result.get("prep_s_per_user", {}).items():
            prep.setdefault(NAMES[method], []).extend(per_user.values())
    if prep:
        written.append(cumulative_prep_plot(prep, out, "eval-adapter-prep.png"))
    if "k_sweep" in results:
        sweep = results["k_sweep"]["scores"]
        tasks = sorted({t for by_k in sweep.values() for s in by_k.values() for t in s})
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for method, by_k in sweep.items():
                ks = sorted(by_k, key=int)
                ax.plot([int(k) for k in ks], [_headline(task, by_k[k]) for k in ks], marker="o", label=NAMES[method])
            ax.set_title(task, fontsize=9)
            ax.set_xlabel("retrieved items k")
            ax.set_ylabel(HEADLINE[get_task(task).metric][0])
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        written.append(_save(fig, out, "eval-metric-vs-k.png"))
    for split, result in results.items():
        activity = result.get("activity") if isinstance(result, dict) else None
        if not activity or len(activity["labels"]) < 2:
            continue  # one bucket (every user has the same history length): nothing to plot
        methods = list(activity["scores"])
        tasks = sorted({t for per in activity["scores"].values() for s in per for t in s})
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for method in methods:
                values = [_headline(task, s) for s in activity["scores"][method]]
                ax.plot(activity["labels"], values, marker="o", label=NAMES[method])
            ax.set_title(f"{task} ({split})", fontsize=9)
            ax.set_xlabel("history items")
            ax.set_ylabel(HEADLINE[get_task(task).metric][0])
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        written.append(_save(fig, out, f"eval-activity-{split}.png"))
    return written
