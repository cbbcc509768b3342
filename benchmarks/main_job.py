"""The README's main job, measured: does the tiny default show the paper's claim, and how long does it take?

Runs `bash recipes/thinkprune_iterative.sh` (CPU, the tiny built-in default) once into a fresh run directory, with the
tiny model cached beforehand (its one-time warm start is timed separately), then prints, side by side from that one
run's report: the start model and the final model on the held-out test set under the paper's protocol (T=0.6,
top_p=0.95, no effective length limit), the change, and the main job's wall time, each against its target:
final mean length <= 50% of the start model's, pass@1 at most 2 points below it, start model >= 95%, <= 8 minutes.
    python benchmarks/main_job.py [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from verl_thinkprune.presentation import markdown_table
from verl_thinkprune.tiny import tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"length_ratio": 0.50, "pass_drop_points": 2.0, "start_pass": 0.95, "wall_minutes": 8.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="where the run goes (default: a new temporary directory)")
    args = parser.parse_args()

    start = time.perf_counter()
    model = tiny_model_dir()  # built once if missing: not part of the main job's time with the model cached
    build_s = time.perf_counter() - start
    work = args.run_dir or Path(tempfile.mkdtemp(prefix="thinkprune_main_job_"))
    env = {**os.environ, "DEVICE": "cpu", "RUN_DIR": str(work / "run"), "TINY_DIR": str(work / "tiny")}
    start = time.perf_counter()
    result = subprocess.run(["bash", str(REPO / "recipes" / "thinkprune_iterative.sh")], env=env)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        print(f"the main job failed (exit code {result.returncode}); its run directory: {work}", file=sys.stderr)
        return 1

    report = json.loads((work / "run" / "report.json").read_text())
    models = report["evaluation"]["models"]
    first, last = models[0], models[-1]
    length_ratio = last["mean_length"] / first["mean_length"]
    drop = 100 * (first["pass@1"] - last["pass@1"])
    print(f"\ntiny model: {model} (warm start {'cached' if build_s < 5 else f'built in {build_s:.0f} s'})")
    print(f"held-out test set, {report['evaluation']['protocol']}:\n")
    rows = [
        [m["label"], "-" if m["limit"] is None else m["limit"], f"{m['pass@1']:.1%}", f"{m['mean_length']:.1f}"]
        for m in models
    ]
    print(markdown_table(["model", "limit L", "pass@1", "mean length"], rows))
    checks = [
        ("final / start mean length", f"{length_ratio:.1%}", f"<= {TARGETS['length_ratio']:.0%}",
         length_ratio <= TARGETS["length_ratio"]),
        ("pass@1 drop (points)", f"{drop:+.1f}", f"<= {TARGETS['pass_drop_points']:.1f}",
         drop <= TARGETS["pass_drop_points"]),
        ("start model pass@1", f"{first['pass@1']:.1%}", f">= {TARGETS['start_pass']:.0%}",
         first["pass@1"] >= TARGETS["start_pass"]),
        ("main job wall time (model cached)", f"{wall_s / 60:.1f} min", f"<= {TARGETS['wall_minutes']:.0f} min",
         wall_s / 60 <= TARGETS["wall_minutes"]),
    ]  # fmt: skip
    print(markdown_table(["measure", "this run", "target", "met"], [[*c[:3], "yes" if c[3] else "NO"] for c in checks]))
    print(f"report: {work / 'run' / 'report.md'} and report.png")
    return 0 if all(c[3] for c in checks) else 2


if __name__ == "__main__":
    sys.exit(main())
