#!/usr/bin/env bash
# TSPO training of the agent head on one or more nodes with plain torchrun.
#
# Every GPU holds the frozen answerer (LLaVA-Video-7B in bf16: ~16 GB) and trains the 3.5M-parameter
# head under DistributedDataParallel: each rank takes `grad_accum` questions per step and the head's
# gradients are averaged over all ranks x questions.
#
#   scripts/train_agent.sh scripts/train_configs/tspo_paper.yaml [--more tspo-eval train flags]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 scripts/train_agent.sh cfg.yaml   # on every node
set -euo pipefail
config=${1:?usage: $0 CONFIG.yaml [tspo-eval train flags]}
shift
gpus=$(nvidia-smi -L 2>/dev/null | wc -l || true)
exec torchrun \
  --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${NPROC:-${gpus:-1}}" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  -m tspo_eval.cli train --config "$config" "$@"
