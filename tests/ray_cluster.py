"""A real Ray head for one test, on loopback only, that ends with every process it started and nothing else.

    with local_ray_cluster(num_cpus=16, num_gpus=1) as cluster:   # verl's CPU runs ask for these logical counts
        JobSubmissionClient(cluster.address).submit_job(entrypoint="python3 -c 'print(1)'")

Other Ray clusters may run on the same machine (other tests, other people): this one takes free ports, keeps its
files (sockets, logs, the `ray_current_cluster` address file) in its own short temp dir, and is ended by process
id through a marker in its processes' environment (Ray's workers and job drivers inherit it). Never `ray stop`:
it ends every Ray cluster of the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from processes import marked_processes
from ray.job_submission import JobSubmissionClient

START_TIMEOUT_S = 120
STOP_GRACE_S = 3
"""Ray's GCS and raylet outlive SIGTERM for seconds (a test cluster has nothing to save): then SIGKILL."""
MARKER_VARIABLE = "VERL_THINKPRUNE_TEST_RAY_CLUSTER"


@dataclass(frozen=True)
class LocalRayCluster:
    address: str
    """The dashboard's address (http://127.0.0.1:<port>): what the job SDK and `ray job ... --address` take."""
    env: dict[str, str]
    """The environment the cluster runs with (this Python's bin first on PATH, the marker): run commands against
    it with this, e.g. `ray job stop --address <address> <id>`."""
    marker: str
    """`NAME=value` in the environment of every process of the cluster (processes.marked_processes finds them)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def end_marked(marker: str) -> None:
    """SIGTERM to every marked process, SIGKILL to those still there after the grace time; returns once none is."""
    deadline = time.monotonic() + STOP_GRACE_S
    sig = signal.SIGTERM
    while pids := marked_processes(marker):
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@contextmanager
def local_ray_cluster(*, num_cpus: int, num_gpus: int = 0) -> Iterator[LocalRayCluster]:
    """A Ray head on 127.0.0.1 with the given logical resources; a job's `python3` is this interpreter."""
    marker_value = uuid.uuid4().hex
    dashboard_port = free_port()
    # Short: Ray's socket paths (<temp dir>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")  # they would redirect `ray` commands elsewhere
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="disabled",
        # Single-node mode: otherwise Ray replaces --node-ip-address=127.0.0.1 by the machine's routable address.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        AUTOSCALER_METRIC_PORT=str(free_port()),  # fixed by default (44217, 44227): a second cluster would collide
        DASHBOARD_METRIC_PORT=str(free_port()),
        **{MARKER_VARIABLE: marker_value},
    )
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--port={free_port()}",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--min-worker-port=0",  # 0: each worker gets a port from the OS (the default is a fixed shared range)
        "--max-worker-port=0",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        "--disable-usage-stats",
    ]
    cluster = LocalRayCluster(f"http://127.0.0.1:{dashboard_port}", env, f"{MARKER_VARIABLE}={marker_value}")
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed ({started.returncode}):\n{started.stdout}\n{started.stderr}")
        wait_for_job_api(cluster.address)
        yield cluster
    finally:
        end_marked(cluster.marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_job_api(address: str) -> None:
    """`ray start` returns before the dashboard serves the job API."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            JobSubmissionClient(address).list_jobs()
            return
        except (OSError, RuntimeError):  # not listening yet, or not serving the job API yet
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
