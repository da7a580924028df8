"""Bootstrap intervals over users, paired bootstraps, and the author attribution metric."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from hyperpeft.encoder import ProfileEncoder
from hyperpeft.evaluation.attribution import AuthorAttribution
from hyperpeft.evaluation.metrics import aggregate_rows
from hyperpeft.evaluation.report import paired_table, score_table, write_report
from hyperpeft.evaluation.run import aggregate_by_task, scored_rows
from hyperpeft.evaluation.uncertainty import bootstrap_intervals, paired_difference, user_resamples

WORDS = "cat dog ship rain bread moon gold river lamp tree salt wind".split()


class BagOfWords:
    """A toy sentence encoder: one dimension per word of WORDS."""

    def encode(self, texts, **kwargs):
        return torch.tensor([[float(text.split().count(w)) + 1e-3 for w in WORDS] for text in texts])


def encoder() -> ProfileEncoder:
    return ProfileEncoder(model=BagOfWords())


def _users(n: int = 6) -> tuple[list[str], list[list[dict]]]:
    users = [f"u{i}" for i in range(n)]
    histories = [[{"input": "", "output": f"{WORDS[2 * i]} {WORDS[2 * i + 1]} {WORDS[2 * i]}"}] for i in range(n)]
    return users, histories


def test_answers_in_the_users_own_words_are_attributed_to_them():
    users, histories = _users()
    attribution = AuthorAttribution(encoder(), users, histories)
    own = [h[0]["output"] for h in histories]  # each answer is its user's own text, by construction
    assert attribution.ranks(own, users) == [1] * len(users)
    rotated = own[1:] + own[:1]  # each answer written by the next user
    ranks = attribution.ranks(rotated, users)
    assert all(rank > 1 for rank in ranks)
    scores = aggregate_rows("generation", [{"rouge1": 0.0, "rougeL": 0.0, "attribution_rank": r} for r in ranks])
    assert scores["attribution_acc1"] == 0.0 and scores["attribution_mrr"] < 1.0


def test_attribution_edge_cases_are_named_or_ranked_last():
    users, histories = _users(3)
    histories[2] = []  # no history text: not a candidate
    attribution = AuthorAttribution(encoder(), users, histories)
    assert attribution.candidates == ["u0", "u1"]
    assert attribution.ranks(["", "dog", "cat"], ["u0", "u1", "u2"]) == [2, 2, None]  # "" ranks last
    assert AuthorAttribution(encoder(), ["u0"], histories[:1]).ranks(["cat"], ["u0"]) == [None]  # one candidate
    with pytest.raises(ValueError, match="one of each per answer"):
        attribution.ranks(["cat"], ["u0", "u1"])
    with pytest.raises(ValueError, match="2 inputs"):
        attribution.ranks(["cat"], ["u0"], inputs=["a", "b"])


def test_attribution_leaves_out_items_written_for_the_answers_own_input():
    """An answer that restates its input is not credited to another user who wrote on that input before."""
    article = "A long news article about a flood in the valley, told from the point of view of a rescuer"
    users = ["u0", "u1", "u2"]
    histories = [
        [{"input": article[:60] + "…", "output": "cat cat dog"}, {"input": "other news", "output": "fish"}],
        [{"input": "more news", "output": "dog bird dog"}],
        [{"input": "old news", "output": "tree"}],
    ]
    attribution = AuthorAttribution(encoder(), users, histories)
    answer = ["cat cat dog"]  # what u0 once wrote on the same article, now u1's answer
    assert attribution.ranks(answer, ["u1"]) == [2]  # u0's centroid holds that item
    assert attribution.ranks(answer, ["u1"], inputs=[article]) == [1]  # u0 is left with "fish" for this answer
    # u0's own answer on the article no longer matches u0's item on it, and another article keeps everything
    assert attribution.ranks(answer, ["u0"], inputs=[article]) == [2]
    assert attribution.ranks(answer, ["u0"], inputs=["unrelated"]) == [1]
    # a user whose only items are on the answer's input is not a candidate for it
    assert attribution.ranks(["tree"], ["u2"], inputs=["old news"]) == [None]


def test_same_input_allows_for_cut_copies_but_not_short_coincidences():
    from hyperpeft.evaluation.attribution import same_input

    article = "Brothers Behind Bars — The only photograph I had of her, growing up, is from a scrapbook"
    assert same_input(article, article[:50] + "…") and same_input(" ".join(article.split()[:9]), article)
    assert same_input("news", " news ") and not same_input("news", "news today")  # short: equal or nothing
    assert not same_input("", "") and not same_input(None, article)


def test_resamples_draw_whole_users():
    users = ["a", "a", "a", "b", "c", "c"]
    for index in user_resamples(users, 50, seed=0):
        drawn = [users[i] for i in index]
        for user in set(drawn):  # a drawn user comes with all their rows, as many times as drawn
            assert drawn.count(user) % users.count(user) == 0
    assert [list(x) for x in user_resamples(users, 3, seed=1)] == [list(x) for x in user_resamples(users, 3, seed=1)]


def _mean(rows):
    return {"x": sum(r["x"] for r in rows) / len(rows), "n": len(rows)}


def test_intervals_cover_the_estimate_and_shrink_with_more_users():
    def rows(n_users):
        return [{"x": float(i % 2)} for i in range(n_users)], [f"u{i}" for i in range(n_users)]

    few, few_users = rows(10)
    many, many_users = rows(400)
    low, high = bootstrap_intervals(few, _mean, user_resamples(few_users, 1000, seed=0))["x"]
    assert low < 0.5 < high
    narrow = bootstrap_intervals(many, _mean, user_resamples(many_users, 1000, seed=0))["x"]
    assert narrow[1] - narrow[0] < (high - low) / 3
    assert "n" not in bootstrap_intervals(few, _mean, user_resamples(few_users, 10, seed=0))  # counts get none


def test_paired_difference_sees_a_consistent_gain_and_no_gain():
    users = [f"u{i}" for i in range(30)]
    noisy = [{"x": float((i * 7) % 5)} for i in range(30)]
    better = [{"x": r["x"] + 0.2} for r in noisy]  # better by 0.2 on every user, however noisy the users are
    resamples = user_resamples(users, 1000, seed=0)
    gain = paired_difference(better, noisy, _mean, "x", resamples)
    assert gain["difference"] == pytest.approx(0.2) and gain["interval"][0] > 0 and gain["p"] < 0.01
    same = paired_difference(noisy, noisy, _mean, "x", resamples)
    assert same["difference"] == 0 and same["interval"] == [0.0, 0.0] and same["p"] == 1.0
    with pytest.raises(ValueError, match="same rows"):
        paired_difference(noisy[:3], noisy, _mean, "x", resamples)


def test_scored_rows_add_up_to_the_task_scores_and_reach_the_report(tmp_path):
    users, histories = _users(4)
    rows = Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(4)],
            "user_id": users,
            "task": ["synthetic-style"] * 4,
            "input": ["write"] * 4,
            "output": [h[0]["output"] for h in histories],
            "history": histories,
        }
    )
    attribution = {"synthetic-style": AuthorAttribution(encoder(), users, histories)}
    answers = list(rows["output"])
    per_row = scored_rows(rows, answers, attribution)
    assert [r["attribution_rank"] for r in per_row] == [1, 1, 1, 1]
    scores = aggregate_by_task(rows, per_row)["synthetic-style"]
    assert scores["rougeL"] == pytest.approx(1.0) and scores["attribution_acc1"] == 1.0
    intervals = {"p2p": {"synthetic-style": {"rougeL": [0.9, 1.0]}}}
    table = "\n".join(score_table({"p2p": {"synthetic-style": scores}}, intervals=intervals))
    assert "| synthetic-style | rougeL ↑ | 1.000 [0.900, 1.000] |" in table
    assert "| synthetic-style | author acc@1 ↑ | 1.000 |" in table
    test = {"method": "p2p", "against": "mt_lora", "metric": "attribution_acc1", "difference": 0.25,
            "interval": [0.05, 0.5], "p": 0.02}  # fmt: skip
    assert "| synthetic-style | author acc@1 | P2P | MT-LoRA | +0.250 | [+0.050, +0.500] | 0.020 | yes |" in "\n".join(
        paired_table({"synthetic-style": [test]})
    )
    report = {"results": {}}
    write_report(report, "# r\n", tmp_path, {"test": [{"row": 0, "scores": {"p2p": per_row[0]}}]})
    line = json.loads((tmp_path / "predictions-test.jsonl").read_text().splitlines()[0])
    assert line["scores"]["p2p"]["attribution_rank"] == 1


def test_chance_attribution_is_the_mean_of_a_uniform_rank():
    from hyperpeft.evaluation.metrics import chance_attribution

    assert chance_attribution(1) == {"attribution_acc1": 1.0, "attribution_mrr": 1.0}
    assert chance_attribution(4) == pytest.approx(
        {"attribution_acc1": 0.25, "attribution_mrr": (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4}
    )


def test_the_reference_attributes_the_users_own_texts():
    """The gold outputs are ranked like answers: each in its user's own words here, so every one comes first."""
    from types import SimpleNamespace

    from hyperpeft.evaluation.run import _attribution_reference

    users, histories = _users(4)
    rows = Dataset.from_dict({
        "user_id": users, "task": ["LaMP-5"] * 4, "input": ["q"] * 4, "history": histories,
        "output": [f"{WORDS[2 * i + 1]} {WORDS[2 * i]}" for i in range(4)],
    })  # fmt: skip
    config = SimpleNamespace(eval=SimpleNamespace(bootstrap_samples=50), run=SimpleNamespace(seed=0))
    attribution = {"LaMP-5": AuthorAttribution(encoder(), users, histories)}
    reference = _attribution_reference(rows, attribution, config)["LaMP-5"]
    assert reference["candidates"] == 4
    assert reference["gold"] == {"attribution_acc1": 1.0, "attribution_mrr": 1.0}
    assert reference["chance"]["attribution_acc1"] == 0.25
    assert reference["gold_intervals"]["attribution_mrr"] == [1.0, 1.0]
    swapped = rows.map(lambda row, i: {"output": rows["output"][(i + 1) % 4]}, with_indices=True)
    assert _attribution_reference(swapped, attribution, config)["LaMP-5"]["gold"]["attribution_acc1"] == 0.0


def test_the_other_user_ablation_is_compared_with_p2p_even_without_baselines():
    from types import SimpleNamespace

    from hyperpeft.evaluation.run import _uncertainty

    rows = Dataset.from_dict({"user_id": ["a", "a", "b", "c"], "task": ["LaMP-5"] * 4})
    per_row = {
        "p2p": [{"rouge1": 0.5, "rougeL": 0.5, "gold_nll": 1.0}] * 4,
        "p2p_other_user": [{"rouge1": 0.2, "rougeL": 0.2, "gold_nll": 1.5}] * 4,
    }
    scores = {name: aggregate_by_task(rows, values) for name, values in per_row.items()}
    config = SimpleNamespace(eval=SimpleNamespace(bootstrap_samples=50), run=SimpleNamespace(seed=0))
    _, paired = _uncertainty(rows, per_row, scores, config)
    found = {(t["method"], t["against"], t["metric"]): t["difference"] for t in paired["LaMP-5"]}
    assert found == {
        ("p2p_other_user", "p2p", "rougeL"): pytest.approx(-0.3),
        ("p2p_other_user", "p2p", "gold_nll"): pytest.approx(0.5),
    }
