"""The cross-validation of `eval_empathic.yaml` with items-only profiles: each profile is the k = 2 history items BM25
retrieves for the row's input, without the speaker's demographics and personality scores (`--profile_mode retrieved`).

`retrieved` mode refused a row with an empty history then (it now writes `- (none yet)`), and 4 of the 57 speakers
wrote a single essay: here such a row's profile is the fixed line "No past items.", so that the rows are the same 135
as in `eval-empathic/`. Everything else is `hyperpeft eval`; `p2p_other_user` gives each row another speaker's items
retrieved for its input (the run's `profile_mode`). The base model and MT-LoRA are the cross-validation's (same folds,
same checkpoints):

    .venv/bin/python docs/results/eval-empathic-retrieved/run.py --config examples/configs/eval_empathic.yaml \
        --profile_mode retrieved --methods base mt_lora p2p p2p_other_user --out out/eval-empathic-cv-retrieved \
        --workdir out/eval-empathic-cv-retrieved/work --p2p_checkpoint out/eval-empathic-cv-retrieved/work/p2p \
        --mt_lora_checkpoint out/eval-empathic-cv/work/mt-lora-adapter
"""

import sys

import hyperpeft.profiles.builder as builder
from hyperpeft.cli.eval import main

NO_ITEMS = "No past items."


def _items_only(profiles, row):
    if not row.history:
        return NO_ITEMS
    items = builder.format_items(profiles.items(row), profiles.builder.item_chars)
    return f"{builder.RETRIEVED_HEADER}\n{items}"


if __name__ == "__main__":
    # declared as needing a summary only so that the empty-history check lets these rows through (none is written:
    # every Empathic row carries its profile_text)
    builder._MODES["retrieved"] = (_items_only, True)
    sys.exit(main(sys.argv[1:]))
