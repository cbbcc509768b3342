"""Multi-node the way users run it: the iterative recipe with RAY_ADDRESS set, every step a Ray job on a real cluster.

A Ray head on loopback (tests/ray_cluster.py) stands in for the cluster. The recipe runs from another directory than
the head's, with relative paths. A round is stopped with `ray job stop` in the middle of its training: the driver
must exit non-zero (a STOPPED job is no success), and the re-run resumes that round and finishes the run, every
selection following the rule from the round's own dumps. The run uses the unlimited selection protocol (validation
generated past each round's limit) through verl's real trainer; the main job's test covers the paper's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import REPO
from processes import end_all
from ray.job_submission import JobSubmissionClient
from ray_cluster import local_ray_cluster

from verl_thinkprune.launch import STEP_KEY
from verl_thinkprune.rounds import Round
from verl_thinkprune.selection import read_validations, select_checkpoint
from verl_thinkprune.tiny import prepare

pytestmark = pytest.mark.slow

SCHEDULE = (96, 72)
VALIDATION_MAX_TOKENS = 192
TIMEOUT_S = 1500


def run_recipe(cwd: Path, env: dict, until: Callable[[], bool] | None = None) -> int | None:
    """The recipe (the driver, here) to its end, calling `until` once a second while it runs; its exit code."""
    marker = f"VERL_THINKPRUNE_TEST_DRIVER={uuid.uuid4().hex}"  # the driver's processes: the jobs run in the cluster
    log = cwd / f"console{len(list(cwd.glob('console*.log')))}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            ["bash", str(REPO / "recipes" / "thinkprune_iterative.sh")],
            cwd=cwd,
            env={**env, marker.split("=")[0]: marker.split("=")[1]},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + TIMEOUT_S
        try:
            while process.poll() is None and time.monotonic() < deadline:
                if until is not None:
                    until()
                time.sleep(1)
            return process.poll()
        finally:
            end_all(process, marker)


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("submitting")  # the driver's directory; the jobs start in the head's
    paths = prepare(work / "tiny", num_train=64, num_val=8, num_test=8)
    with local_ray_cluster(num_cpus=16, num_gpus=1) as cluster:
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")},
            "RAY_ADDRESS": cluster.address,
            "DEVICE": "cpu",  # a cluster defaults to the GPU settings; this one runs the CPU backend
            "RUN_DIR": "run",
            "MODEL_PATH": os.path.relpath(paths["model"], work),
            "TRAIN_FILES": os.path.relpath(paths["train_files"], work),
            "VAL_FILES": os.path.relpath(paths["val_files"], work),
            "TEST_FILES": os.path.relpath(paths["test_files"], work),
            "SCHEDULE": " ".join(map(str, SCHEDULE)),
            "TOTAL_STEPS": "3",
            "SAVE_FREQ": "1",
            "TEST_FREQ": "1",
            "VAL_N": "2",
            "EVAL_SAMPLES": "2",
            "SELECTION": "unlimited",
            "VALIDATION_MAX_TOKENS": str(VALIDATION_MAX_TOKENS),
        }
        run_dir = work / "run"
        first = Round.of(run_dir, 1, SCHEDULE[0])
        client = JobSubmissionClient(cluster.address)

        stopped: list[subprocess.CompletedProcess] = []

        def stop_round_1_once_it_trains() -> None:
            if stopped or first.progress().completed_step < 1:
                return
            jobs = [job for job in client.list_jobs() if (job.metadata or {}).get(STEP_KEY) == first.name]
            stopped.append(
                subprocess.run(
                    ["ray", "job", "stop", "--address", cluster.address, *[job.submission_id for job in jobs]],
                    env=cluster.env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            )

        stopped_returncode = run_recipe(work, env, until=stop_round_1_once_it_trains)
        stopped_state = first.state()
        recorded_after_stop = first.record.exists()
        rerun = run_recipe(work, env)
        all_jobs = client.list_jobs()
    return {
        "work": work,
        "run_dir": run_dir,
        "stop": stopped[0] if stopped else None,
        "stopped_returncode": stopped_returncode,
        "stopped_state": stopped_state,
        "recorded_after_stop": recorded_after_stop,
        "rerun_returncode": rerun,
        "jobs": all_jobs,
    }


def test_a_stopped_job_fails_the_driver_before_anything_is_selected(stopped_and_resumed):
    assert stopped_and_resumed["stop"] is not None, "round 1 trained as a Ray job"
    assert stopped_and_resumed["stop"].returncode == 0, stopped_and_resumed["stop"].stderr
    assert stopped_and_resumed["stopped_returncode"] == 1
    console = (stopped_and_resumed["work"] / "console0.log").read_text()
    assert "STOPPED" in console.splitlines()[-1] and "re-run the same command to resume" in console
    assert not stopped_and_resumed["stopped_state"].finished
    assert not stopped_and_resumed["recorded_after_stop"], "no partial round selected, merged and recorded"


def test_the_rerun_resumes_the_stopped_round_and_finishes(stopped_and_resumed):
    assert stopped_and_resumed["rerun_returncode"] == 0, (stopped_and_resumed["work"] / "console1.log").read_text()
    first = Round.of(stopped_and_resumed["run_dir"], 1, SCHEDULE[0])
    attempts = first.metrics_files()
    assert len(attempts) == 2, "VERL_FILE_LOGGER_PATH reached both jobs through their runtime env"
    resumed = {json.loads(line)["step"] for line in attempts[1].read_text().splitlines()}
    assert min(resumed - {0}) > 1, "the second attempt resumed from the stopped one's checkpoint"


def test_every_step_ran_as_a_ray_job_and_none_is_left_running(stopped_and_resumed):
    steps = [(job.metadata or {}).get(STEP_KEY) for job in stopped_and_resumed["jobs"]]
    for step in ("evaluate_start_model", "round_1_L96", "round_2_L72"):
        assert steps.count(step) == (2 if step == "round_1_L96" else 1), steps
    assert all(job.status.is_terminal() for job in stopped_and_resumed["jobs"])


def test_unlimited_selection_validates_past_each_limit_and_follows_the_rule(stopped_and_resumed):
    report = json.loads((stopped_and_resumed["run_dir"] / "report.json").read_text())
    assert [r["limit"] for r in report["rounds"]] == list(SCHEDULE)
    past_the_limit = 0
    for t, record in enumerate(report["rounds"], start=1):
        rnd = Round.of(stopped_and_resumed["run_dir"], t, SCHEDULE[t - 1])
        validations = read_validations(rnd.validations, rnd.limit)
        candidates = [validations[s] for s in record["saved_steps"] if s in validations and s > 0]
        assert record["selection"] == asdict(select_checkpoint(validations[0], candidates, 0.10, "unlimited"))
        assert all(v.unlimited is not None for v in validations.values()), "both measurements of every step"
        for dump in rnd.validations.glob("*.jsonl"):
            rows = [json.loads(line) for line in dump.read_text().splitlines()]
            assert {row["token_limit"] for row in rows} == {VALIDATION_MAX_TOKENS}
            past_the_limit += sum(row["response_length"] > rnd.limit and row["acc"] == 1 for row in rows)
        training = [json.loads(line) for path in rnd.metrics_files() for line in path.read_text().splitlines()]
        assert {m["data"]["thinkprune/token_limit"] for m in training if "thinkprune/token_limit" in m["data"]} == {
            rnd.limit
        }, "training is generated and scored at L"
    assert past_the_limit > 0, "right answers longer than L count without the limit"
    assert [m["label"] for m in report["evaluation"]["models"]][0] == "start model"
    markdown = (stopped_and_resumed["run_dir"] / "report.md").read_text()
    assert "pass@1 unlimited" in markdown and "selected (validation without the limit)" in markdown
