#!/usr/bin/env bash
# TSPO agent training through `accelerate launch` (multi-GPU DDP config; the trainer reads the
# RANK / WORLD_SIZE / LOCAL_RANK that accelerate exports, exactly as under torchrun).
#
#   scripts/train_agent_accelerate.sh scripts/train_configs/tspo_paper.yaml [--more flags]
#   NUM_PROCESSES=4 scripts/train_agent_accelerate.sh cfg.yaml
# The agent head is 3.5M parameters: DeepSpeed ZeRO would shard nothing worth sharding, so this mode
# uses DDP; the ZeRO configs serve `train-llm` (scripts/train_llm.sh).
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [tspo-eval train flags]}
shift
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec accelerate launch --config_file "$here/accelerate/multi_gpu.yaml" \
  --num_processes "${NUM_PROCESSES:-8}" --num_machines "${NUM_MACHINES:-1}" --machine_rank "${MACHINE_RANK:-0}" \
  --main_process_ip "${MAIN_PROCESS_IP:-127.0.0.1}" --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
  -m tspo_eval.cli train --config "$config" "$@"
