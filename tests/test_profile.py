"""Profile texts: BM25 retrieval, layout, ablation modes, the SQLite summary cache, and both summarizers."""

from __future__ import annotations

import json
import multiprocessing
import random
import socket
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler

import pytest
import torch
from conftest import local_http_server
from datasets import Dataset

from hyperpeft.profiles import (
    HISTORY_HEADER,
    PROMPT_VERSION,
    RETRIEVED_HEADER,
    OpenAISummarizer,
    ProfileArguments,
    ProfileBuilder,
    SummarizerError,
    SummaryCache,
    TransformersSummarizer,
    build_profiles,
    build_summary_prompt,
    default_cache_path,
    format_items,
    retrieve,
)

# A movie-tagging user whose items are about clearly different subjects, oldest first.
MOVIES = [
    {"input": "A crew of astronauts repairs a broken space station orbiting Jupiter.", "output": "sci-fi"},
    {"input": "Two rival chefs fall in love while running a bakery in Paris.", "output": "romance"},
    {"input": "A detective hunts a serial killer through the rainy streets of Seattle.", "output": "violence"},
    {"input": "A robot learns to paint portraits after its factory closes.", "output": "sci-fi"},
    {"input": "A stand-up comedian bombs on stage and moves back in with her parents.", "output": "comedy"},
    {"input": "Spaceship pilots fight alien robots over a mining colony.", "output": "action"},
]


class CountingSummarizer:
    """A fake LLM: the summary depends on the prompt; counts prompts; can crash or return an empty text."""

    def __init__(self, name="fake-llm", tag="", fail_after=None, empty_marker=None, suffix=""):
        self.name = name
        self.tag = tag  # put in every summary, to tell runs apart
        self.fail_after = fail_after  # raise when asked for more prompts than this in all
        self.empty_marker = empty_marker  # answer blank for prompts that contain it
        self.suffix = suffix
        self.prompts: list[str] = []

    def summarize(self, prompts):
        if self.fail_after is not None and len(self.prompts) + len(prompts) > self.fail_after:
            raise RuntimeError("simulated crash of the summarizer")
        self.prompts.extend(prompts)
        out = []
        for prompt in prompts:
            if self.empty_marker and self.empty_marker in prompt:
                out.append("   ")
            else:
                last = prompt.rsplit("\n", 1)[-1].removeprefix("- ")  # the latest item: summaries differ by user
                out.append(f"This user{self.tag} last did this: {last}.{self.suffix}")
        return out


def make_rows(n_users=4, queries=2, task="LaMP-2M", id_prefix=""):
    rows = []
    for u in range(n_users):
        history = [{"input": f"(user {u}) {item['input']}", "output": item["output"]} for item in MOVIES]
        history = history[u % 3 :]  # users differ in their histories
        for q in range(queries):
            query = "robots in space" if q == 0 else "a love story in Paris"
            rows.append(dict(id=f"{id_prefix}u{u}-q{q}", user_id=f"u{u}", task=task, input=query, history=history,
                             profile_text=None))  # fmt: skip
    return rows


def build(rows, tmp_path, summarizer=None, **kwargs):
    summarizer = summarizer if summarizer is not None else CountingSummarizer()
    builder = ProfileBuilder(summarizer, cache_path=tmp_path / "summaries.sqlite", **kwargs)
    return builder.build(Dataset.from_list(rows), show_progress=False)


def cached_rows(path):
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT user_id, summary FROM summaries ORDER BY user_id").fetchall()


# ---------------------------------------------------------------------------------------------------------- retrieval


def test_retrieve_picks_the_relevant_items():
    # "robots" and "colony" are in the last item, "space" in the first; no stemming, so "robot" does not count
    assert retrieve("robots attack a space colony", MOVIES, k=2) == [MOVIES[5], MOVIES[0]]
    assert retrieve("a love story in Paris bakery", MOVIES, k=1) == [MOVIES[1]]
    assert retrieve("a serial killer detective", MOVIES, k=1) == [MOVIES[2]]
    # the output text is indexed too: "comedy" only appears as an answer
    assert retrieve("comedy", MOVIES, k=1) == [MOVIES[4]]


def test_retrieve_edge_cases():
    assert retrieve("robots", MOVIES, k=0) == []
    assert len(retrieve("robots", MOVIES, k=50)) == len(MOVIES)
    assert retrieve("robots", [], k=2) == []
    # nothing in common with the query (or only stop words): the most recent items, newest first
    assert retrieve("zzz qqq", MOVIES, k=2) == [MOVIES[5], MOVIES[4]]
    assert retrieve("", MOVIES, k=1) == [MOVIES[5]]
    tweets = [{"input": "", "output": "so tired today lol"}, {"input": "", "output": "coffee is life"}]
    assert retrieve("need more coffee", tweets, k=1) == [tweets[1]]
    assert retrieve("x", [{"input": "", "output": "!!"}, {"input": "", "output": "?"}], k=1)  # no token at all


def test_format_items_and_summary_prompt():
    text = format_items(
        [{"input": "a  very\nlong " + "word " * 100, "output": "tag"}, {"input": "", "output": "hi"}], 20
    )
    lines = text.split("\n")
    assert lines[0] == "- input: a very long word... | output: tag" and lines[1] == "- hi"

    history = [{"input": f"item {i}", "output": f"answer {i}"} for i in range(30)]
    prompt = build_summary_prompt("LaMP-3", history, max_items=5, max_words=40)
    assert "rating products from 1 to 5 stars" in prompt  # the task's description
    assert "at most 40 words" in prompt
    assert "answer 29" in prompt and "answer 25" in prompt and "answer 24" not in prompt  # the 5 most recent
    assert prompt.index("answer 25") < prompt.index("answer 29")  # oldest first
    with pytest.raises(ValueError, match="Unknown task"):
        build_summary_prompt("LaMP-9", history)


# ------------------------------------------------------------------------------------------------- layout and modes


def test_full_profile_layout(tmp_path):
    rows = make_rows(n_users=2, queries=2)
    rows.append(dict(id="d-q0", user_id="demo", task="EC", input="A flood hits the town.", history=[],
                     profile_text="Age 34, nurse, empathetic and direct."))  # fmt: skip
    fake = CountingSummarizer()
    out = build(rows, tmp_path, fake, k=2)
    assert out.column_names[-2:] == ["profile", "summary"]
    assert len(fake.prompts) == 2  # one summary per user, not per row; the profile_text row needs none

    row = out[0]  # u0, query "robots in space"
    summary, block = row["profile"].split("\n\n")
    assert (
        summary == row["summary"] == "This user last did this: input: (user 0) Spaceship pilots fight alien "
        "robots over a mining colony. | output: action."
    )
    lines = block.split("\n")
    assert lines[0] == RETRIEVED_HEADER and len(lines) == 3
    assert lines[1].endswith("| output: action") and lines[2].endswith("| output: sci-fi")
    assert "Paris" in out[1]["profile"].split("\n")[3]  # the second query retrieves the Paris item first

    assert out[4]["summary"] == "Age 34, nurse, empathetic and direct."
    assert out[4]["profile"] == out[4]["summary"]  # no history to retrieve from

    k0 = build(rows, tmp_path, fake, k=0)
    assert k0["profile"] == k0["summary"] and len(fake.prompts) == 2  # cached


def test_summary_retrieved_and_history_modes(tmp_path):
    rows = make_rows(n_users=2)
    full = build(rows, tmp_path, k=2)
    summary_only = build(rows, tmp_path, mode="summary")
    assert summary_only["profile"] == full["summary"]

    fake = CountingSummarizer()
    retrieved = build(rows, tmp_path, fake, mode="retrieved", k=2)
    assert retrieved["summary"] == [None] * len(rows) and not fake.prompts  # no LLM call
    for with_summary, items_only in zip(full["profile"], retrieved["profile"]):
        assert with_summary.split("\n\n", 1)[1] == items_only

    history = build(rows, tmp_path, fake, mode="history", history_chars=200, item_chars=60)
    profile = history[0]["profile"]
    assert profile.startswith(HISTORY_HEADER + "\n") and len(profile) <= len(HISTORY_HEADER) + 1 + 200
    lines = profile.split("\n")[1:]
    every = format_items(rows[0]["history"], 60).split("\n")
    assert 1 <= len(lines) < len(every) and lines == every[-len(lines) :]  # the most recent, oldest first
    whole = build(rows, tmp_path, fake, mode="history")  # the default budget fits this short history
    assert whole[0]["profile"] == HISTORY_HEADER + "\n" + format_items(rows[0]["history"])
    assert not fake.prompts


def test_random_user_never_picks_the_same_user(tmp_path):
    rows = make_rows(n_users=5, queries=2) + make_rows(n_users=3, queries=1, task="LaMP-3", id_prefix="3/")
    full = build(rows, tmp_path)
    summaries = dict(zip(full["user_id"], full["summary"]))
    out = build(rows, tmp_path, mode="random_user", seed=3)
    assert out.column_names[-1] == "profile_user_id"
    for row, own in zip(out, full):
        assert row["profile_user_id"] != row["user_id"]
        assert row["profile"] != own["profile"] and row["summary"] == own["summary"]
        assert row["profile"].startswith(summaries[row["profile_user_id"]] + "\n\n")  # the other user's summary
        donor = (row["profile_user_id"], row["task"])
        donor_history = next(r["history"] for r in rows if (r["user_id"], r["task"]) == donor)
        assert row["profile"].split("\n\n")[1].split("\n")[1:] == format_items(
            retrieve(row["input"], donor_history, k=2)
        ).split("\n")  # their items, retrieved for this row's input
    tasks = {(row["task"], row["profile_user_id"]) for row in out}
    assert all(user in {r["user_id"] for r in rows if r["task"] == task} for task, user in tasks)  # same task

    donors = dict(zip(out["id"], out["profile_user_id"]))
    shuffled_rows = random.Random(0).sample(rows, len(rows))
    again = build(shuffled_rows, tmp_path, mode="random_user", seed=3)
    assert dict(zip(again["id"], again["profile_user_id"])) == donors  # reproducible, whatever the row order
    other_seeds = [build(rows, tmp_path, mode="random_user", seed=s)["profile_user_id"] for s in range(4, 8)]
    assert any(users != out["profile_user_id"] for users in other_seeds)

    with pytest.raises(ValueError, match="task 'LaMP-2M' has only one user"):
        build(make_rows(n_users=1), tmp_path, mode="random_user")


def test_random_user_in_another_mode_swaps_only_the_user(tmp_path):
    rows = make_rows(n_users=4, queries=2)
    fake = CountingSummarizer()
    own = build(rows, tmp_path, fake, mode="retrieved", k=2)
    other = build(rows, tmp_path, fake, mode="random_user", other_user_mode="retrieved", k=2, seed=3)
    assert not fake.prompts  # items only: no summary is written
    donors = build(rows, tmp_path, mode="random_user", seed=3)["profile_user_id"]
    assert other["profile_user_id"] == donors  # the same other user as in the full mode
    for row, donor in zip(other, donors):
        donor_history = next(r["history"] for r in rows if r["user_id"] == donor)
        assert row["profile"] == f"{RETRIEVED_HEADER}\n{format_items(retrieve(row['input'], donor_history, k=2))}"
    assert all(a != b for a, b in zip(own["profile"], other["profile"]))

    with pytest.raises(ValueError, match="`other_user_mode` should be one of .* but is 'random_user'"):
        ProfileBuilder(mode="random_user", other_user_mode="random_user")
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        ProfileBuilder(mode="random_user", other_user_mode="retrieved", k=0)


def test_item_input_chars_shows_the_outputs_alone(tmp_path):
    rows = make_rows(n_users=2)
    full = build(rows, tmp_path, k=2)
    outputs_only = build(rows, tmp_path, k=2, item_input_chars=0)
    for row, with_inputs, without in zip(rows, full["profile"], outputs_only["profile"]):
        items = retrieve(row["input"], row["history"], k=2)
        assert without.split("\n\n")[1] == f"{RETRIEVED_HEADER}\n" + "\n".join(f"- {i['output']}" for i in items)
        assert with_inputs.split("\n\n")[0] == without.split("\n\n")[0]  # the same summary
    short = build(rows, tmp_path, k=1, item_input_chars=12)
    assert short[0]["profile"].split("\n")[-1] == "- input: (user 0)... | output: action"
    with pytest.raises(ValueError, match="`item_input_chars` should be a non-negative integer"):
        ProfileBuilder(item_input_chars=-1)


def test_answer_item_puts_the_rows_own_answer_first(tmp_path):
    rows = [dict(row, output=f"answer of {row['id']}") for row in make_rows(n_users=3, queries=2)]
    lonely = dict(rows[0], id="lonely-q", user_id="lonely", history=[], profile_text="New here.")
    test_like = build([*rows, lonely], tmp_path, k=2)
    fake = CountingSummarizer()
    builder = ProfileBuilder(fake, cache_path=tmp_path / "summaries.sqlite", k=2)
    trained = builder.build(Dataset.from_list([*rows, lonely]), show_progress=False, answer_item=True)
    for row, profile, usual in zip([*rows, lonely], trained["profile"], test_like["profile"]):
        summary, block = profile.split("\n\n")
        lines = block.split("\n")
        assert summary == usual.split("\n\n")[0] and lines[0] == RETRIEVED_HEADER
        assert lines[1] == f"- input: {row['input']} | output: {row['output']}"  # the row's own answer, first
        others = format_items(retrieve(row["input"], row["history"], k=1)).split("\n") if row["history"] else []
        assert lines[2:] == others  # then the k - 1 items BM25 retrieves
        assert row["output"] not in usual  # without answer_item the answer is never in the profile
    items_only = ProfileBuilder(fake, cache_path=tmp_path / "s.sqlite", k=1, mode="retrieved", item_input_chars=0)
    # an empty history is no obstacle: the answer is an item
    assert items_only.build(Dataset.from_list([lonely]), show_progress=False, answer_item=True)["profile"] == [
        f"{RETRIEVED_HEADER}\n- {lonely['output']}"
    ]

    with pytest.raises(ValueError, match="needs `k >= 1` and a mode of .*mode='summary', k=2"):
        ProfileBuilder(fake, mode="summary").build(Dataset.from_list(rows), answer_item=True)
    with pytest.raises(ValueError, match="needs `k >= 1`.*mode='full', k=0"):
        ProfileBuilder(fake, k=0).build(Dataset.from_list(rows), answer_item=True)
    no_answers = [{key: value for key, value in row.items() if key != "output"} for row in rows]
    with pytest.raises(ValueError, match="needs every row's `output`, and row 'u0-q0' has none"):
        builder.build(Dataset.from_list(no_answers), answer_item=True)


def test_build_profiles_puts_answers_only_in_the_train_split(tmp_path):
    rows = [dict(row, output=f"answer of {row['id']}") for row in make_rows(n_users=2, queries=1)]
    splits = {"train": Dataset.from_list(rows), "test_random": Dataset.from_list(rows)}
    arguments = ProfileArguments(k=2, train_answer_item=True, item_input_chars=0)
    summaries = {row["id"]: f"Summary of {row['user_id']}." for row in rows}
    with_summaries = {name: d.map(lambda r: {"profile_text": summaries[r["id"]]}) for name, d in splits.items()}
    built = build_profiles(with_summaries, arguments, tmp_path)
    for train, test, row in zip(built["train"]["profile"], built["test_random"]["profile"], rows):
        assert train.split("\n")[3] == f"- {row['output']}" and row["output"] not in test
    for bad in ({"k": 0}, {"profile_mode": "summary"}, {"profile_mode": "random_user"}):
        with pytest.raises(ValueError, match="`train_answer_item` puts each training row's answer"):
            ProfileArguments(train_answer_item=True, **bad)
    with pytest.raises(TypeError, match="`train_answer_item` should be true or false"):
        ProfileArguments(train_answer_item="yes")


def test_shuffled_keeps_the_words(tmp_path):
    rows = make_rows(n_users=3)
    full = build(rows, tmp_path)
    out = build(rows, tmp_path, mode="shuffled", seed=1)
    for shuffled, original in zip(out["profile"], full["profile"]):
        assert Counter(shuffled.split()) == Counter(original.split())
        assert shuffled.split() != original.split()
    assert build(rows, tmp_path, mode="shuffled", seed=1)["profile"] == out["profile"]
    assert build(rows, tmp_path, mode="shuffled", seed=2)["profile"] != out["profile"]


def test_clear_errors(tmp_path):
    rows = make_rows(n_users=2)
    empty = dict(rows[0], id="lonely-q", user_id="lonely", history=[])
    with pytest.raises(ValueError, match="Row 'lonely-q'.*empty history.*profile_text"):
        build([*rows, empty], tmp_path)
    with pytest.raises(ValueError, match="Row 'lonely-q'.*empty history.*profile_text"):
        build([*rows, empty], tmp_path, mode="summary")
    # the item-only modes say that a new user has no items yet
    for mode, header in (("retrieved", RETRIEVED_HEADER), ("history", HISTORY_HEADER)):
        assert build([*rows, empty], tmp_path, mode=mode)["profile"][-1] == f"{header}\n- (none yet)"
    with pytest.raises(ValueError, match="`mode` should be one of"):
        ProfileBuilder(CountingSummarizer(), mode="everything")
    for k in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="`k` should be a non-negative integer"):
            ProfileBuilder(CountingSummarizer(), k=k)
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        ProfileBuilder(mode="retrieved", k=0)
    with pytest.raises(ValueError, match="Row 'u0-q0' has no `profile_text`.*pass a `summarizer`"):
        ProfileBuilder(None, cache_path=tmp_path / "c.sqlite").build(Dataset.from_list(rows))
    with pytest.raises(TypeError, match="`summarizer` should have a `name`"):
        ProfileBuilder(lambda prompts: prompts)
    with pytest.raises(TypeError, match="`dataset` should be a `datasets.Dataset`"):
        ProfileBuilder(CountingSummarizer()).build(rows)
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['history'\]"):
        build([{k: v for k, v in row.items() if k != "history"} for row in rows], tmp_path)
    # rows are checked as every loader checks them (`hyperpeft.data.schema.check_row`): numbers become text
    bad = dict(rows[0], id="bad-q", history=[{"input": "a film", "output": ["not", "text"]}])
    with pytest.raises(ValueError, match="Row 'bad-q', history item 0: `output` should be a string"):
        build([bad], tmp_path)
    with pytest.raises(ValueError, match="Unknown task 'LaMP-9'"):
        build([dict(rows[0], task="LaMP-9")], tmp_path)


# ------------------------------------------------------------------------------------------------------------ cache


def test_summaries_are_tidied_before_caching(tmp_path):
    class Loopy(CountingSummarizer):
        def summarize(self, prompts):
            return ["  They tag  fast. They like sci-fi.\nThey like sci-fi. They like sci-fi. And then they"] * len(
                prompts
            )

    out = build(make_rows(n_users=1), tmp_path, Loopy())
    assert out["summary"] == ["They tag fast. They like sci-fi."] * 2


def test_rerun_makes_no_calls_and_keys_follow_the_inputs(tmp_path, monkeypatch):
    rows = make_rows(n_users=4)
    first = build(rows, tmp_path, CountingSummarizer(suffix=" They also tend to"))
    assert first[0]["summary"].endswith("| output: action.")  # the unfinished sentence was dropped
    again = CountingSummarizer(suffix=" They also tend to")
    assert build(rows, tmp_path, again)["profile"] == first["profile"] and again.prompts == []

    changed = [dict(row, history=[*row["history"], {"input": "new", "output": "classic"}]) if row["user_id"] == "u2"
               else row for row in rows]  # fmt: skip
    fake = CountingSummarizer()
    out = build(changed, tmp_path, fake)
    assert len(fake.prompts) == 1 and out[4]["summary"] == "This user last did this: input: new | output: classic."
    other_llm = CountingSummarizer(name="another-llm")
    build(rows, tmp_path, other_llm)
    assert len(other_llm.prompts) == 4  # the summarizer's name is part of the key
    longer = CountingSummarizer()
    build(rows, tmp_path, longer, summary_words=100)
    assert len(longer.prompts) == 4  # so is the exact prompt
    with SummaryCache(tmp_path / "summaries.sqlite") as cache:
        assert len(cache) == 4 + 1 + 4 + 4

    monkeypatch.setenv("HYPERPEFT_CACHE", str(tmp_path / "hp"))
    assert default_cache_path() == tmp_path / "hp" / "summaries.sqlite"
    assert ProfileBuilder(CountingSummarizer()).cache_path == default_cache_path()


def test_a_crash_keeps_what_was_written(tmp_path):
    rows = make_rows(n_users=10, queries=1)
    crashing = CountingSummarizer(tag=" (first run)", fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build(rows, tmp_path, crashing, batch_size=2)
    assert len(crashing.prompts) == 4
    kept = cached_rows(tmp_path / "summaries.sqlite")
    assert len(kept) == 4 and all("(first run)" in summary for _, summary in kept)

    rerun = CountingSummarizer(tag=" (rerun)")
    out = build(rows, tmp_path, rerun, batch_size=2)
    assert len(rerun.prompts) == 6  # only the rest
    assert sum("(first run)" in s for s in out["summary"]) == 4 and sum("(rerun)" in s for s in out["summary"]) == 6
    assert set(rerun.prompts).isdisjoint(crashing.prompts)


def test_a_failed_row_writes_nothing(tmp_path):
    rows = make_rows(n_users=4, queries=1)
    rows[2]["history"] = [*rows[2]["history"], {"input": "BROKEN", "output": "drama"}]
    with pytest.raises(SummarizerError, match="empty summary for 1 user.*'u2'"):
        build(rows, tmp_path, CountingSummarizer(empty_marker="BROKEN"), batch_size=4)
    assert [user for user, _ in cached_rows(tmp_path / "summaries.sqlite")] == ["u0", "u1", "u3"]
    fixed = CountingSummarizer()
    assert build(rows, tmp_path, fixed)[2]["summary"] == "This user last did this: input: BROKEN | output: drama."
    assert len(fixed.prompts) == 1

    class Short(CountingSummarizer):
        def summarize(self, prompts):
            return super().summarize(prompts)[1:]

    with pytest.raises(SummarizerError, match="should return one string per prompt: it was given 2 prompts"):
        build(make_rows(n_users=2), tmp_path, Short(name="short"))


def _build_in_another_process(cache_path, tag, barrier, results):
    # Runs in a spawned process: same rows, a summarizer that signs its summaries, slow enough to interleave.
    class Slow(CountingSummarizer):
        def summarize(self, prompts):
            time.sleep(0.02 * len(prompts))
            return super().summarize(prompts)

    barrier.wait(timeout=120)
    summarizer = Slow(tag=f" ({tag})")
    builder = ProfileBuilder(summarizer, cache_path=cache_path, batch_size=2)
    out = builder.build(Dataset.from_list(make_rows(n_users=12, queries=1)), show_progress=False)
    results.put((tag, list(out["user_id"]), list(out["summary"]), len(summarizer.prompts)))


def test_many_connections_opening_a_new_cache_at_once_all_succeed(tmp_path):
    # Regression: switching a fresh file to WAL reported "database is locked" at once to all but one opener.
    def open_and_close(path, barrier, errors):
        barrier.wait(timeout=30)
        try:
            SummaryCache(path).close()
        except ValueError as error:
            errors.append(error)

    for trial in range(60):
        path, barrier, errors = tmp_path / f"fresh-{trial}.sqlite", threading.Barrier(8), []
        threads = [threading.Thread(target=open_and_close, args=(path, barrier, errors)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []


def test_two_processes_share_the_cache(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    cache_path = tmp_path / "shared.sqlite"
    workers = [
        context.Process(target=_build_in_another_process, args=(cache_path, tag, barrier, results)) for tag in "AB"
    ]
    for worker in workers:
        worker.start()
    outputs = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    (_, users_a, summaries_a, calls_a), (_, users_b, summaries_b, calls_b) = outputs
    assert users_a == users_b and summaries_a == summaries_b  # both use what the cache kept
    stored = dict(cached_rows(cache_path))
    assert len(stored) == 12 and [stored[user] for user in users_a] == summaries_a
    assert calls_a + calls_b >= 12
    rerun = CountingSummarizer()
    again = ProfileBuilder(rerun, cache_path=cache_path).build(
        Dataset.from_list(make_rows(12, 1)), show_progress=False
    )
    assert rerun.prompts == [] and again["summary"] == summaries_a


# ------------------------------------------------------------------------------------------------------ summarizers


def _tiny_chat_model():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = "<pad> <unk> <s> </s> system user assistant this person tags movies likes short answers space robots "
    words += "love paris writes casual tweets rates products stars the a of and in"
    vocab = {word: i for i, word in enumerate(words.split())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<s> assistant {% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0, bos_token_id=2, eos_token_id=3,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval(), tokenizer


def test_transformers_summarizer_batches_like_one_at_a_time(tmp_path):
    model, tokenizer = _tiny_chat_model()
    prompts = ["this person tags movies", "likes short answers about space robots and love in paris", "rates"]
    batched = TransformersSummarizer("tiny", batch_size=2, max_new_tokens=6, model=model, tokenizer=tokenizer)
    texts = batched.summarize(prompts)
    assert len(texts) == 3 and all(isinstance(text, str) and text for text in texts)
    alone = TransformersSummarizer("tiny", batch_size=1, max_new_tokens=6, model=model, tokenizer=tokenizer)
    assert [alone.summarize([prompt])[0] for prompt in prompts] == texts  # left padding changes nothing
    assert batched.name == "transformers:tiny:greedy:max_new_tokens=6" and batched.summarize([]) == []
    custom = TransformersSummarizer("tiny", model=model, tokenizer=tokenizer, system_prompt=None)
    assert ":system=" in custom.name  # another system prompt, another cache key
    no_repeats = TransformersSummarizer(
        "tiny", max_new_tokens=6, model=model, tokenizer=tokenizer, generation_kwargs={"no_repeat_ngram_size": 1}
    )
    assert no_repeats.name.endswith('{"no_repeat_ngram_size":1}')
    words = no_repeats.summarize(prompts[:1])[0].split()
    assert len(words) == len(set(words))  # the option reached `generate`

    out = build(make_rows(n_users=2, queries=1), tmp_path, batched)  # end to end through the builder
    assert all(summary and profile.startswith(summary) for summary, profile in zip(out["summary"], out["profile"]))
    with pytest.raises(ValueError, match="`max_new_tokens` should be a positive integer"):
        TransformersSummarizer(max_new_tokens=0)


class _ChatServer(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        prompt = body["messages"][-1]["content"]
        if "FAIL" in prompt:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model crashed")
            return
        answer = {"choices": [{"message": {"role": "assistant", "content": f" summary of: {prompt} "}}]}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def chat_server():
    _ChatServer.requests = []
    with local_http_server(_ChatServer) as url:
        yield url


def test_openai_summarizer_against_a_local_server(chat_server, tmp_path):
    summarizer = OpenAISummarizer(chat_server, model="my-model", api_key="secret", max_concurrency=3)
    prompts = [f"prompt number {i}" for i in range(7)]
    assert summarizer.summarize(prompts) == [f"summary of: {p}" for p in prompts]  # in order, stripped
    request = _ChatServer.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    assert request["body"]["model"] == "my-model" and request["body"]["temperature"] == 0.0
    assert [m["role"] for m in request["body"]["messages"]] == ["system", "user"]
    assert OpenAISummarizer(chat_server + "/v1/", model="m").url == chat_server + "/v1/chat/completions"

    out = build(make_rows(n_users=2, queries=1), tmp_path, summarizer)
    assert out[0]["summary"].startswith("summary of: Below is the past activity")

    with pytest.raises(
        SummarizerError, match=f"POST {chat_server}/v1/chat/completions returned HTTP 500: model crash"
    ):
        summarizer.summarize(["fine", "FAIL please"])
    with pytest.raises(ValueError, match="`base_url` should be an http"):
        OpenAISummarizer("localhost:8000", model="m")


def test_openai_summarizer_unreachable_server():
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    summarizer = OpenAISummarizer(f"http://127.0.0.1:{port}", model="m", timeout=5)
    with pytest.raises(SummarizerError, match=f"Could not reach http://127.0.0.1:{port}/v1/chat/completions"):
        summarizer.summarize(["hello"])


def test_cache_file_is_wal_and_records_the_prompt_version(tmp_path):
    build(make_rows(n_users=1), tmp_path)
    with sqlite3.connect(tmp_path / "summaries.sqlite") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("SELECT prompt_version FROM summaries").fetchall() == [(PROMPT_VERSION,)]
    (tmp_path / "not-a-db.sqlite").write_text("hello, I am not a database" * 100)
    with pytest.raises(ValueError, match="not-a-db.sqlite as a summary cache"):
        SummaryCache(tmp_path / "not-a-db.sqlite")
