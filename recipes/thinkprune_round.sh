#!/usr/bin/env bash
# One ThinkPrune round with verl 0.9: GRPO with the token limit TOKEN_LIMIT (a response that does not finish within
# it earns 0). The building block of thinkprune_iterative.sh, for running or inspecting a single round.
#   bash recipes/thinkprune_round.sh [extra Hydra overrides...]
# No GPU: the tiny built-in model on CPU (a few minutes). GPUs: the paper's setup (recipes/settings.sh).
set -xeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# ---- user-adjustable (and everything in settings.sh) ----
OUT_DIR=${OUT_DIR:-runs/thinkprune_round}
TINY_DIR=${TINY_DIR:-$OUT_DIR/tiny}
source "$here/settings.sh"
if [ "${TINY_DEFAULTS:-0}" = 1 ]; then TINY_DIR="$TINY_DIR" bash "$here/prepare_tiny.sh" >/dev/null; fi
FIRST_LIMIT=$(python3 -c 'from verl_thinkprune.iterative import DEFAULT_SCHEDULE; print(DEFAULT_SCHEDULE[0])')
TOKEN_LIMIT=${TOKEN_LIMIT:-${SCHEDULE:-$FIRST_LIMIT}}
TOKEN_LIMIT=${TOKEN_LIMIT%% *}                  # L (default: the schedule's first limit)
RESPONSE_LENGTH=${RESPONSE_LENGTH:-$TOKEN_LIMIT}  # what the rollout may generate; L must not exceed it
EXPERIMENT_NAME=${EXPERIMENT_NAME:-round_L$TOKEN_LIMIT}

export HYDRA_FULL_ERROR=1 VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-$OUT_DIR/metrics.jsonl}
python3 -m verl.trainer.main_ppo "${PLATFORM[@]}" +reward_manager=thinkprune \
  "${DATA[@]}" "data.train_files=[${TRAIN_FILES// /,}]" "data.val_files=[${VAL_FILES// /,}]" \
  data.max_response_length="$RESPONSE_LENGTH" reward.reward_kwargs.token_limit="$TOKEN_LIMIT" \
  actor_rollout_ref.model.path="$MODEL_PATH" "${ACTOR[@]}" "${ROLLOUT[@]}" "${TRAINER[@]}" \
  trainer.val_before_train=true trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.default_local_dir="$OUT_DIR/checkpoints" trainer.validation_data_dir="$OUT_DIR/validation" \
  hydra.run.dir="$OUT_DIR/hydra" \
  "$@"
