#!/usr/bin/env bash
# ThinkPrune iterative pruning (arXiv 2504.01296) with verl 0.9: GRPO rounds with a decreasing token limit, each
# starting from the checkpoint the last one selected (at most MAX_DROP relative pass@1 drop on the validation set,
# shortest mean length); the start model and every round's output are then evaluated the paper's way on a held-out
# test set. Re-run the same command to continue after an interruption.
#   bash recipes/thinkprune_iterative.sh [Hydra overrides for every round...]
# No GPU: the tiny built-in model on CPU (two rounds, minutes). GPUs: the paper's setup (recipes/settings.sh), on
# data written by recipes/prepare_thinkprune_data.sh. Multi-node: start Ray on the nodes, keep RUN_DIR and the data
# on storage every node sees, export RAY_ADDRESS=http://<head>:8265: each step then runs as a Ray job.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# ---- user-adjustable (and everything in settings.sh); unset: the driver's defaults (thinkprune-iterative --help) ----
RUN_DIR=${RUN_DIR:-runs/thinkprune_iterative}
SCHEDULE=${SCHEDULE:-}                      # token limits, strictly decreasing (driver: 4000 3000 2000)
MAX_DROP=${MAX_DROP:-}                      # largest relative pass@1 drop a selected checkpoint may have (0.10)
SELECTION=${SELECTION:-}                    # paper | unlimited: how validation measures pass@1 for selection
VALIDATION_MAX_TOKENS=${VALIDATION_MAX_TOKENS:-}  # unlimited selection: validation's generation cap
EVALUATE=${EVALUATE:-1}                     # 0: no held-out evaluation (and no TEST_FILES needed)
EVAL_SAMPLES=${EVAL_SAMPLES:-}              # samples per test problem (the paper's: 64 for AIME24/AMC23, else 16)
EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-}  # evaluation's generation cap (32000, the paper's)
PRUNE_CHECKPOINTS=${PRUNE_CHECKPOINTS:-0}   # 1: delete a round's unselected checkpoints once it is selected
DRY_RUN=${DRY_RUN:-0}                       # 1: check everything and print each round's verl config, then stop
VERBOSE=${VERBOSE:-0}                       # 1: stream verl's own output (always in each round's train.log)
source "$here/settings.sh"
if [ "${TINY_DEFAULTS:-0}" = 1 ]; then TINY_DIR="$TINY_DIR" bash "$here/prepare_tiny.sh" >/dev/null; fi

DRIVER=(--model "$MODEL_PATH" --train-files $TRAIN_FILES --val-files $VAL_FILES --run-dir "$RUN_DIR")
if [ -n "$SCHEDULE" ]; then DRIVER+=(--schedule $SCHEDULE); fi
if [ -n "$MAX_DROP" ]; then DRIVER+=(--max-drop "$MAX_DROP"); fi
if [ -n "$SELECTION" ]; then DRIVER+=(--selection "$SELECTION"); fi
if [ -n "$VALIDATION_MAX_TOKENS" ]; then DRIVER+=(--validation-max-tokens "$VALIDATION_MAX_TOKENS"); fi
if [ "$EVALUATE" = 1 ]; then
  DRIVER+=(--test-files $TEST_FILES --eval-backend "$EVAL_BACKEND")
  if [ -n "$EVAL_SAMPLES" ]; then DRIVER+=(--eval-samples "$EVAL_SAMPLES"); fi
  if [ -n "$EVAL_MAX_NEW_TOKENS" ]; then DRIVER+=(--eval-max-new-tokens "$EVAL_MAX_NEW_TOKENS"); fi
else
  DRIVER+=(--no-evaluation)
fi
if [ "$PRUNE_CHECKPOINTS" = 1 ]; then DRIVER+=(--prune-checkpoints); fi
if [ "$DRY_RUN" = 1 ]; then DRIVER+=(--dry-run); fi
if [ "$VERBOSE" = 1 ]; then DRIVER+=(--verbose); fi
if [ -n "${RAY_ADDRESS:-}" ]; then DRIVER+=(--ray-address "$RAY_ADDRESS" --runtime-env "$here/runtime_env.yaml"); fi

exec thinkprune-iterative "${DRIVER[@]}" -- "${PLATFORM[@]}" "${DATA[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" \
  "${TRAINER[@]}" "$@"
