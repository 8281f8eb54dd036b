#!/usr/bin/env bash
# One command on one GPU machine without a registry: install the wheels carried in .whl/ (DeepSpeed,
# built with DS_BUILD_OPS=0, and its missing dependencies), then run scripts/bench_train_llm.py
# (7B Qwen2.5-VL LoRA step, then the accelerate DeepSpeed ZeRO-2 run and its resume).
#   bash scripts/bench_train_llm.sh                 # JSON to $OUT/train_llm_h200.json
#   bash scripts/bench_train_llm.sh --steps 4       # more flags go to the Python script
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" scripts/bench_train_llm.py --size 7b --out "${OUT:-.}/train_llm_h200.json" "$@"
