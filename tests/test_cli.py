"""The `tspo-eval` console script end to end on a generated benchmark, and a torchrun launch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tspo_eval.benchmarks import load_benchmark
from tspo_eval.synthetic import NeedleBenchmark, make_benchmark
from tspo_eval.selection.stage import SelectionSet

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
    common = ["--benchmark", "lvbench", "--annotations", str(tsv)]
    original = ["--benchmark", "lvbench", "--annotations", str(jsonl)]  # the same questions, with time references
    cache = ["--cache", str(tmp_path / "cache")]
    proc = run("tspo-eval", "extract", *common, "--videos", str(videos), *AGENT, *cache)
    assert "3 videos: 3 encoded, 0 already cached, 0 failed" in proc.stdout
    proc = run("tspo-eval", "extract", *original, "--videos", str(videos), *AGENT, *cache)
    assert "0 encoded, 3 already cached" in proc.stdout
    # PyAV in worker processes (the GPU-machine set-up) gives the same selection from its own cache
    workers = ["--cache", str(tmp_path / "cache_workers")]
    proc = run("tspo-eval", "extract", *common, "--videos", str(videos), *AGENT, *workers,
               "--backend", "pyav", "--decode-processes", "--readers", "2")
    assert "3 videos: 3 encoded, 0 already cached, 0 failed" in proc.stdout

    sel, idx = tmp_path / "tspo.json", tmp_path / "TSPO_LVBench_frameIdx.json"
    run("tspo-eval", "select", *original, "--videos", str(videos), *AGENT, *cache, "--method", "tspo", "--k", "4",
        "--out", str(sel), "--frame-idx-out", str(idx))
    selections = SelectionSet.load(sel)
    from_workers = tmp_path / "tspo_workers.json"
    run("tspo-eval", "select", *common, "--videos", str(videos), *AGENT, *workers, "--method", "tspo", "--k", "4",
        "--out", str(from_workers))
    assert {i: s.frame_numbers for i, s in SelectionSet.load(from_workers).selections.items()} == {
        i: s.frame_numbers for i, s in selections.selections.items()}
    questions = load_benchmark("lvbench", tsv, jsonl)
    assert set(selections.selections) == {q.index for q in questions}
    exported = json.loads(idx.read_text())
    assert [item["key"] for item in exported] == [q.video_name[:-4] for q in questions]
    assert [item["frame_idx"] for item in exported] == [
        [float(f) for f in selections.selections[q.index].frame_numbers] for q in questions]

    uniform = tmp_path / "uniform.json"
    run("tspo-eval", "select", *common, "--videos", str(videos), *AGENT, *cache, "--method", "uniform",
        "--k", "4", "--out", str(uniform))
    proc = run("tspo-eval", "quality", *original, str(sel), str(uniform))
    assert "hit_rate" in proc.stdout and "uniform (uniform)" in proc.stdout
    proc = run("tspo-eval", "quality", *common, str(sel), check=False)  # a TSV has no time references
    assert proc.returncode == 1 and "pass --annotations video_info.meta.jsonl (the original" in proc.stderr

    proc = run("tspo-eval", "inspect", *common, "--videos", str(videos), *AGENT, *cache, "--question",
               questions[0].index, "--k", "4", "--out", str(tmp_path / "inspect"))
    assert (tmp_path / "inspect" / f"{questions[0].index}_timeline.png").stat().st_size > 1000


def test_missing_video_is_recorded_and_the_run_finishes(bench, tmp_path):
    root, videos, jsonl, tsv = bench
    partial = tmp_path / "videos"
    partial.mkdir()
    kept = sorted(videos.glob("*.mp4"))[1:]
    for video in kept:
        (partial / video.name).symlink_to(video)
    # the former spellings --tsv / --video-root still work
    args = ["--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(partial), *AGENT,
            "--cache", str(tmp_path / "cache")]
    proc = run("tspo-eval", "extract", *args)
    assert "2 encoded, 0 already cached, 1 failed" in proc.stdout and "demo000.mp4" in proc.stdout
    run("tspo-eval", "select", *args, "--method", "topk", "--k", "4", "--out", str(tmp_path / "s.json"))
    result = SelectionSet.load(tmp_path / "s.json")
    assert len(result.selections) == 2 and list(result.failed) == ["demo0000"]


def test_bad_options_fail_before_any_work(bench):
    root, videos, jsonl, tsv = bench
    bench_args = ["--benchmark", "lvbench", "--annotations", str(tsv), "--videos", str(videos)]
    proc = run("tspo-eval", "select", *bench_args, *AGENT, "--method", "nope", check=False)
    assert proc.returncode == 2 and "method='nope' is not one of" in proc.stderr and "topk" in proc.stderr
    proc = run("tspo-eval", "select", *bench_args, *AGENT, "--method", "aks", "--params", "preset=tsp",
               check=False)  # a bad parameter value
    assert proc.returncode == 2 and "unknown aks preset 'tsp'" in proc.stderr
    proc = run("tspo-eval", "extract", *bench_args, "--no-such-flag", check=False)
    assert proc.returncode == 2 and "--no-such-flag" in proc.stderr
    proc = run("tspo-eval", "extract", *bench_args, "--tsv", str(jsonl), check=False)  # both spellings
    assert proc.returncode == 2 and "--annotations/--tsv given twice" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--agent", "/nonexistent/TSPO-0.4B"],
     "error: agent /nonexistent/TSPO-0.4B: no such directory; give a TSPO-0.4B directory, a hub id"),
    (["--agent", "random:clip-tiny", "--videos", "/nonexistent/videos"],
     "error: --videos /nonexistent/videos: no such directory; give the folder holding the benchmark's videos"),
    (["--agent", "random:clip-tiny", "--annotations", "/nonexistent/LVBench.tsv"],
     "error: --annotations /nonexistent/LVBench.tsv: no such file; give the published TSV or the original"),
    (["--agent", "random:clip-tiny", "--benchmark", "lvbnech"], "unknown benchmark 'lvbnech'"),
])
def test_paths_that_do_not_exist_say_so(bench, tmp_path, args, message):
    """A path that does not exist ends in one line naming it and what a valid value is (the agent's
    used to end a 45-line traceback with the hub client's "Repo id must be in the form ...")."""
    root, videos, jsonl, tsv = bench
    given = dict(zip(args[::2], args[1::2]))
    base = {"--benchmark": "lvbench", "--annotations": str(tsv), "--videos": str(videos), **given}
    proc = run("tspo-eval", "select", *[x for kv in base.items() for x in kv], "--cache", str(tmp_path / "c"),
               check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_convert_writes_the_published_tsv_from_the_original_file(bench, tmp_path, official_dir):
    root, videos, jsonl, tsv = bench
    out = tmp_path / "converted" / "LVBench.tsv"
    proc = run("tspo-eval", "convert", "--benchmark", "lvbench", "--annotations", str(jsonl), "--out", str(out))
    assert out.read_bytes() == tsv.read_bytes() and "3 questions" in proc.stdout
    out = tmp_path / "MLVU.tsv"
    run("tspo-eval", "convert", "--benchmark", "mlvu", "--annotations", str(official_dir / "mlvu.json"),
        "--out", str(out))
    assert out.read_bytes() == (official_dir / "MLVU.tsv").read_bytes()  # the published file, byte for byte
    proc = run("tspo-eval", "convert", "--benchmark", "mlvu", "--annotations", str(out), check=False)
    assert proc.returncode != 0 and "already a TSV" in proc.stderr


def test_torchrun_shards_extraction_over_two_processes(bench, tmp_path, free_port):
    root, videos, jsonl, tsv = bench
    cache = tmp_path / "cache"
    run(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port),
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
