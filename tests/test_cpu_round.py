"""A real ThinkPrune GRPO round on CPU: verl's main_ppo, the tiny model, the CPU backend, the rollout hook.

Runs ``recipes/thinkprune_round.sh`` on CPU (what users run) in its own session, marks every process it starts with an
environment variable, samples their memory, and ends every one of them however the test ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from conftest import REPO
from processes import MemorySampler, end_all, marked_processes

from verl_thinkprune.tiny import DATA_SOURCE, tiny_model_dir

LIMIT, RESPONSE_LENGTH, STEPS, VAL_N = 64, 96, 2, 2
TIMEOUT_S = 480


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def round_on_cpu(tmp_path_factory):
    tiny_model_dir()  # built (or found in the cache) before the clock starts
    out = tmp_path_factory.mktemp("tiny_round")
    marker = f"VERL_THINKPRUNE_TEST_RUN={uuid.uuid4().hex}"
    env = {
        **os.environ,
        marker.split("=")[0]: marker.split("=")[1],
        "OUT_DIR": str(out),
        "TOKEN_LIMIT": str(LIMIT),
        "RESPONSE_LENGTH": str(RESPONSE_LENGTH),
        "DEVICE": "cpu",
        "TOTAL_STEPS": str(STEPS),
        "TEST_FREQ": "1",
        "SAVE_FREQ": "1",
        "VAL_N": str(VAL_N),
    }
    sampler = MemorySampler(marker)
    sampler.start()
    start = time.perf_counter()
    with open(out / "trainer.log", "w") as log:
        process = subprocess.Popen(
            ["bash", str(REPO / "recipes" / "thinkprune_round.sh")],
            cwd=out,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = process.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            wall = time.perf_counter() - start
            time.sleep(3)  # Ray's daemons exit on their own after a clean shutdown
            left_behind = marked_processes(marker)
            end_all(process, marker)
            sampler.stopped.set()
    report = {"wall_s": round(wall, 1), "peak_pss_gib": round(sampler.peak / 2**30, 2)}
    report["peak_processes"] = sampler.peak_processes
    print(f"\nCPU round: {report}")
    (out / "round_report.json").write_text(json.dumps(report))
    return {
        "out": out,
        "returncode": returncode,
        "left_behind": left_behind,
        "survivors": marked_processes(marker),
        "log": (out / "trainer.log").read_text()[-6000:],
    }


pytestmark = pytest.mark.slow


def test_trainer_exits_cleanly_and_leaves_no_process(round_on_cpu):
    assert round_on_cpu["returncode"] == 0, round_on_cpu["log"]
    assert round_on_cpu["survivors"] == []


def test_training_steps_ran_and_validation_metrics_carry_thinkprune_fields(round_on_cpu):
    records = read_jsonl(round_on_cpu["out"] / "metrics.jsonl")
    trained = {r["step"] for r in records if "actor/pg_loss" in r["data"]}
    assert trained == set(range(1, STEPS + 1))
    validations = {r["step"]: r["data"] for r in records if f"val-core/{DATA_SOURCE}/acc/mean@{VAL_N}" in r["data"]}
    assert sorted(validations) == list(range(STEPS + 1))  # before training and at every save point
    for metrics in validations.values():
        for key in ("response_length", "truncated"):
            assert f"val-aux/{DATA_SOURCE}/{key}/mean@{VAL_N}" in metrics
        assert metrics[f"val-aux/{DATA_SOURCE}/response_length/mean@{VAL_N}"] <= LIMIT


def test_rollout_respected_the_limit_and_truncated_samples_scored_zero(round_on_cpu):
    samples = [s for dump in sorted((round_on_cpu["out"] / "validation").glob("*.jsonl")) for s in read_jsonl(dump)]
    assert samples
    assert all(s["response_length"] <= LIMIT < RESPONSE_LENGTH for s in samples)
    truncated = [s for s in samples if s["truncated"]]
    assert truncated and all(s["score"] == 0 and s["response_length"] == LIMIT for s in truncated)
    assert any(s["score"] == 1 for s in samples)


def test_checkpoints_were_saved(round_on_cpu):
    checkpoints = round_on_cpu["out"] / "checkpoints"
    assert (checkpoints / "latest_checkpointed_iteration.txt").read_text().strip() == str(STEPS)
    for step in range(1, STEPS + 1):
        assert list((checkpoints / f"global_step_{step}" / "actor").glob("model_world_size_1_rank_0.pt"))
