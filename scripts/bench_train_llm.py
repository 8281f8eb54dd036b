"""`tspo-eval train-llm` on Qwen2.5-VL with LoRA: step time and peak memory, and the same run
through the shipped accelerate DeepSpeed ZeRO-2 config (loss against the plain run's, resume).

One command, four stages:

  1. setup: a random-weight Qwen2.5-VL (`--size 7b`: the released 7B architecture) saved once,
     a generated video and one question of each Temporal-RLT kind on it (multiple choice,
     grounding, grounded QA, plus a second multiple choice);
  2. plain: `python -m tspo_eval.cli train-llm` (one process) for `--steps` steps.  Per step
     train-llm logs `time/rollout` (frames -> prompt -> G sampled answers -> rewards),
     `time/update` (forward with grad, reference forward, backward, AdamW) and `memory_gb`
     (peak allocated GPU memory so far) in metrics.jsonl;
  3. deepspeed: the same command through `accelerate launch --config_file
     scripts/accelerate/deepspeed.yaml --deepspeed_config_file scripts/deepspeed/zero2.json
     --num_processes 1`.  Step 1 starts from the same weights (LoRA B = 0), so both runs sample
     the same answers and their step-1 losses agree to rounding;
  4. resume: the DeepSpeed run's step-1 checkpoint copied to a fresh output dir and continued
     with --resume; its later steps and final adapters against the uninterrupted run's.

Random weights never emit EOS: every answer is `--max-new-tokens` long.  The 7B runs use
`--gradient-checkpointing` (as Temporal-RLT-style trainers do): 8 answers x (16 frames at the
published pixels = 2048 video tokens + text + 128 answer tokens) keep ~110 GB of activations
without it.  Writes JSON (`--out`,
default $OUT/bench_train_llm.json) and exits 1 when a check fails.  On a CPU with
`--size tiny` it takes a few minutes.

    python scripts/bench_train_llm.py --size 7b --out $OUT/train_llm_h200.json
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tspo_eval.backbones.qwen_vl import random_qwen_vl  # noqa: E402
from tspo_eval.synthetic import number_frame, write_video  # noqa: E402


def setup(work: Path, size: str, device: str, side: int, seconds: int) -> tuple[Path, Path]:
    """Saved random model and the question file."""
    model_dir, data = work / f"qwen_{size}", work / "questions.jsonl"
    if not (model_dir / "config.json").is_file():
        backbone = random_qwen_vl(size, seed=0, device=device)
        backbone.save_pretrained(model_dir)
        del backbone
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    video = write_video(work / "video.mp4", (number_frame(i, side, side) for i in range(2 * seconds)), 2.0)
    third = seconds / 3
    rows = [
        {"video": str(video), "problem": "Which number is shown first?", "problem_type": "multiple_choice",
         "options": ["zero", "one", "two", "three"], "solution": "A", "dataset": "bench"},
        {"video": str(video), "problem": "When are the numbers in the middle third shown?",
         "problem_type": "grounding", "timestamps": [third, 2 * third], "dataset": "bench"},
        {"video": str(video), "problem": "What is on the screen?", "problem_type": "grounded_qa",
         "options": ["a number", "a face"], "solution": "A", "timestamps": [0, third], "dataset": "bench"},
        {"video": str(video), "problem": "Is the last number odd?", "problem_type": "multiple_choice",
         "options": ["yes", "no"], "solution": "A", "dataset": "bench"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data


def run(name: str, command: list[str], work: Path, limit: float) -> dict:
    """One train-llm process; its metrics.jsonl and wall time (the log's tail on failure)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    log = work / f"{name}.log"
    with log.open("w") as fh:
        try:
            code = subprocess.run(command, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                  timeout=limit).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    result = {"command": " ".join(command), "returncode": code, "wall_s": round(time.perf_counter() - start, 1)}
    metrics = work / name / "metrics.jsonl"
    result["steps"] = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    if code != 0:
        result["log_tail"] = log.read_text()[-3000:]
    return result


def step_summary(steps: list[dict]) -> dict:
    """Seconds per step after the first (warm-up), split by phase; peak memory."""
    timed = steps[1:] or steps
    total = [s.get("time/rollout", 0) + s.get("time/update", 0) for s in timed]
    return {"s_per_step_median": statistics.median(total) if total else None,
            "rollout_s": statistics.median(s.get("time/rollout", 0) for s in timed) if timed else None,
            "update_s": statistics.median(s.get("time/update", 0) for s in timed) if timed else None,
            "peak_memory_gib": max((s.get("memory_gb", 0) for s in steps), default=None)}


def adapters(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    path = run_dir / "checkpoints" / f"step-{step:06d}" / "adapter_model.safetensors"
    return load_file(str(path)) if path.is_file() else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "7b"], default="tiny", help="Qwen2.5-VL architecture (random weights)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="where the random model is built before saving")
    ap.add_argument("--steps", type=int, default=3, help="optimiser steps per run (one question each)")
    ap.add_argument("--k", type=int, default=None, help="frames per question (default 16 for 7b, 4 for tiny)")
    ap.add_argument("--rollouts", type=int, default=8, help="G")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="answer length (default 128 for 7b, 8 for tiny)")
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                    help="train-llm --gradient-checkpointing (default on for 7b: G x ~2.2k tokens of activations "
                         "would need ~120 GB without it)")
    ap.add_argument("--side", type=int, default=448, help="video frame side (448: 256 tokens per frame pair)")
    ap.add_argument("--seconds", type=int, default=64, help="video length, 2 fps")
    ap.add_argument("--loss-atol", type=float, default=2e-3, help="plain vs DeepSpeed step-1 loss tolerance")
    ap.add_argument("--num-processes", type=int, default=1,
                    help="ranks of the DeepSpeed runs; the plain run (one process) then accumulates that many "
                         "questions per step, so both take the same questions per optimiser step")
    ap.add_argument("--run-timeout", type=float, default=240, help="seconds allowed per train-llm process")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_train_llm")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "bench_train_llm.json")
    a = ap.parse_args()
    k = a.k or (16 if a.size == "7b" else 4)
    new_tokens = a.max_new_tokens or (128 if a.size == "7b" else 8)
    checkpointing = a.size == "7b" if a.gradient_checkpointing is None else a.gradient_checkpointing
    work = a.workdir
    for stale in ("plain", "deepspeed", "resumed"):
        shutil.rmtree(work / stale, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    model_dir, data = setup(work, a.size, a.device, a.side, a.seconds)
    setup_s = time.perf_counter() - began
    train = ["-m", "tspo_eval.cli", "train-llm", "--backbone", "qwen2_5_vl", "--backbone-path", str(model_dir),
             "--data", str(data), "--finetune", "lora", "--k", str(k), "--rollouts", str(a.rollouts),
             "--max-new-tokens", str(new_tokens), "--max-steps", str(a.steps), "--save-every", "1", "--think",
             "--epochs", str(a.steps),
             *(["--gradient-checkpointing"] if checkpointing else [])]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              str(ROOT / "scripts/accelerate/deepspeed.yaml"), "--deepspeed_config_file",
              str(ROOT / "scripts/deepspeed/zero2.json"), "--num_processes", str(a.num_processes), "--num_machines", "1",
              "--main_process_port", "29517"]
    plain_cmd = [sys.executable, *train, "--grad-accum", str(a.num_processes), "--output-dir", str(work / "plain")]
    runs = {"plain": run("plain", plain_cmd, work, a.run_timeout),
            "deepspeed": run("deepspeed", [*launch, *train, "--output-dir", str(work / "deepspeed")], work,
                             a.run_timeout)}
    first = work / "deepspeed" / "checkpoints" / "step-000001"
    if first.is_dir():
        shutil.copytree(first, work / "resumed" / "checkpoints" / first.name)
    runs["resumed"] = run("resumed", [*launch, *train, "--output-dir", str(work / "resumed"), "--resume"], work,
                          a.run_timeout)

    plain, ds, resumed = (runs[n]["steps"] for n in ("plain", "deepspeed", "resumed"))
    checks: dict[str, dict] = {}
    checks["all_ran"] = {"ok": all(r["returncode"] == 0 and len(r["steps"]) == (a.steps - 1 if n == "resumed"
                                                                                  else a.steps)
                                   for n, r in runs.items())}
    losses = [s["loss"] for r in runs.values() for s in r["steps"]]
    checks["losses_finite"] = {"ok": bool(losses) and all(math.isfinite(x) for x in losses)}
    if plain and ds:
        diff = abs(plain[0]["loss"] - ds[0]["loss"])
        checks["deepspeed_loss_equals_plain"] = {
            "ok": diff <= a.loss_atol and plain[0]["reward"] == ds[0]["reward"], "step1_loss_plain": plain[0]["loss"],
            "step1_loss_deepspeed": ds[0]["loss"], "abs_diff": diff, "atol": a.loss_atol,
            "step1_reward_plain": plain[0]["reward"], "step1_reward_deepspeed": ds[0]["reward"],
            "later_abs_diffs": [abs(p["loss"] - d["loss"]) for p, d in zip(plain[1:], ds[1:])]}
    if ds and resumed:
        later = ds[1:]
        diffs = [abs(r["loss"] - d["loss"]) for r, d in zip(resumed, later)]
        mine, theirs = adapters(work / "resumed", a.steps), adapters(work / "deepspeed", a.steps)
        weight_diff = max((float((mine[n].float() - theirs[n].float()).abs().max()) for n in theirs if n in mine),
                          default=float("nan"))
        checks["resume_continues"] = {
            "ok": [r["step"] for r in resumed] == [d["step"] for d in later] and max(diffs, default=1.0) <= a.loss_atol
            and set(mine) == set(theirs) and weight_diff <= 1e-3,
            "loss_abs_diffs": diffs, "adapter_max_abs_diff": weight_diff, "adapter_tensors": len(theirs)}
    result = {
        "bench": "train_llm", "size": a.size, "device": torch.cuda.get_device_name() if torch.cuda.is_available()
        else platform.processor() or "cpu", "versions": {"torch": torch.__version__, **_versions()},
        "config": {"num_processes": a.num_processes, "k": k, "rollouts": a.rollouts, "max_new_tokens": new_tokens, "steps": a.steps, "side": a.side,
                   "video_seconds": a.seconds, "finetune": "lora", "lora_r": 16, "think": True,
                   "gradient_checkpointing": checkpointing},
        "setup_s": round(setup_s, 1), "plain": step_summary(plain), "deepspeed": step_summary(ds),
        "checks": checks, "ok": all(c["ok"] for c in checks.values()), "runs": runs,
        "total_s": round(time.perf_counter() - began, 1)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("plain", "deepspeed", "checks", "ok", "total_s")}, indent=1))
    return 0 if result["ok"] else 1


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("transformers", "accelerate", "peft", "deepspeed"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


if __name__ == "__main__":
    sys.exit(main())
