"""The README's main job, `bash recipes/thinkprune_iterative.sh` on CPU, killed with -9 twice and re-run each time.

The run is killed once in round 1 after its first checkpoint, once in round 2 after its training started; each time
the same command is repeated. It must finish with the same outcome an uninterrupted run reports: every round
selected by the rule from its own validation dumps, finished work not redone, the start model and every round's
output evaluated on the held-out test set, and a console a person can read.
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

from verl_thinkprune.rounds import Round
from verl_thinkprune.selection import read_validations, select_checkpoint

pytestmark = pytest.mark.slow

SCHEDULE, SAVE_FREQ = (80, 48), 8  # recipes/settings.sh's CPU defaults
TIMEOUT_S = 2400


class Recipe:
    """The iterative recipe in its own session, every process it starts marked so that all of them can be ended."""

    def __init__(self, run_dir: Path, **env: str) -> None:
        self.run_dir = run_dir
        self.marker = f"VERL_THINKPRUNE_TEST_RUN={uuid.uuid4().hex}"
        self.env = {
            **os.environ,
            self.marker.split("=")[0]: self.marker.split("=")[1],
            "DEVICE": "cpu",
            "RUN_DIR": str(run_dir),
            "TINY_DIR": str(run_dir.parent / "tiny"),
            **env,
        }
        self.attempts = 0

    def run(self, until: Callable[[], bool] | None = None) -> int | None:
        """Runs the command to its end, or kills it with -9 as soon as `until` holds; the exit code or None."""
        self.attempts += 1
        with open(self.console_log(), "w") as log:
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

    def console_log(self) -> Path:
        return self.run_dir.parent / f"attempt{self.attempts}.log"


def kill_9(process: subprocess.Popen, marker: str) -> None:
    """What a crash or `kill -9` does: every process of the run dies at once, mid-write or not."""
    os.killpg(process.pid, signal.SIGKILL)
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def round_of(run_dir: Path, t: int) -> Round:
    return Round.of(run_dir, t, SCHEDULE[t - 1])


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("iterative") / "run"
    recipe = Recipe(run_dir)
    first, second = round_of(run_dir, 1), round_of(run_dir, 2)

    def round1_checkpointed() -> bool:
        state = first.state()
        return SAVE_FREQ in state.saved_steps and SAVE_FREQ in state.validations

    assert recipe.run(until=round1_checkpointed) is None, recipe.console_log().read_text()[-6000:]
    dump_before = (first.validations / f"{SAVE_FREQ}.jsonl").stat().st_mtime_ns
    assert recipe.run(until=lambda: second.progress().total_steps is not None) is None
    round1_record = first.record.stat().st_mtime_ns
    start_evaluation = (run_dir / "evaluation" / "start_model" / "results.json").stat().st_mtime_ns
    start = time.monotonic()
    returncode = recipe.run()
    return {
        "run_dir": run_dir,
        "returncode": returncode,
        "console": recipe.console_log().read_text(),
        "last_attempt_s": time.monotonic() - start,
        "dump_kept": (first.validations / f"{SAVE_FREQ}.jsonl").stat().st_mtime_ns == dump_before,
        "round1_untouched": first.record.stat().st_mtime_ns == round1_record,
        "start_evaluation_kept": (run_dir / "evaluation" / "start_model" / "results.json").stat().st_mtime_ns
        == start_evaluation,
        "survivors": marked_processes(recipe.marker),
    }


def test_rerun_completes_and_leaves_no_process(interrupted_run):
    assert interrupted_run["returncode"] == 0, interrupted_run["console"][-6000:]
    assert interrupted_run["survivors"] == []


def test_interrupted_round_resumed_from_its_latest_checkpoint(interrupted_run):
    first = round_of(interrupted_run["run_dir"], 1)
    attempts = first.metrics_files()
    assert len(attempts) == 2, "killed once, resumed once"
    resumed = [json.loads(line) for line in attempts[1].read_text().splitlines()]
    retrained = {m["step"] for m in resumed if "actor/pg_loss" in m["data"]}
    assert retrained and min(retrained) == SAVE_FREQ + 1, "the resumed attempt trains on from its checkpoint"
    assert interrupted_run["dump_kept"], "a complete validation dump is not redone on resume"


def test_finished_work_was_not_redone(interrupted_run):
    assert interrupted_run["round1_untouched"] and interrupted_run["start_evaluation_kept"]
    assert len(round_of(interrupted_run["run_dir"], 1).metrics_files()) == 2, "no third attempt at round 1"
    assert len(round_of(interrupted_run["run_dir"], 2).metrics_files()) == 2


def test_each_selection_follows_the_rule_from_the_rounds_own_dumps(interrupted_run):
    report = json.loads((interrupted_run["run_dir"] / "report.json").read_text())
    assert [r["limit"] for r in report["rounds"]] == list(SCHEDULE)
    start_model = None
    for t, record in enumerate(report["rounds"], start=1):
        validations = read_validations(round_of(interrupted_run["run_dir"], t).validations, SCHEDULE[t - 1])
        candidates = [validations[s] for s in record["saved_steps"] if s in validations and s > 0]
        assert record["selection"] == asdict(select_checkpoint(validations[0], candidates, 0.10, "paper"))
        if record["selection"]["step"] is not None:
            assert Path(record["output_model"], "config.json").exists(), "the merged Hugging Face model"
        if start_model is not None:
            assert record["start_model"] == start_model, "each round starts from the model the last one selected"
        start_model = record["output_model"]


def test_report_leads_with_every_model_measured_on_the_held_out_test_set(interrupted_run):
    run_dir = interrupted_run["run_dir"]
    report = json.loads((run_dir / "report.json").read_text())
    models = report["evaluation"]["models"]
    assert [m["label"] for m in models] == ["start model"] + [f"round {t} output" for t in range(1, len(SCHEDULE) + 1)]
    assert [m["limit"] for m in models] == [None, *SCHEDULE]
    assert all(m["samples"] == m["problems"] * 4 for m in models), "EVAL_SAMPLES=4 on the tiny test set"
    assert models[-1]["mean_length"] < models[0]["mean_length"], "the pruned model answers in fewer tokens"
    assert report["headline"].startswith("test set: mean length")
    markdown = (run_dir / "report.md").read_text()
    assert markdown.index("Held-out test set, measured the paper's way") < markdown.index("Checkpoint selection")
    assert (run_dir / "report.png").stat().st_size > 10_000


def test_the_default_console_is_short_and_shows_progress_without_verls_output(interrupted_run):
    console = interrupted_run["console"]
    lines = console.splitlines()
    assert len(lines) < 60, console
    assert "actor_rollout_ref" not in console and "Training Progress" not in console, "verl's output is in the logs"
    last, limit = len(SCHEDULE), SCHEDULE[-1]
    assert (
        f"[thinkprune] round {last}/{last}: L={limit} from " in console
        and f"round {last}/{last} (L={limit}):" in console
    )
    assert f"[thinkprune] round {last}: selected step" in console or f"round {last}: kept the start model" in console
    assert lines[-2].startswith("[thinkprune] done: test set: mean length")
