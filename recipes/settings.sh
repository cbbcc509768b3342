# ThinkPrune's verl settings per device, sourced by thinkprune_round.sh and thinkprune_iterative.sh.
# Every knob is an environment variable with a default; the override arrays below are passed to every round.
#   GPU (default when nvidia-smi sees one): the paper's DeepSeek-R1-Distill-Qwen-1.5B setup (GRPO, 16 rollouts,
#        128 prompts a step, lr 1e-6, KL loss 0.001 low_var_kl, T=1.0, prompt 768, ~10 epochs a round, save and
#        validate every 20 steps; validation n=16, T=0.6, top_p=0.95) on NNODES x NGPUS_PER_NODE GPUs.
#   CPU: the tiny built-in model and task (verl_thinkprune.tiny) through the CPU backend, in minutes.

DEVICE=${DEVICE:-auto}                      # auto | gpu | cpu
if [ "$DEVICE" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=gpu; else DEVICE=cpu; fi
fi

PROJECT_NAME=${PROJECT_NAME:-thinkprune}
LOGGER=${LOGGER:-"['console','file']"}      # add 'wandb', 'tensorboard', ... as with any verl run

case "$DEVICE" in
  gpu)
    SCHEDULE=${SCHEDULE:-"4000 3000 2000"}
    MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
    DATA_DIR=${DATA_DIR:-$HOME/data/thinkprune}  # python -m verl_thinkprune.data writes these
    TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.parquet}
    VAL_FILES=${VAL_FILES:-$DATA_DIR/aime22_23.parquet}
    NNODES=${NNODES:-2}
    NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}
    MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-768}  # QwQ-32B: 1024
    LR=${LR:-1e-6}
    ROLLOUT_N=${ROLLOUT_N:-16}
    ROLLOUT_TP=${ROLLOUT_TP:-1}
    ROLLOUT_NAME=${ROLLOUT_NAME:-vllm}          # or sglang
    GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}
    MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU:-24576}
    TOTAL_EPOCHS=${TOTAL_EPOCHS:-10}
    SAVE_FREQ=${SAVE_FREQ:-20}
    TEST_FREQ=${TEST_FREQ:-20}
    VAL_N=${VAL_N:-16}
    PLATFORM=()
    ACTOR=(
      actor_rollout_ref.actor.optim.lr="$LR"
      actor_rollout_ref.actor.ppo_mini_batch_size="$TRAIN_BATCH_SIZE"
      actor_rollout_ref.actor.use_dynamic_bsz=true
      actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
      actor_rollout_ref.actor.clip_ratio=0.2
      actor_rollout_ref.actor.entropy_coeff=0.001
      actor_rollout_ref.actor.use_kl_loss=true
      actor_rollout_ref.actor.kl_loss_coef=0.001
      actor_rollout_ref.actor.kl_loss_type=low_var_kl
      actor_rollout_ref.model.use_remove_padding=true
      actor_rollout_ref.model.enable_gradient_checkpointing=true
      actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true
      actor_rollout_ref.ref.log_prob_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
    )
    ROLLOUT=(
      actor_rollout_ref.rollout.name="$ROLLOUT_NAME"
      actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
      actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
      actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
      actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$MAX_TOKENS_PER_GPU"
    )
    TRAINER=(
      trainer.nnodes="$NNODES"
      trainer.n_gpus_per_node="$NGPUS_PER_NODE"
      trainer.total_epochs="$TOTAL_EPOCHS"
    )
    ;;
  cpu)
    SCHEDULE=${SCHEDULE:-"96 72 56"}
    TINY_DIR=${TINY_DIR:-runs/tiny_data}
    if [ -z "${MODEL_PATH:-}" ] || [ -z "${TRAIN_FILES:-}" ] || [ -z "${VAL_FILES:-}" ]; then
      # The warm-started tiny model (built once, then cached) and the tiny task's parquet files.
      mkdir -p "$TINY_DIR"
      read -r TINY_MODEL TINY_TRAIN TINY_VAL < <(python -m verl_thinkprune.tiny "$TINY_DIR" --num-train 256 \
        --num-val 64 | python -c "import json,sys; p=json.load(sys.stdin); \
print(p['model'], p['train_files'], p['val_files'])")
      MODEL_PATH=${MODEL_PATH:-$TINY_MODEL}
      TRAIN_FILES=${TRAIN_FILES:-$TINY_TRAIN}
      VAL_FILES=${VAL_FILES:-$TINY_VAL}
    fi
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-8}
    MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-32}
    LR=${LR:-1e-4}                             # 2e-4 shortens faster but costs the tiny model arithmetic
    ROLLOUT_N=${ROLLOUT_N:-8}
    TOTAL_STEPS=${TOTAL_STEPS:-12}
    SAVE_FREQ=${SAVE_FREQ:-4}
    TEST_FREQ=${TEST_FREQ:-4}
    VAL_N=${VAL_N:-4}
    export VERL_PLATFORM=cpu RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
    PLATFORM=(+platform=cpu data.dataloader_num_workers=0)
    ACTOR=(
      actor_rollout_ref.actor.optim.lr="$LR"
      actor_rollout_ref.actor.ppo_mini_batch_size="$TRAIN_BATCH_SIZE"
      actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64
      actor_rollout_ref.actor.use_kl_loss=false
      actor_rollout_ref.actor.entropy_coeff=0
      actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=64
    )
    ROLLOUT=(actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64)
    TRAINER=(trainer.total_training_steps="$TOTAL_STEPS")
    ;;
  *)
    echo "DEVICE=$DEVICE: use auto, gpu or cpu" >&2
    exit 2
    ;;
esac

DATA=(
  algorithm.adv_estimator=grpo
  data.train_batch_size="$TRAIN_BATCH_SIZE"
  data.max_prompt_length="$MAX_PROMPT_LENGTH"
  data.filter_overlong_prompts=true
)
ROLLOUT+=(
  actor_rollout_ref.rollout.n="$ROLLOUT_N"
  actor_rollout_ref.rollout.temperature=1.0
  actor_rollout_ref.rollout.top_p=1.0
  actor_rollout_ref.rollout.val_kwargs.do_sample=true
  actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
)
# Validation sampling: the paper's T=0.6, top_p=0.95 on GPUs; T=1 for the tiny model (greedy always writes the
# longest thought it learned).
if [ "$DEVICE" = gpu ]; then
  ROLLOUT+=(actor_rollout_ref.rollout.val_kwargs.temperature=0.6 actor_rollout_ref.rollout.val_kwargs.top_p=0.95)
else
  ROLLOUT+=(actor_rollout_ref.rollout.val_kwargs.temperature=1.0 actor_rollout_ref.rollout.val_kwargs.top_p=1.0)
fi
TRAINER+=(
  trainer.save_freq="$SAVE_FREQ"
  trainer.test_freq="$TEST_FREQ"
  trainer.logger="$LOGGER"
  trainer.project_name="$PROJECT_NAME"
)
