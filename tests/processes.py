"""Tracking the processes a test starts (the trainer, Ray's daemons and workers) so that every one of them ends."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path


def marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries marker: the trainer and every Ray process it started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return pids


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemorySampler(threading.Thread):
    """Peak of the summed PSS of the marked processes, sampled once a second."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak, self.peak_processes, self.stopped = marker, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            pids = marked_processes(self.marker)
            self.peak = max(self.peak, sum(pss_bytes(pid) for pid in pids))
            self.peak_processes = max(self.peak_processes, len(pids))


def end_all(process: subprocess.Popen, marker: str) -> None:
    """SIGTERM then SIGKILL to the trainer's session, then to any marked process that left it (Ray daemons)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        for pid in marked_processes(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
    process.wait(timeout=30)
