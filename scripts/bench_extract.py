"""Speed of feature extraction: ours against the published pipeline, in one run.

Measures, on generated videos of several lengths (CLIP ViT-L/14 at full size, random
weights):
  decode   candidate frames/s: our streamed, threaded decord batches vs one single-threaded
           get_batch of every candidate (the published loader)
  encode   frames/s: the bare model on ready pixels (the ceiling), our path (uint8 frames ->
           torch preprocessing on the device -> model), and the published path (per-frame
           PIL + CLIPProcessor -> model)
  extract  end to end, video-seconds per wall-second: `extract_videos` (prefetching decode
           threads, per-video cache) vs the published loop (decode all candidates, PIL +
           CLIPProcessor, one batch, a pickled cache file per question)
  memory   peak RSS and peak GPU memory of each end-to-end run, per video length, each in a
           fresh process (flat in video length = streaming works)
Prints a table and writes JSON (medians of --repeats runs; e2e runs once per video).

    python scripts/bench_extract.py --device cuda --minutes 10 30 --out benchmarks/extract_h200.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_eval.agent import random_agent  # noqa: E402
from tspo_eval.cache import FeatureCache  # noqa: E402
from tspo_eval.extract import ExtractConfig, extract_videos  # noqa: E402
from tspo_eval.synthetic import write_video  # noqa: E402
from tspo_eval.video import iter_frames, sample_candidates  # noqa: E402


def make_video(path: Path, minutes: float, fps: float = 25.0, size: tuple[int, int] = (270, 480)) -> Path:
    """A textured video (a drifting pattern, scene changes every ~10 s) that costs real decoding."""
    if path.exists():
        return path
    h, w = size
    period = 107  # the pattern repeats every `period` px horizontally: frames are slices of one array
    yy, xx = np.mgrid[0:h, 0:w + period]
    pattern = ((np.sin(2 * np.pi * xx / period) + np.cos(yy / 23.0)) * 40).astype(np.int16)
    rng = np.random.default_rng(0)

    def frames():
        for i in range(int(minutes * 60 * fps)):
            if i % int(10 * fps) == 0:
                base = rng.integers(40, 215, size=3).astype(np.int16)
                textured = np.clip(base + pattern[..., None], 0, 255).astype(np.uint8)
            shift = (i * 2) % period
            yield np.ascontiguousarray(textured[:, shift:shift + w])

    return write_video(path, frames(), fps, crf=23)


def timed(fn, repeats: int, sync: bool) -> float:
    """Median seconds of `repeats` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if sync:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def naive_encode(agent, processor, frames: np.ndarray) -> torch.Tensor:
    """The published path: a PIL image per frame, CLIPProcessor, one get_image_features call."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(agent.device, agent.dtype)
    with torch.no_grad():
        out = agent.get_image_features(pixel_values=pixels)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def naive_extract(agent, processor, path: Path, cache_dir: Path, questions: int = 1) -> None:
    """Published pipeline for one video: whole-video decode, one batch, per-question pickles."""
    import decord

    cands = sample_candidates(path, backend="decord")
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    frames = vr.get_batch(cands.frame_numbers.tolist()).asnumpy()
    features = naive_encode(agent, processor, frames)
    for q in range(questions):
        torch.save({"image": features.cpu(), "sampled_idx": cands.frame_numbers}, cache_dir / f"{path.stem}_{q}.pth")


def measure_encode(args: argparse.Namespace, video: Path, cands: np.ndarray, device: torch.device,
                   dtype: torch.dtype) -> dict:
    """Frames/s of the bare model, our encode path and the published PIL + CLIPProcessor path."""
    from transformers import CLIPImageProcessor

    cuda = device.type == "cuda"
    agent = random_agent(args.clip, torch_dtype=dtype, device=device)
    frames = next(iter_frames(video, cands[: args.encode_frames], args.encode_frames, "decord"))
    n = len(frames)
    pixels = torch.randn(args.batch_size, 3, 224, 224, device=device, dtype=dtype)
    steps = max(1, n // args.batch_size)

    def bare():
        with torch.no_grad():
            for _ in range(steps):
                agent.get_image_features(pixel_values=pixels)

    bare_s = timed(bare, args.repeats, cuda) / (steps * args.batch_size)
    ours_s = timed(lambda: [agent.encode_frames(frames[i:i + args.batch_size]) for i in range(0, n, args.batch_size)],
                   args.repeats, cuda) / n
    processor = CLIPImageProcessor()
    naive_s = timed(lambda: naive_encode(agent, processor, frames), max(1, args.repeats - 1), cuda) / n
    gflop = 162.0 if args.clip == "clip-vit-l-14" else float("nan")
    return {"frames": n, "bare_model_fps": 1 / bare_s, "ours_fps": 1 / ours_s, "published_fps": 1 / naive_s,
            "ratio": naive_s / ours_s, "bare_tflops": gflop / 1000 / bare_s}


def e2e_child(args: argparse.Namespace) -> None:
    """One end-to-end run in this (fresh) process; prints a JSON line with time and peaks."""
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    agent = random_agent(args.clip, torch_dtype=dtype, device=device)
    path = Path(args.child_video)
    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "ours":
            fn = lambda: extract_videos([path], agent.encoder, FeatureCache(tmp), ExtractConfig(  # noqa: E731
                batch_size=args.batch_size, decode_threads=args.decode_threads, segments=args.segments),
                progress=False)
        else:
            from transformers import CLIPImageProcessor

            processor = CLIPImageProcessor()
            fn = lambda: naive_extract(agent, processor, path, Path(tmp))  # noqa: E731
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_before_mb": rss0 / 1024,
                      "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0}))


def run_child(args: argparse.Namespace, method: str, video: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", method, "--child-video", str(video), "--device", args.device,
           "--clip", args.clip, "--batch-size", str(args.batch_size), "--decode-threads", str(args.decode_threads),
           "--segments", str(args.segments)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clip", default="clip-vit-l-14", help="agent config (configs/*.json)")
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 30])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--decode-threads", type=int, default=8)
    p.add_argument("--segments", type=int, default=4, help="readers per video (ours)")
    p.add_argument("--encode-frames", type=int, default=1024, help="frames per encode measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--videos", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_videos")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-video", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return e2e_child(args)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    args.videos.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    videos = [make_video(args.videos / f"bench_{m:g}min.mp4", m) for m in args.minutes]
    print(f"videos ready in {time.perf_counter() - t0:.0f}s: {[v.name for v in videos]}", flush=True)
    results: dict = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
                     "cpu_cores": os.cpu_count(), "torch": torch.__version__, "clip": args.clip,
                     "dtype": str(dtype), "batch_size": args.batch_size, "repeats": args.repeats,
                     "command": " ".join(sys.argv)}

    # decode ---------------------------------------------------------------------------------
    import decord

    short = videos[0]
    cands = sample_candidates(short, backend="decord").frame_numbers
    ours_s = timed(lambda: sum(len(b) for b in iter_frames(short, cands, 64, "decord", args.decode_threads)),
                   args.repeats, False)
    naive_s = timed(lambda: decord.VideoReader(str(short), num_threads=1).get_batch(cands.tolist()).asnumpy(),
                    args.repeats, False)
    results["decode"] = {"video": short.name, "candidates": len(cands), "ours_fps": len(cands) / ours_s,
                         "published_fps": len(cands) / naive_s, "ratio": naive_s / ours_s}
    print("decode", results["decode"], flush=True)

    results["encode"] = measure_encode(args, short, cands, device, dtype)
    print("encode", results["encode"], flush=True)
    if cuda:
        torch.cuda.empty_cache()

    # end to end + memory (fresh process each) ------------------------------------------------
    results["extract"] = []
    for video in videos:
        seconds_of_video = sample_candidates(video, backend="decord").info.duration
        row = {"video": video.name, "video_seconds": seconds_of_video}
        for method in ("ours", "published"):
            r = run_child(args, method, video)
            row[method] = {**r, "video_s_per_s": seconds_of_video / r["seconds"]}
            print(video.name, method, row[method], flush=True)
        row["ratio"] = row["published"]["seconds"] / row["ours"]["seconds"]
        results["extract"].append(row)

    print(json.dumps(results, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
