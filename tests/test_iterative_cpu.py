"""The README's main job, `bash recipes/thinkprune_iterative.sh` on CPU, killed with -9 twice and re-run each time.

The run is killed once in round 1 after its first checkpoint, once in round 2 after its training started; each time
the same command is repeated. It must finish with the same outcome an uninterrupted run reports: every round
selected by the rule from its own validation dumps, finished work not redone, the final model clearly shorter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import REPO
from processes import end_all, marked_processes

from verl_thinkprune.iterative import TOTAL_STEPS_LINE
from verl_thinkprune.selection import read_validations, select_checkpoint

pytestmark = pytest.mark.slow

SCHEDULE = (96, 72, 56)
TIMEOUT_S = 2400


class Recipe:
    """The iterative recipe in its own session, every process it starts marked so that all of them can be ended."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.marker = f"VERL_THINKPRUNE_TEST_RUN={uuid.uuid4().hex}"
        self.env = {
            **os.environ,
            self.marker.split("=")[0]: self.marker.split("=")[1],
            "DEVICE": "cpu",
            "RUN_DIR": str(run_dir),
            "TINY_DIR": str(run_dir.parent / "tiny"),
        }
        self.attempts = 0

    def run(self, until: Callable[[], bool] | None = None) -> int | None:
        """Runs the command to its end, or kills it with -9 as soon as `until` holds; the exit code or None."""
        self.attempts += 1
        with open(self.run_dir.parent / f"attempt{self.attempts}.log", "w") as log:
            process = subprocess.Popen(
                ["bash", str(REPO / "recipes" / "thinkprune_iterative.sh")],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            deadline = time.monotonic() + TIMEOUT_S
            try:
                while process.poll() is None and time.monotonic() < deadline:
                    if until is not None and until():
                        kill_9(process, self.marker)
                        return None
                    time.sleep(1)
                return process.poll()
            finally:
                end_all(process, self.marker)  # -9 for everything still there (`until` fired, or a time-out)

    def log(self) -> str:
        return (self.run_dir.parent / f"attempt{self.attempts}.log").read_text()[-6000:]


def kill_9(process: subprocess.Popen, marker: str) -> None:
    """What a crash or `kill -9` does: every process of the run dies at once, mid-write or not."""
    os.killpg(process.pid, signal.SIGKILL)
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def round_dir(run_dir: Path, t: int) -> Path:
    return run_dir / f"round_{t}_L{SCHEDULE[t - 1]}"


def attempts_in(train_log: Path) -> int:
    return train_log.read_text(errors="replace").count(TOTAL_STEPS_LINE)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("iterative") / "run"
    recipe = Recipe(run_dir)
    first = round_dir(run_dir, 1)
    second = round_dir(run_dir, 2)

    def round1_checkpointed() -> bool:
        return (first / "checkpoints" / "global_step_4").exists() and 4 in read_validations(first / "validation")

    def round2_training() -> bool:
        return (second / "train.log").exists() and attempts_in(second / "train.log") >= 1

    assert recipe.run(until=round1_checkpointed) is None, recipe.log()
    dump_before = (first / "validation" / "4.jsonl").stat().st_mtime_ns
    assert recipe.run(until=round2_training) is None, recipe.log()
    round1_record = (first / "round.json").stat().st_mtime_ns
    start = time.monotonic()
    returncode = recipe.run()
    return {
        "run_dir": run_dir,
        "returncode": returncode,
        "log": recipe.log(),
        "last_attempt_s": time.monotonic() - start,
        "dump_kept": (first / "validation" / "4.jsonl").stat().st_mtime_ns == dump_before,
        "round1_untouched": (first / "round.json").stat().st_mtime_ns == round1_record,
        "survivors": marked_processes(recipe.marker),
    }


def test_rerun_completes_and_leaves_no_process(interrupted_run):
    assert interrupted_run["returncode"] == 0, interrupted_run["log"]
    assert interrupted_run["survivors"] == []


def test_interrupted_round_resumed_from_its_latest_checkpoint(interrupted_run):
    first = round_dir(interrupted_run["run_dir"], 1)
    assert attempts_in(first / "train.log") == 2
    metrics = [json.loads(line) for line in (first / "metrics.jsonl").read_text().splitlines()]
    retrained = {m["step"] for m in metrics if "actor/pg_loss" in m["data"]}
    assert retrained and min(retrained) == 5, "the resumed attempt trains from step 5 (its file logger restarted)"
    assert interrupted_run["dump_kept"], "a complete validation dump is not redone on resume"


def test_finished_round_was_not_redone(interrupted_run):
    first = round_dir(interrupted_run["run_dir"], 1)
    assert interrupted_run["round1_untouched"]
    assert attempts_in(first / "train.log") == 2, "no third attempt at round 1"
    assert attempts_in(round_dir(interrupted_run["run_dir"], 2) / "train.log") == 2


def test_each_selection_follows_the_rule_from_the_rounds_own_dumps(interrupted_run):
    report = json.loads((interrupted_run["run_dir"] / "report.json").read_text())
    assert [r["limit"] for r in report["rounds"]] == list(SCHEDULE)
    start_model = None
    for t, record in enumerate(report["rounds"], start=1):
        validations = read_validations(round_dir(interrupted_run["run_dir"], t) / "validation")
        candidates = [validations[s] for s in record["saved_steps"] if s in validations and s > 0]
        assert record["selection"] == asdict(select_checkpoint(validations[0], candidates, 0.10))
        selected = record["selection"]["step"]
        if selected is not None:
            assert validations[selected].pass_at_1 >= 0.9 * validations[0].pass_at_1 - 1e-12
            assert Path(record["output_model"], "config.json").exists(), "the merged Hugging Face model"
        if start_model is not None:
            assert record["start_model"] == start_model, "each round starts from the model the last one selected"
        start_model = record["output_model"]


def test_report_shows_the_pruned_model_shorter(interrupted_run):
    run_dir = interrupted_run["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    handed_on = [
        next((s for s in r["steps"] if s["step"] == r["selection"]["step"]), r["baseline"])["mean_length"]
        for r in report["rounds"]
    ]
    first = report["rounds"][0]["baseline"]["mean_length"]
    assert handed_on[-1] <= 0.9 * first, f"mean length per round {handed_on}, from {first}"
    assert report["overall"]["mean_length_change"] <= -0.1
    assert (run_dir / "report.md").read_text().startswith("# ThinkPrune iterative pruning report")
    assert (run_dir / "report.png").stat().st_size > 10_000
