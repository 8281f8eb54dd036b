"""LLaVA-Video's visual token layout: frame preprocessing, 2D pooling, newline placement.

Pure tensor functions of the checkpoint's `mm_*` fields (see `VisualLayout`), kept apart
from the network so they can be checked against plain loops.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from ..encoders import Frames, as_uint8_batch

PoolMode = Literal["bilinear", "average", "max"]
NewlinePosition = Literal["grid", "frame", "one_token", "no_token"]



@dataclass(frozen=True)
class VisualLayout:
    """How a frame's patch grid becomes LM tokens: the checkpoint's mm_* fields, validated.

    grid: patches per side (image_size // patch_size, 27 for so400m at 384 px).
    merge_type: `mm_patch_merge_type`; "flat" places no newline at all, "spatial*" follows
    `newline_position`; the checkpoint has `image_newline` only when it contains "unpad".
    """

    grid: int
    pool_mode: PoolMode
    pool_stride: int = 2
    newline_position: NewlinePosition = "one_token"
    merge_type: str = "flat"

    def __post_init__(self) -> None:
        if self.pool_mode not in get_args(PoolMode):
            raise ValueError(f"mm_spatial_pool_mode {self.pool_mode!r}: expected one of {get_args(PoolMode)}")
        if self.newline_position not in get_args(NewlinePosition):
            raise ValueError(f"mm_newline_position {self.newline_position!r}: "
                             f"expected one of {get_args(NewlinePosition)}")
        if self.pool_stride < 1 or self.grid < 1:
            raise ValueError(f"grid and mm_spatial_pool_stride must be >= 1, got {self.grid}, {self.pool_stride}")
        if not (self.merge_type == "flat" or self.merge_type.startswith("spatial")):
            raise ValueError(f"mm_patch_merge_type {self.merge_type!r}: the video path supports 'flat' and 'spatial*'")
        if self.uses_newline and not self.has_newline:
            raise ValueError(f"mm_newline_position {self.newline_position!r} needs image_newline, which "
                             f"mm_patch_merge_type {self.merge_type!r} (no 'unpad') does not create")

    @classmethod
    def from_config(cls, config: dict[str, Any], grid: int) -> VisualLayout:
        """Read and check the fields of an original LLaVA config.json (with the reference's defaults)."""
        if config.get("add_faster_video"):
            raise ValueError("add_faster_video=True (slow-fast video tokens) is not supported")
        if "mm_spatial_pool_mode" not in config:
            raise ValueError("config.json has no mm_spatial_pool_mode (the reference needs it for videos)")
        return cls(grid=grid, pool_mode=config["mm_spatial_pool_mode"],
                   pool_stride=int(config.get("mm_spatial_pool_stride", 2)),
                   newline_position=config.get("mm_newline_position", "one_token"),
                   merge_type=config.get("mm_patch_merge_type", "flat"))

    @property
    def has_newline(self) -> bool:
        """Whether the checkpoint carries `model.image_newline`."""
        return "unpad" in self.merge_type

    @property
    def uses_newline(self) -> bool:
        """Whether newline embeddings appear in the visual sequence."""
        if self.merge_type == "flat" or self.newline_position == "no_token":
            return False
        return self.newline_position != "one_token" or self.has_newline

    @property
    def pooled_side(self) -> int:
        """Side of the pooled grid: ceil(grid / stride) for bilinear, floor for average / max pooling."""
        if self.pool_mode == "bilinear":
            return math.ceil(self.grid / self.pool_stride)
        return self.grid // self.pool_stride

    def token_count(self, num_frames: int) -> int:
        """Visual tokens for `num_frames` frames (what replaces "<image>")."""
        side = self.pooled_side
        if not self.uses_newline:
            return num_frames * side * side
        if self.newline_position == "grid":
            return num_frames * side * (side + 1)
        if self.newline_position == "frame":
            return num_frames * (side * side + 1)
        return num_frames * side * side + 1  # one_token


def pool_frames(features: torch.Tensor, layout: VisualLayout) -> torch.Tensor:
    """(F, grid * grid, D) projected patch features -> (F, side * side, D), as `get_2dPool`."""
    frames, tokens, dim = features.shape
    if tokens != layout.grid ** 2:
        raise ValueError(f"expected {layout.grid}^2 = {layout.grid ** 2} tokens per frame, got {tokens}")
    x = features.view(frames, layout.grid, layout.grid, dim).permute(0, 3, 1, 2)  # (F, D, g, g)
    if layout.pool_mode == "average":
        x = F.avg_pool2d(x, layout.pool_stride)
    elif layout.pool_mode == "max":
        x = F.max_pool2d(x, layout.pool_stride)
    else:
        x = F.interpolate(x, size=[layout.pooled_side, layout.pooled_side], mode="bilinear")
    return x.permute(0, 2, 3, 1).reshape(frames, -1, dim)


def place_newlines(pooled: torch.Tensor, newline: torch.Tensor | None, layout: VisualLayout) -> torch.Tensor:
    """(F, side * side, D) pooled frames -> (T, D) visual sequence with newline embeddings placed.

    grid: after every pooled row; frame: after every frame; one_token: once after the video
    (only with an "unpad" merge type); no_token / "flat" merge: none.
    """
    frames, _, dim = pooled.shape
    if not layout.uses_newline:
        return pooled.reshape(-1, dim)
    if newline is None:
        raise ValueError(f"layout {layout} needs the image_newline embedding")
    newline = newline.to(pooled.dtype)
    if layout.newline_position == "grid":
        side = layout.pooled_side
        rows = pooled.reshape(frames, side, side, dim)
        rows = torch.cat([rows, newline.expand(frames, side, 1, dim)], dim=2)  # (F, side, side + 1, D)
        return rows.reshape(-1, dim)
    if layout.newline_position == "frame":
        return torch.cat([pooled, newline.expand(frames, 1, dim)], dim=1).reshape(-1, dim)
    return torch.cat([pooled.reshape(-1, dim), newline.view(1, dim)])  # one_token


def preprocess_frames(frames: Frames, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, size, size), as the reference's SigLipImageProcessor.

    Squashed to size x size (no aspect preservation, no crop) as PIL's bicubic resize of a
    uint8 image does it: the same antialiased kernel, a horizontal pass rounded and clipped to
    uint8, then a vertical pass (Pillow's C core order; PIL computes in fixed point, so a few
    pixels differ by one or two levels).  Then scaled by 1/255 and normalised with mean = std = 0.5.
    Runs batched on `device`.
    """
    x = as_uint8_batch(frames).to(device).permute(0, 3, 1, 2).float()
    for new_size in ((x.shape[-2], size), (size, size)):  # horizontal pass, then vertical
        if tuple(x.shape[-2:]) != new_size:
            x = F.interpolate(x, size=new_size, mode="bicubic", antialias=True, align_corners=False)
            x = x.clamp_(0, 255).round_()
    return (x / 255 - 0.5) / 0.5
