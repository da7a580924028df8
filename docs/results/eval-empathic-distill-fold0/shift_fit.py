"""Did the distilled P2P learn the teacher's shifts? On fold 0's test rows and on as many of its training rows, per
answer token: the teacher's shift (the frozen base reading the own profile minus reading another speaker's, in log
probability of the real essay's token), the student's (the adapter from the own profile minus from the other's), the
mean squared error between them against that of predicting no shift, and their correlation.

    .venv/bin/python docs/results/eval-empathic-distill-fold0/shift_fit.py out/eval-empathic-distill-f0/work/p2p
"""

import sys
from contextlib import nullcontext

import torch

from hyperpeft.cli.arguments import parse_config
from hyperpeft.data.tasks import chat_messages
from hyperpeft.evaluation.config import SECTIONS, EvalConfig
from hyperpeft.evaluation.context import RunContext
from hyperpeft.evaluation.likelihood import _prompt_and_answer_ids
from hyperpeft.evaluation.run import _fold_config, eval_rows
from hyperpeft.peft_model import HyperPeftModel

checkpoint = sys.argv[1]
flags = ["--config", "examples/configs/eval_empathic.yaml", "--workdir", "out/eval-empathic-distill-f0/work"]
config = EvalConfig.from_sections(parse_config(SECTIONS, flags, "shift_fit.py", __doc__))
run = RunContext(_fold_config(config, 0))
model = HyperPeftModel.from_pretrained(run.base_copy(), f"{checkpoint}/fold-0-of-3-seed-0").eval()


def answer_log_probs(rows, contexts=None, profiles=None) -> list[torch.Tensor]:
    """Per row, the log-probability of each of the gold answer's tokens."""
    found = []
    for i in range(len(rows)):
        context = contexts[i] if contexts is not None else None
        prompt, answer = _prompt_and_answer_ids(
            run.tokenizer, chat_messages(rows["task"][i], rows["input"][i], context), rows["output"][i]
        )
        ids = torch.tensor([prompt + answer])
        # the teacher is the frozen base (profile in its prompt); the student wears the adapter of `profiles[i]`
        if profiles is None:
            adapter, extra = model.disable_adapter(), {}
        else:
            adapter, extra = nullcontext(), {"profile": [profiles[i]]}
        with torch.inference_mode(), adapter:
            logits = model(input_ids=ids, **extra).logits
        log_probs = logits[0, len(prompt) - 1 : -1].float().log_softmax(-1)
        found.append(log_probs.gather(-1, torch.tensor(answer)[:, None])[:, 0])
    return found


def fit(name: str, rows) -> None:
    other = run.profiles_with(rows, mode="random_user")
    own = rows["profile"]
    teacher = [a - b for a, b in zip(answer_log_probs(rows, contexts=own), answer_log_probs(rows, contexts=other))]
    student = [a - b for a, b in zip(answer_log_probs(rows, profiles=own), answer_log_probs(rows, profiles=other))]
    t, s = torch.cat(teacher), torch.cat(student)
    row_t = torch.stack([x.mean() for x in teacher])
    row_s = torch.stack([x.mean() for x in student])
    print(
        f"{name}: {len(rows)} rows, {len(t)} tokens: teacher shift {t.mean():+.3f} per token, "
        f"student {s.mean():+.3f}; "
        f"MSE {(s - t).pow(2).mean():.3f} against {t.pow(2).mean():.3f} for no shift; token correlation "
        f"{torch.corrcoef(torch.stack([t, s]))[0, 1]:+.3f}, row-mean correlation "
        f"{torch.corrcoef(torch.stack([row_t, row_s]))[0, 1]:+.3f}",
        flush=True,
    )


test = eval_rows(run.splits["test_kfold"], None, config.eval.queries_per_user)
fit("test speakers", test)
fit("training speakers", eval_rows(run.train, None, 2).select(range(len(test))))
