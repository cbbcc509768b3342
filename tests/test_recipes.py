"""The recipe scripts compose the paper's verl config for every round (dry run: checks and configs, no training)."""

from __future__ import annotations

import os
import re
import subprocess

import pandas as pd
import pytest
import yaml
from conftest import REPO
from transformers import Qwen2Config


@pytest.fixture
def paper_setup(tmp_path) -> dict:
    """A local stand-in for DeepSeek-R1-Distill-Qwen-1.5B's config (its 128k context) and the data files."""
    model = tmp_path / "r1-distill-1.5b"
    Qwen2Config(max_position_embeddings=131072).save_pretrained(model)
    rows = pd.DataFrame({"data_source": ["aime"], "prompt": [[{"role": "user", "content": "1+1?"}]]})
    for name in ("train", "aime22_23"):
        rows.to_parquet(tmp_path / f"{name}.parquet")
    return {
        "MODEL_PATH": str(model),
        "TRAIN_FILES": str(tmp_path / "train.parquet"),
        "VAL_FILES": str(tmp_path / "aime22_23.parquet"),
        "RUN_DIR": str(tmp_path / "run"),
    }


def dry_run(env: dict, *overrides: str) -> list[dict]:
    result = subprocess.run(
        ["bash", str(REPO / "recipes" / "thinkprune_iterative.sh"), *overrides],
        env={**os.environ, **env, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = re.split(r"^# round \d+: L=\d+$", result.stdout, flags=re.M)[1:]
    return [yaml.safe_load(block) for block in blocks]


def test_gpu_recipe_composes_the_papers_setup_for_each_round(paper_setup):
    configs = dry_run({**paper_setup, "DEVICE": "gpu"})
    assert [c["data"]["max_response_length"] for c in configs] == [4000, 3000, 2000]
    for config in configs:
        actor, rollout = config["actor_rollout_ref"]["actor"], config["actor_rollout_ref"]["rollout"]
        assert config["algorithm"]["adv_estimator"] == "grpo"
        assert config["reward"]["reward_manager"]["name"] == "thinkprune"
        assert config["data"]["train_batch_size"] == 128 and config["data"]["max_prompt_length"] == 768
        assert actor["optim"]["lr"] == 1e-6 and actor["ppo_mini_batch_size"] == 128
        assert actor["use_kl_loss"] is True and actor["kl_loss_coef"] == 0.001
        assert actor["kl_loss_type"] == "low_var_kl" and actor["entropy_coeff"] == 0.001
        assert actor["clip_ratio"] == 0.2
        assert rollout["n"] == 16 and rollout["temperature"] == 1.0 and rollout["name"] == "vllm"
        assert rollout["response_length"] == config["data"]["max_response_length"]
        assert rollout["val_kwargs"] == {**rollout["val_kwargs"], "n": 16, "temperature": 0.6, "top_p": 0.95}
        trainer = config["trainer"]
        assert (trainer["total_epochs"], trainer["save_freq"], trainer["test_freq"]) == (10, 20, 20)
        assert (trainer["nnodes"], trainer["n_gpus_per_node"]) == (2, 8)
        assert trainer["val_before_train"] is True and trainer["resume_mode"] == "auto"
        assert trainer["max_actor_ckpt_to_keep"] is None
    assert configs[0]["actor_rollout_ref"]["model"]["path"] == paper_setup["MODEL_PATH"]


def test_knobs_and_passed_through_overrides_reach_every_round(paper_setup):
    configs = dry_run(
        {**paper_setup, "DEVICE": "gpu", "SCHEDULE": "8000 4000", "NNODES": "4", "LR": "2e-6"},
        "trainer.total_epochs=5",
    )
    assert [c["data"]["max_response_length"] for c in configs] == [8000, 4000]
    assert {c["trainer"]["nnodes"] for c in configs} == {4}
    assert {c["trainer"]["total_epochs"] for c in configs} == {5}
    assert {c["actor_rollout_ref"]["actor"]["optim"]["lr"] for c in configs} == {2e-6}


def test_unknown_device_is_refused(paper_setup):
    result = subprocess.run(
        ["bash", str(REPO / "recipes" / "thinkprune_iterative.sh")],
        env={**os.environ, **paper_setup, "DEVICE": "tpu"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "DEVICE=tpu: use auto, gpu or cpu" in result.stderr
