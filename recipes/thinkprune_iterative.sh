#!/usr/bin/env bash
# ThinkPrune iterative pruning (arXiv 2504.01296) with verl 0.9: GRPO rounds with a decreasing token limit, each
# starting from the checkpoint the last one selected (at most MAX_DROP relative pass@1 drop on the validation set,
# shortest mean length). Re-run the same command to continue after an interruption.
#   bash recipes/thinkprune_iterative.sh [Hydra overrides for every round...]
# No GPU: the tiny built-in model on CPU (three rounds, minutes). GPUs: the paper's setup (recipes/settings.sh).
# Multi-node: start Ray on the nodes, export RAY_ADDRESS=http://<head>:8265 and keep RUN_DIR on shared storage:
# each round is then submitted with `ray job submit`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# ---- user-adjustable (and everything in settings.sh) ----
RUN_DIR=${RUN_DIR:-runs/thinkprune_iterative}
MAX_DROP=${MAX_DROP:-0.10}                  # largest relative pass@1 drop a selected checkpoint may have
PRUNE_CHECKPOINTS=${PRUNE_CHECKPOINTS:-0}   # 1: delete a round's unselected checkpoints once it is selected
DRY_RUN=${DRY_RUN:-0}                       # 1: check everything and print each round's verl config, then stop
source "$here/settings.sh"

DRIVER=(--model "$MODEL_PATH" --train-files $TRAIN_FILES --val-files $VAL_FILES --schedule $SCHEDULE
  --run-dir "$RUN_DIR" --max-drop "$MAX_DROP")
[ "$PRUNE_CHECKPOINTS" = 1 ] && DRIVER+=(--prune-checkpoints)
[ "$DRY_RUN" = 1 ] && DRIVER+=(--dry-run)
[ -n "${RAY_ADDRESS:-}" ] && DRIVER+=(--launcher "ray job submit --address=$RAY_ADDRESS --runtime-env=$here/runtime_env.yaml --")

exec thinkprune-iterative "${DRIVER[@]}" -- "${PLATFORM[@]}" "${DATA[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" \
  "${TRAINER[@]}" "$@"
