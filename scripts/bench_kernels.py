"""Where LLaVA-Video's answering time can still go: attention backend, compiled vision, prefix reuse.

Measures on the full-size random-weight LLaVA-Video-7B (bf16), in one process:

  prefill   the language model's forward over a 64-frame prompt (13,440 visual tokens + text)
            and over a training step's 8 rollouts of 16 frames, under each sdpa backend
            priority (PyTorch's default order, cuDNN first, flash first)
  vision    the SigLIP tower on 32 frames, eager and `torch.compile`d
  suffix    the forward of the last n tokens over a cached prefix (what reusing a shared
            visual prefix costs) against the full prefill
  shapes    the first and a repeated call of a prefill, and of a one-token decode step, at
            prompt lengths not seen before (real questions differ in length), per backend
            priority: what a backend's per-shape set-up (cuDNN builds a plan per shape) costs
  batches   the SigLIP tower's time per frame at 16 / 32 / 48 / 64 frames a call

Prints medians and writes JSON; the figures decide the defaults (see BENCHMARKS.md).

    python scripts/bench_kernels.py --device cuda --out benchmarks/kernels_h200.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tspo_eval.backbones.llava_video import random_llava_video

ORDERS = {
    "default": None,
    "cudnn_first": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH],
    "flash_first": [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                    SDPBackend.MATH],
}


def timed(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def backend(order: str) -> contextlib.AbstractContextManager:
    backends = ORDERS[order]
    return contextlib.nullcontext() if backends is None else sdpa_kernel(backends, set_priority=True)


@torch.inference_mode()
def new_shapes(lm: torch.nn.Module, hidden: int, prompt: int, dtype: torch.dtype, device: str,
               sync: Callable[[], None], lengths: int = 4) -> dict:
    """Per backend priority: prefill and one decode step at `lengths` prompt lengths never run
    before in this process (first call, then the same shape again), as real questions give."""
    def once(fn: Callable[[], object]) -> tuple[float, object]:
        sync()
        start = time.perf_counter()
        value = fn()
        sync()
        return time.perf_counter() - start, value

    out: dict = {}
    for n, order in enumerate(ORDERS):
        rows = []
        for j in range(lengths):
            length = prompt + 1 + 97 * n + 13 * j  # distinct across orders: nothing cached yet
            embeds = torch.randn(1, length + 1, hidden, device=device, dtype=dtype)
            mask = torch.ones(1, length + 1, dtype=torch.long, device=device)
            positions = torch.arange(length + 1, device=device)[None]
            prefill = partial(lm, inputs_embeds=embeds[:, :length], attention_mask=mask[:, :length],
                              position_ids=positions[:, :length], use_cache=True)
            step = partial(lm, inputs_embeds=embeds[:, length:], attention_mask=mask,
                           position_ids=positions[:, length:], use_cache=True)
            with backend(order):
                first, _ = once(prefill)
                again, out_prefill = once(prefill)
                cache = out_prefill.past_key_values
                step_first, _ = once(partial(step, past_key_values=cache))
                cache.crop(-1)  # back to the prompt (negative: tokens to drop, 4.5x and 5.x)
                step_again, _ = once(partial(step, past_key_values=cache))
            rows.append({"length": length, "prefill_first": first, "prefill_again": again,
                         "step_first": step_first, "step_again": step_again})
            print(f"{order:12s} length {length}: prefill first {first:.3f} s, again {again:.3f} s; "
                  f"decode step first {step_first:.4f} s, again {step_again:.4f} s")
        out[order] = rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "7b"], default="7b")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", nargs="+", default=["prefill", "vision", "suffix", "shapes", "batches"],
                    choices=["prefill", "vision", "suffix", "shapes", "batches"])
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    bb = random_llava_video(a.size, device=a.device)
    lm, hidden = bb.net.model, bb.net.config.hidden_size
    prompt = bb.visual_token_count(64) + 80
    rollouts = bb.visual_token_count(16) + 80
    result: dict = {"size": a.size, "device": a.device, "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
                    "prompt_tokens": prompt, "rollout_tokens": rollouts, "prefill": {}, "vision": {}, "suffix": {},
                    "shapes": {}, "batches": {}}

    @torch.inference_mode()
    def forward(batch: int, length: int, use_cache: bool) -> Callable[[], object]:
        embeds = torch.randn(batch, length, hidden, device=a.device, dtype=bb.dtype)
        mask = torch.ones(batch, length, dtype=torch.long, device=a.device)
        positions = torch.arange(length, device=a.device).expand(batch, -1)
        return lambda: lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=use_cache)

    for order in ORDERS if "prefill" in a.sections else ():
        with backend(order), torch.inference_mode():
            for name, batch, length in (("answer_64_frames", 1, prompt), ("train_8x16_frames", 8, rollouts)):
                try:
                    seconds = timed(forward(batch, length, name.startswith("answer")), a.repeats, sync)
                except RuntimeError as err:  # a backend that cannot run this shape
                    seconds = None
                    print(f"{order} {name}: {err}")
                result["prefill"].setdefault(name, {})[order] = seconds
                print(f"prefill {name:18s} {order:12s} {seconds if seconds is None else f'{seconds:.4f} s'}")

    pixels = torch.randn(32, 3, bb.image_size, bb.image_size, device=a.device, dtype=bb.dtype)
    tower = bb.net.model.vision_tower
    with torch.inference_mode():
        for order in ORDERS if "vision" in a.sections else ():
            with backend(order):
                result["vision"][f"eager_{order}"] = timed(lambda: tower(pixels), a.repeats, sync)
        if "vision" in a.sections:
            compiled = torch.compile(tower, dynamic=True)
            start = time.perf_counter()
            compiled(pixels)
            sync()
            result["vision"]["compile_first_call_s"] = time.perf_counter() - start
            result["vision"]["compiled"] = timed(lambda: compiled(pixels), a.repeats, sync)
        for frames in (16, 32, 48, 64) if "batches" in a.sections else ():
            batch = torch.randn(frames, 3, bb.image_size, bb.image_size, device=a.device, dtype=bb.dtype)
            result["batches"][str(frames)] = timed(lambda batch=batch: tower(batch), a.repeats, sync) / frames
            print(f"vision {frames:2d} frames a call: {1000 * result['batches'][str(frames)]:.3f} ms per frame")
    for name, seconds in result["vision"].items():
        print(f"vision 32 frames {name:22s} {seconds:.4f} s")

    if "shapes" in a.sections:
        result["shapes"] = new_shapes(lm, hidden, prompt, bb.dtype, a.device, sync)

    # Suffix over a cached prefix: the question's tokens after a reused visual prefix.
    with torch.inference_mode() if "suffix" in a.sections else contextlib.nullcontext():
        embeds = torch.randn(1, prompt, hidden, device=a.device, dtype=bb.dtype)
        mask = torch.ones(1, prompt, dtype=torch.long, device=a.device)
        positions = torch.arange(prompt, device=a.device)[None]
        for suffix in sorted({min(80, prompt // 2), prompt // 4, prompt // 2, prompt - 1}) if "suffix" in a.sections \
                else ():
            cut = prompt - suffix
            cache = lm(inputs_embeds=embeds[:, :cut], attention_mask=mask[:, :cut], position_ids=positions[:, :cut],
                       use_cache=True).past_key_values

            def run(cache=cache, cut=cut) -> object:
                cache.crop(cut - cache.get_seq_length())  # negative: tokens to remove (4.5x and 5.x)
                return lm(inputs_embeds=embeds[:, cut:], attention_mask=mask, position_ids=positions[:, cut:],
                          past_key_values=cache, use_cache=True)

            result["suffix"][str(suffix)] = timed(run, a.repeats, sync)
            print(f"suffix of {suffix:5d} tokens over a cached prefix of {cut:5d}: {result['suffix'][str(suffix)]:.4f} s")
    if a.device.startswith("cuda"):
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
