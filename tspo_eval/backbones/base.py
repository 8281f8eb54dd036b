"""The interface every video-LLM backbone implements (`registry` builds them by name).

A backbone answers `VideoQuery`s: the frames chosen for one question (uint8, in time
order, with their real timestamps) and the user text that follows the video.  The
answering stage, the lmms-eval / VLMEvalKit adapters and training all talk to this
interface only, so a backbone is swapped by name.

Vision reuse: a query may carry `video` (any hashable identity of the source video) and
`frame_numbers`; a backbone then caches its vision features under those keys, so
questions on the same video that share frames do not recompute them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

@dataclass
class VideoQuery:
    """One question for a backbone.

    frames: uint8 (N, H, W, 3), time order.  timestamps: N seconds in the source video.
    prompt: the user text after the video (question, options, instruction).
    """

    frames: np.ndarray | torch.Tensor
    timestamps: Sequence[float]
    prompt: str
    video: Hashable | None = None
    frame_numbers: Sequence[int] | None = None


class PhaseTimer:
    """Accumulates wall seconds per phase (vision, prefill, decode_tokens), CUDA-synchronised,
    and event counts (e.g. prompt tokens whose KV was reused)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds[phase] += time.perf_counter() - start

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()


class Backbone(ABC):
    """A frozen video LLM that answers `VideoQuery`s greedily."""

    name: str
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    vision_modules: tuple[str, ...] = ()  # parameter-name prefixes of the vision encoder / projector

    def __init__(self) -> None:
        self.timings = PhaseTimer()

    @abstractmethod
    def generate(self, queries: Sequence[VideoQuery], max_new_tokens: int = 16) -> list[str]:
        """Greedy answers, one per query, batched."""

    @abstractmethod
    def next_token_logits(self, queries: Sequence[VideoQuery]) -> torch.Tensor:
        """(B, vocab) logits of the first answer token; greedy decoding of one token is their argmax."""

    def clear_vision_cache(self) -> None:
        """Forget vision work kept for reuse (after changing weights); nothing kept, nothing to do."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"bfloat16" / torch.bfloat16 -> torch.bfloat16; an unknown name is an error."""
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype):
        raise TypeError(f"unknown dtype {dtype!r}")
    return resolved


def default_attention(requested: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """The requested implementation, else flash_attention_2 where flash_attn is installed and usable
    (CUDA, 16-bit), else PyTorch sdpa."""
    if requested is not None:
        return requested
    usable = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    return "flash_attention_2" if usable and importlib.util.find_spec("flash_attn") else "sdpa"


def without_cudnn_attention() -> contextlib.AbstractContextManager:
    """PyTorch sdpa limited to flash / memory-efficient / math attention, for shapes that change
    from call to call (decode steps, a remainder over a kept prefix, a vision tower's frame count).

    PyTorch >= 2.5 tries cuDNN attention first on Hopper, and cuDNN builds an execution plan
    for every new shape: on the H200 a decode step at a key length not seen before took
    0.06-0.13 s against 0.02 s once planned (`benchmarks/kernels_shapes_h200.json`), and
    every generated token has a new key length.  Flash and efficient attention plan nothing
    and are as fast for one query token.  Full prompts keep cuDNN (faster there, and its
    per-length plan costs no more than flash's slower kernel).  No effect with flash_attention_2.
    """
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
