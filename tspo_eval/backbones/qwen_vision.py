"""Qwen2.5-VL's vision attention without flash-attn, batched instead of looped.

The vision tower attends inside windows (and, in a few layers, inside frame pairs): the
token sequence is cut at `cu_seqlens` and every piece attends only to itself.  With
flash-attn transformers does this in one varlen call; with sdpa or eager it loops over the
pieces, thousands of tiny attention calls for a 64-frame video.  Here the pieces are
grouped by length and each group is one batched sdpa call: the same result (the pieces
never see each other either way), a few calls per layer.
"""
from __future__ import annotations

import types
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Vision rotary embedding in float32, as transformers applies it; (S, H, D) in and out."""
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    qf, kf = q.float(), k.float()
    return ((qf * cos) + (_rotate_half(qf) * sin)).to(q.dtype), ((kf * cos) + (_rotate_half(kf) * sin)).to(k.dtype)


def grouped_attention_forward(self: Any, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                              rotary_pos_emb: torch.Tensor | None = None,
                              position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                              **kwargs: Any) -> torch.Tensor:
    """Drop-in `forward` of a `Qwen2_5_VLVisionAttention`: (S, C) -> (S, C)."""
    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    if position_embeddings is None:  # transformers < 4.49 passed the raw angles
        angles = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
        position_embeddings = (angles.cos(), angles.sin())
    q, k = _rotary(q, k, *position_embeddings)  # (S, H, D)
    out = torch.empty_like(q)
    starts = cu_seqlens[:-1].tolist()
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    groups: dict[int, list[int]] = defaultdict(list)
    for start, length in zip(starts, lengths):
        if length > 0:
            groups[length].append(start)
    for length, group in groups.items():
        index = (torch.tensor(group, device=q.device)[:, None] + torch.arange(length, device=q.device)).reshape(-1)
        n = len(group)
        qg, kg, vg = (t.index_select(0, index).reshape(n, length, self.num_heads, -1).transpose(1, 2)
                      for t in (q, k, v))  # (n, H, L, D)
        o = F.scaled_dot_product_attention(qg, kg, vg, scale=self.scaling)
        out.index_copy_(0, index, o.transpose(1, 2).reshape(n * length, self.num_heads, -1))
    return self.proj(out.reshape(seq, -1))


def set_grouped_vision_attention(model: Any, enabled: bool) -> int:
    """Switch every vision block of a Qwen2.5-VL model to (or back from) grouped attention.

    Returns the number of blocks switched.  With flash-attn requested it does nothing:
    transformers' varlen call is already one call per layer.
    """
    visual = model.visual if hasattr(model, "visual") else model.model.visual
    if "flash" in str(visual.config._attn_implementation):
        return 0
    for block in visual.blocks:
        if enabled:
            block.attn.forward = types.MethodType(grouped_attention_forward, block.attn)
        else:
            block.attn.__dict__.pop("forward", None)
    return len(visual.blocks)
