#!/usr/bin/env bash
# The tiny built-in default for CPU runs: builds the warm-started tiny model once (cached in ~/.cache/verl_thinkprune,
# minutes), links it as TINY_DIR/model and writes the tiny task's train/val/test parquet files under TINY_DIR/data.
#   bash recipes/prepare_tiny.sh [--num-train N --num-val N --num-test N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEVICE=cpu
source "$here/settings.sh"
python3 -m verl_thinkprune.tiny "$TINY_DIR" "$@"
