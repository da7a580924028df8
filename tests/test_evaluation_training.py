"""MT-LoRA and OPPU on a tiny model: OPPU trains one LoRA per user on that user's history only, and leaves the base
model as it found it."""

from __future__ import annotations

import torch
from conftest import _TINY, make_tokenizer
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from hyperpeft.evaluation.methods import oppu as oppu_module
from hyperpeft.evaluation.methods.mt_lora import train_mt_lora
from hyperpeft.evaluation.methods.oppu import run_oppu, user_history_rows
from hyperpeft.training.recipes import trainer_config


def _model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**_TINY, "max_position_embeddings": 512})).eval()


def _history(user: str, n: int) -> list[dict[str, str]]:
    return [{"input": f"w{i} w{i + 1}", "output": f"w{40 + 10 * int(user[-1]) + i}"} for i in range(n)]


ROWS = Dataset.from_list(
    [
        {"id": f"{u}-q{q}", "user_id": u, "task": "LaMP-7", "input": f"w{q} w{q + 2}", "output": f"w{q + 5}",
         "history": _history(u, n)}
        for u, n in (("u0", 3), ("u1", 4), ("u2", 2))
        for q in range(2)
    ]
)  # fmt: skip


def _args(tmp_path, **kwargs):
    return trainer_config(str(tmp_path), max_steps=1, per_device_train_batch_size=2, max_length=64, **kwargs)


def test_mt_lora_trains_only_its_lora(tmp_path):
    model = _model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trained = train_mt_lora(model, make_tokenizer(), ROWS, _args(tmp_path, learning_rate=1e-2))
    lora = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    assert lora and all(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: it moved
    for name, param in trained.base_model.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, before[name.replace(".base_layer", "")])


def test_mt_lora_batches_are_task_balanced(tmp_path, monkeypatch):
    from hyperpeft.training import TaskBalancedSampler

    rows = Dataset.from_list([{**row, "task": ("LaMP-7", "LaMP-3")[i % 2]} for i, row in enumerate(ROWS)])
    seen = []
    monkeypatch.setattr(TaskBalancedSampler, "__iter__", lambda self: seen.append(self) or iter(range(len(self))))
    settings = dict(max_steps=1, per_device_train_batch_size=2, max_length=64)
    args = trainer_config(str(tmp_path), **settings, task_weights={"LaMP-3": 3.0})
    train_mt_lora(_model(), make_tokenizer(), rows, args)
    assert seen and seen[0].task_names == ["LaMP-3", "LaMP-7"] and seen[0].task_weights.tolist() == [3.0, 1.0]


def test_oppu_sees_only_each_users_own_history(tmp_path, monkeypatch):
    calls = []
    real_train_lora = oppu_module.train_lora

    def recording_train_lora(model, tokenizer, rows, args, lora=None):
        calls.append([(r["prompt"][1]["content"], r["completion"][0]["content"]) for r in rows])
        return real_train_lora(model, tokenizer, rows, args, lora)

    monkeypatch.setattr(oppu_module, "train_lora", recording_train_lora)
    model = _model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = run_oppu(model, make_tokenizer(), ROWS, _args(tmp_path), batch_size=4)

    assert len(calls) == 3  # one LoRA per user, in the order of the rows
    for user, seen in zip(("u0", "u1", "u2"), calls):
        own = next(row["history"] for row in ROWS if row["user_id"] == user)
        assert sorted(c for _, c in seen) == sorted(item["output"] for item in own)  # all of it, only it
        assert all(item["input"] in prompt for (prompt, _), item in zip(seen, own))
    assert set(result.train_seconds) == {"u0", "u1", "u2"} and all(s > 0 for s in result.train_seconds.values())
    assert result.train_rows == {"u0": 3, "u1": 4, "u2": 2}
    assert len(result.answers) == len(ROWS)
    # every LoRA was removed: the base model has its own modules and weights again
    assert not any("lora" in name for name, _ in model.named_modules())
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


def test_oppu_leaves_out_items_that_are_evaluated_rows_but_keeps_shared_labels():
    # Empathic Conversations: a user's other essays are in each row's history (with a shortened article as input),
    # including the other query's answer; that item must not be trained on
    article_a, article_b = "w1 " * 200, "w2 " * 200
    rows = Dataset.from_list(
        [
            {"id": "a", "user_id": "u", "task": "EC", "input": article_a, "output": "essay A",
             "history": [{"input": article_b[:299] + "…", "output": "essay B"}, {"input": "w3", "output": "essay C"}]},
            {"id": "b", "user_id": "u", "task": "EC", "input": article_b, "output": "essay B",
             "history": [{"input": article_a[:299] + "…", "output": "essay A"}, {"input": "w3", "output": "essay C"}]},
        ]
    )  # fmt: skip
    train = user_history_rows(rows, "u")
    assert [r["completion"][0]["content"] for r in train] == ["essay C"]
    # a rating history whose items share the query's label: every item is kept
    ratings = Dataset.from_list(
        [{"id": "q", "user_id": "v", "task": "LaMP-3", "input": "w9", "output": "4",
          "history": [{"input": "w1", "output": "4"}, {"input": "w2", "output": "4"}, {"input": "w3", "output": "1"}]}]
    )  # fmt: skip
    assert [r["completion"][0]["content"] for r in user_history_rows(ratings, "v")] == ["4", "4", "1"]
