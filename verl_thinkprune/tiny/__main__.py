"""Build the tiny model (cached) and the tiny task's data; print the paths for main_ppo.

Measure the model with the project's evaluation: ``python -m verl_thinkprune.evaluation --model OUT_DIR/model
--data OUT_DIR/data/test.parquet --out-dir EVAL_DIR --backend transformers --max-new-tokens 224``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from verl_thinkprune.tiny import prepare


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m verl_thinkprune.tiny", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="OUT_DIR/model links the cached model; OUT_DIR/data gets the data")
    sizes = parser.add_argument_group("problems per split (defaults: verl_thinkprune.tiny.prepare's)")
    for split in ("train", "val", "test"):
        sizes.add_argument(f"--num-{split}", type=int, default=argparse.SUPPRESS, metavar="N")
    args = parser.parse_args()
    counts = {name: value for name, value in vars(args).items() if name.startswith("num_")}
    if any(value < 1 for value in counts.values()):
        parser.error("--num-train, --num-val and --num-test must be positive")
    print(json.dumps(prepare(args.out_dir, **counts), indent=2))


if __name__ == "__main__":
    main()
