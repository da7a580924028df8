"""Evaluation: metrics with strict answer parsing."""

from .metrics import HEADLINE, parse_label, parse_rating, score_task

__all__ = ["HEADLINE", "parse_label", "parse_rating", "score_task"]
