"""Build the tiny model (cached) and the tiny task's data; print the paths for main_ppo (and optionally evaluate)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from verl_thinkprune.tiny import evaluate, prepare


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m verl_thinkprune.tiny", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="where data/train.parquet and data/val.parquet are written")
    parser.add_argument("--num-train", type=int, default=512)
    parser.add_argument("--num-val", type=int, default=64)
    parser.add_argument("--evaluate", action="store_true", help="sample 128 problems x 4 at T=1 without a limit")
    args = parser.parse_args()
    if args.num_train < 1 or args.num_val < 1:
        parser.error("--num-train and --num-val must be positive")
    paths = prepare(args.out_dir, args.num_train, args.num_val)
    if args.evaluate:
        report = evaluate(Path(paths["model"]))
        lengths = sorted(report.pop("lengths"))
        paths["evaluation"] = {**report, "min_length": lengths[0], "max_length": lengths[-1]}
    print(json.dumps(paths, indent=2))


if __name__ == "__main__":
    main()
