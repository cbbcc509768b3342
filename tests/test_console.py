"""What the iterative driver shows a person: the progress bar follows a round's files, a failure shows its cause."""

from __future__ import annotations

import io
import sys
import time

from test_selection import write_dump

from verl_thinkprune.console import POLL_S, Console, error_excerpt
from verl_thinkprune.rounds import PROGRESS_FILE, Round
from verl_thinkprune.rundir import write_json_atomically

VERL_LOG_TAIL = """(TaskRunnerV1 pid=1) step:3 - actor/pg_loss:0.1 - thinkprune/truncation_rate:0.3
(TaskRunnerV1 pid=1) Training Progress:  25%|##5       | 3/12
Traceback (most recent call last):
  File "verl/trainer/main_ppo.py", line 95, in run_ppo
    ray.get(runner.run.remote(config))
ray.exceptions.RayTaskError(OSError): ray::TaskRunnerV1.run() (pid=1)
OSError: [Errno 28] No space left on device: '/runs/round_1_L96/checkpoints/global_step_4'
Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""


def test_a_failed_step_shows_its_log_from_the_last_traceback_on(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("(WorkerDict pid=2) loading\n" * 500 + VERL_LOG_TAIL)
    excerpt = error_excerpt(log)
    assert excerpt.splitlines()[0].strip() == "Traceback (most recent call last):"
    assert "No space left on device" in excerpt and "loading" not in excerpt


def test_a_log_without_an_error_shows_its_tail(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert error_excerpt(log, lines=3).split() == ["line", "97", "line", "98", "line", "99"]


def test_the_progress_bar_follows_the_rounds_progress_file_and_newest_validation(tmp_path, monkeypatch):
    rnd = Round.of(tmp_path, 1, 96)
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    progress = rnd.checkpoints / PROGRESS_FILE
    with Console().round_progress(rnd, total_rounds=3):
        write_json_atomically(progress, {"total_steps": 12, "step": 0, "validated_steps": []})
        write_dump(rnd.validations, 0, [1, 0, 0, 0], [50, 96, 96, 96], [0, 1, 1, 1], limit=96)
        write_dump(rnd.validations, 4, [1, 1, 1, 0], [50, 60, 70, 96], [0, 0, 0, 1], limit=96)
        write_json_atomically(
            rnd.checkpoints / PROGRESS_FILE, {"total_steps": 12, "step": 4, "validated_steps": [0, 4]}
        )
        time.sleep(2.5 * POLL_S)
    shown = captured.getvalue()
    assert "round 1/3 (L=96)" in shown and "4/12" in shown
    assert "val step 4: pass@1 0.750, len 69.0, trunc 0.25" in shown
