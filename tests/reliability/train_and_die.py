"""Train the tiny model of tests/test_trainer.py with a checkpoint at every step, for the fault-injection tests.

    python tests/reliability/train_and_die.py reference OUT        # 3 steps, uninterrupted; OUT/final holds the result
    python tests/reliability/train_and_die.py kills OUT SURVIVORS  # 2 steps; its second checkpoint's save is run in
                                                               # forked children killed at every file-system step
    python tests/reliability/train_and_die.py resume OUT           # resume from OUT's newest checkpoint to 3 steps

In `kills` mode each killed child's leftovers are inspected, the first folder of each kind of survivor (the
`checkpoint-*` folders it shows) is copied under SURVIVORS, and the folder is put back as it was before the save;
then the real save runs and training goes on. It prints a JSON line with the number of kills.
"""

import json
import shutil
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]  # tests/reliability/, tests/

from faults import killed_at  # noqa: E402
from test_trainer import make_trainer  # noqa: E402

from hyperpeft.training import HyperSFTTrainer  # noqa: E402

mode, out = sys.argv[1], Path(sys.argv[2])
kills = 0
if mode == "kills":
    survivors = Path(sys.argv[3])
    original, calls = HyperSFTTrainer._save_checkpoint, []

    def save_and_die(self, model, trial):
        global kills
        calls.append(1)
        if len(calls) == 2:
            snapshot = out.parent / f"{out.name}-before-save"
            shutil.copytree(out, snapshot)
            for step in range(1, 200):
                killed = killed_at(step, lambda: original(self, model, trial))
                kind = "+".join(sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-")))
                if not (survivors / kind).exists():
                    shutil.copytree(out, survivors / kind)
                shutil.rmtree(out)
                shutil.copytree(snapshot, out)
                if not killed:
                    break
                kills += 1
        return original(self, model, trial)

    HyperSFTTrainer._save_checkpoint = save_and_die
trainer = make_trainer(out, max_steps=2 if mode == "kills" else 3, save_strategy="steps", save_steps=1)
trainer.train(resume_from_checkpoint=True if mode == "resume" else None)
trainer.model.save_pretrained(out / "final")
print(json.dumps({"kills": kills}))
