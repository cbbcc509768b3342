"""The recipe scripts compose the paper's verl config for every round (dry run: checks and configs, no training)."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_data import HUB_FORMATS, write_table
from transformers import Qwen2Config


def parquet(path, problems: list[str]) -> str:
    rows = pd.DataFrame(
        {"data_source": ["aime"] * len(problems), "prompt": [[{"role": "user", "content": p}] for p in problems]}
    )
    rows.to_parquet(path)
    return str(path)


@pytest.fixture
def stand_in_model(tmp_path) -> str:
    """A local stand-in for DeepSeek-R1-Distill-Qwen-1.5B's config (its 128k context)."""
    model = tmp_path / "r1-distill-1.5b"
    Qwen2Config(max_position_embeddings=131072).save_pretrained(model)
    return str(model)


@pytest.fixture
def paper_setup(tmp_path, stand_in_model) -> dict:
    return {
        "MODEL_PATH": stand_in_model,
        "TRAIN_FILES": parquet(tmp_path / "train.parquet", ["1+1?"]),
        "VAL_FILES": parquet(tmp_path / "aime22_23.parquet", ["2+2?"]),
        "TEST_FILES": parquet(tmp_path / "aime24.parquet", ["3+3?"]),
        "RUN_DIR": str(tmp_path / "run"),
    }


def recipe(env: dict, *overrides: str, script: str = "thinkprune_iterative.sh") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "recipes" / script), *overrides],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def dry_run(env: dict, *overrides: str) -> list[dict]:
    result = recipe({**env, "DRY_RUN": "1"}, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    blocks = re.split(r"^# round \d+: L=\d+$", result.stdout, flags=re.M)[1:]
    return [yaml.safe_load(block) for block in blocks]


def test_gpu_recipe_composes_the_papers_setup_for_each_round(paper_setup):
    configs = dry_run({**paper_setup, "DEVICE": "gpu"})
    assert [c["reward"]["reward_kwargs"]["token_limit"] for c in configs] == [4000, 3000, 2000]
    for config in configs:
        actor, rollout = config["actor_rollout_ref"]["actor"], config["actor_rollout_ref"]["rollout"]
        assert config["algorithm"]["adv_estimator"] == "grpo"
        assert config["reward"]["reward_manager"]["name"] == "thinkprune"
        assert config["trainer"]["v1"]["trainer_mode"] == "thinkprune"
        assert config["data"]["train_batch_size"] == 128 and config["data"]["max_prompt_length"] == 768
        assert actor["optim"]["lr"] == 1e-6 and actor["ppo_mini_batch_size"] == 128
        assert actor["use_kl_loss"] is True and actor["kl_loss_coef"] == 0.001
        assert actor["kl_loss_type"] == "low_var_kl" and actor["entropy_coeff"] == 0.001
        assert actor["clip_ratio"] == 0.2
        assert rollout["n"] == 16 and rollout["temperature"] == 1.0 and rollout["name"] == "vllm"
        assert rollout["response_length"] == config["data"]["max_response_length"]
        assert rollout["response_length"] == config["reward"]["reward_kwargs"]["token_limit"], "paper: validation at L"
        assert rollout["val_kwargs"] == {**rollout["val_kwargs"], "n": 16, "temperature": 0.6, "top_p": 0.95}
        trainer = config["trainer"]
        assert (trainer["total_epochs"], trainer["save_freq"], trainer["test_freq"]) == (10, 20, 20)
        assert (trainer["nnodes"], trainer["n_gpus_per_node"]) == (2, 8)
        assert trainer["val_before_train"] is True and trainer["resume_mode"] == "auto"
        assert trainer["max_actor_ckpt_to_keep"] is None
    assert configs[0]["actor_rollout_ref"]["model"]["path"] == paper_setup["MODEL_PATH"]


def test_gpu_install_and_gpu_settings_agree_on_the_actors_attention(paper_setup):
    """verl's FSDP actor asks for flash_attention_2 unless told otherwise; `.[gpu]` must bring what the config asks."""
    gpu_extra = [r for r in importlib.metadata.requires("verl-thinkprune") if 'extra == "gpu"' in r]
    assert gpu_extra, "the gpu extra is installed metadata"
    brings_flash_attn = any(r.lower().startswith(("flash-attn", "flash_attn")) for r in gpu_extra)
    model = dry_run({**paper_setup, "DEVICE": "gpu"})[0]["actor_rollout_ref"]["model"]
    attention = model["override_config"].get("attn_implementation", "flash_attention_2")  # verl's default
    assert brings_flash_attn or not attention.startswith("flash_attention"), (attention, gpu_extra)
    assert model["use_remove_padding"] is attention.startswith("flash_attention"), "packing needs varlen attention"

    flash = dry_run({**paper_setup, "DEVICE": "gpu", "ATTN_IMPLEMENTATION": "flash_attention_2"})[0]
    assert flash["actor_rollout_ref"]["model"]["override_config"]["attn_implementation"] == "flash_attention_2"
    assert flash["actor_rollout_ref"]["model"]["use_remove_padding"] is True


def test_unlimited_selection_validates_past_the_limit_and_trains_at_it(paper_setup):
    configs = dry_run({**paper_setup, "DEVICE": "gpu", "SELECTION": "unlimited", "VALIDATION_MAX_TOKENS": "9000"})
    for config, limit in zip(configs, [4000, 3000, 2000], strict=True):
        assert config["reward"]["reward_kwargs"]["token_limit"] == limit
        assert config["actor_rollout_ref"]["rollout"]["response_length"] == 9000
        assert config["actor_rollout_ref"]["rollout"]["custom"]["thinkprune"]["unlimited_validation"] is True


def test_knobs_and_passed_through_overrides_reach_every_round(paper_setup):
    configs = dry_run(
        {**paper_setup, "DEVICE": "gpu", "SCHEDULE": "8000 4000", "NNODES": "4", "LR": "2e-6"},
        "trainer.total_epochs=5",
    )
    assert [c["data"]["max_response_length"] for c in configs] == [8000, 4000]
    assert {c["trainer"]["nnodes"] for c in configs} == {4}
    assert {c["trainer"]["total_epochs"] for c in configs} == {5}
    assert {c["actor_rollout_ref"]["actor"]["optim"]["lr"] for c in configs} == {2e-6}


def test_a_cluster_address_picks_the_gpu_settings_on_a_machine_without_a_gpu(paper_setup):
    """A login node has no GPU; the cluster it submits to does: DEVICE=auto must not send the tiny CPU settings."""
    configs = dry_run({**paper_setup, "DEVICE": "auto", "RAY_ADDRESS": "http://127.0.0.1:9"})
    assert configs[0]["trainer"]["device"] != "cpu" and configs[0]["actor_rollout_ref"]["rollout"]["name"] == "vllm"


def test_the_readme_data_command_then_the_recipe_starts_without_renaming(tmp_path, stand_in_model):
    """recipes/prepare_thinkprune_data.sh writes what the GPU recipe reads by default (from local copies here)."""
    inputs = [f"{name}={write_table(rows, tmp_path / filename)}" for name, (filename, rows, _) in HUB_FORMATS.items()]
    data_dir = tmp_path / "data"
    prepared = recipe({"DATA_DIR": str(data_dir)}, "--input", *inputs, script="prepare_thinkprune_data.sh")
    assert prepared.returncode == 0, prepared.stderr[-3000:]

    env = {"DEVICE": "gpu", "DATA_DIR": str(data_dir), "MODEL_PATH": stand_in_model, "RUN_DIR": str(tmp_path / "run")}
    config = dry_run(env)[0]
    assert config["data"]["train_files"] == [str(data_dir / "eurus.parquet")]
    assert config["data"]["val_files"] == [str(data_dir / "aime.parquet")]


def test_a_test_set_that_shares_problems_with_the_selection_set_is_refused(paper_setup):
    result = recipe({**paper_setup, "DEVICE": "gpu", "DRY_RUN": "1", "TEST_FILES": paper_setup["VAL_FILES"]})
    assert result.returncode == 2 and "share 1 problem(s) with the validation (selection) files" in result.stderr


def test_unknown_device_is_refused(paper_setup):
    result = recipe({**paper_setup, "DEVICE": "tpu"})
    assert result.returncode == 2 and "DEVICE=tpu: use auto, gpu or cpu" in result.stderr
