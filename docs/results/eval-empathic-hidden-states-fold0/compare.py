"""Fold 0 of the Empathic cross-validation: P2P with MiniLM (the cross-validation's answers) against P2P with SmolLM2's
hidden states (this folder's run), on the same rows, attributed among fold 0's candidates, with paired bootstraps.

Needs both runs' `predictions-test_kfold.jsonl` (not committed: the data's licence is not stated) and the data:

    .venv/bin/python docs/results/eval-empathic-hidden-states-fold0/compare.py
"""

import json
from functools import partial

from hyperpeft.data.loaders import load_empathic_conversations
from hyperpeft.encoder import ProfileEncoder
from hyperpeft.evaluation.attribution import AuthorAttribution
from hyperpeft.evaluation.metrics import aggregate_rows
from hyperpeft.evaluation.uncertainty import bootstrap_intervals, paired_difference, user_resamples


def read(path: str) -> list[dict]:
    with open(path) as lines:
        return [json.loads(line) for line in lines]


cross_validation = {p["id"]: p for p in read("out/eval-empathic-cv/predictions-test_kfold.jsonl") if p["fold"] == 0}
hidden = read("out/eval-empathic-hidden-f0/predictions-test_kfold.jsonl")
if {p["id"] for p in hidden} != set(cross_validation):
    raise SystemExit("The two runs did not answer the same rows: are they the same fold?")
data = load_empathic_conversations("../shared/data/empathic_conversations")
history = dict(zip(data["id"], data["history"]))
users, inputs = [p["user_id"] for p in hidden], [p["input"] for p in hidden]
attribution = AuthorAttribution(ProfileEncoder("all-minilm-l6-v2"), users, [history[p["id"]] for p in hidden])


def scored(predictions: list[dict], method: str) -> list[dict]:
    """The run's per-row scores, with the attribution rank among fold 0's candidates."""
    ranks = attribution.ranks([p["answers"][method] for p in predictions], users, inputs)
    return [{**p["scores"][method], "attribution_rank": rank} for p, rank in zip(predictions, ranks)]


methods = {
    "base": scored(hidden, "base"),
    "mt_lora": scored(hidden, "mt_lora"),
    "p2p_minilm": scored([cross_validation[p["id"]] for p in hidden], "p2p"),
    "p2p_hidden": scored(hidden, "p2p"),
    "p2p_hidden_other_user": scored(hidden, "p2p_other_user"),
}
aggregate = partial(aggregate_rows, "generation")
resamples = user_resamples(users, 1000, seed=0)
print(f"{len(hidden)} rows, {len(set(users))} users, {len(attribution.candidates)} candidates")
for name, rows in methods.items():
    scores, intervals = aggregate(rows), bootstrap_intervals(rows, aggregate, resamples)
    shown = ("rougeL", "attribution_mrr")
    cells = [f"{m} {scores[m]:.3f} [{intervals[m][0]:.3f}, {intervals[m][1]:.3f}]" for m in shown]
    print(f"{name:22s} " + "  ".join(cells))
pairs = [
    ("p2p_hidden", "p2p_minilm"), ("p2p_hidden", "mt_lora"), ("p2p_hidden", "base"),
    ("p2p_hidden_other_user", "p2p_hidden"), ("p2p_minilm", "mt_lora"),
]  # fmt: skip
for method, against in pairs:
    for metric in ("rougeL", "attribution_mrr"):
        test = paired_difference(methods[method], methods[against], aggregate, metric, resamples)
        low, high = test["interval"]
        print(f"{method} - {against} {metric}: {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={test['p']:.3f}")
