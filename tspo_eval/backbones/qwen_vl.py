"""Qwen2.5-VL-7B-Instruct behind the `Backbone` interface: transformers' native model and processor.

The selected frames arrive decoded (uint8, time order, with their timestamps) and go to
the processor's video processor as one video: nothing is decoded twice.  Settings follow
the published TSPO evaluation (lmms-eval fork, model `qwen2_5_vl_tspo`): system prompt
"You are a helpful assistant.", `min_pixels` 200704 (= 256*28*28, the wrapper's default)
and `max_pixels` 235200 (= 300*28*28, set by `evaluation/TSPO_qwen25_vl.sh`), 64 frames.

Time.  Qwen2.5-VL merges frames in pairs (`temporal_patch_size` 2); each pair gets one
temporal rotary position, and successive pairs advance by `tokens_per_second` (2) x
`second_per_grid_ts`, which transformers derives as 2 / fps, i.e. it assumes evenly
spaced frames.  TSPO's selected frames are not evenly spaced.  `time_encoding`:

- "real" (default): each pair's temporal position comes from its first frame's real
  timestamp, floor((t_pair - t_first) * tokens_per_second): the formula transformers uses
  for evenly spaced frames (product, then truncation), applied to the actual times.
- "mean": transformers' formula with fps = 1 / (mean spacing of the selected frames).
- "none": the published behaviour.  The wrapper passes no fps; TSPO pinned transformers
  4.49, whose processor then assumes fps = 2.0 (second_per_grid_ts = 1, so pairs sit at
  0, 2, 4, ...) whatever the real times.  Later versions assume other things with no fps:
  4.57 still 2.0 but casts second_per_grid_ts to int before multiplying (0.5 s becomes
  0); 5.x reads fps from video metadata and, with none, falls back to 24 fps (pairs at
  floor(k / 6)).  "none" keeps the 4.49 behaviour on every version.

"real" is the default because Qwen2.5-VL's temporal positions are trained to follow
absolute time: only real timestamps tell it how far apart irregularly selected frames
are.  "none" reproduces the published numbers.

All three are built here as explicit 3D `position_ids` (plus the per-row offset that
decoding continues from), so results do not depend on the installed transformers.  Text
after the video starts at the largest video position + 1, as in Qwen's reference
implementation and transformers 4.x; transformers 5.x's own `get_rope_index` starts it at
max(grid_h, grid_w) / 2 past the video start instead, which overlaps the video's temporal
positions whenever the video spans more temporal positions than its spatial grid.

An odd number of frames: the processor repeats the last frame to complete the last pair
(both transformers 4.5x and 5.x); that pair's time is its one real frame's.

Pixels: one bicubic resize per frame into [min_pixels, max_pixels] at multiples of 28.
`resize` says whose:

- "published" (default): what the published fork feeds the processor (`fetch_video` in its
  `qwen25vl_vision_process.py`): torchvision's functional resize of the uint8 frames
  (computed in float, bicubic, antialiased, then clamped to [0, 255] and rounded) to
  qwen-vl-utils' `smart_resize` size under its per-video pixel cap, then cast to float; the
  processor's own resize then keeps that size, so it changes nothing.  Run on the model's
  device (negligible next to the vision tower there; about 2.5 s per 64 frames of 360p on
  two CPU cores, so not in the CPU decode threads).
- "processor": the video processor resizes the uint8 frames itself, with another kernel:
  for 360x640 frames (to 364x644) about 20% of the pixel values differ from the published
  ones, by up to 0.146 after normalisation (about 10 grey levels).

Supported transformers: >= 4.56 (the `dtype` loading argument, the video processor class).
"""
from __future__ import annotations

import copy
import math
import os
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from ..distributed import device_for
from .base import (
    Backbone,
    VideoQuery,
    default_attention,
    resolve_dtype,
    without_cudnn_attention,
)
from .qwen_vision import set_grouped_vision_attention
from .tokenizers import QWEN_CHAT_TEMPLATE, tiny_qwen_tokenizer

TimeEncoding = Literal["real", "mean", "none"]
Resize = Literal["published", "processor"]

MIN_PIXELS = 256 * 28 * 28  # 200704: the published lmms-eval wrapper's default
MAX_PIXELS = 300 * 28 * 28  # 235200: the published evaluation script's setting
MAX_FRAMES = 768  # qwen-vl-utils' and the video processor's frame ceiling
# qwen-vl-utils (the fork's copy): per-frame ceiling, and the per-video total (its VIDEO_MAX_PIXELS variable)
VIDEO_MAX_PIXELS = 768 * 28 * 28
VIDEO_TOTAL_PIXELS = 128000 * 28 * 28 * 0.9
PIXEL_FACTOR = 28
PUBLISHED_FPS = 2.0  # what transformers 4.49 assumes when the caller passes no fps
SYSTEM_PROMPT = "You are a helpful assistant."
_TIME_EPS = 1e-6  # absorbs float noise in timestamps (e.g. 0.1 + 0.2) before truncation

# Released-checkpoint config.json layouts (flat text fields + vision_config), which every
# supported transformers version reads.  Special-token ids come from the tokenizer.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False,
        "vision_config": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "in_chans": 3, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
                          "spatial_patch_size": 14, "temporal_patch_size": 2, "window_size": 112,
                          "fullatt_block_indexes": [1], "tokens_per_second": 2, "hidden_act": "silu"},
    },
    "7b": {  # Qwen/Qwen2.5-VL-7B-Instruct
        "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
        "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}, "hidden_act": "silu",
        "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": 32768,
        "max_window_layers": 28,
        "vision_config": {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                          "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
                          "spatial_patch_size": 14, "temporal_patch_size": 2, "window_size": 112,
                          "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
                          "hidden_act": "silu"},
    },
}


def temporal_positions(timestamps: Sequence[float], time_encoding: TimeEncoding, tokens_per_second: float,
                       temporal_patch_size: int = 2) -> list[int]:
    """Temporal rotary offset of each frame group (pair), relative to the video's start.

    "real": floor((t[first frame of group] - t[0]) * tokens_per_second); "mean" and
    "none": transformers' floor(k * tokens_per_second * temporal_patch_size / fps) with fps
    = 1 / mean spacing, or the published 2.0.
    """
    times = np.asarray(timestamps, dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ValueError(f"need a 1-D, non-empty list of timestamps, got shape {times.shape}")
    if np.any(np.diff(times) < 0):
        raise ValueError("timestamps must be non-decreasing: give the frames in time order")
    groups = np.arange(-(-times.size // temporal_patch_size))
    if time_encoding == "real":
        seconds = times[groups * temporal_patch_size] - times[0]
    elif time_encoding in ("mean", "none"):
        if time_encoding == "none":
            spacing = 1.0 / PUBLISHED_FPS
        else:
            spacing = (times[-1] - times[0]) / (times.size - 1) if times.size > 1 else 0.0
        seconds = groups * temporal_patch_size * spacing
    else:
        raise ValueError(f"time_encoding must be one of {get_args(TimeEncoding)}, got {time_encoding!r}")
    return np.floor(seconds * tokens_per_second + _TIME_EPS).astype(np.int64).tolist()


def mrope_positions(input_ids: Sequence[int], video_token_id: int, grid_thw: Sequence[int],
                    temporal: Sequence[int], spatial_merge_size: int) -> torch.Tensor:
    """(3, L) rotary positions (temporal, height, width) of one sequence holding one video.

    Text before the video counts 0, 1, ... on all three axes; video token (k, i, j) of the
    merged grid sits at start + (temporal[k], i, j); text after it continues from the
    largest video position + 1 (Qwen's reference rule).
    """
    ids = torch.as_tensor(list(input_ids))
    t, h, w = int(grid_thw[0]), int(grid_thw[1]) // spatial_merge_size, int(grid_thw[2]) // spatial_merge_size
    where = torch.nonzero(ids == video_token_id).flatten()
    if len(temporal) != t or len(where) != t * h * w or (len(where) and where[-1] - where[0] + 1 != len(where)):
        raise ValueError(f"expected one run of {t * h * w} video tokens for grid {tuple(grid_thw)} and "
                         f"{t} temporal positions; got {len(where)} tokens, {len(temporal)} positions")
    start = int(where[0])
    before = torch.arange(start).expand(3, -1)
    video = torch.stack([
        torch.as_tensor(list(temporal)).repeat_interleave(h * w),
        torch.arange(h).repeat_interleave(w).repeat(t),
        torch.arange(w).repeat(t * h),
    ]) + start
    after = torch.arange(len(ids) - start - len(where)).expand(3, -1) + video.max() + 1
    return torch.cat([before, video, after], dim=1)


@dataclass
class QwenInputs:
    """One batch ready for the language model (left padded).

    input_ids, attention_mask: (B, L); position_ids: (3, B, L); inputs_embeds: (B, L, D)
    with the video features in place; next_position: (B,) the position the first
    generated token takes; video_grid_thw: (B, 3) the processor's (pairs, h, w) patch grid.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    inputs_embeds: torch.Tensor
    next_position: torch.Tensor
    video_grid_thw: torch.Tensor


def smart_resize(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = PIXEL_FACTOR
                 ) -> tuple[int, int]:
    """qwen-vl-utils' target size: multiples of `factor`, aspect kept, pixels in [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.0f} is above 200")
    h_bar, w_bar = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def published_resize(frames: torch.Tensor, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
                     ) -> torch.Tensor:
    """(N, 3, H, W) uint8 frames resized as the published fork's `fetch_video` does, still uint8.

    The size: `smart_resize` with max_pixels capped at max(min(VIDEO_MAX_PIXELS, total / N * 2),
    min_pixels * 1.05), total = $VIDEO_MAX_PIXELS or VIDEO_TOTAL_PIXELS (the cap never binds
    below 768 frames at the published settings). The pixels: torchvision's functional resize
    of the uint8 tensor, bicubic with antialias, which computes in float and clamps and rounds
    back to uint8 (the fork casts that to float: the same values).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resize

    n, _, height, width = frames.shape
    total = float(os.environ.get("VIDEO_MAX_PIXELS", VIDEO_TOTAL_PIXELS))
    cap = max(min(VIDEO_MAX_PIXELS, total / n * 2), int(min_pixels * 1.05))
    size = smart_resize(height, width, min_pixels, min(max_pixels, cap))
    return resize(frames, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)


class QwenVL(Backbone):
    """Qwen2.5-VL answering from pre-selected frames; see the module docstring for time and pixels."""

    name = "qwen2_5_vl"
    vision_modules = ("model.visual",)  # vision tower + merger: frozen in LLM training

    def __init__(self, model: Any, processor: Any, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                 max_frames: int = MAX_FRAMES, time_encoding: TimeEncoding = "real", resize: Resize = "published",
                 vision_cache_size: int = 8, system_prompt: str = SYSTEM_PROMPT) -> None:
        super().__init__()
        if time_encoding not in get_args(TimeEncoding):
            raise ValueError(f"time_encoding must be one of {get_args(TimeEncoding)}, got {time_encoding!r}")
        if resize not in get_args(Resize):
            raise ValueError(f"resize must be one of {get_args(Resize)}, got {resize!r}")
        if not 0 < min_pixels <= max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
        if max_frames < 1 or vision_cache_size < 0:
            raise ValueError(f"need max_frames >= 1 and vision_cache_size >= 0, got {max_frames}, {vision_cache_size}")
        self.model, self.processor, self.tokenizer = model, processor, processor.tokenizer
        self.device, self.dtype = model.device, model.dtype
        set_grouped_vision_attention(model, True)  # no-op under flash-attn; see qwen_vision
        self.min_pixels, self.max_pixels, self.max_frames = min_pixels, max_pixels, max_frames
        self.time_encoding, self.system_prompt, self.resize = time_encoding, system_prompt, resize
        self.vision_cache_size = vision_cache_size
        self._vision_cache: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.video_token_id = model.config.video_token_id
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_token_ids = sorted({*eos, self.tokenizer.eos_token_id} - {None})
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos[0]

    # ------------------------------------------------------------------ public API

    def generate(self, queries: Sequence[VideoQuery], max_new_tokens: int = 16) -> list[str]:
        """Greedy answers, one per query, batched with left padding."""
        return self.tokenizer.batch_decode(self.generate_ids(queries, max_new_tokens), skip_special_tokens=True)

    @torch.inference_mode()
    def generate_ids(self, queries: Sequence[VideoQuery], max_new_tokens: int = 16) -> list[list[int]]:
        """Greedy token ids per query, up to (not including) the first end-of-turn token.

        One prefill, then one token per step with the KV cache; positions continue from
        each row's largest prompt position, as transformers' generate does.
        """
        batch = self.encode(queries)
        with self.timings("prefill"):
            out = self.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=True, logits_to_keep=1)
        eos = torch.tensor(self.eos_token_ids, device=self.device)
        answers: list[list[int]] = [[] for _ in queries]
        done = torch.zeros(len(queries), dtype=torch.bool, device=self.device)
        mask = batch.attention_mask
        with self.timings("decode_tokens"), without_cudnn_attention():
            for step in range(max_new_tokens):
                token = out.logits[:, -1].argmax(-1)  # (B,)
                done |= torch.isin(token, eos)
                for row, (tok, stop) in enumerate(zip(token.tolist(), done.tolist())):
                    if not stop:
                        answers[row].append(tok)
                if bool(done.all()) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, mask.new_ones(len(queries), 1)], dim=1)
                position = (batch.next_position + step).view(1, -1, 1).expand(3, -1, 1)
                out = self.model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                                 past_key_values=out.past_key_values, use_cache=True)
        return answers

    @torch.inference_mode()
    def next_token_logits(self, queries: Sequence[VideoQuery]) -> torch.Tensor:
        """(B, vocab) float32 logits of the first answer token."""
        batch = self.encode(queries)
        with self.timings("prefill"):
            out = self.model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                             position_ids=batch.position_ids, use_cache=False, logits_to_keep=1)
        return out.logits[:, -1].float()

    @property
    def net(self) -> Any:
        """The causal LM (`net.model`, `net.lm_head`) that LLM training wraps."""
        return self.model

    def build_inputs(self, queries: Sequence[VideoQuery]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded (B, L, D) embeddings, (B, L) mask and (3, B, L) rotary positions, the
        frames' real timestamps encoded as in answering (`time_encoding`); for LLM training."""
        batch = self.encode(queries)
        return batch.inputs_embeds, batch.attention_mask, batch.position_ids

    @torch.no_grad()  # not inference mode: training reuses these tensors in a forward with grad
    def encode(self, queries: Sequence[VideoQuery]) -> QwenInputs:
        """Prompt ids, 3D positions and embeddings (video features in place) for a batch."""
        if not queries:
            raise ValueError("no queries given")
        frames, times, keys = zip(*(self._frames(q) for q in queries))
        features = self._video_features(frames, keys)
        merge = self.model.config.vision_config.spatial_merge_size
        tps = self.model.config.vision_config.tokens_per_second
        patch_t = self.processor.video_processor.temporal_patch_size
        rows, positions = [], []
        for query, (feats, grid), stamps in zip(queries, features, times):
            ids = self._prompt_ids(query.prompt, len(feats))
            temporal = temporal_positions(stamps, self.time_encoding, tps, patch_t)
            rows.append(ids)
            positions.append(mrope_positions(ids, self.video_token_id, grid.tolist(), temporal, merge))
        length = max(map(len, rows))
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        position_ids = torch.zeros((3, len(rows), length), dtype=torch.long)
        for b, (ids, pos) in enumerate(zip(rows, positions)):
            input_ids[b, length - len(ids):] = torch.as_tensor(ids)
            mask[b, length - len(ids):] = 1
            position_ids[:, b, length - len(ids):] = pos
        input_ids, mask, position_ids = (t.to(self.device) for t in (input_ids, mask, position_ids))
        with self.timings("prefill"):
            embeds = self.model.get_input_embeddings()(input_ids)
            video = torch.cat([f for f, _ in features]).to(embeds.dtype)
            embeds = embeds.masked_scatter((input_ids == self.video_token_id)[..., None], video)
        return QwenInputs(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, inputs_embeds=embeds,
                          next_position=torch.stack([p.max() + 1 for p in positions]).to(self.device),
                          video_grid_thw=torch.stack([g for _, g in features]))

    def save_pretrained(self, path: str | Path) -> None:
        """Write model, processor (image + video) and tokenizer so `from_pretrained(path)` works offline."""
        self.model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))

    # ------------------------------------------------------------------ internals

    def _frames(self, query: VideoQuery) -> tuple[torch.Tensor, np.ndarray, Hashable | None]:
        """(N, 3, H, W) uint8 frames, their N timestamps and the vision-cache key.

        More than `max_frames` frames are thinned uniformly (first and last kept).
        """
        frames = torch.as_tensor(query.frames)
        times = np.asarray(query.timestamps, dtype=np.float64)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        if len(times) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(times)} timestamps")
        key = None
        if query.video is not None and query.frame_numbers is not None:
            key = (query.video, tuple(int(n) for n in query.frame_numbers))
        if len(frames) > self.max_frames:
            keep = np.linspace(0, len(frames) - 1, self.max_frames).round().astype(np.int64)
            frames, times = frames[torch.as_tensor(keep)], times[keep]
        return frames.permute(0, 3, 1, 2), times, key

    def clear_vision_cache(self) -> None:
        """Forget every cached frame set (e.g. after changing weights)."""
        self._vision_cache.clear()

    def _prompt_ids(self, prompt: str, num_video_tokens: int) -> list[int]:
        """Chat-template token ids with the single video placeholder expanded, as the processor does."""
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        at = ids.index(self.video_token_id)
        return ids[:at] + [self.video_token_id] * num_video_tokens + ids[at + 1:]

    def _video_features(self, frames: Sequence[torch.Tensor],
                        keys: Sequence[Hashable | None]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(tokens, D) merged features and (3,) grid per video; cached ones are not recomputed."""
        results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        todo: dict[Hashable, list[int]] = {}  # one computation per distinct video in the batch
        for i, key in enumerate(keys):
            if key is not None and key in self._vision_cache:
                self._vision_cache.move_to_end(key)
                results[i] = self._vision_cache[key]
            else:
                todo.setdefault(object() if key is None else key, []).append(i)
        if todo:
            with self.timings("vision"):
                computed = self._run_vision([frames[rows[0]] for rows in todo.values()])
            for (key, rows), result in zip(todo.items(), computed):
                results.update(dict.fromkeys(rows, result))
                if keys[rows[0]] is not None and self.vision_cache_size:
                    self._vision_cache[key] = result
                    while len(self._vision_cache) > self.vision_cache_size:
                        self._vision_cache.popitem(last=False)
        return [results[i] for i in range(len(frames))]

    def _run_vision(self, videos: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Video processor (resize, normalise, patchify) then the vision tower, for several videos at once."""
        video_processor = self.processor.video_processor
        if self.resize == "published":
            videos = [published_resize(v.to(self.device), self.min_pixels, self.max_pixels) for v in videos]
        options: dict[str, Any] = {"size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
                                   "do_sample_frames": False, "input_data_format": "channels_first",
                                   "device": str(self.device), "return_tensors": "pt"}
        if hasattr(video_processor, "cap_pixels_per_frame"):  # transformers >= 5: qwen-vl-utils' total cap
            options["cap_pixels_per_frame"] = True
        processed = video_processor(videos=list(videos), **options)
        grid = processed["video_grid_thw"].to(self.device)
        visual = self.model.model.visual
        out = visual(processed["pixel_values_videos"].to(self.device, visual.dtype), grid_thw=grid)
        merged = getattr(out, "pooler_output", out)  # 5.x returns an output object, 4.5x the tensor
        sizes = (grid.prod(-1) // self.model.config.vision_config.spatial_merge_size ** 2).tolist()
        return list(zip(torch.split(merged, sizes), grid.cpu()))


def from_pretrained(path_or_hub_id: str | Path, *, dtype: str | torch.dtype = "bfloat16",
                    device: str | torch.device | None = None, attn_implementation: str | None = None,
                    min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS, max_frames: int = MAX_FRAMES,
                    time_encoding: TimeEncoding = "real", resize: Resize = "published",
                    vision_cache_size: int = 8) -> QwenVL:
    """Load Qwen2.5-VL (e.g. `Qwen/Qwen2.5-VL-7B-Instruct` or a saved dir) with its processor.

    Args:
        dtype: weights dtype (bf16 as published).  device: default CUDA when available.
        attn_implementation: default flash_attention_2 when flash_attn imports, else sdpa.
        min_pixels, max_pixels: per-frame pixel range for the resize (published 200704 / 235200).
        max_frames: frames beyond it are thinned uniformly.  time_encoding: "real" | "mean" | "none".
        resize: "published" (the fork's torchvision resize before the processor) | "processor".
        vision_cache_size: videos whose vision features are kept (LRU; keyed by video + frames).
    Example:
        >>> qwen = from_pretrained("Qwen/Qwen2.5-VL-7B-Instruct")
        >>> qwen.generate([VideoQuery(frames, timestamps, "Question? Options...")])
    """
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    where, torch_dtype = device_for(device), resolve_dtype(dtype)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path_or_hub_id), dtype=torch_dtype,
        attn_implementation=default_attention(attn_implementation, where, torch_dtype),
        device_map=str(where))
    processor = AutoProcessor.from_pretrained(str(path_or_hub_id))
    return QwenVL(model.eval(), processor, min_pixels=min_pixels, max_pixels=max_pixels, max_frames=max_frames,
                  time_encoding=time_encoding, resize=resize, vision_cache_size=vision_cache_size)


def random_qwen_vl(size: Literal["tiny", "7b"] = "tiny", seed: int = 0, dtype: str | torch.dtype | None = None,
                   device: str | torch.device | None = None, attn_implementation: str | None = None,
                   **options: Any) -> QwenVL:
    """The real architecture with random weights and the offline tiny tokenizer; nothing downloaded.

    "tiny" (float32 by default) for tests and demos; "7b" (Qwen2.5-VL-7B-Instruct dims,
    bf16 by default, built directly on `device`) for speed benchmarks.  `options` go to `QwenVL`.
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if size not in ARCHITECTURES:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(ARCHITECTURES)}")
    tokenizer = tiny_qwen_tokenizer()
    special = dict(zip(["bos_token_id", "eos_token_id", "vision_start_token_id", "vision_end_token_id",
                        "vision_token_id", "image_token_id", "video_token_id"],
                       tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>", "<|vision_start|>",
                                                        "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>",
                                                        "<|video_pad|>"])))
    config = Qwen2_5_VLConfig(**{"vocab_size": len(tokenizer), **copy.deepcopy(ARCHITECTURES[size]), **special})
    where = device_for(device)
    torch_dtype = resolve_dtype(dtype or ("float32" if size == "tiny" else "bfloat16"))
    torch.manual_seed(seed)
    with torch.device(where):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch_dtype, attn_implementation=default_attention(attn_implementation, where, torch_dtype))
    model.generation_config.eos_token_id = [special["eos_token_id"], special["bos_token_id"]]
    model.generation_config.pad_token_id = special["bos_token_id"]
    pixels = {"min_pixels": options.get("min_pixels", MIN_PIXELS), "max_pixels": options.get("max_pixels", MAX_PIXELS)}
    processor = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tokenizer,
                                    video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN_CHAT_TEMPLATE)
    return QwenVL(model.eval(), processor, **options)
