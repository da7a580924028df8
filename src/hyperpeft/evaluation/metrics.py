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


def classification_scores(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over the task's labels; unparseable answers are wrong."""
    from sklearn.metrics import f1_score

    predicted = [parse_label(a, labels) for a in answers]
    unparseable = sum(p is None for p in predicted)
    predicted = [p if p is not None else "<unparseable>" for p in predicted]
    gold_labels = [parse_label(g, labels) or g for g in golds]
    accuracy = sum(p == g for p, g in zip(predicted, gold_labels)) / max(len(golds), 1)
    present = sorted(set(gold_labels) | (set(predicted) - {"<unparseable>"}))
    f1 = f1_score(gold_labels, predicted, labels=present, average="macro", zero_division=0)
    return {"accuracy": accuracy, "f1": float(f1), "unparseable": unparseable, "n": len(golds)}


def rating_scores(answers: Sequence[str], golds: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """MAE and RMSE; an unparseable answer counts as the worst possible error for its gold rating."""
    values = sorted(int(label) for label in labels)
    errors, unparseable = [], 0
    for answer, gold in zip(answers, golds):
        truth = int(gold)
        predicted = parse_rating(answer, labels)
        if predicted is None:
            unparseable += 1
            errors.append(max(truth - values[0], values[-1] - truth))
        else:
            errors.append(abs(predicted - truth))
    n = max(len(errors), 1)
    return {
        "mae": sum(errors) / n,
        "rmse": math.sqrt(sum(e * e for e in errors) / n),
        "unparseable": unparseable,
        "n": len(errors),
    }


def generation_scores(answers: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F-measures (rouge-score, with stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(gold, answer) for answer, gold in zip(answers, golds)]
    n = max(len(scores), 1)
    return {
        "rouge1": sum(s["rouge1"].fmeasure for s in scores) / n,
        "rougeL": sum(s["rougeL"].fmeasure for s in scores) / n,
        "n": len(scores),
    }


def score_task(task: str, answers: Sequence[str], golds: Sequence[str]) -> dict[str, float]:
    """Score answers for `task` with the metrics of its kind."""
    if len(answers) != len(golds):
        raise ValueError(f"Got {len(answers)} answers for {len(golds)} gold outputs of task {task!r}.")
    spec = get_task(task)
    if spec.metric == CLASSIFICATION:
        return classification_scores(answers, golds, spec.labels)
    if spec.metric == RATING:
        return rating_scores(answers, golds, spec.labels)
    if spec.metric == GENERATION:
        return generation_scores(answers, golds)
    raise ValueError(f"Task {task!r} has an unknown metric kind {spec.metric!r}.")


# The headline number of each kind, and whether higher is better: used for tables and "best in bold".
HEADLINE = {CLASSIFICATION: ("accuracy", True), RATING: ("mae", False), GENERATION: ("rougeL", True)}
