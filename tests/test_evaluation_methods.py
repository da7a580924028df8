"""Prompt-based baselines: the context blocks they build, their token budgets, and batched answers with contexts; the
profiles of P2P's other-user ablation; profile guidance reaching both P2P methods' decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import make_base, make_tokenizer
from datasets import Dataset

from hyperpeft.evaluation.config import P2PArguments, RunArguments
from hyperpeft.evaluation.context import RunContext
from hyperpeft.evaluation.generation import chat_messages, generate_answers
from hyperpeft.evaluation.methods import p2p
from hyperpeft.evaluation.methods.base import Answers, Method
from hyperpeft.evaluation.methods.p2p import P2P, P2POtherUser
from hyperpeft.evaluation.methods.prompting import ITEMS_HEADER, SUMMARY_HEADER, build_context, build_contexts
from hyperpeft.profiles import RETRIEVED_HEADER, ProfileArguments

HISTORY = [
    {"input": "w1 w2 w3", "output": "w10"},
    {"input": "w4 w5 w6", "output": "w11"},
    {"input": "w7 w8 w9", "output": "w12"},
]
ROW = {"id": "r1", "input": "w4 w5", "history": HISTORY, "summary": "w20 w21 w22", "profile_text": "w30"}


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()  # one token per word: budgets can be counted by hand


def test_base_adds_nothing_and_keeps_the_task_prompt(tokenizer):
    assert build_context("base", ROW, tokenizer) is None
    plain = chat_messages("LaMP-3", "w1")
    with_context = chat_messages("LaMP-3", "w1", context="w5 w6")
    assert with_context[0] == plain[0]
    assert with_context[1]["content"] == "w5 w6\n\n" + plain[1]["content"]


def test_rag_retrieves_the_closest_items(tokenizer):
    assert build_context("rag", ROW, tokenizer, k=1) == f"{ITEMS_HEADER}\n- input: w4 w5 w6 | output: w11"
    assert build_context("rag", ROW, tokenizer, k=2).count("\n- ") == 2
    assert build_context("rag", ROW, tokenizer, k=0) is None  # k = 0 is the base prompt


def test_pag_puts_the_summary_first(tokenizer):
    context = build_context("pag", ROW, tokenizer, k=1)
    assert context == f"{SUMMARY_HEADER}\nw20 w21 w22\n\n{ITEMS_HEADER}\n- input: w4 w5 w6 | output: w11"
    without_summary = dict(ROW, summary=None)  # falls back to the data's profile_text
    assert build_context("pag", without_summary, tokenizer, k=0) == f"{SUMMARY_HEADER}\nw30"
    with pytest.raises(ValueError, match="neither a `summary` nor a `profile_text`"):
        build_context("pag", dict(ROW, summary=None, profile_text=None), tokenizer)


def test_full_history_keeps_the_most_recent_items_that_fit(tokenizer):
    everything = build_context("full_history", ROW, tokenizer, history_tokens=1000)
    assert everything.split("\n")[1:] == [f"- input: {h['input']} | output: {h['output']}" for h in HISTORY]
    # each line "- input: a b c | output: d" is 9 tokens, +1 for its newline: 20 tokens hold the last two items
    recent = build_context("full_history", ROW, tokenizer, history_tokens=20)
    assert recent.split("\n")[1:] == ["- input: w4 w5 w6 | output: w11", "- input: w7 w8 w9 | output: w12"]
    assert build_context("full_history", ROW, tokenizer, history_tokens=5) is None


def test_context_budget_cuts_items_and_summary(tokenizer):
    # PAG: the summary gets half of 8 tokens (cut to 4 words + " ..."), the items what is left: none fits
    long_summary = dict(ROW, summary="w1 w2 w3 w4 w5 w6 w7 w8")
    assert build_context("pag", long_summary, tokenizer, k=2, context_tokens=8) == f"{SUMMARY_HEADER}\nw1 w2 w3 w4 ..."
    assert build_context("rag", ROW, tokenizer, k=3, context_tokens=10).count("\n- ") == 1


def test_bad_arguments_are_named(tokenizer):
    with pytest.raises(ValueError, match="`method` should be one of"):
        build_context("oppu", ROW, tokenizer)
    with pytest.raises(ValueError, match="`k` should be a non-negative integer"):
        build_context("rag", ROW, tokenizer, k=-1)


def test_generate_answers_with_contexts_end_to_end():
    tokenizer, model = make_tokenizer(), make_base()
    seen = []
    template = tokenizer.apply_chat_template
    tokenizer.apply_chat_template = lambda messages, **kwargs: seen.append(messages) or template(messages, **kwargs)
    rows = [dict(ROW, id="r0"), dict(ROW, id="r1", input="w7 w8"), dict(ROW, id="r2", input="w1")]
    contexts = build_contexts("pag", rows, tokenizer, k=1)
    answers = generate_answers(
        model, tokenizer, ["LaMP-3"] * 3, [r["input"] for r in rows], contexts=contexts, batch_size=2
    )
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    prompts = sorted(messages[1]["content"] for messages in seen)
    assert prompts == sorted(chat_messages("LaMP-3", r["input"], c)[1]["content"] for r, c in zip(rows, contexts))
    with pytest.raises(ValueError, match="one entry per row"):
        generate_answers(model, tokenizer, ["LaMP-3"], ["w1"], contexts=[None, None])


def test_other_user_ablation_keeps_the_runs_profile_mode(tmp_path):
    rows = Dataset.from_list(
        [{"id": f"u{u}-{q}", "user_id": f"u{u}", "task": "LaMP-3", "input": f"w{q} w{u}", "output": "w1",
          "history": [{"input": f"w{q} w{u}", "output": f"w{20 + u}"}, {"input": "w9", "output": "w30"}],
          "profile_text": f"summary of u{u}"} for u in range(3) for q in range(2)]
    )  # fmt: skip
    profiles = ProfileArguments(k=1, profile_mode="retrieved")
    run = SimpleNamespace(
        config=SimpleNamespace(profiles=profiles, run=RunArguments(), p2p=P2PArguments()), workdir=tmp_path
    )
    run.profiles_with = RunContext.profiles_with.__get__(run)  # the run's own profile building
    method = P2POtherUser("p2p_other_user", run)
    method.model, seen = None, {}
    method.generate = lambda model, rows, **kwargs: seen.update(kwargs)
    method.answer(rows)

    own = run.profiles_with(rows)
    for profile, mine, row in zip(seen["profiles"], own, rows):
        assert profile.startswith(RETRIEVED_HEADER) and "summary of" not in profile  # items only, as P2P trained
        assert profile != mine and f"w{20 + int(row['user_id'][1])}" not in profile  # another user's items


def test_other_user_ablation_formats_items_as_trained_and_never_holds_an_answer(tmp_path):
    rows = Dataset.from_list(
        [{"id": f"u{u}-{q}", "user_id": f"u{u}", "task": "LaMP-7", "input": f"w{q} w{u}", "output": f"w{50 + u}",
          "history": [{"input": f"w{q} w{u}", "output": f"w{20 + u}"}], "profile_text": None}
         for u in range(3) for q in range(2)]
    )  # fmt: skip
    profiles = ProfileArguments(k=2, profile_mode="retrieved", item_input_chars=0, train_answer_item=True)
    run = SimpleNamespace(
        config=SimpleNamespace(profiles=profiles, run=RunArguments(), p2p=P2PArguments()), workdir=tmp_path
    )
    run.profiles_with = RunContext.profiles_with.__get__(run)
    method = P2POtherUser("p2p_other_user", run)
    method.model, seen = None, {}
    method.generate = lambda model, rows, **kwargs: seen.update(kwargs)
    method.answer(rows)
    for profile, row in zip(seen["profiles"], rows):
        donor = next(f"w{20 + u}" for u in range(3) if f"- w{20 + u}" in profile)
        assert profile == f"{RETRIEVED_HEADER}\n- {donor}" and donor != f"w{20 + int(row['user_id'][1])}"
        assert row["output"] not in profile  # test-time profiles never hold an answer


def test_profile_guidance_reaches_both_p2p_methods_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(p2p, "prep_seconds", lambda model, rows: {})  # P2P times its adapters: not this test's concern
    rows = Dataset.from_list(
        [{"id": f"u{u}", "user_id": f"u{u}", "task": "LaMP-7", "input": "w1", "output": "w2",
          "history": [{"input": "w1", "output": f"w{20 + u}"}], "profile_text": None} for u in range(2)]
    )  # fmt: skip
    guidance = P2PArguments(guidance_scale=2.0, negative_profile="nothing yet")
    profiles = ProfileArguments(k=1, profile_mode="retrieved")
    run = SimpleNamespace(
        config=SimpleNamespace(profiles=profiles, run=RunArguments(), p2p=guidance), workdir=tmp_path
    )
    run.profiles_with = RunContext.profiles_with.__get__(run)
    seen = {}
    monkeypatch.setattr(
        Method, "generate", lambda self, model, rows, desc=None, **kwargs: seen.update(kwargs) or Answers([], 0.0)
    )
    for method in (P2POtherUser("p2p_other_user", run), P2P("p2p", run)):
        method.model = None
        seen.clear()
        method.answer(rows.add_column("profile", ["a", "b"]))
        assert seen["generation_kwargs"] == {"guidance_scale": 2.0, "negative_profile": "nothing yet"}
    assert P2PArguments().generation_kwargs() == {}
    for settings, message in [
        ({"guidance_scale": 2.0}, "set both or neither"),
        ({"negative_profile": "x"}, "set both or neither"),
        ({"guidance_scale": 0.5, "negative_profile": "x"}, "should be >= 1"),
        ({"guidance_scale": 2.0, "negative_profile": " "}, "is empty"),
    ]:
        with pytest.raises(ValueError, match=message):
            P2PArguments(**settings)
