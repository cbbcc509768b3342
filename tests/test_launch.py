"""The step launcher, here and as Ray jobs on a real local Ray cluster: output, environment, failures, stops, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient
from ray_cluster import LocalRayCluster, free_port, local_ray_cluster

from verl_thinkprune.launch import RUN_KEY, STEP_KEY, Launcher, StepAlreadyRunning, StepFailed

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 120

SLEEPER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    child = subprocess.Popen(["sleep", "300"])
    print("started", flush=True)
    Path(sys.argv[1]).write_text(f"{os.getpid()} {child.pid}")
    time.sleep(300)
    """
)
"""A step that runs until it is ended, with a child of its own; it writes both process ids to the file it is given."""

LAUNCHER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from verl_thinkprune.launch import Launcher
    run_dir, address, log, *arguments = sys.argv[1:]
    Launcher(Path(run_dir), address or None).run(arguments, name="step", env={}, log=Path(log))
    """
)
"""The launcher in a process of its own, to be interrupted as a person or a scheduler would."""


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def interrupted_launcher(tmp_path: Path, sig: signal.Signals, address: str = "") -> list[int]:
    """Starts the launcher on SLEEPER in a process and sends it `sig` once the step runs; the step's process ids.
    The launcher must end with KeyboardInterrupt."""
    pids_file = tmp_path / "pids"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    command = [sys.executable, "-c", LAUNCHER, str(tmp_path), address, str(tmp_path / "step.log")]
    launcher = subprocess.Popen(
        [*command, "-c", SLEEPER, str(pids_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: pids_file.exists() and len(pids_file.read_text().split()) == 2, "the step to start")
        pids = [int(pid) for pid in pids_file.read_text().split()]
        launcher.send_signal(sig)
        output, _ = launcher.communicate(timeout=WAIT_S)
    finally:
        launcher.kill()
    assert launcher.returncode != 0 and output.rstrip().endswith("KeyboardInterrupt"), output
    return pids


def test_local_step_gets_env_and_its_output_goes_to_log_and_lines(tmp_path):
    log = tmp_path / "logs" / "step.log"
    log.parent.mkdir()
    log.write_bytes(b"an earlier attempt\n")
    code = "import os, sys; print(os.environ['STEP_VALUE']); print('to stderr', file=sys.stderr); print('end', end='')"
    lines: list[bytes] = []
    Launcher(tmp_path).run(["-c", code], name="step", env={"STEP_VALUE": "42"}, log=log, on_line=lines.append)
    assert lines == [b"42\n", b"to stderr\n", b"end"]
    assert log.read_bytes() == b"an earlier attempt\n42\nto stderr\nend"


def test_local_failure_raises_naming_the_log(tmp_path):
    log = tmp_path / "step.log"
    with pytest.raises(StepFailed) as failure:
        Launcher(tmp_path).run(["-c", "print('boom'); raise SystemExit(3)"], name="round_1", env={}, log=log)
    assert failure.value.log == log
    assert str(failure.value) == f"round_1 failed (exit code 3); see {log}"
    assert log.read_text() == "boom\n"


def test_local_step_leaves_no_process_behind(tmp_path):
    """A finished step's leftovers (a child it did not wait for) end with it: the next step gets the memory."""
    code = "import subprocess, sys; open(sys.argv[1], 'w').write(str(subprocess.Popen(['sleep', '300']).pid))"
    Launcher(tmp_path).run(["-c", code, str(tmp_path / "pid")], name="step", env={}, log=tmp_path / "step.log")
    assert not alive(int((tmp_path / "pid").read_text()))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_local_interrupt_ends_the_whole_step(tmp_path, sig):
    pids = interrupted_launcher(tmp_path, sig)
    assert not any(alive(pid) for pid in pids)
    assert "started" in (tmp_path / "step.log").read_text()


@pytest.fixture
def no_ray_address(monkeypatch) -> None:
    for variable in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # Ray's SDK would prefer them to the given address
        monkeypatch.delenv(variable, raising=False)


def test_unreachable_cluster_fails_in_one_line(tmp_path, no_ray_address):
    log, address = tmp_path / "step.log", f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StepFailed) as failure:
        Launcher(tmp_path, address).run(["-c", "pass"], name="round_1", env={}, log=log)
    assert str(failure.value).startswith(f"Ray cluster at {address}: connecting failed: ")
    assert str(failure.value).endswith(f"; see {log}") and "\n" not in str(failure.value)
    assert f"[thinkprune] Ray cluster at {address}: connecting failed" in log.read_text()


@pytest.mark.parametrize(
    "content, problem",
    [("env_vars: [A, B]\n", "must be a mapping"), ("env_vars: {A: [\n", "cannot be read"), (None, "cannot be read")],
)
def test_bad_runtime_env_fails_in_one_line(tmp_path, no_ray_address, content, problem):
    runtime_env, log = tmp_path / "runtime_env.yaml", tmp_path / "step.log"
    if content is not None:
        runtime_env.write_text(content)
    with pytest.raises(StepFailed) as failure:
        launcher = Launcher(tmp_path, f"http://127.0.0.1:{free_port()}", runtime_env)
        launcher.run(["-c", "pass"], name="round_1", env={}, log=log)
    assert str(failure.value).startswith(f"the Ray runtime env {runtime_env} {problem}")
    assert "\n" not in str(failure.value)


# ---- Ray jobs on a real local cluster: `flock /tmp/verl_cpu.lock python -m pytest -m slow tests/test_launch.py` ----


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with local_ray_cluster(num_cpus=4) as running:
        yield running


@pytest.fixture
def client(cluster, no_ray_address) -> JobSubmissionClient:
    return JobSubmissionClient(cluster.address)


def jobs_of(client: JobSubmissionClient, run_dir: Path, step: str) -> list:
    return [
        job
        for job in client.list_jobs()
        if (job.metadata or {}).get(RUN_KEY) == str(run_dir.resolve()) and job.metadata.get(STEP_KEY) == step
    ]


@pytest.mark.slow
def test_job_env_reaches_the_job_and_its_ray_workers(tmp_path, cluster, client):
    """`env` reaches the job and the workers of verl's own ray.init (its runtime env included), with the recipes'
    runtime env: a variable verl also forwards (PYTHONHASHSEED) would otherwise make ray.init refuse to merge."""
    code = textwrap.dedent(
        """
        import os, sys, ray
        from verl.trainer.constants_ppo import get_ppo_ray_runtime_env
        ray.init(runtime_env=get_ppo_ray_runtime_env())  # as verl's main_ppo does inside the job
        @ray.remote
        def worker_sees():
            return os.environ["VERL_FILE_LOGGER_PATH"], os.environ["PYTHONHASHSEED"]
        print("job sees", os.environ["VERL_FILE_LOGGER_PATH"], flush=True)
        open(sys.argv[1], "w").write(" ".join(ray.get(worker_sees.remote())))
        """
    )
    seen, log, lines = tmp_path / "seen", tmp_path / "step.log", []
    env = {"VERL_FILE_LOGGER_PATH": str(tmp_path / "metrics.jsonl"), "PYTHONHASHSEED": "7"}
    launcher = Launcher(tmp_path, cluster.address, REPO / "recipes" / "runtime_env.yaml")
    launcher.run(["-c", code, str(seen)], name="round_1", env=env, log=log, on_line=lines.append)
    assert seen.read_text() == f"{tmp_path / 'metrics.jsonl'} 7"
    assert f"job sees {tmp_path / 'metrics.jsonl'}\n".encode() in lines
    assert b"SUCCEEDED" in lines[-1] and b"SUCCEEDED" in log.read_bytes().splitlines()[-1]
    [job] = jobs_of(client, tmp_path, "round_1")
    assert job.status == JobStatus.SUCCEEDED


@pytest.mark.slow
def test_failed_job_raises_naming_the_log(tmp_path, cluster, client):
    log = tmp_path / "step.log"
    with pytest.raises(StepFailed) as failure:
        Launcher(tmp_path, cluster.address).run(["-c", "print('boom'); exit(3)"], name="round_1", env={}, log=log)
    assert failure.value.log == log
    assert "FAILED" in str(failure.value) and str(failure.value).endswith(f"; see {log}")
    assert "\n" not in str(failure.value)
    assert "boom\n" in log.read_text() and "exit code 3" in log.read_text()


@pytest.mark.slow
def test_job_stopped_from_outside_is_a_failure(tmp_path, cluster, client):
    """`ray job stop` makes `ray job submit` exit 0; the launcher must not take the partial step for a success."""
    pids_file = tmp_path / "pids"

    def stop_from_outside() -> None:
        wait_for(pids_file.exists, "the job to start")
        [job] = jobs_of(client, tmp_path, "round_1")
        ray = Path(sys.executable).parent / "ray"
        subprocess.run(
            [ray, "job", "stop", "--address", cluster.address, job.submission_id], env=cluster.env, check=True
        )

    stopper = threading.Thread(target=stop_from_outside)
    stopper.start()
    try:
        with pytest.raises(StepFailed, match="STOPPED"):
            launcher = Launcher(tmp_path, cluster.address)
            launcher.run(["-c", SLEEPER, str(pids_file)], name="round_1", env={}, log=tmp_path / "step.log")
    finally:
        stopper.join()
    assert not any(alive(int(pid)) for pid in pids_file.read_text().split())


@pytest.mark.slow
def test_second_job_of_a_running_step_is_refused(tmp_path, cluster, client):
    release = tmp_path / "release"
    code = "import sys, time; from pathlib import Path\nwhile not Path(sys.argv[1]).exists(): time.sleep(0.2)"
    first_failure: list[BaseException] = []

    def first() -> None:
        try:
            Launcher(tmp_path, cluster.address).run(
                ["-c", code, str(release)], name="round_1", env={}, log=tmp_path / "1.log"
            )
        except BaseException as error:
            first_failure.append(error)

    running = threading.Thread(target=first)
    running.start()
    try:
        wait_for(lambda: [j.status for j in jobs_of(client, tmp_path, "round_1")] == [JobStatus.RUNNING], "the job")
        [job] = jobs_of(client, tmp_path, "round_1")
        with pytest.raises(StepAlreadyRunning) as refusal:
            Launcher(tmp_path, cluster.address).run(["-c", "pass"], name="round_1", env={}, log=tmp_path / "2.log")
        assert refusal.value.job_id == job.submission_id
        assert f"ray job stop --address {cluster.address} {job.submission_id}" in str(refusal.value)
        assert len(jobs_of(client, tmp_path, "round_1")) == 1  # nothing was submitted
        Launcher(tmp_path, cluster.address).run(["-c", "pass"], name="round_1_merge", env={}, log=tmp_path / "3.log")
    finally:
        release.touch()
        running.join()
    assert first_failure == []


@pytest.mark.slow
def test_interrupt_stops_the_job(tmp_path, cluster, client):
    """Ctrl-C on the driver stops its job: a re-run would otherwise start a second one writing the same files."""
    pids = interrupted_launcher(tmp_path, signal.SIGINT, cluster.address)
    [job] = jobs_of(client, tmp_path, "step")
    assert job.status == JobStatus.STOPPED
    assert not any(alive(pid) for pid in pids)
    assert f"stopped Ray job {job.submission_id}: STOPPED" in (tmp_path / "step.log").read_text()
