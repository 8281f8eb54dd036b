"""Speed of feature extraction: ours against the published pipeline, in one run.

Measures, on generated videos (CLIP ViT-L/14 at full size, random weights):
  decode    candidate frames/s of the extraction's decoder per [backend:]readers x threads
            (readers as threads, or as worker processes), with and without scaling in the decoder, vs one single-threaded get_batch of
            every candidate (the published loader), on the shortest video and on a 720p
            one; and k single-threaded readers as threads vs as processes (does it scale?)
  encode    frames/s of the bare model on ready pixels under execution variants (--variants:
            eager sdpa, cuDNN attention first, torch.compile with a dynamic batch (what the
            encoder uses) or static with/without CUDA graphs, max-autotune), and of the full
            uint8 -> features paths: ours (pinned batches, GPU preprocessing, eager and
            compiled) and the published one (a PIL image per frame + CLIPImageProcessor,
            one get_image_features call)
  accuracy  relative feature error against an fp32 model fed the published preprocessing:
            bf16, compiled, decode-time resize
  extract   end to end in two warm processes (model loaded and run once on a short video
            first, as in a real benchmark run; that start-up, the compile included, is
            reported apart): ours = decode + encode + cache write once per video (+ one text
            encoding per question), as three passes: compiled, compiled + decode_resize,
            eager (the default); published = for EVERY question: decode all candidates
            single-threaded, PIL + CLIPProcessor, one batch, text features, a pickled file
            per question. Ratios are given at each benchmark's real questions per video
            (from the published TSVs), per video and for all videos in one run.
  memory    peak RSS and GPU memory per video length (flat in length = streaming works)
  select    per-question selection time from cached features (--sections select; CPU, no
            model): CLIP cosine + each method scored by CLIP (every registered one but the
            agent's `tspo`), T = 60 x --minutes candidates of --clip's width in the cache's
            dtypes (fp32: CPU extraction, bf16: GPU), K in --select-k, one torch thread:
            wall median and p95, and the median thread CPU time (which a loaded machine
            cannot inflate), of --select-questions questions after one warm-up; aks with
            preset=tspo (its own depth 5 chooses nothing at K = 16)

Prints a table and writes JSON (medians of --repeats runs).

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
from typing import Callable

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tspo_eval import encoders as encoders_module  # noqa: E402
from tspo_eval.agent import random_agent  # noqa: E402
from tspo_eval.cache import FeatureCache  # noqa: E402
from tspo_eval.encoders import HFClipEncoder, clip_resize_shape, compile_batched  # noqa: E402
from tspo_eval.extract import _Decoder, extract_videos  # noqa: E402
from tspo_eval.policy import ExtractConfig, FramePolicy, Sampling  # noqa: E402
from tspo_eval.synthetic import write_video  # noqa: E402
from tspo_eval.video import iter_frames, probe, sample_candidates  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_cli import (QUESTION, pooled, published_frames, published_image_features,  # noqa: E402
                       published_question, texture, timed_once)

BENCHMARKS = ("LongVideoBench", "MLVU", "VideoMME", "LVBench")
OFFICIAL = REPO.parent / "shared" / "data" / "official"


def make_video(path: Path, minutes: float, fps: float = 25.0, size: tuple[int, int] = (270, 480)) -> Path:
    """A textured video, a scene change every 10 s."""
    if not path.exists():
        frame = texture(int(10 * fps), size)
        write_video(path, (frame(i) for i in range(int(minutes * 60 * fps))), fps, crf=23)
    return path


def timed(fn: Callable[[], object], repeats: int, sync: bool) -> float:
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


# ------------------------------------------------------------------------------------ decode
def measure_decode(args: argparse.Namespace, video: Path, image_size: int) -> dict:
    """Candidates/s of the extraction decoder per (backend, readers, threads, decode_resize) and of
    the published loader."""
    rows = []
    for backend, readers, threads, processes in args.decode_configs:
        for resize in (False, True):
            cfg = ExtractConfig(encode_batch=args.batch_size, readers=readers, decode_threads=threads,
                                backend=backend, decode_processes=processes)
            count: list[int] = []

            def run() -> None:
                decoder = _Decoder(str(video), Sampling(decode_resize=resize), cfg, image_size if resize else None)
                decoder.candidates()
                total = 0
                for group in decoder.batches(cfg.encode_batch):
                    size = sum(len(b) for _, b in group)
                    total += size
                    del group
                    decoder.room.give(size)  # as the encoder does: room for more decoding
                count.append(total)

            seconds = timed(run, args.repeats, False)
            rows.append({"backend": backend, "readers": readers, "decode_threads": threads,
                         "decode_processes": processes,
                         "decode_resize": resize, "fps": count[-1] / seconds})
            print("decode", video.name, rows[-1], flush=True)
    n = len(published_frames(video))
    published = timed(lambda: published_frames(video), args.repeats, False)
    return {"video": video.name, "candidates": n, "published_fps": n / published, "ours": rows}


def _decode_share(path: str, frame_numbers: np.ndarray) -> int:
    return sum(len(b) for b in iter_frames(path, frame_numbers, 64, "decord", 1))


def decode_scaling(video: Path, repeats: int = 1) -> dict:
    """Candidates/s of k single-threaded decord readers on k shares, as threads of one process
    and as k processes: whether decoding scales with readers, and what stops it."""
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    frames = sample_candidates(video).frame_numbers
    out = {}
    for k in (4, 8, 16):
        shares = np.array_split(frames, k)
        for kind, pool in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
            with pool(k) as ex:
                list(ex.map(int, range(k)))  # start the workers before timing
                seconds = timed(lambda: list(ex.map(_decode_share, [str(video)] * k, shares)), repeats, False)
            out[f"{kind}x{k}"] = len(frames) / seconds
    print("decode scaling", video.name, out, flush=True)
    return out


# ------------------------------------------------------------------------------------ encode
def measure_attention(device: torch.device, batch: int, repeats: int) -> dict:
    """One ViT-L attention call, (batch, 16 heads, 257 tokens, 64) bf16, per sdpa backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, 16, 257, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
    out = {}
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        try:
            with sdpa_kernel(getattr(SDPBackend, name)):
                out[name] = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
                                  repeats, True) * 1e3
        except RuntimeError as err:
            out[name] = f"unavailable: {str(err)[:80]}"
    return {"ms_per_call": out, "shape": [batch, 16, 257, 64]}


def bare_variants(args: argparse.Namespace, agent, device: torch.device, dtype: torch.dtype,
                  names: list[str]) -> dict:
    """Frames/s of the bare model on ready pixels under each execution variant, and the seconds
    its first call took (the compile)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cudnn_first = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                   SDPBackend.MATH]

    def model(px: torch.Tensor) -> torch.Tensor:
        return pooled(agent.get_image_features(pixel_values=px))

    def with_cudnn(fn: Callable) -> Callable:
        def run(px: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel(cudnn_first, set_priority=True):
                return fn(px)
        return run

    makers: dict[str, Callable[[], Callable]] = {
        "eager": lambda: model,
        "eager+cudnn-attention": lambda: with_cudnn(model),
        "compile-dynamic-batch": lambda: compile_batched(model),  # what HFClipEncoder.compile uses
        # weights as constants: Inductor then merges the q/k/v projections into one matmul
        "compile-freezing": lambda: compile_batched(model, {"freezing": True}),
        "compile-freezing+coordinate-descent": lambda: compile_batched(
            model, {"freezing": True, "coordinate_descent_tuning": True}),
        "compile-static": lambda: torch.compile(model, fullgraph=True, dynamic=False),
        "compile-static+cudagraphs": lambda: torch.compile(model, mode="reduce-overhead", fullgraph=True,
                                                           dynamic=False),
        "compile-static+cudnn-attention": lambda: with_cudnn(torch.compile(model, fullgraph=True, dynamic=False)),
        "compile-max-autotune": lambda: torch.compile(model, mode="max-autotune-no-cudagraphs", fullgraph=True,
                                                      dynamic=False),
    }
    cuda = device.type == "cuda"
    gflop = 162.0 if args.clip == "clip-vit-l-14" else float("nan")
    out = {}
    for spec in names:  # NAME@BATCH,BATCH,...
        name, _, sizes = spec.partition("@")
        torch._dynamo.reset()  # each variant compiles afresh (the on-disk caches stay)
        fn = makers[name]()
        for batch in map(int, (sizes or str(args.batch_size)).split(",")):
            pixels = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
            steps = max(1, args.encode_frames // batch)
            try:
                with torch.no_grad():
                    t0 = time.perf_counter()
                    fn(pixels)
                    if cuda:
                        torch.cuda.synchronize()
                    first = time.perf_counter() - t0

                    def run() -> None:
                        for _ in range(steps):
                            fn(pixels)

                    per_frame = timed(run, args.repeats, cuda) / (steps * batch)
                out[f"{name}@{batch}"] = {"fps": 1 / per_frame, "tflops": gflop / 1000 / per_frame,
                                          "first_call_s": first}
            except Exception as err:  # a variant this torch cannot run is a result too
                out[f"{name}@{batch}"] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            print("bare", name, batch, out[f"{name}@{batch}"], flush=True)
    return out


def measure_encode(args: argparse.Namespace, agent, encoders: dict[str, HFClipEncoder],
                   device: torch.device) -> dict:
    """uint8 frames -> features on our path, eager and compiled (pinned batches, GPU preprocessing)."""
    cuda = device.type == "cuda"
    frame = texture(250, (270, 480))
    frames = np.stack([frame(25 * i) for i in range(args.encode_frames)])
    batches = [torch.from_numpy(frames[i:i + args.batch_size]) for i in range(0, len(frames), args.batch_size)]
    if cuda:
        batches = [b.pin_memory() for b in batches]  # as the extraction's decoder threads hand them over
    n = len(frames)
    results: dict = {"frames": n, "frame_size": [270, 480]}
    plain = {"": encoders_module.upload}
    if cuda:  # before: the copy queued on the compute stream (waits for the previous batch's encoding)
        plain["_copy_on_compute_stream"] = lambda frames, device: encoders_module.as_uint8_batch(frames).to(
            device, non_blocking=True)
    for name, enc in encoders.items():
        for suffix, upload in plain.items():
            encoders_module.upload = upload
            try:
                t0 = time.perf_counter()
                enc.encode_frames(batches[0]).cpu()
                first = time.perf_counter() - t0
                seconds = timed(lambda: torch.cat([enc.encode_frames(b) for b in batches]).cpu(), args.repeats, cuda)
            finally:
                encoders_module.upload = plain[""]
            results[f"ours_{name}{suffix}"] = {"fps": n / seconds, "first_call_s": first}
            print("encode", name + suffix, results[f"ours_{name}{suffix}"], flush=True)
        if len(plain) > 1:  # the side-stream copy must give exactly the features of the plain one
            features = []
            for upload in plain.values():
                encoders_module.upload = upload
                features.append(torch.cat([enc.encode_frames(b) for b in batches]).float().cpu())
            encoders_module.upload = plain[""]
            results[f"ours_{name}"]["max_abs_diff_vs_copy_on_compute_stream"] = float(
                (features[0] - features[1]).abs().max())
    if cuda:
        results["attention"] = measure_attention(device, args.batch_size, args.repeats)
    return results


def measure_published_encode(args: argparse.Namespace, agent, device: torch.device) -> float:
    """Frames/s of the published image path (run with the CPU cores free: it is CPU-bound)."""
    from transformers import CLIPImageProcessor

    frame = texture(250, (270, 480))
    frames = np.stack([frame(25 * i) for i in range(args.encode_frames)])
    processor = CLIPImageProcessor()
    seconds = timed(lambda: published_image_features(agent, processor, frames), max(1, args.repeats - 1),
                    device.type == "cuda")
    print("encode published", len(frames) / seconds, flush=True)
    return len(frames) / seconds


def measure_accuracy(args: argparse.Namespace, agent, encoders: dict[str, HFClipEncoder], workdir: Path,
                     device: torch.device) -> dict:
    """Max relative L2 error of frame features against fp32 + the published preprocessing, on a
    clip of distinct textured frames (one candidate each)."""
    from PIL import Image
    from transformers import CLIPImageProcessor

    frame = texture(1, (270, 480), seed=1)
    video = write_video(workdir / "accuracy.mp4", (frame(25 * i) for i in range(args.accuracy_frames)), 1.0, crf=23)
    wanted = sample_candidates(video).frame_numbers
    full = np.concatenate(list(iter_frames(video, wanted, 64)))
    small = np.concatenate(list(iter_frames(video, wanted, 64, size=clip_resize_shape(270, 480, 224))))
    fp32 = agent if agent.dtype == torch.float32 else random_agent(args.clip, torch_dtype=torch.float32, device=device)
    pixels = CLIPImageProcessor()(images=[Image.fromarray(f) for f in full], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref = pooled(fp32.get_image_features(pixel_values=pixels.to(device))).float()
    exact32 = HFClipEncoder(fp32, fp32.tokenizer)

    def err(x: torch.Tensor, y: torch.Tensor = ref) -> float:
        return float(((x.float() - y).norm(dim=-1) / y.norm(dim=-1)).max())

    eager, compiled = encoders["eager"], encoders["compiled"]
    out = {"frames": len(wanted), "neighbour_frames_min": err(ref[1:], ref[:-1]),
           "fp32_ours_full": err(exact32.encode_frames(full)),
           "fp32_ours_decode_resize": err(exact32.encode_frames(small)),
           f"{agent.dtype}_eager_full": err(eager.encode_frames(full)),
           f"{agent.dtype}_compiled_full": err(compiled.encode_frames(full)),
           f"{agent.dtype}_compiled_decode_resize": err(compiled.encode_frames(small)),
           "compiled_vs_eager": err(compiled.encode_frames(full), eager.encode_frames(full).float())}
    print("accuracy (max relative L2 error vs fp32 + published preprocessing)", out, flush=True)
    return out


# ------------------------------------------------------------------------------------ end to end
def peaks(device: torch.device) -> dict:
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else 0.0}


def e2e_child(args: argparse.Namespace) -> None:
    """All end-to-end runs of one method in this (fresh, then warm) process; prints one JSON line."""
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    t0 = time.perf_counter()
    agent = random_agent(args.clip, torch_dtype=dtype, device=device)
    if cuda:
        torch.cuda.synchronize()
    out: dict = {"model_load_s": time.perf_counter() - t0, "rss_after_load_mb": peaks(device)["peak_rss_mb"],
                 # interpreter start, imports and model build: what the process spent before its first video
                 "startup_s": time.time() - psutil.Process().create_time()}
    videos = [Path(v) for v in args.child_videos]
    warmup = Path(args.warmup_video)

    def clock(fn: Callable[[], object]) -> float:
        return timed_once(fn, cuda)

    with tempfile.TemporaryDirectory() as tmp:
        if args.child == "published":
            from transformers import CLIPImageProcessor

            processor = CLIPImageProcessor()
            out["warmup_s"] = clock(lambda: published_question(agent, processor, warmup, Path(tmp), -1))
            for video in videos:
                times = [clock(lambda: published_question(agent, processor, video, Path(tmp), q))
                         for q in range(args.published_questions)]
                out[video.name] = {"per_question_s": times, "median_question_s": statistics.median(times),
                                   **peaks(device)}
                print(video.name, out[video.name], file=sys.stderr, flush=True)
            with torch.no_grad():  # what ours adds per question (the select step's text encoding)
                out["text_per_question_s"] = timed(lambda: agent.encoder.encode_text([QUESTION]), 20, cuda)
        else:
            base = dict(encode_batch=args.batch_size, readers=args.readers, decode_threads=args.decode_threads,
                        decode_processes=args.decode_processes,
                        prefetch_videos=args.prefetch, backend=args.backend)
            compiled = ExtractConfig(**base, compile=True)
            passes = [("compiled", agent.encoder, Sampling(), compiled),
                      ("compiled+decode_resize", agent.encoder, Sampling(decode_resize=True), compiled),
                      ("eager", HFClipEncoder(agent, agent.tokenizer), Sampling(), ExtractConfig(**base))]
            for name, encoder, sampling, cfg in passes:
                fresh = iter(range(10**6))  # a new cache directory per run: every run extracts

                def extract(paths: list[Path]) -> float:
                    cache = FeatureCache(Path(tmp) / f"{name}{next(fresh)}")
                    return clock(lambda: extract_videos(paths, encoder, cache, sampling, cfg, progress=False))

                row: dict = {"warmup_s": extract([warmup])}  # the compile, for a compiled encoder
                for video in videos:
                    times = [extract([video]) for _ in range(args.repeats)]
                    row[video.name] = {"seconds": statistics.median(times), "runs_s": times, **peaks(device)}
                row["all_videos_s"] = statistics.median([extract(videos) for _ in range(args.repeats)])
                out[name] = row
                print(name, row, file=sys.stderr, flush=True)
            with torch.no_grad():
                out["text_per_question_s"] = timed(lambda: agent.encoder.encode_text([QUESTION]), 20, cuda)
    print(json.dumps(out))


def run_child(args: argparse.Namespace, method: str, videos: list[Path], warmup: Path,
              published_questions: int | None = None) -> dict:
    questions = args.published_questions if published_questions is None else published_questions
    cmd = [sys.executable, __file__, "--child", method, "--child-videos", *map(str, videos),
           "--warmup-video", str(warmup), "--device", args.device, "--clip", args.clip,
           "--batch-size", str(args.batch_size), "--prefetch", str(args.prefetch),
           *[item for flag, value in (("--decode-threads", args.decode_threads), ("--backend", args.backend),
                                      ("--readers", args.readers)) if value is not None for item in (flag, str(value))],
           *(["--decode-processes"] if args.decode_processes else []),
           "--published-questions", str(questions), "--repeats", str(args.repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-3000:])
    proc.check_returncode()
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ cache checksum
def measure_checksum(frames: int) -> dict:
    """What an entry of `frames` candidates costs to write and read back through the cache (the
    checksum included where this checkout's cache has one), and the checksum alone."""
    from tspo_eval import cache as cache_module
    from tspo_eval.cache import VideoFeatures, video_key

    features = torch.randn(frames, 768).to(torch.bfloat16)
    entry = VideoFeatures(features=features, frame_numbers=np.arange(frames) * 30,
                          timestamps=np.arange(frames, dtype=np.float64), fps=30.0, num_frames=frames * 30,
                          encoder="bench", fingerprint="0" * 32, video="bench.mp4")
    out: dict = {"frames": frames}
    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(Path(tmp))
        keys = iter(range(10**6))

        def put_get() -> None:
            key = video_key(f"{next(keys):032d}", "bench", Sampling())
            cache.put_video(key, entry)
            assert cache.get_video(key) is not None

        out["put_and_get_s"] = timed(put_get, 5, False)
    if hasattr(cache_module, "tensor_checksum"):
        tensors = {"features": features, "frame_numbers": torch.from_numpy(entry.frame_numbers),
                   "timestamps": torch.from_numpy(entry.timestamps)}
        # once on writing, once on reading
        out["checksum_write_and_read_s"] = 2 * timed(lambda: cache_module.tensor_checksum(tensors), 5, False)
    print("checksum", out, flush=True)
    return out


def questions_per_video(spec: list[str]) -> dict[str, float]:
    """NAME=Q pairs, or computed from the published TSVs beside the checkout (questions / videos)."""
    if spec:
        return {name: float(q) for name, q in (item.split("=") for item in spec)}
    import pandas as pd

    out = {}
    for name in BENCHMARKS:
        table = pd.read_csv(OFFICIAL / f"{name}.tsv", sep="\t")
        out[name] = round(len(table) / table["video_name"].nunique(), 2)
    return out


def summarise(extract: dict, videos: list[Path], durations: dict[str, float], qpv: dict[str, float]) -> dict:
    """Video-seconds per wall-second and ours/published ratios at each benchmark's questions per video."""
    ours, pub = extract["ours"], extract["published"]
    text_s = ours["text_per_question_s"]
    rows = {}
    for name, q in {"1 question": 1.0, **qpv}.items():
        per_video = {}
        for mode in ("compiled", "compiled+decode_resize", "eager"):
            for v in videos:
                ours_s = ours[mode][v.name]["seconds"] + q * text_s
                pub_s = q * pub[v.name]["median_question_s"]
                per_video[f"{mode}:{v.name}"] = {"ours_video_s_per_s": durations[v.name] / ours_s,
                                                 "published_video_s_per_s": durations[v.name] / pub_s,
                                                 "ratio": pub_s / ours_s}
            ours_all = ours[mode]["all_videos_s"] + q * text_s * len(videos)
            pub_all = sum(q * pub[v.name]["median_question_s"] for v in videos)
            per_video[f"{mode}:all"] = {"ours_video_s_per_s": sum(durations.values()) / ours_all,
                                        "published_video_s_per_s": sum(durations.values()) / pub_all,
                                        "ratio": pub_all / ours_all}
        rows[f"{name} (q={q:g})"] = per_video
    return rows


def measure_select(args: argparse.Namespace) -> list[dict]:
    """Selection time per question (ms) from in-memory cached features, per method x T x K x dtype."""
    from tspo_eval.cache import VideoFeatures
    from tspo_eval.selection.registry import SELECTORS
    from tspo_eval.selection.stage import select_for_question

    config = json.loads((Path(__file__).resolve().parents[1] / "tspo_eval" / "configs" / f"{args.clip}.json")
                        .read_text())
    dim, rng, rows = config["projection_dim"], torch.Generator().manual_seed(0), []
    methods = [m for m in sorted(SELECTORS) if FramePolicy(method=m).score_source == "clip"]
    torch.set_num_threads(1)  # a question is selected on one thread; CPU time is the load-independent figure
    for minutes in args.minutes:
        T = int(minutes * 60)
        for dtype in (torch.float32, torch.bfloat16):
            vf = VideoFeatures(features=torch.randn(T, dim, generator=rng).to(dtype), frame_numbers=np.arange(T) * 25,
                               timestamps=np.arange(T, dtype=np.float64), fps=25.0, num_frames=25 * T, encoder="bench",
                               fingerprint="bench", video="bench.mp4")
            texts = torch.randn(args.select_questions + 1, dim, generator=rng).to(dtype)
            for k in args.select_k:
                for method in methods:
                    cfg = FramePolicy(method=method, k=k, params={"preset": "tspo"} if method == "aks" else {})
                    wall, cpu = [], []
                    for text in texts:
                        start, start_cpu = time.perf_counter(), time.thread_time()
                        select_for_question(vf, text, cfg, "lvbench")
                        wall.append(1000 * (time.perf_counter() - start))
                        cpu.append(1000 * (time.thread_time() - start_cpu))
                    wall, cpu = np.array(wall[1:]), np.array(cpu[1:])  # the first call is the warm-up
                    rows.append({"method": method, "T": T, "k": k, "dtype": str(dtype).removeprefix("torch."),
                                 "median_ms": float(np.median(wall)), "p95_ms": float(np.percentile(wall, 95)),
                                 "cpu_median_ms": float(np.median(cpu))})
                    print(f"select {method:8s} T={T:5d} k={k:3d} {rows[-1]['dtype']:8s} median {np.median(wall):7.2f} "
                          f"ms  p95 {np.percentile(wall, 95):7.2f} ms  cpu {np.median(cpu):7.2f} ms", flush=True)
    return rows


def decode_config(text: str) -> tuple[str, int, int, bool]:
    """'[BACKEND:]READERSxTHREADS[p]' -> (backend, readers, threads, readers are processes)."""
    backend, _, sizes = text.rpartition(":")
    processes = sizes.endswith("p")
    readers, threads = map(int, sizes.removesuffix("p").split("x"))
    return backend or "decord", readers, threads, processes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clip", default="clip-vit-l-14", help="agent config (configs/*.json)")
    p.add_argument("--minutes", type=float, nargs="+", default=[10, 30])
    p.add_argument("--hd-minutes", type=float, default=1.0, help="a 1280x720 video for the decode test (0: none)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--backend", default=None, choices=["decord", "pyav"],
                   help="decoder for ours end to end (default: the fastest in the decode test)")
    p.add_argument("--decode-threads", type=int, default=None, help="(ours; default: the fastest in the decode test)")
    p.add_argument("--readers", type=int, default=None, help="decoding threads per video (ours; default: likewise)")
    p.add_argument("--prefetch", type=int, default=2, help="videos decoded ahead (ours)")
    p.add_argument("--decode-processes", action="store_true", default=None,
                   help="readers as processes (ours; default: as in the fastest decode configuration)")
    p.add_argument("--decode-configs", type=decode_config, nargs="+",
                   default=[decode_config(c) for c in ("8x1", "16x1", "16x2", "pyav:16x1", "pyav:16x1p", "pyav:16x2p")],
                   help="[BACKEND:]READERSxTHREADS[p] to time (p: readers are processes) (backend decord unless given)")
    p.add_argument("--variants", nargs="*", default=[
        "eager@128,256", "eager+cudnn-attention", "compile-dynamic-batch@64,128,256", "compile-static",
        "compile-static+cudagraphs", "compile-static+cudnn-attention"],
        help="bare-model variants, NAME[@BATCH,...] (a static compile recompiles per batch size); "
             "also compile-max-autotune")
    p.add_argument("--sections", nargs="+", default=["encode", "extract"],
                   choices=["encode", "extract", "select", "checksum"],
                   help="encode: encoder paths, variants, accuracy; extract: decode and end to end in warm "
                        "processes; select: selection time per question from cached features (CPU); checksum: "
                        "the cache checksum's cost on a 30-min video's entry. The real CLI against the published "
                        "structure, start-up and NVDEC included: scripts/bench_cli.py")
    p.add_argument("--select-k", type=int, nargs="+", default=[16, 64], help="frames per question timed (select)")
    p.add_argument("--select-questions", type=int, default=50, help="questions timed per case (select)")
    p.add_argument("--freezing-encoder", action="store_true", help="also time ours compiled with freezing")
    p.add_argument("--encode-frames", type=int, default=1024, help="frames per encode measurement")
    p.add_argument("--accuracy-frames", type=int, default=32)
    p.add_argument("--published-questions", type=int, default=2, help="questions timed per video (published)")
    p.add_argument("--questions-per-video", nargs="*", default=[],
                   help="NAME=Q (default: computed from ../shared/data/official/*.tsv)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--videos", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_videos")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-videos", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--warmup-video", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return e2e_child(args)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    qpv = questions_per_video(args.questions_per_video) if set(args.sections) - {"checksum"} else {}
    args.videos.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
                     "cpu_cores": os.cpu_count(), "torch": torch.__version__, "clip": args.clip,
                     "dtype": str(dtype), "batch_size": args.batch_size, "repeats": args.repeats,
                     "questions_per_video": qpv, "command": " ".join(sys.argv)}

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))

    if "checksum" in args.sections:
        results["checksum"] = measure_checksum(1800)
        save()
    if set(args.sections) <= {"checksum"}:
        return

    # videos are made in a background process while the (GPU-bound) encoder paths are measured
    specs = [("bench_warmup.mp4", 0.5, (270, 480))] + [(f"bench_{m:g}min.mp4", m, (270, 480)) for m in args.minutes]
    if args.hd_minutes:
        specs.append((f"bench_720p_{args.hd_minutes:g}min.mp4", args.hd_minutes, (720, 1280)))
    maker = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); from bench_extract import make_video; from pathlib import Path\n"
        "for name, m, size in %r: make_video(Path(%r) / name, m, size=tuple(size))")
        % (str(Path(__file__).parent), specs, str(args.videos))]) if "extract" in args.sections else None

    def videos_ready() -> None:
        t0 = time.perf_counter()
        if maker is not None and maker.wait() != 0:
            raise SystemExit("making the videos failed")
        print(f"videos ready (waited {time.perf_counter() - t0:.0f}s)", flush=True)

    if "encode" in args.sections:
        agent = random_agent(args.clip, torch_dtype=dtype, device=device)
        encoders = {"eager": HFClipEncoder(agent, agent.tokenizer),
                    "compiled": HFClipEncoder(agent, agent.tokenizer).compile()}
        if args.freezing_encoder:
            frozen = encoders["compiled+freezing"] = HFClipEncoder(agent, agent.tokenizer)
            frozen._image_features = compile_batched(frozen._project_images, {"freezing": True})
        results["encode"] = measure_encode(args, agent, encoders, device)
        results["accuracy"] = measure_accuracy(args, agent, encoders, args.videos, device)
        save()
        results["encode"]["bare"] = bare_variants(args, agent, device, dtype, args.variants)
        save()
        videos_ready()  # the published path is CPU-bound: measured with the cores free
        published_fps = measure_published_encode(args, agent, device)
        results["encode"].update(published_fps=published_fps,
                                 ratio=results["encode"]["ours_compiled"]["fps"] / published_fps)
        save()
        del agent, encoders
        if cuda:
            torch.cuda.empty_cache()
    if "select" in args.sections:
        results["select"] = measure_select(args)
        save()
    if "extract" not in args.sections:
        return
    videos_ready()
    warmup, *videos = [args.videos / name for name, *_ in specs]
    hd = videos.pop() if args.hd_minutes else None
    results["decode"] = [measure_decode(args, v, 224) for v in [videos[0]] + ([hd] if hd else [])]
    results["decode_scaling"] = decode_scaling(videos[0])
    best = max((r for r in results["decode"][0]["ours"] if not r["decode_resize"]), key=lambda r: r["fps"])
    for key in ("backend", "readers", "decode_threads", "decode_processes"):
        if getattr(args, key) is None:
            setattr(args, key, best[key])
    save()
    durations = {v.name: probe(v).duration for v in videos}
    results["extract_config"] = {"backend": args.backend, "readers": args.readers,
                                 "decode_processes": args.decode_processes,
                                 "decode_threads": args.decode_threads, "prefetch": args.prefetch,
                                 "batch_size": args.batch_size}
    results["extract"] = {m: run_child(args, m, videos, warmup) for m in ("ours", "published")}
    results["video_seconds"] = durations
    results["summary"] = summarise(results["extract"], videos, durations, qpv)
    save()
    print(json.dumps(results["summary"], indent=1))


if __name__ == "__main__":
    main()
