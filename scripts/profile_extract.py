"""Where the extraction loop's time goes: `tspo-eval extract` run in-process with its stages timed (issue 17).

`bench_cli.py` says how fast the command is; this says why. The real command (`tspo_eval.cli.main`,
default flags unless given) runs with wrappers around each stage, and the JSON gets, per set:

  main thread   waiting for a probe, waiting for decoded batches, uploading, launching the encoder
                (its preprocessing and model halves apart), all of `_encode`, writing the cache
  reader threads  waiting for room in the video's frame budget, waiting for a worker process,
                the worker's round trip (its decoding), pinning; summed over threads, ms a call
  processes     CPU seconds of the parent and of the decoding workers during the loop (from /proc),
                as a share of the cores; GPU utilisation sampled through NVML

Runs after the first reuse the warm process (workers, CUDA, compiled kernels): compare runs with
each other, the command's own figure with `bench_cli.py`. Videos as bench_cli makes them. A run is
flags as bench_cli's --alt-configs; items in capitals set `tspo_eval.extract` constants for that run
(`READ_BYTES=16777216`). A picture of the main thread's time by stage is written beside the JSON.

    python3 scripts/profile_extract.py --device cuda --sets 10min 30min --out profile.json \
        --runs defaults prefetch-videos=3
    python3 scripts/profile_extract.py --out profile.json --plot-only     # the picture of an earlier run
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_cli  # noqa: E402  (videos, questions and flags made the same way)

EVENTS: list[tuple[str, str, float, float]] = []  # (thread, stage, start, end)
_lock = threading.Lock()


def _note(stage: str, start: float) -> None:
    with _lock:
        EVENTS.append((threading.current_thread().name, stage, start, time.perf_counter()))


def timed(owner: object, name: str, stage: str) -> None:
    """Replace `owner.name` by a wrapper that records each call's span as `stage`."""
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _note(stage, start)

    setattr(owner, name, wrapper)


def instrument() -> None:
    from tspo_eval import cache, decode_workers, encoders, extract

    timed(extract._Decoder, "candidates", "main:wait_probe")
    timed(extract, "upload", "main:upload")
    timed(extract, "_encode", "main:video")
    timed(cache.FeatureCache, "put_video", "main:cache_write")
    timed(encoders.HFClipEncoder, "encode_frames", "main:encode_launch")  # the agent's encoder
    timed(encoders, "clip_preprocess", "main:encode_preprocess")  # the launch's two halves
    timed(encoders.HFClipEncoder, "_project_images", "main:encode_model")
    timed(extract._FrameBudget, "take", "reader:budget_wait")
    timed(decode_workers.DecodeWorker, "read", "reader:worker_round_trip")
    timed(extract._Decoder, "_own", "reader:pin_or_copy")

    batches = extract._Decoder.batches

    def timed_batches(self, limit):
        source = batches(self, limit)
        while True:
            start = time.perf_counter()
            try:
                group = next(source)
            except StopIteration:
                return
            finally:
                _note("main:wait_decoded", start)
            yield group

    extract._Decoder.batches = timed_batches
    lend = decode_workers._Pool.lend

    @contextlib.contextmanager
    def timed_lend(self, limit, prefer=None):
        start = time.perf_counter()
        with lend(self, limit, prefer) as worker:
            _note("reader:worker_wait", start)
            yield worker

    decode_workers._Pool.lend = timed_lend


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_cpu() -> dict[int, float]:
    from tspo_eval.decode_workers import POOL

    out = {}
    for worker in list(POOL.started):
        with contextlib.suppress(OSError, IndexError):
            out[worker.process.pid] = cpu_seconds(worker.process.pid)
    return out


def watched_extract(gpu_samples: list) -> Callable:
    """Wrap extract_videos: CPU seconds of parent and workers, and GPU utilisation, over the loop."""
    from tspo_eval import extract

    original = extract.extract_videos

    def wrapper(*args, **kwargs):
        import torch

        done = threading.Event()

        def sample():
            while not done.wait(0.02):
                with contextlib.suppress(Exception):
                    gpu_samples.append(torch.cuda.utilization())

        sampler = threading.Thread(target=sample, daemon=True)
        if torch.cuda.is_available():
            sampler.start()
        before, parent_before, t0 = workers_cpu(), cpu_seconds(os.getpid()), time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            after = workers_cpu()
            wrapper.last = {"loop_s": time.perf_counter() - t0,
                            "parent_cpu_s": cpu_seconds(os.getpid()) - parent_before,
                            "workers": len(after),
                            "workers_cpu_s": sum(v - before.get(pid, 0.0) for pid, v in after.items())}
            done.set()

    extract.extract_videos = wrapper
    return wrapper


def split_run(run: str) -> tuple[list[str], dict[str, int]]:
    """'prefetch-videos=3,READ_BYTES=16777216' -> (CLI flags, tspo_eval.extract constants to set)."""
    items = [item for item in run.split(",") if item]
    constants = {k: int(v) for k, _, v in (i.partition("=") for i in items if i.split("=")[0].isupper())}
    flags = bench_cli.cli_flags(",".join(i for i in items if not i.split("=")[0].isupper()))
    return flags, constants


def summarize(events: list, loop_s: float) -> dict:
    """Per stage: calls, seconds and ms a call; for the main thread's stages also their share of the
    loop (reader threads come and go with their videos, so theirs would have no fixed denominator)."""
    totals, counts = defaultdict(float), defaultdict(int)
    for _, stage, start, end in events:
        totals[stage] += end - start
        counts[stage] += 1
    out = {}
    for stage in sorted(totals):
        out[stage] = {"calls": counts[stage], "seconds": round(totals[stage], 3),
                      "ms_per_call": round(1000 * totals[stage] / counts[stage], 2)}
        if stage.startswith("main:"):
            out[stage]["share"] = round(totals[stage] / loop_s, 3)
    return out


MAIN_STAGES = {"wait_probe": "waiting for a probe", "wait_decoded": "waiting for decoded frames",
               "upload": "uploading", "encode_launch": "launching the encoder", "cache_write": "writing the cache"}


def plot(results: dict, path: Path) -> None:
    """One bar per run: the share of the loop the main thread spent in each stage (the rest: other
    work in `_encode`, and between videos), with s/video, workers and GPU busy beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["runs"]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.6))
    for y, row in enumerate(rows):
        left = 0.0
        for (stage, label), colour in zip(MAIN_STAGES.items(), plt.cm.tab10.colors):
            share = row["stages"].get(f"main:{stage}", {}).get("share", 0.0)
            ax.barh(y, share, left=left, color=colour, label=label if y == 0 else None)
            left += share
        gpu = "" if row["gpu_util_mean"] is None else f", GPU {row['gpu_util_mean']:.0f}%"
        ax.text(1.01, y, f"{row['per_video_s']:.2f} s/video, workers {100 * row['workers_busy']:.0f}%{gpu}",
                va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['set']} {r['run']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the extraction loop (main thread)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--clip", default="clip-vit-l-14")
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--sets", nargs="+", default=["10min", "30min"], choices=list(bench_cli.SETS))
    p.add_argument("--runs", nargs="+", default=["defaults"], help="flag sets as bench_cli's --alt-configs")
    p.add_argument("--videos", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_cli")
    p.add_argument("--tiny", action="store_true", help="a CPU check: short videos, clip-tiny, 2 copies")
    p.add_argument("--out", type=Path, required=True, help="the JSON written; a picture beside it (.png)")
    p.add_argument("--plot-only", action="store_true", help="draw the picture of an existing --out JSON and stop")
    args = p.parse_args()
    if args.plot_only:
        return plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
    sets = {n: bench_cli.TINY_SETS[n] if args.tiny else bench_cli.SETS[n] for n in args.sets}
    if args.tiny:
        args.clip, args.copies = "clip-tiny", 2
    _, bases, _ = bench_cli.make_videos(args.videos, sets, 0.05 if args.tiny else bench_cli.BASE_MINUTES)

    instrument()
    gpu: list = []
    watch = watched_extract(gpu)
    from tspo_eval.cli import main as cli_main
    from tspo_eval import extract

    results: dict = {"command": " ".join(sys.argv), "runs": []}
    for run in args.runs:
        for name in sets:
            videos = bench_cli.distinct_copies(bases[name], args.copies,
                                               Path(tempfile.mkdtemp(prefix="tspo_profile_")) / name)
            root = Path(tempfile.mkdtemp(prefix="tspo_profile_run_"))
            bench_cli.write_questions(videos, root / "q.tsv")
            EVENTS.clear()
            gpu.clear()
            flags, constants = split_run(run)
            saved = {k: getattr(extract, k) for k in constants}
            for key, value in constants.items():
                setattr(extract, key, value)
            code = cli_main(["extract", "--benchmark", "lvbench", "--annotations", str(root / "q.tsv"),
                             "--videos", str(videos[0].parent), "--agent", f"random:{args.clip}",
                             "--device", args.device, "--cache", str(root / "cache"), *flags])
            for key, value in saved.items():
                setattr(extract, key, value)
            report = json.loads((root / "cache" / "reports" / "lvbench" / "extract.json").read_text())
            stats = dict(watch.last)
            cores = os.cpu_count() or 1
            row = {"set": name, "run": run, "exit": code, "encoded": len(report["encoded"]),
                   "failed": len(report["failed"]), "extraction_s": report["seconds"],
                   "per_video_s": report["seconds"] / args.copies, **stats,
                   "workers_busy": stats["workers_cpu_s"] / (stats["loop_s"] * max(1, stats["workers"])),
                   "cores_busy": (stats["workers_cpu_s"] + stats["parent_cpu_s"]) / (stats["loop_s"] * cores),
                   "gpu_util_mean": sum(gpu) / len(gpu) if gpu else None,
                   "stages": summarize(list(EVENTS), stats["loop_s"])}
            results["runs"].append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, indent=1),
                  flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))
            plot(results, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
