"""train-llm through the shipped accelerate DeepSpeed ZeRO-2 config, on the CPU (DeepSpeed's CPU
accelerator, gloo): `scripts/bench_train_llm.py` at tiny sizes, i.e. exactly what the GPU
benchmark runs.  Skipped where DeepSpeed is not installed (CI: it is an sdist; see docs/training.md)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_train_llm.py"


def test_deepspeed_zero2_run_equals_the_plain_run_and_resumes_bit_identically(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--steps", "2", "--k", "2",
                           "--rollouts", "2", "--max-new-tokens", "4", "--side", "64", "--seconds", "8",
                           "--workdir", str(tmp_path / "work"), "--out", str(out)], capture_output=True, text=True)
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert done.returncode == 0, {n: r.get("log_tail") for n, r in runs.items()}
    plain, ds, resumed = (runs[n]["steps"] for n in ("plain", "deepspeed", "resumed"))
    assert [s["step"] for s in plain] == [s["step"] for s in ds] == [1, 2] and [s["step"] for s in resumed] == [2]
    assert "zero2.json" not in runs["plain"]["command"] and "zero2.json" in runs["deepspeed"]["command"]
    # step 1: same weights (LoRA B = 0), same sampled answers -> the same loss on the CPU
    assert ds[0]["loss"] == pytest.approx(plain[0]["loss"], abs=1e-6) and ds[0]["reward"] == plain[0]["reward"]
    # resumed from DeepSpeed's own checkpoint (fp32 master weights, optimizer partition): bit-identical
    assert resumed[0]["loss"] == ds[1]["loss"] and resumed[0]["entropy"] == ds[1]["entropy"]
    assert result["checks"]["resume_continues"]["adapter_max_abs_diff"] == 0.0
    assert (tmp_path / "work" / "deepspeed" / "checkpoints" / "step-000002" / "deepspeed" / "state").is_dir()
