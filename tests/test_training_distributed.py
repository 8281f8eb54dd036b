"""Two CPU processes under torchrun (gloo): gradients are averaged over ranks, so the heads stay
identical on both ranks and equal a single process that accumulates the same questions.

Run as a script, this file is the torchrun worker."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file


def train(root: Path, out: Path, grad_accum: int):
    """The same small run in any process: 3 steps of synthetic-environment training; returns the Trainer."""
    from tspo_eval.agent import random_agent
    from tspo_eval.benchmarks import load_benchmark, resolve_video
    from tspo_eval.cache import FeatureCache
    from tspo_eval.training.config import TrainConfig
    from tspo_eval.training.data import EpisodeBuilder, sample_from_question
    from tspo_eval.training.environment import SyntheticEnvironment
    from tspo_eval.training.trainer import Trainer

    questions = load_benchmark("lvbench", root / "LVBench.tsv", root / "video_info.meta.jsonl")
    samples = [sample_from_question(q, resolve_video(root / "videos", q.video_name, "lvbench")) for q in questions]
    cfg = TrainConfig(environment="synthetic", output_dir=str(out), rollouts=6, k=4, grad_accum=grad_accum,
                      max_steps=3, epochs=3, lr=1e-3, seed=5)
    agent = random_agent("clip-tiny", seed=0)
    builder = EpisodeBuilder(None, agent.encoder, FeatureCache(root / "cache"), min_candidates=1)
    builder.prepare(samples, progress=False)
    trainer = Trainer(cfg, agent, samples, builder, SyntheticEnvironment(), torch.device("cpu"))
    trainer.train()
    return trainer


@pytest.mark.timeout(600)
def test_two_ranks_average_gradients_and_match_one_rank_with_accumulation(tmp_path, free_port):
    from tspo_eval.synthetic import NeedleBenchmark, make_benchmark

    root = tmp_path / "bench"
    make_benchmark(root, NeedleBenchmark(videos=4, duration=40.0, video_fps=4.0, seed=3))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
         __file__, str(root), str(tmp_path / "dist")],
        check=False, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rank0, rank1 = (load_file(str(tmp_path / "dist" / f"head.rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # identical on every rank, bit for bit
    single = train(root, tmp_path / "single", grad_accum=2)  # the same 2 questions per step, one process
    initial = load_file(str(tmp_path / "single" / "initial_head.safetensors"))
    for k, v in single.head.state_dict().items():
        torch.testing.assert_close(rank0[k], v, rtol=1e-4, atol=1e-6)
        if not k.startswith("temporal.ffn_o"):
            assert not torch.equal(v, initial[f"selector.{k}"])  # and training did move it
    assert (tmp_path / "dist" / "checkpoints" / "step-000003" / "head.safetensors").is_file()  # rank 0 saved


if __name__ == "__main__":
    trainer = train(Path(sys.argv[1]), Path(sys.argv[2]), grad_accum=1)
    rank = int(os.environ["RANK"])
    save_file({k: v.contiguous() for k, v in trainer.head.state_dict().items()},
              str(Path(sys.argv[2]) / f"head.rank{rank}.safetensors"))
