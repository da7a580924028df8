"""Fold 0 of `eval_empathic.yaml` with the profile encoder reading 512 tokens instead of all-MiniLM-L6-v2's 256.

At 256 tokens the encoder cuts 114 of the 135 test profiles (demographics and scores, ~117 tokens, then two retrieved
items of ~115 tokens each): it never sees the second retrieved essay. BERT's position table has 512 entries, so the
same model can read the whole profile. Everything else is `hyperpeft eval`; the base model and MT-LoRA are the
cross-validation's (same fold, same checkpoint):

    .venv/bin/python docs/results/eval-empathic-window512-fold0/run.py --config examples/configs/eval_empathic.yaml \
        --user_split '{"method": "kfold", "folds": 3, "seed": 0, "fold": 0}' \
        --methods base mt_lora p2p p2p_other_user --out out/eval-empathic-w512-f0 \
        --workdir out/eval-empathic-w512-f0/work --p2p_checkpoint out/eval-empathic-w512-f0/work/p2p \
        --mt_lora_checkpoint out/eval-empathic-cv/work/mt-lora-adapter

The answers and histories that author attribution embeds are under 256 tokens, so the wider window changes nothing
there (the encoder would warn otherwise).
"""

import sys

from hyperpeft.cli.eval import main
from hyperpeft.encoder import ProfileEncoder

WINDOW = 512
_load = ProfileEncoder.model.fget


def _wide(self):
    model = _load(self)
    model.max_seq_length = WINDOW
    return model


if __name__ == "__main__":
    ProfileEncoder.model = property(_wide, doc=ProfileEncoder.model.__doc__)
    sys.exit(main(sys.argv[1:]))
