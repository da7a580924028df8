"""Fold 0 of the plain cross-validation (full profiles: demographics and two retrieved items with their articles, 100
steps), except that each training row's two items are those BM25 retrieves for the row's own essay instead of its
article ("hindsight" retrieval; the test rows' profiles are retrieved for their article as usual):

    .venv/bin/python docs/results/eval-empathic-answer-item-fold0/hindsight-bm25/run.py \
        --config examples/configs/eval_empathic.yaml \
        --user_split '{"method": "kfold", "folds": 3, "seed": 0, "fold": 0}' \
        --profile_mode full --item_input_chars 300 --train_answer_item false \
        --p2p_training '{"max_steps": 100, "per_device_train_batch_size": 2, "learning_rate": 1.0e-3,
                         "warmup_steps": 5, "max_length": 320}' \
        --methods base p2p p2p_other_user --out out/hs-f0 --workdir out/hs-f0/work --p2p_checkpoint out/hs-f0/work/p2p

(The run was made before `eval_empathic.yaml` changed, with its settings of then, which the flags above restore.)
"""

import sys

import hyperpeft.evaluation.context as context
from hyperpeft.profiles.builder import RETRIEVED_HEADER
from hyperpeft.profiles.prompt import format_items
from hyperpeft.profiles.retrieval import HistoryIndex

_init = context.RunContext.__init__


def _hindsight(self, config):
    _init(self, config)
    k = config.profiles.k

    def profile(row):
        items = HistoryIndex(row["history"]).top(row["output"], k)
        if not items:
            return {"profile": row["profile_text"]}
        return {"profile": f"{row['profile_text']}\n\n{RETRIEVED_HEADER}\n{format_items(items, 300)}"}

    self.splits["train"] = self.splits["train"].map(profile)


if __name__ == "__main__":
    context.RunContext.__init__ = _hindsight
    from hyperpeft.cli.eval import main

    sys.exit(main(sys.argv[1:]))
