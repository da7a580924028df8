"""Paired bootstraps between any two methods of a report, from its per-row predictions (`predictions-<split>.jsonl`),
as the report computes them: users resampled 1000 times with the run's seed 0, every metric of `aggregate_rows`.

The report pairs each P2P method with the baselines; this pairs what it does not, e.g. whether PAG, which reads the
speaker's retrieved essays in its prompt, beats the base model on author attribution. The predictions of the
cross-validation are not committed (the data's licence is not stated); its command writes them:

    .venv/bin/python docs/results/eval-empathic/paired.py out/eval-empathic/predictions-test_kfold.jsonl pag base

Prints, for each metric, the method minus the other, its 95% interval and p (for the gold NLL lower is better).
Add `--fold i` to pair the rows of one fold, and `--against_from FILE` to read the second method's scores from
another run's predictions, matched by row id (e.g. a one-fold run against that fold of the cross-validation; author
attribution is only comparable when both runs ranked the same candidate speakers).
"""

import argparse
import json
from functools import partial

from hyperpeft.data.tasks import TASKS
from hyperpeft.evaluation.metrics import aggregate_rows
from hyperpeft.evaluation.uncertainty import COUNTS, paired_difference, user_resamples

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("predictions")
parser.add_argument("method")
parser.add_argument("against")
parser.add_argument("--fold", type=int)
parser.add_argument("--against_from", help="another run's predictions, for the `against` method")
args = parser.parse_args()


def read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def check_method(name: str, path: str, row: dict) -> None:
    if name not in row["scores"]:
        parser.error(f"{name!r} is not a method of {path}; it has {sorted(row['scores'])}.")


rows = [r for r in read(args.predictions) if args.fold is None or r.get("fold") == args.fold]
check_method(args.method, args.predictions, rows[0])
against_path = args.against_from or args.predictions
if args.against_from:
    others = {r["id"]: r for r in read(args.against_from)}
    missing = [r["id"] for r in rows if r["id"] not in others]
    if missing:
        parser.error(f"{len(missing)} rows of {args.predictions} are not in {args.against_from}, e.g. {missing[0]!r}.")
    check_method(args.against, against_path, others[rows[0]["id"]])
    rows = [{**r, "scores": {**r["scores"], "against": others[r["id"]]["scores"][args.against]}} for r in rows]
else:
    check_method(args.against, against_path, rows[0])
against_key = "against" if args.against_from else args.against

for task in sorted({r["task"] for r in rows}):
    task_rows = [r for r in rows if r["task"] == task]
    resamples = user_resamples([r["user_id"] for r in task_rows], 1000, seed=0)

    aggregate = partial(aggregate_rows, TASKS[task].metric)
    method = [r["scores"][args.method] for r in task_rows]
    against = [r["scores"][against_key] for r in task_rows]
    users = {r["user_id"] for r in task_rows}
    print(f"{task}: {args.method} - {args.against}, {len(task_rows)} rows, {len(users)} users")
    for metric, value in aggregate(method).items():
        if metric in COUNTS or not isinstance(value, float):
            continue
        test = paired_difference(method, against, aggregate, metric, resamples)
        low, high = test["interval"]
        print(f"  {metric:18s} {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={test['p']:.3f}")
