"""The TSPO temporal agent: frozen CLIP ViT-L/14 + a 3.5M-parameter scoring head.

`TemporalAgent` is a CLIP with transformers `CLIPModel`'s parameter names (`clip.CLIP`, plain
PyTorch: importing CLIPModel cost seconds of start-up) and one extra submodule, `selector`,
so a released TSPO-0.4B directory (CLIPConfig + safetensors with `selector.*` keys) loads
unchanged and `save_pretrained` writes the same layout back.  The head reproduces the
published forward (SPEC section 2), including its quirks: the position fed to the
sinusoid is index / T, the attention output skips `ffn_o`, and the residual adds the
features without the positional encoding.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from .clip import CLIP, ClipConfig, read_config, read_weights
from .config import CheckpointError, model_location, safetensors_file
from .encoders import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Frames, HFClipEncoder, write_clip_tokenizer_files

log = logging.getLogger(__name__)

HEAD_PREFIXES = ("selector.", "multiModal_align.")
_TOKENIZER_LOCK = threading.Lock()
AGENT_VALUES = "a TSPO-0.4B directory, a hub id (e.g. hzf666/TSPO-0.4B) or random:<config> (e.g. random:clip-tiny)"


def positional_encoding(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sinusoids at position index / length (in [0, 1)), sine on even channels."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1) / length
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe


def window_mask(length: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, length) bool: frame j sees j - window//2 ... j - window//2 + window - 1, clamped."""
    j = torch.arange(length, device=device).unsqueeze(1)
    k = torch.arange(length, device=device).unsqueeze(0)
    lo = (j - window // 2).clamp(min=0)
    hi = (j - window // 2 + window - 1).clamp(max=length - 1)
    return (k >= lo) & (k <= hi)


class LocalWindowAttention(nn.Module):
    """Multi-head self-attention restricted to a temporal window; parameter names as released."""

    def __init__(self, dim: int = 768, num_heads: int = 8) -> None:
        super().__init__()
        self.Self_q = nn.Linear(dim, dim)
        self.Self_k = nn.Linear(dim, dim)
        self.Self_v = nn.Linear(dim, dim)
        self.ffn_o = nn.Linear(dim, dim)  # in the checkpoint, never used by the published forward
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        heads = lambda y: y.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.Self_q(x)), heads(self.Self_k(x)), heads(self.Self_v(x))  # (B, H, T, D/H)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(1, 2).reshape(b, t, d)


class TemporalHead(nn.Module):
    """The trainable selector: event features from local context, scored against the question."""

    def __init__(self, dim: int = 768, num_heads: int = 8, window: int = 12) -> None:
        super().__init__()
        self.temporal = LocalWindowAttention(dim, num_heads)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.window = window

    def forward(self, frame_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Scores S (T,) or (B, T) = cos(event feature, text) + cos(frame feature, text).

        frame_features: (T, D) or (B, T, D); text_features: (D,), (1, D) or (B, D).
        """
        single = frame_features.ndim == 2
        frames = frame_features.unsqueeze(0) if single else frame_features  # (B, T, D)
        dtype = next(self.parameters()).dtype
        frames = frames.to(dtype)
        text = text_features.to(dtype).reshape(-1, frames.shape[-1]).unsqueeze(1)  # (B or 1, 1, D)
        _, t, d = frames.shape
        pe = positional_encoding(t, d).to(frames.device, dtype)
        attended = self.temporal(frames + pe, window_mask(t, self.window, frames.device))
        events = self.mlp(attended) + frames  # (B, T, D)
        event_cos = (events * text).sum(-1) / (events.norm(dim=-1) * text.norm(dim=-1) + 1e-6)
        clip_cos = F.cosine_similarity(frames, text, dim=-1)
        scores = event_cos + clip_cos  # (B, T)
        return scores[0] if single else scores

    def load_checkpoint(self, state: dict[str, torch.Tensor], source: str, assign: bool = False) -> None:
        """`load_state_dict`, where tensors that do not fit are the checkpoint's fault: a CheckpointError
        naming `source`, not torch's RuntimeError."""
        try:
            self.load_state_dict(state, assign=assign)
        except RuntimeError as err:
            raise CheckpointError(f"{source}: its temporal head does not fit TSPO's ({' '.join(str(err).split())}); "
                                  "give a TSPO-0.4B directory or a head saved by tspo-eval") from err


class TemporalAgent(CLIP):
    """CLIP + `selector` head; `score` -> S, `logits` -> S / tau (tau = 0.025 at inference).

    Built by `from_pretrained` or `random_agent` directly on its device and dtype (modules are
    made on the meta device, then given the checkpoint's tensors or random ones there).  The
    tokenizer is loaded when first used: extracting frame features never needs it.
    """

    def __init__(self, config: ClipConfig, tokenizer_source: str | Path | None = None) -> None:
        super().__init__(config)
        self.selector = TemporalHead(config.projection_dim, num_heads=8, window=getattr(config, "tspo_window", 12))
        self.tau: float = getattr(config, "tspo_tau", 0.025)
        self._tokenizer = None
        self._tokenizer_source = tokenizer_source

    def init_weights(self) -> None:
        """Random CLIP (see `CLIP.init_weights`) and head."""
        super().init_weights()
        self.selector.apply(_init_head)

    @property
    def tokenizer(self) -> Callable:
        """The checkpoint's tokenizer (CLIP's BPE when it has none), loaded on first use."""
        with _TOKENIZER_LOCK:  # prefetch threads encode questions at once: transformers is imported once
            if self._tokenizer is None:
                self._tokenizer = load_clip_tokenizer(self._tokenizer_source)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Callable | None) -> None:
        self._tokenizer = value

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path, torch_dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "TemporalAgent":
        """Load a released TSPO-0.4B directory (or hub id) as is; a plain CLIP gets a fresh head.

        `torch_dtype` None keeps the checkpoint's dtype (bf16 for the release), as transformers 5 does.
        """
        directory = _local_directory(str(path_or_hub_id))
        state, source = read_weights(directory, device or "cpu")
        dtype = torch_dtype or getattr(state.get("visual_projection.weight"), "dtype", torch.float32)
        with torch.device("meta"), _default_dtype(dtype):
            agent = cls(read_config(directory, str(path_or_hub_id)), tokenizer_source=directory)
        agent.load_clip_weights(state, source, dtype)
        head = {k[len("selector."):]: v.to(dtype) for k, v in state.items() if k.startswith("selector.")}
        if head:
            agent.selector.load_checkpoint(head, source, assign=True)
        else:
            _allocate(agent.selector, device or "cpu").apply(_init_head)
        return agent.eval()

    def save_pretrained(self, save_directory: str | Path, dtype: torch.dtype | None = None,
                        tau: float | None = None) -> None:
        """Write the released layout: a config.json CLIPConfig reads, model.safetensors (CLIP +
        `selector.*`, in `dtype`, default the agent's), tokenizer and image-processor files.
        `tau` is the temperature written (default this agent's)."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        dtype = dtype or self.dtype
        config = {"architectures": ["CLIPModel"], **self.config.to_dict(), "tspo_window": self.selector.window,
                  "tspo_tau": self.tau if tau is None else tau, "torch_dtype": str(dtype).removeprefix("torch.")}
        (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        self.tokenizer.save_pretrained(str(out))
        size = self.config.vision_config.image_size
        (out / "preprocessor_config.json").write_text(json.dumps(clip_processor_config(size), indent=2) + "\n")

    def load_head(self, path: str | Path) -> "TemporalAgent":
        """Load only the head, from a released directory or a training checkpoint.

        Keys may carry any prefix ending in `selector.` or `multiModal_align.` (the name of
        the module inside the training LLaVA model); sharded directories are searched.
        """
        path = Path(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
        state: dict[str, torch.Tensor] = {}
        for file in files:
            with safetensors_file(file) as fh:
                for key in fh.keys():
                    for prefix in HEAD_PREFIXES:
                        if prefix in key:
                            state[key.split(prefix, 1)[1]] = fh.get_tensor(key)
        if not state:
            raise ValueError(f"{path}: no keys with a {' or '.join(HEAD_PREFIXES)} prefix; "
                             "pass a TSPO-0.4B directory or a training checkpoint that holds the head")
        self.selector.load_checkpoint(state, str(path))
        return self

    @functools.cached_property
    def encoder(self) -> HFClipEncoder:
        """This agent's CLIP as an `Encoder` for the extraction stage (built once: hashing the
        weights for the cache identity is not free).  The tokenizer is looked up per call, so
        building the encoder does not load it."""
        return HFClipEncoder(self, lambda *args, **kwargs: self.tokenizer(*args, **kwargs),
                             name=str(self.config._name_or_path or "clip"))

    def encode_frames(self, frames: Frames) -> torch.Tensor:
        """uint8 (N, H, W, 3) frames or PIL images -> (N, projection_dim) CLIP image features."""
        return self.encoder.encode_frames(frames)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Question stems -> (N, projection_dim) CLIP text features (truncated at 77 tokens)."""
        return self.encoder.encode_text(texts)

    def score(self, frame_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """S (T,): event cosine + clip cosine, before the temperature."""
        return self.selector(frame_features.to(self.selector.mlp[0].weight.device), text_features)

    def logits(self, frame_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """S / tau: the policy's logits over candidates."""
        return self.score(frame_features, text_features) / self.tau


@torch.no_grad()
def _init_head(module: nn.Module) -> None:
    """A fresh head's layers as transformers 5 drew them when the agent was a CLIPModel (N(0, 1)
    weights: CLIPConfig has no initializer_range; zero biases), which the toy runs are tuned on."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=1.0)
        nn.init.zeros_(module.bias)


def _allocate(module: nn.Module, device: str | torch.device) -> nn.Module:
    """`module.to_empty(device=device)` without `empty_like` on the meta device, which imports sympy
    (start-up time)."""
    return module._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=device))


def _local_directory(path_or_hub_id: str) -> Path:
    """A local directory as is; a hub id downloaded (config, tokenizer, safetensors; the
    pytorch_model.bin only when there are no safetensors)."""
    model_location(path_or_hub_id, "agent", AGENT_VALUES)
    if Path(path_or_hub_id).expanduser().is_dir():
        return Path(path_or_hub_id).expanduser()
    from huggingface_hub import snapshot_download

    directory = Path(snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
    if not any(directory.glob("*.safetensors")):
        directory = Path(snapshot_download(path_or_hub_id, allow_patterns=["*.json", "*.txt", "pytorch_model.bin"]))
    return directory


def clip_processor_config(size: int) -> dict:
    """What `CLIPImageProcessor(size={"shortest_edge": size}, crop_size=size x size).save_pretrained`
    writes, without importing transformers' image processing (it imports torchvision)."""
    return {"crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": list(OPENAI_CLIP_MEAN),
            "image_processor_type": "CLIPImageProcessor", "image_std": list(OPENAI_CLIP_STD), "resample": 3,
            "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}


CONFIG_DIR = Path(__file__).parent / "configs"


def random_agent(config: str = "clip-tiny", seed: int = 0, torch_dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> TemporalAgent:
    """A randomly initialised agent of a named architecture (`configs/<name>.json`).

    For tests, the offline demo and speed benchmarks: the real architecture with nothing
    downloaded.  Its scores mean nothing until it is trained.
    """
    path = CONFIG_DIR / f"{config}.json"
    if not path.is_file():
        names = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"unknown agent config {config!r}; known: {', '.join(names)}")
    spec = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    torch.manual_seed(seed)
    # built where it will run: a ViT-L initialised on the CPU first took 20 s on the H200's cores
    with torch.device("meta"), _default_dtype(torch_dtype):
        agent = TemporalAgent(ClipConfig.from_dict(spec))
    _allocate(agent, device).init_weights()
    return agent.eval()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Floating-point tensors made inside are `dtype` (parameters are created in it, not cast after)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def load_agent(spec: str | Path, torch_dtype: torch.dtype | None = None,
               device: str | torch.device | None = None, seed: int = 0) -> TemporalAgent:
    """`random:<config>` builds an untrained agent (weights drawn from `seed`); anything else is a
    directory or hub id."""
    spec = str(spec)
    if spec.startswith("random:"):
        return random_agent(spec.split(":", 1)[1], seed=seed, torch_dtype=torch_dtype or torch.float32,
                            device=device or "cpu")
    return TemporalAgent.from_pretrained(spec, torch_dtype=torch_dtype, device=device)


def load_clip_tokenizer(path_or_hub_id: str | Path | None):
    """The checkpoint's own tokenizer; CLIP's BPE shipped with open_clip when it has none.
    (transformers is imported here, not at the top: its tokenizers need none of its modeling code.)"""
    import transformers

    local = path_or_hub_id is not None and Path(path_or_hub_id).is_dir()
    if local and not any((Path(path_or_hub_id) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        # transformers 5 builds an empty-vocabulary tokenizer from a bare CLIP config.json instead of failing
        log.warning("%s has no tokenizer files; using CLIP's BPE from open_clip", path_or_hub_id)
    elif path_or_hub_id is not None:
        try:
            return transformers.AutoTokenizer.from_pretrained(str(path_or_hub_id))
        except (OSError, ValueError, TypeError) as err:
            log.warning("%s has no tokenizer files (%s); using CLIP's BPE from open_clip", path_or_hub_id, err)
    with tempfile.TemporaryDirectory() as tmp:
        return transformers.CLIPTokenizer.from_pretrained(str(write_clip_tokenizer_files(tmp)))
