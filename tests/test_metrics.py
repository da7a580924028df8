"""Metric functions against hand-computed values, unparseable answers included."""

from __future__ import annotations

import math

import pytest

from hyperpeft.evaluation.metrics import (
    classification_scores,
    generation_scores,
    parse_label,
    parse_rating,
    rating_scores,
    score_task,
)

LABELS = ("action", "dark comedy", "comedy", "sci-fi")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("comedy", "comedy"),
        ("  Dark Comedy. ", "dark comedy"),
        ("dark comedy, I think", "dark comedy"),  # the longest label it starts with
        ("I would say sci-fi", "sci-fi"),
        ("action or comedy", None),  # two labels: ambiguous
        ("romance", None),
        ("", None),
    ],
)
def test_parse_label(answer, expected):
    assert parse_label(answer, LABELS) == expected


def test_parse_rating():
    assert parse_rating("4") == 4 and parse_rating("Rating: 5 stars") == 5
    assert parse_rating("4.5") is None and parse_rating("7") is None and parse_rating("great") is None


def test_classification_scores_by_hand():
    golds = ["action", "comedy", "comedy", "sci-fi"]
    answers = ["action", "comedy", "blah", "comedy"]
    scores = classification_scores(answers, golds, LABELS)
    assert scores["accuracy"] == 0.5 and scores["unparseable"] == 1
    # per label over {action, comedy, sci-fi}: action F1 1; comedy P 1/2 R 1/2 F1 1/2; sci-fi 0 -> mean 0.5
    assert math.isclose(scores["f1"], 0.5)


def test_rating_scores_by_hand():
    scores = rating_scores(["4", "2 stars", "no idea"], ["5", "2", "2"], ("1", "2", "3", "4", "5"))
    # errors 1, 0 and the worst for gold 2 (|5 - 2| = 3)
    assert math.isclose(scores["mae"], 4 / 3)
    assert math.isclose(scores["rmse"], math.sqrt((1 + 0 + 9) / 3))
    assert scores["unparseable"] == 1


def test_generation_scores_by_hand():
    scores = generation_scores(["the cat sat"], ["the cat sat down"])
    # ROUGE-1: P 3/3, R 3/4 -> F 6/7; the LCS is the same three words
    assert math.isclose(scores["rouge1"], 6 / 7) and math.isclose(scores["rougeL"], 6 / 7)


def test_score_task_dispatches_and_checks_lengths():
    assert score_task("LaMP-3", ["3"], ["3"])["mae"] == 0
    with pytest.raises(ValueError, match="2 answers for 1 gold"):
        score_task("LaMP-3", ["3", "4"], ["3"])
    with pytest.raises(ValueError, match="Unknown task"):
        score_task("nope", [], [])
