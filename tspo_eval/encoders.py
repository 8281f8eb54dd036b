"""Frame and text encoders: one interface, two implementations (transformers CLIP, open_clip).

The extraction stage only needs `encode_frames`, `encode_text`, `dim` and `identity` (the
string that keys the feature cache, so features of one encoder are never served for
another).  Preprocessing runs in torch on the encoder's device: resizing a batch of
decoded frames on the GPU is what lets encoding keep up with decoding (the published
per-frame PIL + CLIPProcessor path is ten times slower than the ViT itself).
"""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol, Sequence, Union, runtime_checkable

if TYPE_CHECKING:
    import PIL.Image

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Frames = Union[np.ndarray, torch.Tensor, Sequence["PIL.Image.Image"]]


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from an image-text encoder."""

    identity: str
    dim: int

    def encode_frames(self, frames: Frames) -> torch.Tensor:  # (N, dim)
        ...

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:  # (N, dim)
        ...


def as_uint8_batch(frames: Frames) -> torch.Tensor:
    """(N, H, W, 3) uint8 tensor from an array, a tensor or a list of PIL images."""
    if isinstance(frames, torch.Tensor):
        batch = frames
    elif isinstance(frames, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(frames))
    else:
        batch = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in frames]))
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 N x H x W x 3, got {tuple(batch.shape)} {batch.dtype}")
    return batch


def clip_preprocess(
    frames: torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Standard CLIP preprocessing on a uint8 (N, H, W, 3) batch -> float (N, 3, size, size).

    Shortest side to `size` (bicubic, antialiased, long side int(size * long / short) as
    CLIPImageProcessor computes it), centre crop, scale to [0, 1], normalise.
    """
    x = frames.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        new_hw = (size, new_long) if h <= w else (new_long, size)
        x = F.interpolate(x, size=new_hw, mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp_(0, 255).round_()
        top = (x.shape[-2] - size) // 2
        left = (x.shape[-1] - size) // 2
        x = x[..., top : top + size, left : left + size]
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255
    return (x - mean_t) / std_t


def _pooled(out: torch.Tensor | object) -> torch.Tensor:
    """transformers 4.x returns the projected features; 5.x an output object holding them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def weights_fingerprint(module: torch.nn.Module, skip_prefix: str = "selector.") -> str:
    """A short hash of a module's parameters, so two checkpoints of one name never share a cache.

    The agent's head (`selector.*`) is skipped: frame features do not depend on it, so
    training the head keeps the cached features valid.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        if name.startswith(skip_prefix):
            continue
        digest.update(name.encode())
        flat = tensor.detach().flatten()
        # A strided sample keeps this cheap for a 0.4B model while any retrained layer changes it.
        sample = flat[:: max(1, flat.numel() // 4096)].float().cpu().numpy()
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


class HFClipEncoder:
    """transformers `CLIPModel` features: exactly the TSPO ones (projected, not normalised)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, name: str = "clip") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.vision_config.image_size)
        self.identity = f"hf:{name}:{self.image_size}:{weights_fingerprint(model)}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def encode_frames(self, frames: Frames) -> torch.Tensor:
        pixels = clip_preprocess(as_uint8_batch(frames).to(self.device), self.image_size)
        return _pooled(self.model.get_image_features(pixel_values=pixels.to(self.dtype)))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=77, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return _pooled(self.model.get_text_features(**tokens))


class OpenClipEncoder:
    """Any open_clip model (AKS-style scoring with other encoders), from a local weights file."""

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        import open_clip

        self.model = open_clip.create_model(model_name, pretrained=pretrained, device=device).to(dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = self.model.visual.preprocess_cfg if hasattr(self.model.visual, "preprocess_cfg") else {}
        size = self.model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(cfg.get("mean", OPENAI_CLIP_MEAN))
        self.std = tuple(cfg.get("std", OPENAI_CLIP_STD))
        self.dim = int(self.model.encode_text(self.tokenizer(["x"]).to(device)).shape[-1])
        self.identity = f"open_clip:{model_name}:{self.image_size}:{weights_fingerprint(self.model)}"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_frames(self, frames: Frames) -> torch.Tensor:
        pixels = clip_preprocess(as_uint8_batch(frames).to(self.device), self.image_size, self.mean, self.std)
        return self.model.encode_image(pixels.to(next(self.model.parameters()).dtype))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))


def write_clip_tokenizer_files(directory: str | Path) -> Path:
    """Write CLIP's BPE tokenizer (vocab.json, merges.txt) from the copy open_clip ships.

    It is the same BPE that `openai/clip-vit-large-patch14` uses, so an agent built here can
    tokenise questions with nothing downloaded (the offline demo and the tests rely on it).
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory
