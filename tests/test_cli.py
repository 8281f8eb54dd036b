"""The `tspo-eval` console script end to end on a generated benchmark, and a torchrun launch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tspo_eval.benchmarks import load_benchmark
from tspo_eval.synthetic import NeedleBenchmark, make_benchmark
from tspo_eval.selections import SelectionSet

AGENT = ["--agent", "random:clip-tiny"]


def run(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    videos, jsonl, tsv = make_benchmark(root, NeedleBenchmark(videos=3, duration=40.0, video_fps=8.0))
    return root, videos, jsonl, tsv


def test_extract_select_quality_and_export(bench, tmp_path):
    root, videos, jsonl, tsv = bench
    common = ["--benchmark", "lvbench", "--tsv", str(tsv)]
    cache = ["--cache", str(tmp_path / "cache")]
    proc = run("tspo-eval", "extract", *common, "--video-root", str(videos), *AGENT, *cache)
    assert "3 videos: 3 encoded, 0 already cached, 0 failed" in proc.stdout
    proc = run("tspo-eval", "extract", *common, "--video-root", str(videos), *AGENT, *cache)
    assert "0 encoded, 3 already cached" in proc.stdout
    # PyAV in worker processes (the GPU-machine set-up) gives the same selection from its own cache
    workers = ["--cache", str(tmp_path / "cache_workers")]
    proc = run("tspo-eval", "extract", *common, "--video-root", str(videos), *AGENT, *workers,
               "--backend", "pyav", "--decode-processes", "--readers", "2")
    assert "3 videos: 3 encoded, 0 already cached, 0 failed" in proc.stdout

    sel, idx = tmp_path / "tspo.json", tmp_path / "TSPO_LVBench_frameIdx.json"
    run("tspo-eval", "select", *common, "--video-root", str(videos), *AGENT, *cache, "--method", "tspo", "--k", "4",
        "--out", str(sel), "--annotations", str(jsonl), "--frame-idx-out", str(idx))
    selections = SelectionSet.load(sel)
    from_workers = tmp_path / "tspo_workers.json"
    run("tspo-eval", "select", *common, "--video-root", str(videos), *AGENT, *workers, "--method", "tspo", "--k", "4",
        "--out", str(from_workers), "--annotations", str(jsonl))
    assert {i: s.frame_numbers for i, s in SelectionSet.load(from_workers).selections.items()} == {
        i: s.frame_numbers for i, s in selections.selections.items()}
    questions = load_benchmark("lvbench", tsv, jsonl)
    assert set(selections.selections) == {q.index for q in questions}
    exported = json.loads(idx.read_text())
    assert [item["key"] for item in exported] == [q.video_name[:-4] for q in questions]
    assert [item["frame_idx"] for item in exported] == [
        [float(f) for f in selections.selections[q.index].frame_numbers] for q in questions]

    uniform = tmp_path / "uniform.json"
    run("tspo-eval", "select", *common, "--video-root", str(videos), *AGENT, *cache, "--method", "uniform",
        "--k", "4", "--out", str(uniform))
    proc = run("tspo-eval", "quality", *common, "--annotations", str(jsonl), str(sel), str(uniform))
    assert "hit_rate" in proc.stdout and "uniform (uniform)" in proc.stdout

    proc = run("tspo-eval", "inspect", *common, "--video-root", str(videos), *AGENT, *cache, "--question",
               questions[0].index, "--k", "4", "--out", str(tmp_path / "inspect"))
    assert (tmp_path / "inspect" / f"{questions[0].index}_timeline.png").stat().st_size > 1000


def test_missing_video_is_recorded_and_the_run_finishes(bench, tmp_path):
    root, videos, jsonl, tsv = bench
    partial = tmp_path / "videos"
    partial.mkdir()
    kept = sorted(videos.glob("*.mp4"))[1:]
    for video in kept:
        (partial / video.name).symlink_to(video)
    args = ["--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(partial), *AGENT,
            "--cache", str(tmp_path / "cache")]
    proc = run("tspo-eval", "extract", *args)
    assert "2 encoded, 0 already cached, 1 failed" in proc.stdout and "demo000.mp4" in proc.stdout
    run("tspo-eval", "select", *args, "--method", "topk", "--k", "4", "--out", str(tmp_path / "s.json"))
    result = SelectionSet.load(tmp_path / "s.json")
    assert len(result.selections) == 2 and list(result.failed) == ["demo0000"]


def test_bad_options_fail_before_any_work(bench):
    root, videos, jsonl, tsv = bench
    proc = run("tspo-eval", "select", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
               *AGENT, "--method", "nope", check=False)
    assert proc.returncode == 2 and "method='nope' is not one of" in proc.stderr and "topk" in proc.stderr
    proc = run("tspo-eval", "select", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
               *AGENT, "--method", "aks", "--params", "preset=tsp", check=False)  # a bad parameter value
    assert proc.returncode == 2 and "unknown aks preset 'tsp'" in proc.stderr
    proc = run("tspo-eval", "extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
               "--no-such-flag", check=False)
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr


def test_torchrun_shards_extraction_over_two_processes(bench, tmp_path):
    root, videos, jsonl, tsv = bench
    cache = tmp_path / "cache"
    run(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        "-m", "tspo_eval.cli", "extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
        *AGENT, "--cache", str(cache), OMP_NUM_THREADS="1")
    reports = cache / "reports" / "lvbench"
    rank0 = json.loads((reports / "extract.rank0.json").read_text())
    rank1 = json.loads((reports / "extract.rank1.json").read_text())
    assert rank0["encoded"] and rank1["encoded"]
    assert not set(rank0["encoded"]) & set(rank1["encoded"])
    merged = json.loads((reports / "extract.json").read_text())
    assert sorted(merged["encoded"]) == sorted(str(p) for p in videos.glob("*.mp4"))
    assert len(list((cache / "videos").rglob("*.safetensors"))) == 3
