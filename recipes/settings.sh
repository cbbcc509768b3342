# ThinkPrune's verl settings per device, sourced by the recipes. Sourcing it only sets variables: preparing models
# and data is each recipe's explicit step (prepare_tiny.sh, prepare_thinkprune_data.sh).
# Every knob is an environment variable with a default; the override arrays below are passed to every round.
#   GPU (default when nvidia-smi sees one, or when RAY_ADDRESS names a cluster): the paper's
#        DeepSeek-R1-Distill-Qwen-1.5B setup (GRPO, 16 rollouts, 128 prompts a step, lr 1e-6, KL loss 0.001
#        low_var_kl, T=1.0, prompt 768, ~10 epochs a round, save and validate every 20 steps; validation n=16,
#        T=0.6, top_p=0.95) on NNODES x NGPUS_PER_NODE GPUs.
#   CPU: the tiny built-in model and task (verl_thinkprune.tiny) through the CPU backend, in minutes.
# Knobs the driver owns (SCHEDULE, MAX_DROP, SELECTION, ...) default to the driver's own defaults when unset.

DEVICE=${DEVICE:-auto}                      # auto | gpu | cpu
if [ "$DEVICE" = auto ]; then
  if [ -n "${RAY_ADDRESS:-}" ]; then
    DEVICE=gpu                              # a cluster: this machine's own devices say nothing about its nodes
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    DEVICE=gpu
  else
    DEVICE=cpu
  fi
fi

PROJECT_NAME=${PROJECT_NAME:-thinkprune}
LOGGER=${LOGGER:-"['console','file']"}      # add 'wandb', 'tensorboard', ... as with any verl run
DATA_DIR=${DATA_DIR:-$HOME/data/thinkprune}  # recipes/prepare_thinkprune_data.sh writes the paper's data here

case "$DEVICE" in
  gpu)
    MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
    TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/eurus.parquet}
    VAL_FILES=${VAL_FILES:-$DATA_DIR/aime.parquet}  # AIME22 + AIME23: the selection set
    TEST_FILES=${TEST_FILES:-"$DATA_DIR/test/aime.parquet $DATA_DIR/test/amc23.parquet $DATA_DIR/test/math500.parquet $DATA_DIR/test/olympiadbench.parquet"}
    EVAL_BACKEND=${EVAL_BACKEND:-vllm}
    NNODES=${NNODES:-2}
    NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}
    MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-768}  # QwQ-32B: 1024; leave room for the length system prompt
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
    VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}
    VAL_TOP_P=${VAL_TOP_P:-0.95}
    # The actor's attention. verl defaults to flash_attention_2, which `pip install .[gpu]` does not bring (flash-attn
    # is built against your CUDA and torch: `pip install flash-attn --no-build-isolation`, then set
    # ATTN_IMPLEMENTATION=flash_attention_2 for speed). sdpa loads everywhere.
    ATTN_IMPLEMENTATION=${ATTN_IMPLEMENTATION:-sdpa}
    # Packed sequences are kept apart only by flash-attention's varlen kernels: pad instead with any other attention.
    case "$ATTN_IMPLEMENTATION" in flash_attention_*) USE_REMOVE_PADDING=true ;; *) USE_REMOVE_PADDING=false ;; esac
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
      ++actor_rollout_ref.model.override_config.attn_implementation="$ATTN_IMPLEMENTATION"
      actor_rollout_ref.model.use_remove_padding="$USE_REMOVE_PADDING"
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
    TINY_DIR=${TINY_DIR:-runs/tiny}           # recipes/prepare_tiny.sh builds the model and data here
    if [ -z "${MODEL_PATH:-}${TRAIN_FILES:-}${VAL_FILES:-}${TEST_FILES:-}" ]; then TINY_DEFAULTS=1; fi
    # Two rounds, not the paper's three: on 2 CPU cores each round pays about a minute of verl start-up.
    SCHEDULE=${SCHEDULE:-"80 48"}
    MODEL_PATH=${MODEL_PATH:-$TINY_DIR/model}
    TRAIN_FILES=${TRAIN_FILES:-$TINY_DIR/data/train.parquet}
    VAL_FILES=${VAL_FILES:-$TINY_DIR/data/val.parquet}
    TEST_FILES=${TEST_FILES:-$TINY_DIR/data/test.parquet}
    EVAL_BACKEND=${EVAL_BACKEND:-transformers}
    EVAL_SAMPLES=${EVAL_SAMPLES:-4}
    EVAL_MAX_NEW_TOKENS=${EVAL_MAX_NEW_TOKENS:-224}  # the tiny model's context (256) less its prompts
    TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-8}
    MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-32}
    LR=${LR:-1.5e-4}
    ROLLOUT_N=${ROLLOUT_N:-8}
    TOTAL_STEPS=${TOTAL_STEPS:-24}
    SAVE_FREQ=${SAVE_FREQ:-8}
    TEST_FREQ=${TEST_FREQ:-8}
    VAL_N=${VAL_N:-4}
    # The paper's validation sampling; the tiny model's thoughts are sampled the same way in evaluation.
    VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}
    VAL_TOP_P=${VAL_TOP_P:-0.95}
    export VERL_PLATFORM=cpu RAY_AUTH_MODE=disabled TOKENIZERS_PARALLELISM=false
    PLATFORM=(+platform=cpu data.dataloader_num_workers=0)
    # The tiny model never learned to read ThinkPrune's (long) length system prompt: its prompts stay as the data has.
    PLATFORM+=(actor_rollout_ref.rollout.custom.thinkprune.length_prompt=false)
    if [ -n "${RAY_ADDRESS:-}" ]; then
      # A cluster counts its own resources (start it with --num-cpus 16 --num-gpus 1 for the CPU backend).
      PLATFORM+=(ray_kwargs.ray_init.num_cpus=null ray_kwargs.ray_init.num_gpus=null)
    fi
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
  actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
  actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
)
TRAINER+=(
  trainer.save_freq="$SAVE_FREQ"
  trainer.test_freq="$TEST_FREQ"
  trainer.logger="$LOGGER"
  trainer.project_name="$PROJECT_NAME"
)
