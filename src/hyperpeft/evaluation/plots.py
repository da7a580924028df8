"""PNG plots of an evaluation report (matplotlib, no display needed), each readable without the report beside it:
a title that says what, on which split and how many rows; metric names with their direction; one legend; and points
of few rows drawn as points marked with their `n`, not as a trend."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..checkpoint import write_files_atomically
from ..data.tasks import get_task
from .metrics import HEADLINE
from .report import NAMES

METRIC_NAMES = {"accuracy": "accuracy", "f1": "macro-F1", "mae": "MAE", "rmse": "RMSE", "rouge1": "ROUGE-1",
                "rougeL": "ROUGE-L"}  # fmt: skip
# below this many rows a point is mostly noise: drawn unconnected and marked with its n
FEW_ROWS = 30


def metric_label(task: str) -> str:
    """The headline metric of `task` as a reader says it, with its direction: "MAE (lower is better)"."""
    metric, higher_is_better = HEADLINE[get_task(task).metric]
    return f"{METRIC_NAMES.get(metric, metric)} ({'higher' if higher_is_better else 'lower'} is better)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, name: str) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_files_atomically(out, {name: buffer.getvalue()})
    return str(out / name)


def _panels(count: int, title: str):
    """A figure of `count` side-by-side panels with room for their labels, and its title."""
    width = 4.4 * count if count > 1 else 6.0
    fig, axes = _pyplot().subplots(1, count, figsize=(width, 4.0), squeeze=False, layout="constrained")
    fig.suptitle(title, fontsize=10)
    return fig, list(axes[0])


def _one_legend(fig, axes) -> None:
    """One legend for the whole figure, below the panels (every panel shows the same methods)."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8)


def _points(ax, xs: list, scores: list[dict | None], task: str, label: str) -> list[int | None]:
    """One method's headline score at each x (few-row points joined only by a dotted line); returns each point's n."""
    metric, _ = HEADLINE[get_task(task).metric]
    values = [(s or {}).get(task, {}).get(metric) for s in scores]
    counts = [(s or {}).get(task, {}).get("n") for s in scores]
    few = any(n is not None and n < FEW_ROWS for n in counts)
    ax.plot(range(len(xs)), values, marker="o", linestyle=":" if few else "-", alpha=0.9, label=label)
    return counts


def _x_axis(ax, xs: list, counts: list[int | None], name: str) -> None:
    """Tick labels that carry each point's number of rows, so that a 4-row point is not read as a trend."""
    ax.set_xticks(range(len(xs)), [f"{x}\nn={n}" if n is not None else str(x) for x, n in zip(xs, counts)], fontsize=8)
    ax.set_xlabel(name + (" (n: rows per point)" if any(n is not None for n in counts) else ""), fontsize=8)


def cumulative_prep_plot(
    seconds: dict[str, list[float]], out: str | Path, name: str = "adapter-prep.png", title: str | None = None
) -> str:
    """
    Cumulative adapter-preparation time against the number of users, one line per method (`{"P2P": [s, ...]}`, each
    list the measured seconds of user 1, 2, ...). Log scale: P2P and OPPU differ by orders of magnitude.
    """
    users = max((len(v) for v in seconds.values()), default=0)
    fig, (ax,) = _panels(1, title or f"Time to prepare each user's adapter, cumulative ({users} users)")
    for method, values in seconds.items():
        total, cumulative = 0.0, []
        for value in values:
            total += value
            cumulative.append(total)
        ax.plot(range(1, len(cumulative) + 1), cumulative, marker="o", markersize=3, label=method)
    ax.set_xlabel("users prepared")
    ax.set_ylabel("seconds, cumulative (log scale)\nlower is better", fontsize=8)
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    _one_legend(fig, [ax])
    return _save(fig, Path(out), name)


def write_plots(report: dict[str, Any], out: str | Path) -> list[str]:
    """Every plot the report's numbers allow: preparation time, metric vs k, metric per activity bucket."""
    out, results, written = Path(out), report["results"], []
    prep: dict[str, list[float]] = {}
    for result in results.values():
        for method, per_user in result.get("prep_s_per_user", {}).items():
            prep.setdefault(NAMES[method], []).extend(per_user.values())
    if prep:
        splits = ", ".join(s for s, r in results.items() if r.get("prep_s_per_user"))
        users = max(len(v) for v in prep.values())
        title = f"Time to prepare each user's adapter, cumulative ({splits}: {users} users)"
        written.append(cumulative_prep_plot(prep, out, "eval-adapter-prep.png", title))
    if "k_sweep" in results:
        sweep = results["k_sweep"]
        tasks = sorted({t for by_k in sweep["scores"].values() for s in by_k.values() for t in s})
        fig, axes = _panels(len(tasks), f"Score against the number of retrieved history items k ({sweep['split']})")
        for ax, task in zip(axes, tasks):
            for method, by_k in sweep["scores"].items():
                ks = sorted(by_k, key=int)
                counts = _points(ax, ks, [by_k[k] for k in ks], task, NAMES[method])
            _x_axis(ax, ks, counts, "retrieved history items k")
            ax.set_title(task, fontsize=9)
            ax.set_ylabel(metric_label(task), fontsize=8)
            ax.grid(alpha=0.3)
        _one_legend(fig, axes)
        written.append(_save(fig, out, "eval-metric-vs-k.png"))
    for split, result in results.items():
        activity = result.get("activity") if isinstance(result, dict) else None
        if not activity or len(activity["labels"]) < 2:
            continue  # one bucket (every user has the same history length): nothing to plot
        tasks = sorted({t for per in activity["scores"].values() for s in per for t in s})
        rows = result.get("rows", "?")
        fig, axes = _panels(len(tasks), f"Score by the length of the user's history ({split}, {rows} rows)")
        for ax, task in zip(axes, tasks):
            for method, scores in activity["scores"].items():
                counts = _points(ax, activity["labels"], scores, task, NAMES[method])
            _x_axis(ax, activity["labels"], counts, "history items of the user")
            ax.set_title(task, fontsize=9)
            ax.set_ylabel(metric_label(task), fontsize=8)
            ax.grid(alpha=0.3)
        _one_legend(fig, axes)
        written.append(_save(fig, out, f"eval-activity-{split}.png"))
    return written
