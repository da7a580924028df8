"""HyperSFTTrainer on a tiny model: what trains, the profile column, refusals, task balance, resume."""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path

import pytest
import torch
from conftest import PROFILE_DIM, make_base, make_tokenizer
from datasets import Dataset
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from transformers import TrainerCallback

from hyperpeft import HyperLoraConfig, HyperPeftModel
from hyperpeft.training import HyperSFTConfig, HyperSFTTrainer, TaskBalancedSampler
from hyperpeft.training.sampler import _split_rows, sqrt_task_weights


def toy_rows(users: int = 12, per_user: int = 4, tasks: tuple[str, ...] = ("t1", "t2"), seed: int = 0) -> Dataset:
    """Two kinds of user answer the same prompts differently; only the profile embedding says which kind."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for user in range(users):
        kind = user % 2
        embedding = torch.randn(PROFILE_DIM, generator=generator) * 0.1
        embedding[kind] += 1.0
        for q in range(per_user):
            task = tasks[(user + q) % len(tasks)]
            prompt = f"w{10 + q} w{11 + q} w{12 + q}"
            rows.append(
                {
                    "prompt": prompt,
                    "completion": f" w{20 + kind} w{30 + kind}",
                    "profile": embedding.tolist(),
                    "task": task,
                }
            )
    return Dataset.from_list(rows)


def make_args(tmp_path, **overrides) -> HyperSFTConfig:
    settings = dict(
        output_dir=str(tmp_path),
        max_steps=6,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=3,
        max_length=32,
        dataloader_num_workers=0,
        tasks_per_batch=2,
    )
    settings.update(overrides)
    return HyperSFTConfig(**settings)


def make_trainer(tmp_path, dataset=None, **overrides) -> HyperSFTTrainer:
    torch.manual_seed(0)
    model = HyperPeftModel(make_base(), HyperLoraConfig(r=4, profile_dim=PROFILE_DIM))
    return HyperSFTTrainer(
        model=model,
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else toy_rows(),
        processing_class=make_tokenizer(),
    )


def test_hypernetwork_trains_and_the_base_does_not(tmp_path):
    trainer = make_trainer(tmp_path)
    model = trainer.model
    hyper_before = {n: p.detach().clone() for n, p in model.hypernetwork.named_parameters()}
    base_before = {n: p.detach().clone() for n, p in model.base_model.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in model.hypernetwork.named_parameters() if not torch.equal(p, hyper_before[n])]
    assert "heads.q_proj.weight" in changed and "trunk.0.weight" in changed
    for name, parameter in model.base_model.model.named_parameters():
        assert torch.equal(parameter, base_before[name]), name
    assert model.base_model._generated.weights is None  # released after every step
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < losses[0]


def test_the_profile_column_survives_preparation_and_reaches_the_layers(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, max_steps=2)
    assert "profile" in trainer.train_dataset.column_names and "task" in trainer.train_dataset.column_names
    seen = []
    tuner = trainer.model.base_model
    original = tuner.embed_profiles

    def spy(profile, batch_size=None):
        seen.append((tuple(profile.shape), batch_size))
        return original(profile, batch_size)

    monkeypatch.setattr(tuner, "embed_profiles", spy)
    trainer.train()
    assert seen and all(shape == (4, PROFILE_DIM) and rows == 4 for shape, rows in seen)


def test_profile_statistics_come_from_the_training_profiles(tmp_path):
    dataset = toy_rows()
    trainer = make_trainer(tmp_path, dataset=dataset, max_steps=1)
    distinct = torch.tensor(list({tuple(p) for p in dataset["profile"]}))
    torch.testing.assert_close(trainer.model.hypernetwork.profile_mean, distinct.mean(0))


def test_packing_and_padding_free_are_refused(tmp_path):
    with pytest.raises(ValueError, match="packing=True"):
        make_args(tmp_path, packing=True)
    with pytest.raises(ValueError, match="padding_free=True"):
        make_args(tmp_path, padding_free=True)


def test_rows_without_profiles_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no `profile` column"):
        make_trainer(tmp_path, dataset=toy_rows().remove_columns("profile"))


def test_model_must_be_a_hyperpeft_model(tmp_path):
    with pytest.raises(TypeError, match="HyperPeftModel"):
        HyperSFTTrainer(model=make_base(), args=make_args(tmp_path), train_dataset=toy_rows())


def test_sampler_mixes_tasks_in_sqrt_proportions():
    sizes = {"big": 400, "mid": 100, "small": 25, "tiny": 9, "other": 16}
    tasks = [t for t, n in sizes.items() for _ in range(n)]
    sampler = TaskBalancedSampler(tasks, batch_size=8, tasks_per_batch=4, seed=0)
    counts = collections.Counter()
    groups = 0
    for epoch in range(30):
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(order) == len(tasks)
        for start in range(0, len(order) - 7, 8):
            group = {tasks[i] for i in order[start : start + 8]}
            assert len(group) == 4  # every batch mixes four tasks
            counts.update(group)
            groups += 1
    # P(task in a group of 4 drawn without replacement) is not the weight itself; check the order and spread
    expected = sqrt_task_weights(sizes)
    assert math.isclose(sum(expected.values()), 1.0)
    ranking = sorted(sizes, key=lambda t: counts[t], reverse=True)
    assert ranking == sorted(sizes, key=lambda t: expected[t], reverse=True)
    first_picks = collections.Counter()
    single = TaskBalancedSampler(tasks, batch_size=1, tasks_per_batch=1, seed=1)
    for epoch in range(8):
        single.set_epoch(epoch)
        first_picks.update(tasks[i] for i in single)
    total = sum(first_picks.values())
    for task, weight in expected.items():
        assert abs(first_picks[task] / total - weight) < 0.02, task


def test_sampler_splits_each_batch_by_task_weights():
    tasks = ["rating"] * 60 + ["style"] * 60 + ["tagging"] * 60
    sampler = TaskBalancedSampler(tasks, batch_size=8, tasks_per_batch=4, seed=0, task_weights={"rating": 2.0})
    order = list(sampler)
    assert len(order) == 180
    for start in range(0, 176, 8):
        counts = collections.Counter(tasks[i] for i in order[start : start + 8])
        assert counts == {"rating": 4, "style": 2, "tagging": 2}  # weights 2 : 1 : 1, every task in every batch
    four = ["a"] * 50 + ["b"] * 50 + ["c"] * 50 + ["d"] * 50
    order = list(TaskBalancedSampler(four, batch_size=8, tasks_per_batch=4, seed=0, task_weights={"a": 2.0}))
    for start in range(0, 200, 8):
        counts = collections.Counter(four[i] for i in order[start : start + 8])
        assert counts["a"] == 3 and sorted(counts.values()) == [1, 2, 2, 3]  # quotas 3.2 / 1.6 / 1.6 / 1.6


def test_default_batches_split_evenly_whatever_the_task_sizes():
    tasks = ["big"] * 400 + ["small"] * 25
    order = list(TaskBalancedSampler(tasks, batch_size=8, tasks_per_batch=2, seed=0))
    for start in range(0, 424, 8):
        assert collections.Counter(tasks[i] for i in order[start : start + 8]) == {"big": 4, "small": 4}


@pytest.mark.parametrize(
    ("size", "weights", "expected"),
    [(8, [1, 1, 1], [3, 3, 2]), (8, [2, 1, 1], [4, 2, 2]), (2, [1, 1, 1], [1, 1, 0]), (2, [1, 5, 1], [1, 1, 0]),
     (4, [10, 1, 1], [2, 1, 1]), (0, [1, 2], [0, 0])],
)  # fmt: skip
def test_split_rows(size, weights, expected):
    assert _split_rows(size, weights) == expected


@pytest.mark.parametrize(
    ("weights", "message"),
    [({"ratings": 2.0}, "no row has"), ({"rating": 0}, "positive number"), ({"rating": "2"}, "positive number")],
)
def test_bad_task_weights_are_named(weights, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        TaskBalancedSampler(["rating", "style"], batch_size=2, task_weights=weights)
    if message == "positive number":
        with pytest.raises(ValueError, match=message):
            make_args(tmp_path, task_weights=weights)


def test_unknown_task_weights_fail_when_the_trainer_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"\['t3'\], which no row has; the tasks are \['t1', 't2'\]"):
        make_trainer(tmp_path, task_weights={"t3": 2.0})


def test_task_weights_from_a_command_line(tmp_path):
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(HyperSFTConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--task_weights", '{"t1": 2.0}', "--use_cpu", "True"]
    )
    assert args.task_weights == {"t1": 2.0}
    with pytest.raises(ValueError, match="JSON object"):
        make_args(tmp_path, task_weights="t1=2")


def test_sampler_with_one_task_degrades_gracefully():
    sampler = TaskBalancedSampler(["only"] * 10, batch_size=4, tasks_per_batch=4, seed=0)
    assert sorted(sampler) == list(range(10))


def test_resume_continues_the_same_run(tmp_path):
    full = make_trainer(tmp_path / "full", max_steps=6)
    full.train()
    expected = {n: p.detach().clone() for n, p in full.model.hypernetwork.named_parameters()}

    first = make_trainer(tmp_path / "split", max_steps=6, save_strategy="steps", save_steps=3)
    first.train()  # writes checkpoint-3 and checkpoint-6; resume from the middle one
    checkpoint = tmp_path / "split" / "checkpoint-3"
    files = set(os.listdir(checkpoint))
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors", "rng_state.json"} <= files
    assert not {f for f in files if f.endswith((".pt", ".pth", ".bin"))}  # no pickles, not even training_args.bin
    assert json.loads((checkpoint / "training_args.json").read_text())["max_steps"] == 6
    second = make_trainer(tmp_path / "resumed", max_steps=6)
    steps_run = []

    class CountSteps(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps_run.append(state.global_step)

    second.add_callback(CountSteps())
    second.train(resume_from_checkpoint=str(checkpoint))
    assert steps_run == [4, 5, 6]  # only the second half ran
    for name, parameter in second.model.hypernetwork.named_parameters():
        torch.testing.assert_close(parameter, expected[name], atol=1e-6, rtol=1e-5)


def test_push_to_hub_offline_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr("hyperpeft.training.trainer.hub_constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        make_trainer(tmp_path, push_to_hub=True, hub_model_id="org/p2p")


def test_push_to_hub_uploads_the_checkpoint_and_a_model_card(tmp_path, monkeypatch):
    uploads = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Url", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
            # what huggingface_hub would upload: every file, filtered by the patterns the Trainer passes
            files = [str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()]
            uploads["repo"] = repo_id
            uploads["files"] = sorted(
                filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
            )
            uploads["card"] = (Path(folder_path) / "README.md").read_text()
            return "commit"

    monkeypatch.setattr("hyperpeft.training.trainer.hub_constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("transformers.trainer.hf_api", lambda *args, **kwargs: FakeApi())
    trainer = make_trainer(tmp_path, max_steps=2, push_to_hub=True, hub_model_id="org/p2p", hub_strategy="end")
    (Path(trainer.args.output_dir) / "_work" / "data").mkdir(parents=True)  # where `hyperpeft train` puts its data
    (Path(trainer.args.output_dir) / "_work" / "data" / "rows.jsonl").write_text("{}\n")
    trainer.train()
    trainer.push_to_hub()
    assert uploads["repo"] == "org/p2p"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(uploads["files"])
    assert not [f for f in uploads["files"] if f.startswith(("_work", "checkpoint-"))], uploads["files"]
    card = ModelCard(uploads["card"])
    assert card.data.library_name == "hyperpeft" and "hyperpeft" in card.data.tags
    assert "- steps: 2" in card.text and "'t1': 24" in card.text


def test_the_final_save_writes_a_model_card_locally(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, dataset_description="two tiny users")
    trainer.train()
    trainer.save_model()
    card = ModelCard.load(Path(trainer.args.output_dir) / "README.md")
    assert card.data.library_name == "hyperpeft" and "- dataset: two tiny users" in card.text
    assert "- steps: 1" in card.text


def test_per_row_loss_weighs_every_row_equally(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1, loss_per_row=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    batch["labels"][0, -1] = -100  # rows with different numbers of answer tokens
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], profile=batch["profile_embeddings"]
        ).logits
    log_probs = torch.log_softmax(logits[:, :-1].float(), -1)
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    picked = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
    expected = (-picked.sum(-1) / mask.sum(-1)).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    model.base_model.release_profile()
