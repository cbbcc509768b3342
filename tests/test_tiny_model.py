"""The tiny built-in default: a task whose redundancy can go and whose core must stay, and a model that learned it."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.utils.dataset.rl_dataset import RLHFDataset

from verl_thinkprune import evaluation
from verl_thinkprune.evaluation import TransformersBackend
from verl_thinkprune.protocol import EvalSettings, read_samples
from verl_thinkprune.reward_manager import final_answer
from verl_thinkprune.tiny import DATA_SOURCE, TinySettings, tiny_model_dir, write_dataset
from verl_thinkprune.tiny import model as tiny_model_module
from verl_thinkprune.tiny.task import core_steps, random_problem, response

FIRST_LIMIT = 64


@pytest.fixture(scope="module")
def tiny_model() -> Path:
    return tiny_model_dir()


def test_core_steps_compute_the_answer_and_checks_only_repeat_it():
    rng = random.Random(0)
    for _ in range(500):
        problem = random_problem(rng)
        steps = [s for s in re.split(r"[,.] ?", core_steps(problem)) if s]
        assert all(eval(left) == int(right) for left, right in (s.split("=") for s in steps))  # noqa: S307
        assert steps[-1].endswith(f"={problem.answer}")
        assert final_answer(response(problem, rng.randint(0, 6), rng)) == str(problem.answer)


def test_responses_spread_around_the_first_limit(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rng = random.Random(1)
    problem = random_problem(rng)
    shortest = len(tokenizer.encode(response(problem, 0, rng)))
    longest = len(tokenizer.encode(response(problem, TinySettings().max_checks, rng)))
    assert shortest < FIRST_LIMIT < longest


def test_dataset_loads_in_verl(tmp_path, tiny_model):
    paths = write_dataset(tmp_path, num_train=16, num_val=4, num_test=8)
    train, val = paths["train"], paths["val"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = OmegaConf.create({"max_prompt_length": 32, "prompt_key": "prompt", "filter_overlong_prompts": True})
    dataset = RLHFDataset(data_files=[str(train)], tokenizer=tokenizer, config=config)
    row = dataset[0]

    assert len(dataset) == 16 and len(RLHFDataset([str(val)], tokenizer, config)) == 4
    assert len(RLHFDataset([str(paths["test"])], tokenizer, config)) == 8
    assert row["data_source"] == DATA_SOURCE
    assert row["raw_prompt"][0]["role"] == "user" and row["raw_prompt"][0]["content"].startswith("What is ")
    question = row["extra_info"]["problem"].removeprefix("What is ").removesuffix("?")
    assert row["reward_model"]["ground_truth"] == str(eval(question))  # noqa: S307


def test_warm_started_model_is_right_and_thinks_past_the_limit(tiny_model, tmp_path):
    """The start model the main job prunes: accurate under the paper's protocol, often longer than a first limit."""
    test = write_dataset(tmp_path / "data", num_train=1, num_val=1, num_test=48, seed=7)["test"]
    settings = EvalSettings(max_new_tokens=224, samples=4)  # the paper's sampling; 224: the tiny context less prompts
    table = evaluation.evaluate(test, tmp_path / "run", TransformersBackend(tiny_model, settings), settings)
    lengths = [n for record in read_samples(tmp_path / "run") for n in record["lengths"]]

    assert table["overall"]["pass@1"] >= 0.95 and table["overall"]["truncation_rate"] == 0
    assert min(lengths) < FIRST_LIMIT and sum(n > FIRST_LIMIT for n in lengths) >= len(lengths) // 4


def test_model_is_cached_per_settings(tiny_model, monkeypatch, tmp_path):
    built = (tiny_model / "tiny_build.json").stat().st_mtime
    assert tiny_model_dir() == tiny_model and (tiny_model / "tiny_build.json").stat().st_mtime == built
    assert TinySettings(steps=10).key() != TinySettings().key()
    monkeypatch.setenv("VERL_THINKPRUNE_CACHE", str(tmp_path))
    assert tiny_model_module.cache_root() == tmp_path
