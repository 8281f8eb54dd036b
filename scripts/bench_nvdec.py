"""Whole-video decoding on the GPU's NVDEC engines (PyNvVideoCodec), decode only: why the GPU decoders
do not beat 16 PyAV processes on the H200 (docs/nvdec.md).

One video's 1-fps candidates through `video.NvdecReader`: in one call, in 690- and 64-frame calls, through
PyNvVideoCodec directly without copying the frames out, then 2 / 4 / 6 / 8 threads each decoding the whole
video at once. Seconds per layout, written as JSON.

    python3 scripts/bench_cli.py --videos-only --sets 10min --videos /tmp/v     # where PyAV is
    python3 scripts/bench_nvdec.py /tmp/v/10min_10min_270x480.mp4 --out nvdec_decode.json
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_eval.video import FrameReader, NvdecReader  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    import PyNvVideoCodec as nvc

    video = str(a.video)
    with FrameReader(video, "pyav", 1) as reader:
        cands = reader.candidates(1.0)
    wanted = cands.frame_numbers
    out: dict = {"video": video, "candidates": len(wanted), "frames": cands.info.num_frames}

    def whole(step: int) -> None:
        with NvdecReader(video, 0, cands.info.num_frames) as gpu:
            for first in range(0, len(wanted), step):
                gpu.read(wanted[first:first + step])
        torch.cuda.synchronize()

    def raw(step: int) -> None:
        decoder = nvc.SimpleDecoder(video, gpu_id=0, use_device_memory=True, output_color_type=nvc.OutputColorType.RGB)
        for first in range(0, len(wanted), step):
            decoder.get_batch_frames_by_index(wanted[first:first + step].tolist())

    def threads(n: int) -> None:
        running = [threading.Thread(target=whole, args=(690,)) for _ in range(n)]
        for thread in running:
            thread.start()
        for thread in running:
            thread.join()

    layouts = {"warm": lambda: whole(len(wanted)), "one_call_all": lambda: whole(len(wanted)),
               "chunks_690": lambda: whole(690), "chunks_64": lambda: whole(64),
               "raw_one_call_no_copy": lambda: raw(len(wanted)), "raw_chunks_64_no_copy": lambda: raw(64),
               **{f"threads_{n}_whole_videos": (lambda n=n: threads(n)) for n in (2, 4, 6, 8)}}
    for name, run in layouts.items():
        start = time.perf_counter()
        run()
        out[name] = time.perf_counter() - start
        print(name, round(out[name], 3), flush=True)
    a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
