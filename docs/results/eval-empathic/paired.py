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
against_rows = rows  # the row each row is paired with: itself, or the same row of the other run
if args.against_from:
    others = {(r["task"], r["id"]): r for r in read(args.against_from)}
    missing = [r["id"] for r in rows if (r["task"], r["id"]) not in others]
    if missing:
        parser.error(f"{len(missing)} rows of {args.predictions} are not in {args.against_from}, e.g. {missing[0]!r}.")
    against_rows = [others[(r["task"], r["id"])] for r in rows]
check_method(args.method, args.predictions, rows[0])
check_method(args.against, args.against_from or args.predictions, against_rows[0])

for task in sorted({r["task"] for r in rows}):
    index = [i for i, r in enumerate(rows) if r["task"] == task]
    task_rows = [rows[i] for i in index]
    resamples = user_resamples([r["user_id"] for r in task_rows], 1000, seed=0)

    aggregate = partial(aggregate_rows, TASKS[task].metric)
    method = [r["scores"][args.method] for r in task_rows]
    against = [against_rows[i]["scores"][args.against] for i in index]
    users = {r["user_id"] for r in task_rows}
    print(f"{task}: {args.method} - {args.against}, {len(task_rows)} rows, {len(users)} users")
    for metric, value in aggregate(method).items():
        if metric in COUNTS or not isinstance(value, float):
            continue
        test = paired_difference(method, against, aggregate, metric, resamples)
        low, high = test["interval"]
        print(f"  {metric:18s} {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={test['p']:.3f}")
