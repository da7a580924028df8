"""Does each fold's P2P use the profile? The gold essays' NLL per token with each row's own profile against another
user's profile, on the fold's unseen test users and on its training users (whose rows it may have trained on).

Measured on the 100-step cross-validation beside it: its P2P checkpoints (not committed) and the settings of
`examples/configs/eval_empathic.yaml` as they were then (`git checkout 66e66f1`), with the data in ../shared:

    .venv/bin/python docs/results/eval-empathic-100-steps/profile_use.py out/eval-empathic/work

Prints one line per fold and split: the mean NLL with the own profile, with another user's, and the paired bootstrap
of other minus own over users (above 0: the own profile makes the user's real essay more likely).
"""

import sys

from hyperpeft.cli.arguments import parse_config
from hyperpeft.evaluation.config import SECTIONS, EvalConfig
from hyperpeft.evaluation.context import RunContext
from hyperpeft.evaluation.likelihood import gold_nll
from hyperpeft.evaluation.run import _fold_config, eval_rows
from hyperpeft.evaluation.uncertainty import paired_difference, user_resamples
from hyperpeft.peft_model import HyperPeftModel

workdir = sys.argv[1] if len(sys.argv) > 1 else "out/eval-empathic/work"
flags = ["--config", "examples/configs/eval_empathic.yaml", "--workdir", workdir, "--p2p_checkpoint", f"{workdir}/p2p"]
config = EvalConfig.from_sections(parse_config(SECTIONS, flags, "profile_use.py", __doc__))


def mean_nll(rows: list[dict]) -> dict[str, float]:
    return {"nll": sum(r["nll"] for r in rows) / len(rows)}


def line(name: str, users: list[str], own: list[float], other: list[float]) -> str:
    test = paired_difference(
        [{"nll": v} for v in other], [{"nll": v} for v in own], mean_nll, "nll", user_resamples(users, 1000, seed=0)
    )  # fmt: skip
    low, high = test["interval"]
    return (
        f"{name:22s} {len(own):3d} rows, {len(set(users)):3d} users: own {sum(own) / len(own):.3f}, other "
        f"{sum(other) / len(other):.3f}, other - own {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}] "
        f"p={test['p']:.3f}"
    )


pooled = {"test_kfold": ([], [], []), "train": ([], [], [])}
for fold in range(config.data.user_split["folds"]):
    fold_config = _fold_config(config, fold)
    run = RunContext(fold_config)
    model = HyperPeftModel.from_pretrained(run.base_copy(), fold_config.p2p.p2p_checkpoint).eval()
    # every test user; as many training users' rows (the first 3 rows of the first 20 users)
    for split, users in (("test_kfold", None), ("train", 20)):
        rows = eval_rows(run.splits[split], users, 3)
        scored = (rows["task"], rows["input"], rows["output"])
        own = gold_nll(model, run.tokenizer, *scored, profiles=rows["profile"])
        other = gold_nll(model, run.tokenizer, *scored, profiles=run.profiles_with(rows, mode="random_user"))
        print(line(f"fold {fold} {split}", rows["user_id"], own, other), flush=True)
        keys = [f"{fold}:{user}" for user in rows["user_id"]]  # a training user of two folds counts twice
        for values, new in zip(pooled[split], (keys, own, other)):
            values.extend(new)
    del model, run
for split, (users, own, other) in pooled.items():
    print(line(f"all folds {split}", users, own, other))
