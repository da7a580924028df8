"""Is there anything in the profile to use? The base model's NLL per token of each test row's gold essay with the row's
own P2P profile text in its prompt (as a context block, the way PAG puts one), against another user's profile text and
against no profile at all. No training: a user-specific signal here is one a P2P adapter could, in principle, carry.

Measured with the full profiles of the 100-step cross-validation beside it (`examples/configs/eval_empathic.yaml` as
it was then: `git checkout 66e66f1`) and the data in ../shared (the profiles are built, or read from the
cross-validation's cache in the workdir):

    .venv/bin/python docs/results/eval-empathic-100-steps/profile_in_context.py out/eval-empathic/work

Prints one line per fold and for all folds: the mean NLL with the own profile, with another user's and with none, and
the paired bootstrap over users of other minus own (above 0: the own profile makes the user's real essay more likely).
"""

import sys

from hyperpeft.cli.arguments import parse_config
from hyperpeft.evaluation.config import SECTIONS, EvalConfig
from hyperpeft.evaluation.context import RunContext
from hyperpeft.evaluation.likelihood import gold_nll
from hyperpeft.evaluation.run import _fold_config, eval_rows
from hyperpeft.evaluation.uncertainty import paired_difference, user_resamples

workdir = sys.argv[1] if len(sys.argv) > 1 else "out/eval-empathic/work"
flags = ["--config", "examples/configs/eval_empathic.yaml", "--workdir", workdir]
config = EvalConfig.from_sections(parse_config(SECTIONS, flags, "profile_in_context.py", __doc__))


def mean_nll(rows: list[dict]) -> dict[str, float]:
    return {"nll": sum(r["nll"] for r in rows) / len(rows)}


def line(name: str, users: list[str], own: list[float], other: list[float], none: list[float]) -> str:
    test = paired_difference(
        [{"nll": v} for v in other], [{"nll": v} for v in own], mean_nll, "nll", user_resamples(users, 1000, seed=0)
    )  # fmt: skip
    low, high = test["interval"]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return (
        f"{name:10s} {len(own):3d} rows, {len(set(users)):3d} users: own {mean(own):.3f}, other {mean(other):.3f}, "
        f"none {mean(none):.3f}, other - own {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] p={test['p']:.3f}"
    )


pooled = ([], [], [], [])
model = None
for fold in range(config.data.user_split["folds"]):
    run = RunContext(_fold_config(config, fold))
    model = model or run.base  # the same frozen base in every fold
    rows = eval_rows(run.splits["test_kfold"], None, config.eval.queries_per_user)
    scored = (model, run.tokenizer, rows["task"], rows["input"], rows["output"])
    own = gold_nll(*scored, contexts=rows["profile"])
    other = gold_nll(*scored, contexts=run.profiles_with(rows, mode="random_user"))
    none = gold_nll(*scored)
    print(line(f"fold {fold}", rows["user_id"], own, other, none), flush=True)
    for values, new in zip(pooled, (rows["user_id"], own, other, none)):
        values.extend(new)
print(line("all folds", *pooled))
