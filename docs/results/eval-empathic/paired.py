"""Paired bootstraps between any two methods of a report, from its per-row predictions (`predictions-<split>.jsonl`),
as the report computes them: users resampled 1000 times with the run's seed 0, every metric of `aggregate_rows`.

The report pairs each P2P method with the baselines; this pairs what it does not, e.g. whether PAG, which reads the
speaker's retrieved essays in its prompt, beats the base model on author attribution. The predictions of the
cross-validation are not committed (the data's licence is not stated); its command writes them:

    .venv/bin/python docs/results/eval-empathic/paired.py out/eval-empathic/predictions-test_kfold.jsonl pag base

Prints, for each metric, the method minus the other, its 95% interval and p (for the gold NLL lower is better).
Add `--fold i` to pair the rows of one fold.
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
args = parser.parse_args()

with open(args.predictions, encoding="utf-8") as file:
    rows = [json.loads(line) for line in file if line.strip()]
rows = [r for r in rows if args.fold is None or r.get("fold") == args.fold]
for name in (args.method, args.against):
    if name not in rows[0]["scores"]:
        parser.error(f"{name!r} is not a method of {args.predictions}; it has {sorted(rows[0]['scores'])}.")

for task in sorted({r["task"] for r in rows}):
    task_rows = [r for r in rows if r["task"] == task]
    resamples = user_resamples([r["user_id"] for r in task_rows], 1000, seed=0)

    aggregate = partial(aggregate_rows, TASKS[task].metric)
    method = [r["scores"][args.method] for r in task_rows]
    against = [r["scores"][args.against] for r in task_rows]
    users = {r["user_id"] for r in task_rows}
    print(f"{task}: {args.method} - {args.against}, {len(task_rows)} rows, {len(users)} users")
    for metric, value in aggregate(method).items():
        if metric in COUNTS or not isinstance(value, float):
            continue
        test = paired_difference(method, against, aggregate, metric, resamples)
        low, high = test["interval"]
        print(f"  {metric:18s} {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={test['p']:.3f}")
