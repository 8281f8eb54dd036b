#!/usr/bin/env bash
# Issue 20 in one command on a machine with N GPUs (about 8 minutes): agent training, extraction and
# train-llm through DeepSpeed on N ranks against 1, each part under its own `timeout` so one hanging part
# never costs the others.  Writes $OUT/multi_gpu.json (one summary), $OUT/multi_gpu.log (every command's
# output) and $OUT/train_llm_multi.json (the DeepSpeed part's full record).
#   bash scripts/bench_multi_gpu.sh                 # N = the GPUs present
#   MULTI_GPU_CPU=1 bash scripts/bench_multi_gpu.sh # local check: 2 gloo CPU processes, tiny sizes
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
python=${PYTHON:-python3}
out=${OUT:-.}
mkdir -p "$out"
log="$out/multi_gpu.log"
work=${WORK:-/tmp/tspo_bench_multi_gpu}
rm -rf "$work"
mkdir -p "$work"
: > "$log"
if compgen -G ".whl/*.whl" > /dev/null; then
  # DeepSpeed, PyAV, decord, open_clip and missing dependencies: into the interpreter (as bench_train_llm.sh),
  # else into /tmp/site (on PYTHONPATH either way, so the torchrun / accelerate children see them)
  "$python" -m pip install -q --no-index --no-deps .whl/*.whl >> "$log" 2>&1 \
    || "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/*.whl >> "$log" 2>&1 || echo "pip install of .whl failed" | tee -a "$log"
  export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -n "${MULTI_GPU_CPU:-}" ]]; then
  nproc=2 cpu=(--cpu) llm=(--size tiny --device cpu --steps 2 --rollouts 2 --seconds 8 --side 112)
  t_train=600 t_extract=600 t_llm=900
else
  nproc=${NPROC:-$("$python" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
  cpu=() llm=(--size tiny --steps 3)  # tiny Qwen2.5-VL: the 7B run takes longer than this call allows
  t_train=${T_TRAIN:-100} t_extract=${T_EXTRACT:-160} t_llm=${T_LLM:-170}
fi
common=(--nproc "$nproc" --work "$work" --log "$log" "${cpu[@]}")
echo "== $(date -u +%T) train (limit ${t_train}s)" | tee -a "$log"
timeout -k 10 "$t_train" "$python" scripts/bench_multi_gpu.py train "${common[@]}" --run-timeout $((t_train / 2 - 5)) \
  >> "$log" 2>&1 || echo "train part exited $?" | tee -a "$log"
echo "== $(date -u +%T) extract (limit ${t_extract}s)" | tee -a "$log"
timeout -k 10 "$t_extract" "$python" scripts/bench_multi_gpu.py extract "${common[@]}" \
  --run-timeout $((t_extract / 3 - 5)) >> "$log" 2>&1 || echo "extract part exited $?" | tee -a "$log"
echo "== $(date -u +%T) deepspeed (limit ${t_llm}s)" | tee -a "$log"
timeout -k 10 "$t_llm" "$python" scripts/bench_train_llm.py "${llm[@]}" --num-processes "$nproc" \
  --run-timeout $((t_llm * 3 / 10)) --workdir "$work/llm" --out "$out/train_llm_multi.json" \
  >> "$log" 2>&1 || echo "deepspeed part exited $?" | tee -a "$log"
[[ -f "$out/train_llm_multi.json" ]] && cp "$out/train_llm_multi.json" "$work/deepspeed.json"
echo "== $(date -u +%T) summary" | tee -a "$log"
"$python" scripts/bench_multi_gpu.py summary "${common[@]}" --out "$out/multi_gpu.json" 2>&1 | tee -a "$log"
