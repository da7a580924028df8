"""The paper's metrics: accuracy and macro-F1, MAE and RMSE, ROUGE-1 and ROUGE-L; answers parsed strictly.

An answer that cannot be matched to the task's label set counts as wrong (classification) or as the worst possible
error (rating), and the number of such answers is reported.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from ..data.tasks import CLASSIFICATION, GENERATION, RATING, get_task

_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = " \t\n\"'`.,;:!?()[]{}*"


def _normalize(text: str) -> str:
    return _SPACES.sub(" ", text.strip().lower()).strip(_EDGE_PUNCTUATION)


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """
    The label an answer names: the answer itself when it is a label (case, spaces and edge punctuation ignored), else
    the one label it mentions (longer labels first, so "dark comedy" is not also "comedy"); `None` when it names no
    label or several.

    Example:

    ```python
    >>> parse_label("Comedy.", ["action", "comedy"]), parse_label("it's action", ["action", "comedy"])
    ('comedy', 'action')
    ```
    """
    text = _normalize(answer)
    by_form = {_normalize(label): label for label in labels}
    if text in by_form:
        return by_form[text]
    found, taken = set(), [False] * len(text)
    for form in sorted(by_form, key=len, reverse=True):
        for match in re.finditer(rf"(?<![\w-]){re.escape(form)}(?![\w-])", text):
            if not any(taken[match.start() : match.end()]):
                taken[match.start() : match.end()] = [True] * (match.end() - match.start())
                found.add(by_form[form])
    return found.pop() if len(found) == 1 else None


def parse_rating(answer: str, labels: Sequence[str] = ("1", "2", "3", "4", "5")) -> int | None:
    """The first rating from the label set in the answer (`"4 stars"` -> 4), or `None`."""
    allowed = {int(label) for label in labels}
    for match in re.finditer(r"(?<![\d.])(\d+)(?![\d.])", answer):
        if int(match.group(1)) in allowed:
            return int(match.group(1))
    return None


def classification_rows(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """Each answer's parsed label (`None`: unparseable), its gold label and whether it is right."""
    rows = []
    for answer, gold in zip(answers, golds):
        predicted, truth = parse_label(answer, labels), parse_label(gold, labels) or gold
        rows.append({"predicted": predicted, "gold": truth, "correct": float(predicted == truth)})
    return rows


def rating_rows(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> list[dict]:
    """Each answer's absolute error; an unparseable answer counts as the worst possible error for its gold rating."""
    values = sorted(int(label) for label in labels)
    rows = []
    for answer, gold in zip(answers, golds):
        truth, predicted = int(gold), parse_rating(answer, labels)
        worst = max(truth - values[0], values[-1] - truth)
        error = worst if predicted is None else abs(predicted - truth)
        rows.append({"predicted": predicted, "error": float(error), "unparseable": predicted is None})
    return rows


def generation_rows(answers: Sequence[str], golds: Sequence[str]) -> list[dict]:
    """Each answer's ROUGE-1 and ROUGE-L F-measures against its gold text (rouge-score, with stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(gold, answer) for answer, gold in zip(answers, golds)]
    return [{"rouge1": s["rouge1"].fmeasure, "rougeL": s["rougeL"].fmeasure} for s in scores]


def _mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def aggregate_rows(kind: str, rows: Sequence[dict]) -> dict[str, float]:
    """
    A task's metrics from its rows' scores (as `*_rows` give them): accuracy and macro-F1, MAE and RMSE, or mean
    ROUGE; plus the author attribution's accuracy@1 and MRR, and the gold answer's NLL, where rows carry them. The
    bootstrap calls it on resamples.
    """
    n = len(rows)
    if kind == CLASSIFICATION:
        from sklearn.metrics import f1_score

        predicted = [r["predicted"] if r["predicted"] is not None else "<unparseable>" for r in rows]
        golds = [r["gold"] for r in rows]
        present = sorted(set(golds) | (set(predicted) - {"<unparseable>"}))
        f1 = f1_score(golds, predicted, labels=present, average="macro", zero_division=0) if rows else 0.0
        unparseable = sum(r["predicted"] is None for r in rows)
        scores = {"accuracy": _mean([r["correct"] for r in rows]), "f1": float(f1), "unparseable": unparseable}
    elif kind == RATING:
        errors = [r["error"] for r in rows]
        scores = {"mae": _mean(errors), "rmse": math.sqrt(_mean([e * e for e in errors]))}
        scores["unparseable"] = sum(r["unparseable"] for r in rows)
    elif kind == GENERATION:
        scores = {"rouge1": _mean([r["rouge1"] for r in rows]), "rougeL": _mean([r["rougeL"] for r in rows])}
    else:
        raise ValueError(f"Unknown metric kind {kind!r}; expected one of {CLASSIFICATION}, {RATING}, {GENERATION}.")
    scores.update(attribution_scores(rows))
    likelihoods = [r["gold_nll"] for r in rows if r.get("gold_nll") is not None]
    if likelihoods:
        scores["gold_nll"] = _mean(likelihoods)
    return {**scores, "n": n}


def attribution_scores(rows: Sequence[dict]) -> dict[str, float]:
    """The author attribution's accuracy@1 and MRR over the rows that carry an `attribution_rank` (none: `{}`)."""
    ranks = [r["attribution_rank"] for r in rows if r.get("attribution_rank") is not None]
    if not ranks:
        return {}
    return {
        "attribution_acc1": _mean([float(k == 1) for k in ranks]),
        "attribution_mrr": _mean([1.0 / k for k in ranks]),
    }


def chance_attribution(candidates: int) -> dict[str, float]:
    """accuracy@1 and MRR of a ranking that knows nothing among `candidates` users: 1/n and (1 + 1/2 + ... + 1/n)/n."""
    return {
        "attribution_acc1": 1.0 / candidates,
        "attribution_mrr": sum(1.0 / k for k in range(1, candidates + 1)) / candidates,
    }


def classification_scores(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the task's labels; unparseable answers are wrong."""
    return aggregate_rows(CLASSIFICATION, classification_rows(answers, golds, labels))


def rating_scores(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE; an unparseable answer counts as the worst possible error for its gold rating."""
    return aggregate_rows(RATING, rating_rows(answers, golds, labels))


def generation_scores(answers: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F-measures (rouge-score, with stemming)."""
    return aggregate_rows(GENERATION, generation_rows(answers, golds))


def score_rows(task: str, answers: Sequence[str], golds: Sequence[str]) -> list[dict]:
    """Each answer's scores for `task`, with the metrics of its kind (what [`aggregate_rows`] averages)."""
    if len(answers) != len(golds):
        raise ValueError(f"Got {len(answers)} answers for {len(golds)} gold outputs of task {task!r}.")
    spec = get_task(task)
    if spec.metric == CLASSIFICATION:
        return classification_rows(answers, golds, spec.labels)
    if spec.metric == RATING:
        return rating_rows(answers, golds, spec.labels)
    if spec.metric == GENERATION:
        return generation_rows(answers, golds)
    raise ValueError(f"Task {task!r} has an unknown metric kind {spec.metric!r}.")


def score_task(task: str, answers: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Score answers for `task` with the metrics of its kind."""
    return aggregate_rows(get_task(task).metric, score_rows(task, answers, golds))


# The headline number of each kind, and whether higher is better: used for tables and "best in bold".
HEADLINE = {CLASSIFICATION: ("accuracy", True), RATING: ("mae", False), GENERATION: ("rougeL", True)}
