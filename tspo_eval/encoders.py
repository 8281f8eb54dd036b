"""Frame and text encoders: one interface, two implementations (transformers CLIP, open_clip).

The extraction stage only needs `encode_frames`, `encode_text`, `dim`, `image_size`,
`device`, `compile` and `identity` (the string that keys the feature cache, so features of
one encoder are never served for another).  Preprocessing runs in torch on the encoder's
device: resizing a batch of decoded frames on the GPU is what lets encoding keep up with
decoding (the published per-frame PIL + CLIPProcessor path is ten times slower than the ViT
itself).  `encode_frames` returns features on the encoder's device without waiting for the
GPU, so a caller that collects a video's batches and copies them back once keeps the GPU
queue full.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
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
    image_size: int  # input side: frames may be decoded at this scale already (ExtractConfig.decode_resize)

    @property
    def device(self) -> torch.device:
        ...

    def compile(self) -> "Encoder":  # torch.compile the image path; returns self
        ...

    def encode_frames(self, frames: Frames) -> torch.Tensor:  # (N, dim), on `device`
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


@functools.cache
def _copy_stream(device: torch.device) -> torch.cuda.Stream:
    return torch.cuda.Stream(device)


def upload(frames: Frames, device: torch.device) -> torch.Tensor:
    """uint8 frames on `device`.  A pinned batch is copied to a GPU on a side stream that the
    compute stream then waits for: a copy queued on the compute stream would wait for the
    previous batch's encoding and delay the next, while from the side stream it runs during
    that encoding (H200, 256 frames of 480x270 a batch: +1.0-1.2% frames/s, same features;
    `benchmarks/encode_h200_run4.json`)."""
    batch = as_uint8_batch(frames)
    if device.type != "cuda" or not batch.is_pinned():
        return batch.to(device)
    compute, copy = torch.cuda.current_stream(device), _copy_stream(device)
    with torch.cuda.stream(copy):
        on_device = batch.to(device, non_blocking=True)
    compute.wait_stream(copy)
    on_device.record_stream(compute)  # its memory is not reused before the compute stream is done
    return on_device


def clip_resize_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) with the shortest side scaled to `size` and the long side int(size * long / short),
    as CLIPImageProcessor rounds it."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


@functools.lru_cache(maxsize=16)
def _norm_constants(mean: tuple[float, ...], std: tuple[float, ...],
                    device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std on `device` in 0-255 units, made once: building them per batch is a
    host-to-device copy each time."""
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)


def clip_preprocess(
    frames: torch.Tensor,
    size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Standard CLIP preprocessing on a uint8 (N, H, W, 3) batch -> float (N, 3, size, size).

    Shortest side to `size` (bicubic, antialiased, long side as `clip_resize_shape`; skipped
    when the frames already have that shape, e.g. decoded at that scale), centre crop,
    scale to [0, 1], normalise.
    """
    x = frames.permute(0, 3, 1, 2).float()
    new_hw = clip_resize_shape(x.shape[-2], x.shape[-1], size)
    if new_hw != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=new_hw, mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp_(0, 255).round_()
    top = (x.shape[-2] - size) // 2
    left = (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    mean_t, std_t = _norm_constants(tuple(mean), tuple(std), x.device)
    return (x - mean_t) / std_t


def compile_batched(fn: Callable[[torch.Tensor], torch.Tensor],
                    options: dict | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`torch.compile(fn)` for (N, ...) batches with N dynamic, so one compile serves every batch
    size (a video's last batch is short) and nothing is padded to a fixed size.

    A batch of one is run as two copies: torch specialises size-1 dimensions, which would
    cost a second compile of the whole model in the middle of a run.
    """
    compiled = torch.compile(fn, fullgraph=True, options=options)

    def run(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n == 1:
            x = torch.cat([x, x])
        torch._dynamo.maybe_mark_dynamic(x, 0)
        return compiled(x)[:n]

    return run


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
    """Features of a CLIP with `CLIPModel`'s interface (the agent's `clip.CLIP`, or transformers'
    own): exactly the TSPO ones (projected, not normalised)."""

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, name: str = "clip") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.vision_config.image_size)
        self.identity = f"hf:{name}:{self.image_size}:{weights_fingerprint(model)}"
        self._image_features: Callable[[torch.Tensor], torch.Tensor] = self._project_images
        self.compiled = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _project_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def compile(self) -> "HFClipEncoder":
        """Run the vision tower + projection through `torch.compile` from now on (see
        `compile_batched`): on the H200 it fuses CLIP's quick-GELU, layer norms and residual
        adds that run as separate memory-bound kernels in eager mode. Same features within
        floating-point rounding; the first batch pays the compile."""
        if not self.compiled:
            self._image_features, self.compiled = compile_batched(self._project_images), True
        return self

    @torch.no_grad()
    def encode_frames(self, frames: Frames) -> torch.Tensor:
        pixels = clip_preprocess(upload(frames, self.device), self.image_size)
        return self._image_features(pixels.to(self.dtype))

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
        self._image_features: Callable[[torch.Tensor], torch.Tensor] = self.model.encode_image
        self.compiled = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def compile(self) -> "OpenClipEncoder":
        """Run `encode_image` through `torch.compile` from now on (see `compile_batched`)."""
        if not self.compiled:
            self._image_features, self.compiled = compile_batched(self.model.encode_image), True
        return self

    @torch.no_grad()
    def encode_frames(self, frames: Frames) -> torch.Tensor:
        pixels = clip_preprocess(upload(frames, self.device), self.image_size, self.mean, self.std)
        return self._image_features(pixels.to(next(self.model.parameters()).dtype))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(list(texts)).to(self.device))


def write_clip_tokenizer_files(directory: str | Path) -> Path:
    """Write CLIP's BPE tokenizer (vocab.json, merges.txt) from the copy open_clip ships.

    It is the same BPE that `openai/clip-vit-large-patch14` uses, so an agent built here can
    tokenise questions with nothing downloaded (the offline demo and the tests rely on it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with gzip.open(_open_clip_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    vocab = list(_byte_symbols().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return directory


def _open_clip_bpe() -> Path:
    """open_clip's copy of CLIP's BPE merges, found without importing open_clip (which imports
    timm and torchvision: seconds of start-up for a file path)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("CLIP's BPE vocabulary ships with open_clip: pip install open_clip_torch, "
                          "or give an agent directory that has its own tokenizer files")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _byte_symbols() -> dict[int, str]:
    """CLIP's (GPT-2's) byte -> symbol table, in its order: bytes that print as themselves first
    (33-126, 161-172, 174-255), then the rest, in byte order, as chr(256), chr(257), ..."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in table)})
    return table
