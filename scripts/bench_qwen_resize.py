"""What the published Qwen2.5-VL resize (`backbones.qwen_vl.published_resize`, the default) costs,
and whether running it on the GPU gives the CPU's (= the published fork's) pixels.

Per frame size: milliseconds for 64 frames on the device (after a warm-up), the same on the CPU,
and how many uint8 values differ between the two (CUDA's float kernel may round a value the
other way). Prints one JSON object.

    python scripts/bench_qwen_resize.py                      # cuda when present
    python scripts/bench_qwen_resize.py --device cpu --frames 4 --sizes 48x64   # a quick CPU check
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_eval.backbones.qwen_vl import published_resize  # noqa: E402


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--sizes", nargs="+", default=["360x640", "720x1280", "1080x1920"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for size in args.sizes:
        h, w = map(int, size.split("x"))
        frames = torch.randint(0, 256, (args.frames, 3, h, w), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        on_device = frames.to(device)
        cpu = published_resize(frames)
        dev = published_resize(on_device).cpu()
        differ = (cpu.int() - dev.int()).abs()
        rows.append({"size": size, "to": list(cpu.shape[-2:]), "frames": args.frames,
                     "ms_device": timed(lambda: published_resize(on_device), device, args.repeats),
                     "ms_cpu": timed(lambda: published_resize(frames), torch.device("cpu"), 1),
                     "values_differing": int((differ > 0).sum()), "max_level_difference": int(differ.max()),
                     "values": differ.numel()})
    print(json.dumps({"device": str(device), "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
