"""Where a CPU round spends its time, with the CPU backend's settings before and after its speed-up, side by side.

Runs a short ThinkPrune round of the tiny model (``recipes/thinkprune_round.sh``: verl's real trainer through the
CPU backend) once per setting and repeat, alternating, and prints per GRPO step the time in generation,
old_log_prob, update_actor and the rest (verl's ``timing_s/*``), the start-up (launch to the first validation), the
first validation, a later one, the shut-down and the wall time, with after/before ratios.

"before" restores, by Hydra overrides (``BEFORE``), the CPU group's settings as they were before (see
``verl_thinkprune/config/platform/cpu.yaml``): packed sequences, gradient checkpointing, torch.compile and bf16
autocast in the actor, verl's replay buffer polling every 2 s, the Ray dashboard, all cores per process, and the
rollout server's 5 ms batching window.
    flock /tmp/verl_cpu.lock python benchmarks/cpu_step_breakdown.py [--steps 6] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from verl_thinkprune.tiny import prepare

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "thinkprune_round.sh"
BEFORE = [
    "actor_rollout_ref.model.use_remove_padding=true",
    "actor_rollout_ref.model.enable_gradient_checkpointing=true",
    "actor_rollout_ref.actor.use_torch_compile=true",
    "actor_rollout_ref.actor.fsdp_config.use_torch_compile=true",
    "actor_rollout_ref.ref.fsdp_config.use_torch_compile=true",
    "~actor_rollout_ref.actor.fsdp_config.mixed_precision",
    "~actor_rollout_ref.ref.fsdp_config.mixed_precision",
    "trainer.v1.sampler.custom_sampler.path=null",
    "trainer.v1.sampler.custom_sampler.name=null",
    "ray_kwargs.ray_init.include_dashboard=true",
    "~ray_kwargs.ray_init.runtime_env.env_vars",
    f"+actor_rollout_ref.rollout.engine_kwargs.hf.num_threads={os.cpu_count()}",
    "+actor_rollout_ref.rollout.engine_kwargs.hf.batch_quiet_s=0.005",
    "+actor_rollout_ref.rollout.engine_kwargs.hf.batch_max_wait_s=0.005",
]
"""The CPU group's settings before the speed-up (verl's own defaults, except the rollout server's)."""
SETTINGS = {"before": BEFORE, "after": []}
PHASES = ("gen", "old_log_prob", "update_actor")
READY = re.compile(r"INFO:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}):all initialize finished")
"""verl's TaskRunner logs this when its workers, rollout server and reward workers are up (its clock: UTC)."""


def run_round(out_dir: Path, data: dict[str, str], steps: int, overrides: list[str], timeout_s: float) -> dict:
    """One round; the metrics file is watched as it grows, for when each step's record arrived."""
    env = {
        **os.environ,
        "DEVICE": "cpu",
        "OUT_DIR": str(out_dir),
        "MODEL_PATH": data["model"],
        "TRAIN_FILES": data["train_files"],
        "VAL_FILES": data["val_files"],
        "TOTAL_STEPS": str(steps),
        "TEST_FREQ": str(steps),
        "SAVE_FREQ": str(steps),
    }
    metrics, arrivals, done = out_dir / "metrics.jsonl", [], threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            lines = metrics.read_text().count("\n") if metrics.exists() else 0
            arrivals.extend([time.time()] * (lines - len(arrivals)))

    out_dir.mkdir(parents=True)
    watcher = threading.Thread(target=watch, daemon=True)
    start = time.time()
    with open(out_dir / "round.log", "w") as log:
        process = subprocess.Popen(
            ["bash", str(RECIPE), *overrides], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        watcher.start()
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            returncode = "timeout"
    end = time.time()
    done.set()
    watcher.join()
    if returncode != 0:
        raise SystemExit(f"error: the round failed ({returncode}); see {out_dir / 'round.log'}")
    ready = READY.search((out_dir / "round.log").read_text(errors="replace"))
    if ready is None:
        raise SystemExit(f"error: no 'all initialize finished' in {out_dir / 'round.log'}")
    ready_at = datetime.strptime(ready.group(1) + "+0000", "%Y-%m-%d %H:%M:%S,%f%z").timestamp()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return {"start": start, "ready": ready_at, "end": end, "records": records, "arrivals": arrivals}


def breakdown(run: dict) -> dict[str, float]:
    """Seconds per phase of one round: start-up, first validation, per step (median), last validation, shut-down."""
    steps = [r["data"] for r in run["records"] if "timing_s/step" in r["data"]]
    per_step = {phase: [s[f"timing_s/{phase}"] for s in steps] for phase in (*PHASES, "step")}
    per_step["other"] = [s["timing_s/step"] - sum(s[f"timing_s/{p}"] for p in PHASES) for s in steps]
    later = steps[1:] or steps  # the first step also warms up (and, with torch.compile, compiles)
    result = {
        "start-up": run["ready"] - run["start"],
        "first validation": run["arrivals"][0] - run["ready"],
        "first step": steps[0]["timing_s/step"],
    }
    result |= {f"step: {phase}": statistics.median(values[1:] or values) for phase, values in per_step.items()}
    result["validation at the last step"] = later[-1].get("timing_s/testing", float("nan"))
    result["shut-down"] = run["end"] - run["arrivals"][-1]
    result["wall"] = run["end"] - run["start"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="GRPO steps per round (validation before and at the end)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per setting, alternating")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one round may take")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cpu_step_breakdown_") as scratch:
        data = prepare(Path(scratch) / "tiny", num_train=256, num_val=64)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in SETTINGS}
        for repeat in range(args.repeats):
            for name, overrides in SETTINGS.items():
                run = run_round(Path(scratch) / f"{name}_{repeat}", data, args.steps, overrides, args.timeout)
                results[name].append(breakdown(run))
                print(f"{name} #{repeat + 1}: wall {results[name][-1]['wall']:.1f} s", flush=True)

    rows = list(results["before"][0])
    medians = {name: {row: statistics.median(r[row] for r in runs) for row in rows} for name, runs in results.items()}
    print(f"\n{args.steps}-step tiny round, seconds (median of {args.repeats}); step rows: median over steps 2..N")
    print(f"| {'phase':<28} | {'before':>8} | {'after':>8} | {'after/before':>12} |")
    print(f"| {'-' * 28} | {'-' * 7}: | {'-' * 7}: | {'-' * 11}: |")
    for row in rows:
        before, after = medians["before"][row], medians["after"][row]
        ratio = after / before if before > 0 else float("nan")
        print(f"| {row:<28} | {before:8.2f} | {after:8.2f} | {ratio:12.2f} |")


if __name__ == "__main__":
    main()
