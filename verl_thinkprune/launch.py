"""Runs one step of the iterative driver (a round's training, a model merge, an evaluation) here or as a Ray job.

A step is a Python command: `Launcher.run(["-m", "verl.trainer.main_ppo", ...], ...)` runs this interpreter with
those arguments, or, given a Ray cluster's address, submits `python3 -m verl.trainer.main_ppo ...` as a Ray job.
Either way the step's output (stdout and stderr) is appended to its log, every attempt in the same file, and handed
line by line to `on_line` (the driver's console); `run` returns when the step succeeded and raises StepFailed, whose
one-line message names the log, when it did not. On Ctrl-C, or SIGTERM while a step runs, the step's processes (or
its Ray job) are ended before KeyboardInterrupt goes on: a re-run never finds the last attempt still writing.

A Ray job runs on the cluster's nodes, not here: it sees only the variables of its runtime env (`env` goes there),
starts in a directory of Ray's choosing (paths in the arguments must be absolute), and its `python3` is the first on
the PATH `ray start` ran with on the head node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import yaml
from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

OnLine = Callable[[bytes], None]

LOCAL_STOP_GRACE_S = 10.0
"""How long a local step may take to end after SIGTERM (verl shuts its local Ray cluster down) before SIGKILL."""

RAY_STOP_TIMEOUT_S = 60.0
"""How long to wait for a stopped Ray job's final status (on the head node Ray SIGKILLs what is left of the job
RAY_JOB_STOP_WAIT_TIME_S after its SIGTERM, 3 s by default)."""

RAY_POLL_S = 1.0

RUN_KEY, STEP_KEY = "thinkprune_run", "thinkprune_step"
"""A job's metadata: its run directory and step, so that a second job of a step that is still running is refused."""


class StepFailed(RuntimeError):
    """The step did not succeed: a non-zero exit, a Ray job that FAILED or was STOPPED, or a job that could not be
    submitted (the cluster out of reach, an unreadable runtime env file). The message is one line naming the log."""

    def __init__(self, message: str, log: Path) -> None:
        super().__init__(f"{message}; see {log}")
        self.log = log


class StepAlreadyRunning(StepFailed):
    """A Ray job of the same step of the same run is still pending or running (a second would write the same
    checkpoints): wait for it, or stop it with `ray job stop <job_id>`."""

    def __init__(self, message: str, log: Path, job_id: str) -> None:
        super().__init__(message, log)
        self.job_id = job_id


class StepOutput:
    """The step's log (appended and flushed as output comes) and the on_line callback, fed chunks of any size."""

    def __init__(self, path: Path, file: BinaryIO, on_line: OnLine | None) -> None:
        self.path, self.file, self.on_line, self.partial_line = path, file, on_line, b""

    @classmethod
    @contextmanager
    def appending_to(cls, log: Path, on_line: OnLine | None) -> Iterator[StepOutput]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as file:
            output = cls(log, file, on_line)
            try:
                yield output
            finally:
                if output.partial_line and on_line is not None:
                    on_line(output.partial_line)

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()
        if self.on_line is not None:
            *lines, self.partial_line = (self.partial_line + data).split(b"\n")
            for line in lines:
                self.on_line(line + b"\n")

    def note(self, message: str) -> None:
        """A line of the launcher's own (what became of a Ray job), on a line of its own."""
        separator = b"\n" if self.partial_line else b""
        self.write(separator + f"[thinkprune] {message}\n".encode())


class Launcher:
    """Runs the steps of the run in `run_dir`: here, or as Ray jobs on the cluster whose dashboard is at
    `ray_address` (http://<head>:8265), with the runtime env in the YAML file `runtime_env` (what
    `ray job submit --runtime-env` takes; `env` is added to its env_vars)."""

    def __init__(self, run_dir: Path, ray_address: str | None = None, runtime_env: Path | None = None) -> None:
        self.ray = None if ray_address is None else RayJobs(ray_address, run_dir.resolve(), runtime_env)

    def run(
        self,
        arguments: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str],
        log: Path,
        on_line: OnLine | None = None,
    ) -> None:
        """Runs `python <arguments>` as the step `name` (unique within the run) with `env` added to its environment."""
        with StepOutput.appending_to(log, on_line) as output, sigterm_as_interrupt():
            if self.ray is None:
                run_here([sys.executable, *arguments], name, env, output)
            else:
                self.ray.run(["python3", *arguments], name, env, output)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a scheduler's stop) is handled like Ctrl-C while a step runs: the step is ended first.

    Signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its usual effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def run_here(command: list[str], name: str, env: Mapping[str, str], output: StepOutput) -> None:
    """The step as a child process in a session of its own, so that ending the step ends all of it (verl's local Ray
    cluster included); the terminal's Ctrl-C reaches it only through this launcher."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
    )
    with process.stdout as pipe:
        try:
            copy_output(process, pipe.fileno(), output, while_running=True)
            returncode = process.wait()
        finally:  # interrupted: the whole step; finished: whatever it left behind in its group (holding the pipe)
            end_process_group(process)
            copy_output(process, pipe.fileno(), output, while_running=False)
    if returncode != 0:
        raise StepFailed(f"{name} failed (exit code {returncode})", output.path)


def copy_output(process: subprocess.Popen, pipe: int, output: StepOutput, while_running: bool) -> None:
    """Copies the step's output as it comes until the pipe's end, and, while_running, the step's exit (a child left
    behind may hold the pipe open); else only what is there now."""
    with selectors.DefaultSelector() as selector:
        selector.register(pipe, selectors.EVENT_READ)
        while True:
            readable = selector.select(timeout=0.2 if while_running else 0)
            if readable:
                chunk = os.read(pipe, 1 << 16)
                if not chunk:
                    return
                output.write(chunk)
            elif not while_running or process.poll() is not None:
                return


def end_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group the step leads, SIGKILL to what is left after LOCAL_STOP_GRACE_S; returns once it
    is empty (or a moment after SIGKILL: an orphan's zombie that nobody reaps would keep the group forever)."""
    for sig, wait_s in ((signal.SIGTERM, LOCAL_STOP_GRACE_S), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader: its zombie would keep the group
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


class RayJobs:
    """Steps as Ray jobs, submitted through Ray's job SDK, their logs streamed here while they run.

    Ray's SDK lets RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, in this process's environment override `address`.
    """

    def __init__(self, address: str, run_dir: Path, runtime_env_file: Path | None) -> None:
        self.address, self.run_id, self.runtime_env_file = address, str(run_dir), runtime_env_file
        self.client: JobSubmissionClient | None = None
        # Ray's SDK logs the end of every log stream at INFO on the console; the step's log says how the job ended.
        logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)

    def call(self, output: StepOutput, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """An SDK call; its failure (no connection, an HTTP error, a refused request) a one-line StepFailed."""
        try:
            return method(*args, **kwargs)
        except (OSError, RuntimeError, ValueError) as error:
            message = f"Ray cluster at {self.address}: {what} failed: {' '.join(str(error).split())}"
            output.note(message)
            raise StepFailed(message, output.path) from None

    def run(self, command: list[str], name: str, env: Mapping[str, str], output: StepOutput) -> None:
        runtime_env = self.read_runtime_env(output)
        runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        if self.client is None:
            self.client = self.call(output, "connecting", JobSubmissionClient, self.address)
        self.refuse_if_running(name, output)
        job_id = f"{re.sub(r'[^A-Za-z0-9_-]+', '-', name).strip('-')}-{uuid.uuid4().hex[:12]}"  # one per attempt
        self.call(
            output,
            f"submitting {name}",
            self.client.submit_job,
            entrypoint=shlex.join(command),
            submission_id=job_id,
            runtime_env=runtime_env,
            metadata={RUN_KEY: self.run_id, STEP_KEY: name},
        )
        job_log = JobLog(self.client, job_id, output)
        try:
            job_log.stream()
            job = self.final_details(job_id, output)  # at once, unless the stream broke off before the job ended
            job_log.complete(self.call(output, f"log of Ray job {job_id}", self.client.get_job_logs, job_id))
        except BaseException:  # Ctrl-C, SIGTERM, the cluster out of reach: the job must not go on unwatched
            self.stop(job_id, job_log)
            raise
        output.note(f"Ray job {job_id} {describe(job)}")
        if job.status != JobStatus.SUCCEEDED:  # FAILED, or STOPPED (`ray job stop`), whatever `ray job submit` says
            raise StepFailed(f"{name}: Ray job {job_id} {job.status}", output.path)

    def read_runtime_env(self, output: StepOutput) -> dict[str, Any]:
        if self.runtime_env_file is None:
            return {}
        try:
            content = yaml.safe_load(self.runtime_env_file.read_text())
        except (OSError, yaml.YAMLError) as error:
            problem = f"cannot be read: {' '.join(str(error).split())}"
        else:
            content = {} if content is None else content
            if isinstance(content, dict) and isinstance(content.get("env_vars", {}), dict):
                return content
            problem = "must be a mapping, its env_vars a mapping of names to values"
        message = f"the Ray runtime env {self.runtime_env_file} {problem}"
        output.note(message)
        raise StepFailed(message, output.path)

    def refuse_if_running(self, name: str, output: StepOutput) -> None:
        for job in self.call(output, "listing jobs", self.client.list_jobs):
            metadata = job.metadata or {}
            if not job.status.is_terminal() and metadata.get(RUN_KEY) == self.run_id and metadata.get(STEP_KEY) == name:
                message = (
                    f"{name} of {self.run_id} is still {job.status} as Ray job {job.submission_id} at {self.address}: "
                    f"wait for it, or stop it with `ray job stop --address {self.address} {job.submission_id}`"
                )
                output.note(message)
                raise StepAlreadyRunning(message, output.path, job.submission_id)

    def final_details(self, job_id: str, output: StepOutput, timeout: float | None = None) -> JobDetails:
        """The job once its status is final, or as it is after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.call(output, f"status of Ray job {job_id}", self.client.get_job_info, job_id)
            if job.status.is_terminal() or (deadline is not None and time.monotonic() > deadline):
                return job
            time.sleep(RAY_POLL_S)

    def stop(self, job_id: str, job_log: JobLog) -> None:
        """Stops the job and waits for its end, noting in the log what became of it."""
        output = job_log.output
        deadline = time.monotonic() + RAY_STOP_TIMEOUT_S
        try:
            self.call(output, f"stopping Ray job {job_id}", self.client.stop_job, job_id)
            job_log.stream(timeout=RAY_STOP_TIMEOUT_S)
            job = self.final_details(job_id, output, timeout=max(0.0, deadline - time.monotonic()))
            job_log.complete(self.call(output, f"log of Ray job {job_id}", self.client.get_job_logs, job_id))
        except StepFailed:  # the cluster is out of reach: noted in the log
            return
        if job.status.is_terminal():
            output.note(f"stopped Ray job {job_id}: {describe(job)}")
        else:
            output.note(
                f"Ray job {job_id} is still {job.status} {RAY_STOP_TIMEOUT_S:.0f} s after it was told to stop; "
                f"`ray job stop --address {self.address} {job_id}` ends it"
            )


def describe(job: JobDetails) -> str:
    exit_code = "" if job.driver_exit_code is None else f" (exit code {job.driver_exit_code})"
    message = (job.message or "").splitlines()
    return f"{job.status}{exit_code}{': ' + message[0] if message else ''}"


class JobLog:
    """A Ray job's log copied into the step's output: streamed while the job runs, then completed from the job's
    whole log once it has ended (the stream may have broken off; both are text, so the copy counts characters).

    Ray's SDK streams a log only as an async iterator: a thread reads it, so the waiting thread stays interruptible.
    """

    END = None

    def __init__(self, client: JobSubmissionClient, job_id: str, output: StepOutput) -> None:
        self.client, self.job_id, self.output = client, job_id, output
        self.chunks: queue.Queue[str | None] = queue.Queue()
        self.copied = 0
        self.ended = False
        threading.Thread(target=asyncio.run, args=(self.read(),), daemon=True).start()

    def stream(self, timeout: float | None = None) -> None:
        """Copies the log as it comes until the stream ends (the job has ended) or `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ended:
            try:
                chunk = self.chunks.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if chunk is self.END:
                self.ended = True
            else:
                self.output.write(chunk.encode())
                self.copied += len(chunk)

    async def read(self) -> None:
        try:
            async for chunk in self.client.tail_job_logs(self.job_id):
                self.chunks.put(chunk)
        except Exception:  # the connection broke off: complete() copies what the stream missed
            pass
        finally:
            self.chunks.put(self.END)

    def complete(self, whole_log: str) -> None:
        """Copies what the stream missed from the job's whole log, fetched after the job ended."""
        self.stream(timeout=0)  # chunks that arrived meanwhile: they count as copied
        self.output.write(whole_log[self.copied :].encode())
        self.copied = len(whole_log)
