#!/usr/bin/env bash
# The paper's data as verl parquet files in DATA_DIR, the names thinkprune_iterative.sh reads on GPUs:
#   eurus.parquet  training: PRIME-RL/Eurus-2-RL-Data, numina_amc_aime rows (~2.5k problems)
#   aime.parquet   selection: AIME 2022 + 2023
#   test/          held-out evaluation: aime.parquet (AIME 2024), amc23, math500, olympiadbench
#   bash recipes/prepare_thinkprune_data.sh [--input NAME=PATH ...] [--model-family qwq]
# Sources come from the Hugging Face hub, or from local files (--input, same columns as on the hub). Training and
# selection prompts carry the length system prompt (so data.max_prompt_length's filter counts it); the rollout hook
# restates it for every round's limit. Test prompts have the user prompt only, as the paper evaluates.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DEVICE=gpu
source "$here/settings.sh"
LENGTH_PROMPT_LIMIT=${LENGTH_PROMPT_LIMIT:-4000}  # any limit: the hook restates it per round

python3 -m verl_thinkprune.data eurus aime --token-limit "$LENGTH_PROMPT_LIMIT" --out-dir "$DATA_DIR" \
  --keep aime=AIME22,AIME23 "$@"
python3 -m verl_thinkprune.data aime amc23 math500 olympiadbench --out-dir "$DATA_DIR/test" --keep aime=AIME24 "$@"
