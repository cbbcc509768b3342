"""ThinkPrune's trainer: selected by the Hydra group, seen by verl as its sync trainer, its metrics and progress file.

Its run through verl (metrics in the loggers, the progress file of a real round) is checked in test_cpu_round.py;
these check its parts in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import verl
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

from verl_thinkprune.rundir import write_json_atomically
from verl_thinkprune.trainer import (
    PROGRESS_FILE,
    ThinkPruneTrainer,
    earlier_validated_steps,
    rollout_metrics,
)


def rollout(acc: float, truncated: bool, length: int, **extra) -> dict:
    return {"acc": acc, "truncated": int(truncated), "response_length": length, **extra}


def test_the_group_selects_a_trainer_that_verl_treats_as_its_sync_trainer(thinkprune_config, tmp_path):
    config = thinkprune_config(96, "reward.reward_kwargs.token_limit=64", f"trainer.default_local_dir={tmp_path}")
    assert config.trainer.v1.trainer_mode == "thinkprune"
    trainer = get_trainer_cls(config.trainer.v1.trainer_mode)(config)
    sync = PPOTrainerSync(thinkprune_config(96, "trainer.v1.trainer_mode=sync"))

    assert isinstance(trainer, ThinkPruneTrainer) and isinstance(trainer, PPOTrainerSync)
    assert trainer.trainer_mode == sync.trainer_mode == "sync"  # verl branches on the name: sync replay, refill, ...
    assert type(trainer.replay_buffer) is type(sync.replay_buffer) is ReplayBuffer
    assert trainer.replay_buffer.trainer_mode == "sync"
    assert trainer.parameter_sync_step == sync.parameter_sync_step == 1
    assert trainer.default_limit == 64  # reward.reward_kwargs.token_limit, not the response length
    assert trainer.progress_path == str(tmp_path / PROGRESS_FILE)


def test_token_limit_defaults_to_the_response_length(thinkprune_config):
    assert ThinkPruneTrainer(thinkprune_config(96)).default_limit == 96


def test_metrics_of_a_step():
    rollouts = [
        rollout(1.0, False, 10, token_limit=64),
        rollout(0.0, False, 20, token_limit=64),
        rollout(0.0, True, 64, token_limit=64),
        rollout(1.0, False, 30, token_limit=64),
    ]
    assert rollout_metrics(rollouts, [1.0, 0.0, 0.0, 1.0], default_limit=96) == {
        "thinkprune/token_limit": 64,
        "thinkprune/truncation_rate": 0.25,
        "thinkprune/reward_mean": 0.5,
        "thinkprune/finished_accuracy": pytest.approx(2 / 3),
        "thinkprune/response_length/mean": 31.0,
        "thinkprune/response_length/finished_mean": 20.0,
        "thinkprune/response_length/correct_mean": 20.0,
    }


def test_a_sample_without_its_limit_counts_at_the_configured_one():
    metrics = rollout_metrics([rollout(1.0, False, 10), rollout(0.0, True, 48, token_limit=48)], [1.0, 0.0], 64)
    assert metrics["thinkprune/token_limit"] == 64


def test_metrics_over_an_empty_set_are_left_out_not_logged_as_nan():
    all_truncated = rollout_metrics([rollout(0.0, True, 64), rollout(0.0, True, 64)], [0.0, 0.0], 64)
    assert all_truncated == {
        "thinkprune/token_limit": 64,
        "thinkprune/truncation_rate": 1.0,
        "thinkprune/reward_mean": 0.0,
        "thinkprune/response_length/mean": 64.0,
    }
    none_right = rollout_metrics([rollout(0.0, False, 12), rollout(0.0, True, 64)], [0.0, 0.0], 64)
    assert none_right["thinkprune/finished_accuracy"] == 0.0
    assert none_right["thinkprune/response_length/finished_mean"] == 12.0
    assert "thinkprune/response_length/correct_mean" not in none_right
    assert rollout_metrics([], [], 64) == {}


def test_progress_file_is_replaced_whole(tmp_path):
    path = tmp_path / "checkpoints" / PROGRESS_FILE
    write_json_atomically(path, {"total_steps": 12, "step": 0, "validated_steps": []})
    write_json_atomically(path, {"total_steps": 12, "step": 4, "validated_steps": [0, 4]})
    assert json.loads(path.read_text()) == {"total_steps": 12, "step": 4, "validated_steps": [0, 4]}
    assert [p.name for p in path.parent.iterdir()] == [PROGRESS_FILE]  # no temporary file left behind


def test_a_resumed_round_keeps_the_validations_up_to_its_checkpoint(tmp_path, caplog):
    path = tmp_path / PROGRESS_FILE
    assert earlier_validated_steps(str(path), up_to=4) == []
    path.write_text(json.dumps({"total_steps": 12, "step": 6, "validated_steps": [0, 4, 6]}))
    assert earlier_validated_steps(str(path), up_to=4) == [0, 4]
    path.write_text('{"total_steps": 12, "st')
    assert earlier_validated_steps(str(path), up_to=4) == []
    assert "unreadable progress file" in caplog.text


def test_another_verl_is_refused_by_name(thinkprune_config, monkeypatch):
    monkeypatch.setattr(verl, "__version__", "0.10.0")
    with pytest.raises(RuntimeError, match=r"supports verl 0\.9\.x, found verl 0\.10\.0: install verl==0\.9\.1"):
        ThinkPruneTrainer(thinkprune_config(96))


def test_plugin_registers_the_trainer_only_where_verl_imports_its_trainer():
    """`import verl` (every verl process) must not pay for verl's trainer: it resolves the platform, loads engines."""
    script = (
        "import sys, verl\n"
        "print('verl.trainer.ppo.v1' in sys.modules, 'verl_thinkprune.trainer' in sys.modules)\n"
        "from verl.trainer.ppo.v1 import get_trainer_cls\n"
        "print(get_trainer_cls('thinkprune').__module__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split("\n")[:2] == ["False False", "verl_thinkprune.trainer"], result.stderr
