"""Extraction through the real `tspo-eval extract` CLI against the published structure, in one run (issue 17).

One command makes the videos, then times:
  published  the published extraction structure in one warm process, one question per video:
             one-thread decord `get_batch` at 1 fps, a PIL image per frame + CLIPImageProcessor,
             one `get_image_features`, the question's text features, a file saved per question
             (`--published-videos` videos of each set; its start-up, imports and model, apart)
  ours       `python -m tspo_eval.cli extract` exactly as a user runs it, DEFAULT flags first
             (then `--alt-configs` on the 10-min set): wall-clock (start-up included), the
             extraction time the command reports, peak RSS of its process tree (decoding workers
             included), peak GPU memory (NVML)
  start-up   fresh-process `import torch`, `import tspo_eval.agent`, the extract command's
             imports, and the costliest imports (`python -X importtime`)
  nvdec      where PyNvVideoCodec imports: the GPU decoder's frames against the CPU decoder's
             at the same frame numbers (pixels, frame alignment, CLIP feature cosine)

Sets: 8 x 10-min 480x270, 8 x 30-min 480x270, 8 x 10-min 1280x720, 30 fps H.264, random CLIP
ViT-L/14 in bf16 (fp32 on the CPU). Videos: with PyAV, a 30-s base per size is encoded once
(libx264, crf 23, x264's default B-frames and keyframe interval) and concatenated without
re-encoding to the set's length. Without PyAV (the NVDEC command's wheels; an H200 has no NVENC),
videos made elsewhere with `--videos-only --videos DIR` are carried and found there. Each set's files are one video with a different trailing mp4 `free` box,
so their cache entries differ as different videos' would. Writes JSON after every step.

    python3 scripts/bench_cli.py --device cuda --out bench_cli.json
    python3 scripts/bench_cli.py --tiny --out /tmp/bench_cli_tiny.json     # a CPU check, ~3 min
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the man in the red jacket holding when the crowd starts to cheer?"
FPS = 30
BASE_MINUTES = 0.5  # PyAV: encoded once per size (single-threaded x264: seconds), concatenated to length
SETS = {"10min": (10.0, (270, 480)), "30min": (30.0, (270, 480)), "720p": (10.0, (720, 1280))}
TINY_SETS = {"10min": (0.25, (270, 480)), "30min": (0.75, (270, 480)), "720p": (0.25, (144, 256))}


# ------------------------------------------------------------------------------------ videos
def texture(n: int, size: tuple[int, int], seed: int = 0) -> Callable[[int], np.ndarray]:
    """Frame i (RGB) of a drifting texture with a new base colour every `n` frames (cheap to make,
    costs real decoding): frames are slices of one array."""
    h, w = size
    period = 107
    yy, xx = np.mgrid[0:h, 0:w + period]
    pattern = ((np.sin(2 * np.pi * xx / period) + np.cos(yy / 23.0)) * 40).astype(np.int16)
    rng = np.random.default_rng(seed)
    state: dict = {}

    def frame(i: int) -> np.ndarray:
        if i // n != state.get("scene"):
            state["scene"] = i // n
            state["img"] = np.clip(rng.integers(40, 215, size=3).astype(np.int16) + pattern[..., None],
                                   0, 255).astype(np.uint8)
        shift = (i * 2) % period
        return np.ascontiguousarray(state["img"][:, shift:shift + w])

    return frame


def encode_pyav(path: Path, minutes: float, size: tuple[int, int]) -> None:
    from tspo_eval.synthetic import write_video

    frame = texture(10 * FPS, size)
    write_video(path, (frame(i) for i in range(round(minutes * 60 * FPS))), FPS, crf=23)


def concat_pyav(base: Path, repeats: int, path: Path) -> None:
    """`repeats` copies of `base` one after the other, packets copied (no re-encoding): the base
    starts with a keyframe, so each copy decodes on its own."""
    import av

    with av.open(str(base)) as inp:
        stream = inp.streams.video[0]
        stamps = [p.pts for p in inp.demux(stream) if p.dts is not None]
    step = sorted(stamps)[1] - sorted(stamps)[0]
    span = max(stamps) + step - min(stamps)
    tmp = path.parent / f"part_{path.name}"
    with av.open(str(tmp), "w") as out:
        with av.open(str(base)) as first:
            ours = out.add_stream_from_template(first.streams.video[0])
        for r in range(repeats):
            with av.open(str(base)) as inp:
                for packet in inp.demux(inp.streams.video[0]):
                    if packet.dts is None:
                        continue
                    packet.pts += r * span
                    packet.dts += r * span
                    packet.stream = ours
                    out.mux(packet)
    tmp.rename(path)


def _make_one(path: str, minutes: float, size: tuple[int, int], base: str | None, base_minutes: float) -> None:
    """One video (run in its own process): encoded, or `base` (`base_minutes` long) repeated."""
    sys.path.insert(0, str(REPO))
    if base is None:
        encode_pyav(Path(path), minutes, size)
    else:
        concat_pyav(Path(base), round(minutes / base_minutes), Path(path))


def _spawn(calls: list[tuple]) -> None:
    """Run `_make_one(*call)` for each call in parallel processes; raise if any fails."""
    procs = [subprocess.Popen([sys.executable, __file__, "--make", json.dumps(call[1:])]) for call in calls]
    failed = [c for c, p in zip(calls, procs) if p.wait() != 0]
    if failed:
        raise RuntimeError(f"making videos failed: {failed}")


def make_videos(folder: Path, sets: dict, base_minutes: float) -> tuple[str, dict[str, Path], Path]:
    """(how they were made, base video per set, a warm-up video), made with PyAV; videos already in
    `folder` (made by `--videos-only` elsewhere and carried, or by an earlier command) are reused."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {name: folder / f"{name}_{minutes:g}min_{h}x{w}.mp4" for name, (minutes, (h, w)) in sets.items()}
    warmup = folder / f"warmup_{base_minutes:g}min.mp4"
    made_by = folder / "made_by.txt"
    if all(p.exists() for p in [*out.values(), warmup, made_by, *numbered_videos(folder)]):
        return made_by.read_text().strip() + " (found made)", out, warmup
    if importlib.util.find_spec("av") is None:
        raise SystemExit(f"{folder}: the videos are missing and PyAV is not installed to make them (an H200 has no "
                         "NVENC): make them where PyAV is with --videos-only --videos DIR, and carry DIR")
    sizes = sorted({size for _, size in sets.values()})
    bases = {size: folder / f"base_{base_minutes:g}min_{size[0]}x{size[1]}.mp4" for size in sizes}
    _spawn([("pyav", str(p), base_minutes, size, None, base_minutes) for size, p in bases.items() if not p.exists()])
    _spawn([("pyav", str(out[n]), minutes, size, str(bases[size]), base_minutes)
            for n, (minutes, size) in sets.items() if not out[n].exists()])
    if not warmup.exists():
        shutil.copy(bases[min(sizes)], warmup)
    for base in bases.values():
        base.unlink()
    from tspo_eval.synthetic import number_frame, write_video

    for path, codec in numbered_videos(folder).items():
        path.parent.mkdir(exist_ok=True)
        if not path.exists():
            write_video(path, (number_frame(n, 48, 64) for n in range(NUMBERED_FRAMES)), 30, codec=codec, gop_size=30)
    how = f"libx264 crf 23 (PyAV {importlib.import_module('av').__version__}), a {base_minutes:g}-min base per size concatenated"
    made_by.write_text(how)
    return how, out, warmup


NUMBERED_FRAMES = 300


def numbered_videos(folder: Path) -> dict[Path, str]:
    """{path: codec} of small videos whose frame n shows n, in the containers and codecs decord
    misnumbers (tests/test_video.py): the NVDEC check reads them back by number."""
    return {folder / "numbered" / name: codec for name, codec in (
        ("h264.ts", "libx264"), ("mpeg2.ts", "mpeg2video"), ("hevc_open_gop.mp4", "libx265"))}


def distinct_copies(source: Path, count: int, folder: Path) -> list[Path]:
    """`count` files of one video, each ending in its own mp4 `free` box (valid mp4, ignored by
    demuxers): their fingerprints, so their cache entries, differ, as different videos' would."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    out = []
    for i in range(count):
        path = folder / f"{source.stem}_{i}.mp4"
        if not path.exists():
            path.write_bytes(data + (12).to_bytes(4, "big") + b"free" + i.to_bytes(4, "big"))
        out.append(path)
    return out


def write_questions(videos: list[Path], tsv: Path) -> None:
    """One question per video, in the published LVBench TSV layout."""
    lines = ["index\ttask_name\tvideo_name\tquestion_id\tquestion\tanswer_number\tcandidates\tanswer"]
    for i, video in enumerate(videos):
        lines.append(f"q{i}\tbench\t{video.name}\tq{i}\t{QUESTION}\t0\t['a', 'b', 'c', 'd']\ta")
    tsv.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------ published
def published_frames(path: Path) -> np.ndarray:
    """The published `load_video`: one single-threaded reader, every round(avg_fps)-th frame, one get_batch."""
    from tspo_eval.video import import_decord

    decord = import_decord()  # PyNvVideoCodec first where installed: decord's FFmpeg crashes it otherwise
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    step = round(vr.get_avg_fps() / 1)
    return vr.get_batch(list(range(0, len(vr), step))).asnumpy()


def pooled(out: object):
    return out if hasattr(out, "shape") else out.pooler_output


def published_image_features(agent, processor, frames: np.ndarray):
    """The published `extract_feature` image half: a PIL image per frame, CLIPProcessor, one batch."""
    import torch
    from PIL import Image

    pixels = processor(images=[Image.fromarray(f) for f in frames], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return pooled(agent.get_image_features(pixel_values=pixels.to(agent.device, agent.dtype)))


def published_question(agent, processor, path: Path, cache_dir: Path, index: int) -> None:
    """What the published pipeline does for ONE question: everything, then a file per question."""
    import torch

    frames = published_frames(path)
    tokens = agent.tokenizer([QUESTION], padding=True, truncation=True, return_tensors="pt").to(agent.device)
    with torch.no_grad():
        text = pooled(agent.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
    image = published_image_features(agent, processor, frames)
    scores = torch.nn.functional.cosine_similarity(text, image, dim=-1)
    torch.save({"image": image.cpu(), "text": text.cpu(), "clip_scores": scores.cpu(),
                "sampled_idx": torch.arange(len(frames))}, cache_dir / f"{index}.pth")


def nvdec_check(encoder, videos: dict[str, Path], numbered: list[Path], picks: int = 16) -> dict:
    """The GPU decoder's frames against the CPU decoder's at the same frame numbers: pixel
    differences, which CPU frame each GPU frame matches best (offset 0 = same numbering; the
    texture moves 2 px a frame, so neighbours differ), and the CLIP features' cosine; and on the
    `numbered` videos (`numbered_videos`), how many frames read by number show another number."""
    import torch

    from tspo_eval.video import FrameReader, NvdecReader, nvdec_unavailable

    why = nvdec_unavailable(encoder.device)
    if why is not None:
        return {"available": False, "why": why}
    import PyNvVideoCodec

    out: dict = {"available": True, "version": getattr(PyNvVideoCodec, "__version__", "?")}
    for name, path in videos.items():
        try:
            with FrameReader(path, "decord" if importlib.util.find_spec("decord") else "pyav") as cpu:
                cands = cpu.candidates().frame_numbers
                chosen = cands[np.linspace(1, len(cands) - 2, min(picks, len(cands) - 2)).astype(int)]
                around = np.unique(np.concatenate([chosen - 1, chosen, chosen + 1]))
                ref = cpu.read(around).astype(np.int16)
                reference, num_frames = cpu.backend, cpu.num_frames
            t0 = time.perf_counter()
            with NvdecReader(str(path), encoder.device.index or 0, num_frames) as gpu:
                got_gpu = gpu.read(chosen)
            first_s = time.perf_counter() - t0
            got = got_gpu.cpu().numpy().astype(np.int16)
            at = {int(n): i for i, n in enumerate(around)}
            diff = np.abs(got - ref[[at[int(n)] for n in chosen]])
            offsets = []
            for k, n in enumerate(chosen):
                errs = {d: float(np.abs(got[k] - ref[at[int(n) + d]]).mean()) for d in (-1, 0, 1)}
                offsets.append(min(errs, key=errs.get))
            with torch.no_grad():
                a = encoder.encode_frames(torch.from_numpy(ref[[at[int(n)] for n in chosen]].astype(np.uint8))).float()
                b = encoder.encode_frames(got_gpu).float()
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).cpu().numpy()
            out[name] = {"reference_decoder": reference, "frames": len(chosen), "first_read_s": first_s,
                         "max_abs_diff": int(diff.max()), "mean_abs_diff": float(diff.mean()),
                         "share_over_2_levels": float((diff > 2).mean()),
                         "best_match_offsets": sorted(set(offsets)), "all_aligned": all(o == 0 for o in offsets),
                         "feature_cosine_min": float(cos.min()), "feature_cosine_mean": float(cos.mean())}
        except Exception as err:  # noqa: BLE001 - a figure this machine cannot give is a result too
            out[name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print("nvdec", name, out[name], flush=True)
    from tspo_eval.synthetic import read_frame_number

    asked = np.arange(0, NUMBERED_FRAMES, 7)
    for path in numbered:
        try:  # the numbers come from the frames themselves: no CPU decoder is the reference
            with NvdecReader(str(path), encoder.device.index or 0, NUMBERED_FRAMES) as gpu:
                shown = [read_frame_number(f) for f in gpu.read(asked).cpu().numpy()]
            out[f"numbered/{path.name}"] = {"asked": len(asked), "wrong": int(np.sum(np.array(shown) != asked))}
        except Exception as err:  # noqa: BLE001 - e.g. a codec this NVDEC lacks
            out[f"numbered/{path.name}"] = {"error": f"{type(err).__name__}: {err}"[:500]}
        print("nvdec", path.name, out[f"numbered/{path.name}"], flush=True)
    return out


def timed_once(fn: Callable[[], object], cuda: bool) -> float:
    """Seconds `fn` takes, the GPU's queue drained before and after (its peak memory reset first)."""
    import torch

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def child(args: argparse.Namespace) -> None:
    """The published structure in one warm process (one question per video), then the NVDEC check;
    prints one JSON line."""
    import psutil
    import torch

    sys.path.insert(0, str(REPO))
    from transformers import CLIPImageProcessor

    from tspo_eval.agent import random_agent

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    t0 = time.perf_counter()
    agent = random_agent(args.clip, torch_dtype=torch.bfloat16 if cuda else torch.float32, device=device)
    processor = CLIPImageProcessor()
    # interpreter, imports and model: what the process spent before its first video
    out: dict = {"startup_s": time.time() - psutil.Process().create_time(), "model_build_s": time.perf_counter() - t0}

    def clock(fn: Callable[[], object]) -> float:
        return timed_once(fn, cuda)

    with tempfile.TemporaryDirectory() as tmp:
        out["warmup_s"] = clock(lambda: published_question(agent, processor, Path(args.warmup), Path(tmp), -1))
        out["per_video_s"] = {}
        for i, video in enumerate(args.child_videos):
            out["per_video_s"][video] = clock(lambda: published_question(agent, processor, Path(video), Path(tmp), i))
            print("published", Path(video).name, f"{out['per_video_s'][video]:.2f}s", file=sys.stderr, flush=True)
    encoder = agent.encoder
    with torch.no_grad():
        encoder.encode_text([QUESTION])
        out["text_per_question_s"] = statistics.median(clock(lambda: encoder.encode_text([QUESTION]))
                                                       for _ in range(10))
    out["nvdec"] = nvdec_check(encoder, {Path(v).parent.name: Path(v) for v in args.nvdec_videos},
                               list(numbered_videos(Path(args.warmup).parent)))
    args.out.write_text(json.dumps(out))


# ------------------------------------------------------------------------------------ the CLI
def run_watched(cmd: list[str], env: dict | None = None, poll_s: float = 0.1, timeout_s: float = 300.0) -> dict:
    """Run `cmd`; wall-clock seconds, and the peak memory of its whole process tree (its decoding
    workers included): RSS summed over the tree, and PSS and USS beside it (Linux): RSS counts a
    page once per process that maps it, so the decoding blocks in /dev/shm, mapped by a worker and
    the parent, count twice in the RSS sum and once in PSS; parent and workers also apart.
    GPU memory through NVML where it is installed.
    A run past `timeout_s` is killed with its tree (returncode -9): a hang costs one figure."""
    import psutil

    nvml = None
    try:
        import pynvml

        pynvml.nvmlInit()
        nvml = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 - no NVML (CPU machine, or not installed): GPU memory not reported
        pass
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    streams: dict = {}
    pumps = [threading.Thread(target=lambda k=k, f=f: streams.__setitem__(k, f.read()), daemon=True)
             for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for pump in pumps:
        pump.start()
    peak_rss = peak_gpu = 0
    peaks = dict.fromkeys(("pss", "uss", "parent_rss", "parent_pss", "workers_rss", "workers_pss"), 0)
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        if time.perf_counter() - t0 > timeout_s:
            for p in [*root.children(recursive=True), root]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            proc.wait()
            break
        try:
            tree = [root, *root.children(recursive=True)]
            full = [p.memory_full_info() for p in tree]
            peak_rss = max(peak_rss, sum(m.rss for m in full))
            now = {"pss": sum(getattr(m, "pss", m.rss) for m in full), "uss": sum(m.uss for m in full),
                   "parent_rss": full[0].rss, "parent_pss": getattr(full[0], "pss", full[0].rss),
                   "workers_rss": sum(m.rss for m in full[1:]),
                   "workers_pss": sum(getattr(m, "pss", m.rss) for m in full[1:])}
            peaks = {k: max(v, now[k]) for k, v in peaks.items()}
            if nvml is not None:
                pids = {p.pid for p in tree}
                used = sum(g.usedGpuMemory or 0 for g in pynvml.nvmlDeviceGetComputeRunningProcesses(nvml)
                           if g.pid in pids)
                peak_gpu = max(peak_gpu, used)
        except (psutil.Error, OSError):
            pass
        time.sleep(poll_s)
    wall = time.perf_counter() - t0
    for pump in pumps:
        pump.join()
    return {"wall_s": wall, "returncode": proc.returncode, "peak_tree_rss_mb": peak_rss / 2**20,
            **{f"peak_tree_{k}_mb" if "_" not in k else f"peak_{k}_mb": v / 2**20 for k, v in peaks.items()},
            "peak_gpu_mb": peak_gpu / 2**20 if nvml is not None else None,
            "stdout_tail": streams.get("stdout", "")[-600:], "stderr_tail": streams.get("stderr", "")[-1500:]}


def cli_env() -> dict:
    """The environment for the CLI subprocesses: this checkout first on the path."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def cli_flags(config: str) -> list[str]:
    """'defaults' -> []; 'backend=decord,decode-resize' -> ['--backend', 'decord', '--decode-resize']."""
    flags: list[str] = []
    for item in filter(None, config.split(",")):
        if item != "defaults":
            key, sep, value = item.partition("=")
            flags += [f"--{key}", value] if sep else [f"--{key}"]
    return flags


def measure_startup() -> dict:
    """Fresh-process seconds: `import torch`, `import tspo_eval.agent`, the extract command's imports,
    and the costliest imports under tspo_eval.agent."""
    env = cli_env()
    out = {}
    for name, code in (("import_torch", "import torch"), ("import_torch_then_agent", "import torch, tspo_eval.agent"),
                       ("import_extract_path", "import tspo_eval.cli, tspo_eval.extract, tspo_eval.agent")):
        out[name + "_s"] = run_watched([sys.executable, "-c", code], env)["wall_s"]
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tspo_eval.agent"], env=env,
                          capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    out["agent_import_costliest_ms"] = [f"{c / 1000:.0f} {name}" for c, name in sorted(rows, reverse=True)[:15]]
    print("start-up", {k: round(v, 2) for k, v in out.items() if k.endswith("_s")}, flush=True)
    return out


def environment(device: str) -> dict:
    """What ran where, and the decoding plan the defaults give here."""
    import torch

    sys.path.insert(0, str(REPO))
    from tspo_eval.extract import available_cores, decode_plan
    from tspo_eval.policy import ExtractConfig

    plan = decode_plan(ExtractConfig(), device=device)
    versions = {}
    for name in ("transformers", "av", "decord", "PyNvVideoCodec", "open_clip"):
        spec = importlib.util.find_spec(name)
        versions[name] = None if spec is None else "present"
    with contextlib.suppress(Exception):
        import transformers

        versions["transformers"] = transformers.__version__
    return {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
            "cpu_cores": os.cpu_count(), "available_cores": available_cores(), "torch": torch.__version__,
            "packages": versions, "command": " ".join(sys.argv),
            "default_plan": {"backend": plan.backend, "readers": plan.readers, "decode_threads": plan.decode_threads,
                             "decode_processes": plan.decode_processes}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--clip", default="clip-vit-l-14", help="agent config (configs/*.json)")
    p.add_argument("--copies", type=int, default=8, help="videos per set")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--published-videos", type=int, default=2, help="videos per set timed through the published structure")
    p.add_argument("--alt-configs", nargs="*", default=[],
                   help="flags without dashes (e.g. backend=decord) run after the defaults, on --alt-sets")
    p.add_argument("--alt-sets", nargs="+", default=["10min"], choices=list(SETS), help="the sets --alt-configs run on")
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process import timings")
    p.add_argument("--videos", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_cli",
                   help="where the videos are made, or found made (then reused)")
    p.add_argument("--videos-only", action="store_true", help="make the videos and stop (to carry them to a machine "
                   "without PyAV)")
    p.add_argument("--tiny", action="store_true", help="a CPU check: short small videos, clip-tiny, 2 copies")
    p.add_argument("--timeout", type=float, default=240.0, help="a CLI run past this is killed and recorded")
    p.add_argument("--out", type=Path, default=None, help="the JSON written (required)")
    p.add_argument("--make", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-videos", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--nvdec-videos", nargs="*", default=[], help=argparse.SUPPRESS)
    p.add_argument("--warmup", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.make:
        path, minutes, size, base, base_minutes = json.loads(args.make)
        return _make_one(path, minutes, tuple(size), base, base_minutes)
    if args.child:
        return child(args)
    if args.out is None and not args.videos_only:
        p.error("--out is required")
    t_start = time.perf_counter()
    sets = {n: TINY_SETS[n] if args.tiny else SETS[n] for n in args.sets}
    base_minutes = 0.05 if args.tiny else BASE_MINUTES
    if args.videos_only:
        how, bases, warmup = make_videos(args.videos, sets, base_minutes)
        print(how, *(f"{p} {p.stat().st_size / 2**20:.1f} MiB" for p in [*bases.values(), warmup]), sep="\n")
        return
    if args.tiny:
        args.clip, args.copies, args.published_videos = "clip-tiny", 2, 1
        args.device = args.device if args.device != "cuda" or _has_cuda() else "cpu"
    results: dict = {"environment": environment(args.device)}
    print(json.dumps(results["environment"]), flush=True)

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        results["script_s"] = time.perf_counter() - t_start
        args.out.write_text(json.dumps(results, indent=1))

    t0 = time.perf_counter()
    kind, bases, warmup = make_videos(args.videos, sets, base_minutes)
    videos = {n: distinct_copies(bases[n], args.copies, Path(tempfile.mkdtemp(prefix="tspo_bench_copies_")) / n)
              for n in sets}
    results["videos"] = {"encoder": kind, "made_s": time.perf_counter() - t0,
                         "sets": {n: {"minutes": m, "size": list(s), "fps": FPS, "copies": args.copies,
                                      "file_mb": bases[n].stat().st_size / 2**20} for n, (m, s) in sets.items()}}
    save()
    print("videos", results["videos"], flush=True)
    if not args.no_startup:
        results["startup"] = measure_startup()
        save()

    timed = [v for n in sets for v in videos[n][:args.published_videos]]
    child_out = Path(tempfile.mkdtemp(prefix="tspo_bench_published_")) / "published.json"
    cmd = [sys.executable, __file__, "--child", "--device", args.device, "--clip", args.clip, "--warmup", str(warmup),
           "--out", str(child_out), "--child-videos", *map(str, timed),
           "--nvdec-videos", *[str(videos[n][0]) for n in sets if n != "30min"]]
    pub_run = run_watched(cmd, cli_env(), timeout_s=args.timeout * 2)
    if pub_run["returncode"] != 0 or not child_out.exists():
        results["published"] = {"error": pub_run}
        save()
        raise SystemExit(f"the published structure failed: {pub_run['stderr_tail']}")
    pub = json.loads(child_out.read_text())
    results["published"] = {"process_wall_s": pub_run["wall_s"], "peak_tree_rss_mb": pub_run["peak_tree_rss_mb"],
                            "peak_gpu_mb": pub_run["peak_gpu_mb"], **{k: pub[k] for k in (
                                "startup_s", "model_build_s", "warmup_s", "text_per_question_s")}}
    results["nvdec"] = pub["nvdec"]
    save()

    results["cli"] = {}
    for name in sets:
        per_video = [pub["per_video_s"][str(v)] for v in videos[name][:args.published_videos]]
        results["cli"][name] = {"published": {"per_video_s": per_video, "mean_per_video_s": statistics.mean(per_video),
                                              "startup_s": pub["startup_s"]}}
    # the defaults on every set first, then the other flags (a command cut short keeps what matters most)
    runs = [(name, "defaults") for name in sets] + [(n, c) for n in args.alt_sets if n in sets for c in args.alt_configs]
    for name, label in runs:
        row = results["cli"][name]
        pub_video_s, startup_pub = row["published"]["mean_per_video_s"], row["published"]["startup_s"]
        root = Path(tempfile.mkdtemp(prefix=f"bench_cli_{name}_"))
        tsv = root / "questions.tsv"
        write_questions(videos[name], tsv)
        cache = root / "cache"
        run = run_watched([sys.executable, "-m", "tspo_eval.cli", "extract", "--benchmark", "lvbench", "--annotations",
                           str(tsv), "--videos", str(videos[name][0].parent), "--agent", f"random:{args.clip}",
                           "--device", args.device, "--cache", str(cache), *cli_flags(label)],
                          cli_env(), timeout_s=args.timeout)
        report_path = cache / "reports" / "lvbench" / "extract.json"
        if run["returncode"] != 0 or not report_path.exists():
            row[label] = {"error": run}
            print(name, label, "FAILED", run["stderr_tail"], flush=True)
        else:
            report = json.loads(report_path.read_text())
            n = args.copies
            text = n * pub["text_per_question_s"]  # what ours adds per question (select's text encoding)
            ours_video_s = (report["seconds"] + text) / n
            row[label] = {
                "flags": " ".join(cli_flags(label)), "encoded": len(report["encoded"]), "failed": len(report["failed"]),
                "wall_s": run["wall_s"], "extraction_s": report["seconds"],
                "startup_s": run["wall_s"] - report["seconds"], "per_video_s": ours_video_s,
                # decoding starts while the model loads, so the extraction figure flatters ours a little;
                # the wall-clock ratio (both sides' start-up included) is the one a user sees
                "ratio_extraction": pub_video_s / ours_video_s,
                "ratio_wall": (startup_pub + n * pub_video_s) / (run["wall_s"] + text),
                **{k: v for k, v in run.items() if k.startswith("peak_")},
                "stderr_tail": run["stderr_tail"][-400:]}
            print(name, label, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row[label].items()
                                if k != "stderr_tail"}, flush=True)
        shutil.rmtree(root, ignore_errors=True)
        save()
    results["summary"] = {n: {label: {k: round(r[label][k], 3) for k in (
        "per_video_s", "ratio_extraction", "ratio_wall", "wall_s", "startup_s", "peak_tree_rss_mb")}
        for label in r if isinstance(r[label], dict) and "ratio_wall" in r[label]} for n, r in results["cli"].items()}
    save()
    print(json.dumps(results["summary"], indent=1))


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
