#!/usr/bin/env bash
# Temporal-RLT GRPO of the video LLM (LoRA or full) through accelerate + DeepSpeed ZeRO.
#
#   scripts/train_llm.sh scripts/train_configs/temporal_rlt_lora.yaml [--more tspo-eval train-llm flags]
#   ZERO=3 NUM_PROCESSES=8 scripts/train_llm.sh cfg.yaml --finetune full     # full fine-tuning: ZeRO-3
#   ZERO=none scripts/train_llm.sh cfg.yaml                                   # plain DDP
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [tspo-eval train-llm flags]}
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "${ZERO:-2}" in
  none) launch=(--config_file "$here/accelerate/multi_gpu.yaml") ;;
  2|3) launch=(--config_file "$here/accelerate/deepspeed.yaml" --deepspeed_config_file "$here/deepspeed/zero${ZERO:-2}.json") ;;
  *) echo "ZERO must be none, 2 or 3" >&2; exit 2 ;;
esac
exec accelerate launch "${launch[@]}" \
  --num_processes "${NUM_PROCESSES:-8}" --num_machines "${NUM_MACHINES:-1}" --machine_rank "${MACHINE_RANK:-0}" \
  --main_process_ip "${MAIN_PROCESS_IP:-127.0.0.1}" --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
  -m tspo_eval.cli train-llm --config "$config" "$@"
