"""Fold 0 with essay-only profiles, each training row's profile being its own essay alone (the first experiment of
the answer item; `ProfileBuilder.build(answer_item=True)` later made it a library option, with k - 1 retrieved items
after the answer). Test rows' profiles are the k = 2 essays of the speaker that BM25 retrieves for the article,
without the article or the demographics (a speaker with no other essay: "No past essays."). 500 steps:

    .venv/bin/python docs/results/eval-empathic-answer-item-fold0/answer-only-500/run.py \
        --config examples/configs/eval_empathic.yaml \
        --user_split '{"method": "kfold", "folds": 3, "seed": 0, "fold": 0}' \
        --profile_mode full --train_answer_item false --methods p2p p2p_other_user --out out/self500-f0 \
        --workdir out/self500-f0/work --p2p_checkpoint out/self500-f0/work/p2p

and `answer-only-100/` the same with `--p2p_training '{"max_steps": 100, "per_device_train_batch_size": 2,
"learning_rate": 1.0e-3, "warmup_steps": 5, "max_length": 320}'`.
Without the `--user_split` flag it runs the whole cross-validation (`docs/results/eval-empathic-answer-only/`, with
`--out out/ao500-cv --workdir out/ao500-cv/work --p2p_checkpoint out/ao500-cv/work/p2p`). Adding
`--guidance_scale 2 --negative_profile 'No past essays.'` (the profile a speaker with no other essay gets here) decodes
with profile guidance (`docs/results/eval-empathic-guided/`, with `--methods base mt_lora p2p p2p_other_user
--out out/ao500-cv-g2-mt --mt_lora_checkpoint out/ao500-cv/work/mt-lora` and the same workdir).
"""

import sys

import hyperpeft.evaluation.context as context
import hyperpeft.profiles.builder as builder

CHARS = 300


def essays(items):
    return "Past essays:\n" + "\n".join(f"- {item['output'][:CHARS]}" for item in items)


def _essays_full(p, row):
    return essays(p.items(row)) if row.history else "No past essays."


_init = context.RunContext.__init__


def _own_essay(self, config):
    _init(self, config)
    self.splits["train"] = self.splits["train"].map(lambda row: {"profile": essays([{"output": row["output"]}])})


if __name__ == "__main__":
    builder._MODES["full"] = (_essays_full, True)  # test rows and the other-user ablation
    context.RunContext.__init__ = _own_essay
    from hyperpeft.cli.eval import main

    sys.exit(main(sys.argv[1:]))
