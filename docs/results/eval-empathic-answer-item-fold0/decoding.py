"""Has a fold-0 P2P checkpoint learned to write an essay from the essay's own profile item, on essays it never saw?

For each test row of fold 0 (45 essays of 19 unseen speakers) and 55 training rows (the first 3 of 20 training
speakers), the gold essay's NLL per token when the profile holds that essay itself, against another row's essay in the
same place (the rows shifted by one); the paired bootstrap of other minus own is over users. Above 0: the adapter
made from a profile makes the essay in that profile more likely.

    .venv/bin/python docs/results/eval-empathic-answer-item-fold0/decoding.py CHECKPOINT LAYOUT

LAYOUT is how the checkpoint's training profiles were written: `essays` (`answer-only-*`: "Past essays:" and the
essay's first 300 characters), `summary` (`demographics-500`: the speaker's demographics, then the items) or
`retrieved` (the items alone, as `eval_empathic.yaml`'s profiles now are).
"""

import sys

from hyperpeft.cli.arguments import parse_config
from hyperpeft.evaluation.config import SECTIONS, EvalConfig
from hyperpeft.evaluation.context import RunContext
from hyperpeft.evaluation.likelihood import gold_nll
from hyperpeft.evaluation.run import _fold_config, eval_rows
from hyperpeft.evaluation.uncertainty import paired_difference, user_resamples
from hyperpeft.peft_model import HyperPeftModel
from hyperpeft.profiles import RETRIEVED_HEADER, format_items

checkpoint, layout = sys.argv[1], sys.argv[2]
flags = ["--config", "examples/configs/eval_empathic.yaml", "--workdir", "out/decoding/work"]
config = EvalConfig.from_sections(parse_config(SECTIONS, flags, "decoding.py", __doc__))
run = RunContext(_fold_config(config, 0))
model = HyperPeftModel.from_pretrained(run.base_copy(), checkpoint).eval()


def profile(row: dict, essay: str) -> str:
    if layout == "essays":
        return f"Past essays:\n- {essay[:300]}"
    item = f"{RETRIEVED_HEADER}\n{format_items([{'input': '', 'output': essay}])}"
    return item if layout == "retrieved" else f"{row['profile_text']}\n\n{item}"


def mean_nll(rows: list[dict]) -> dict[str, float]:
    return {"nll": sum(r["nll"] for r in rows) / len(rows)}


for split, users in (("test_kfold", None), ("train", 20)):
    rows = eval_rows(run.splits[split], users, 3)
    essays = list(rows["output"])
    shifted = essays[1:] + essays[:1]
    scored = (rows["task"], rows["input"], rows["output"])
    own = gold_nll(model, run.tokenizer, *scored, profiles=[profile(r, e) for r, e in zip(rows, essays)])
    other = gold_nll(model, run.tokenizer, *scored, profiles=[profile(r, e) for r, e in zip(rows, shifted)])
    resamples = user_resamples(rows["user_id"], 1000, seed=0)
    test = paired_difference([{"nll": v} for v in other], [{"nll": v} for v in own], mean_nll, "nll", resamples)
    low, high = test["interval"]
    print(
        f"{split:10s} {len(own):3d} rows: own essay {sum(own) / len(own):.3f}, another {sum(other) / len(other):.3f}, "
        f"other - own {test['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    )
