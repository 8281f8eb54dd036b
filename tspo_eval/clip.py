"""CLIP in plain PyTorch: the features transformers' `CLIPModel` computes, under its parameter names.

Why not `transformers.CLIPModel`: importing it pulls transformers' whole modeling stack
(generation, torch.distributed.tensor, sympy, dynamo), ~9 s of every `tspo-eval extract`
start-up on an H200 host, for a ViT that is only ever run forward here.  The state_dict keys
are CLIPModel's, so a released checkpoint loads unchanged and what is written back loads in
CLIPModel; tests/test_clip.py checks the features equal CLIPModel's `get_image_features` /
`get_text_features` (ViT and text tower, padding, the legacy and current end-of-text pooling).
"""
from __future__ import annotations

import functools
import json
import types
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import read_safetensors

# CLIPConfig's defaults (openai/clip-vit-base-patch32), filled in for fields a config.json leaves out.
CONFIG_DEFAULTS = {"model_type": "clip", "projection_dim": 512, "logit_scale_init_value": 2.6592,
                   "initializer_factor": 1.0}
TOWER_DEFAULTS = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "attention_dropout": 0.0,
                  "initializer_range": 0.02, "initializer_factor": 1.0}
TEXT_DEFAULTS = {**TOWER_DEFAULTS, "model_type": "clip_text_model", "vocab_size": 49408, "hidden_size": 512,
                 "intermediate_size": 2048, "projection_dim": 512, "num_hidden_layers": 12, "num_attention_heads": 8,
                 "max_position_embeddings": 77, "pad_token_id": 1, "bos_token_id": 49406, "eos_token_id": 49407}
VISION_DEFAULTS = {**TOWER_DEFAULTS, "model_type": "clip_vision_model", "hidden_size": 768,
                   "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32}


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "quick_gelu": quick_gelu, "gelu": F.gelu, "relu": F.relu, "silu": F.silu,
    "swish": F.silu, **dict.fromkeys(("gelu_new", "gelu_fast", "gelu_pytorch_tanh"),
                                     functools.partial(F.gelu, approximate="tanh"))}


class ClipConfig(types.SimpleNamespace):
    """A CLIPConfig JSON as attributes, CLIPConfig's defaults filled in; keys it does not know are
    kept, so `to_dict` writes back what was read (`tspo_window`, `architectures`, ...)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any], name_or_path: str = "") -> "ClipConfig":
        raw = {k: v for k, v in raw.items() if k not in ("dtype", "torch_dtype", "_name_or_path")}
        # old CLIPConfig files carry `*_config_dict` overrides, which CLIPConfig merges in the same way
        text = {**TEXT_DEFAULTS, **(raw.get("text_config") or {}), **(raw.pop("text_config_dict", None) or {})}
        vision = {**VISION_DEFAULTS, **(raw.get("vision_config") or {}), **(raw.pop("vision_config_dict", None) or {})}
        return cls(**{**CONFIG_DEFAULTS, **raw, "text_config": cls(**text), "vision_config": cls(**vision),
                      "_name_or_path": name_or_path})

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, ClipConfig) else v for k, v in vars(self).items()
                if k != "_name_or_path"}


class Attention(nn.Module):
    """Multi-head self-attention (CLIPAttention's layers and scale, through SDPA)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape  # (B, T, D)
        heads = lambda y: y.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                             attn_mask=mask, scale=(d // self.num_heads) ** -0.5)  # (B, H, T, D/H)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + fc2(act(fc1(ln2(x))))."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        if cfg.hidden_act not in ACTIVATIONS:
            raise ValueError(f"CLIP hidden_act {cfg.hidden_act!r} is not supported; known: {', '.join(ACTIVATIONS)}")
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.mlp.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp.fc2(self.act(self.mlp.fc1(self.layer_norm2(x))))


def _embedding(num: int, dim: int) -> nn.Embedding:
    """A table left uninitialised (loaded or drawn afterwards): nn.Embedding's own normal_ init on
    the meta device imports torch._dynamo, ~0.9 s of start-up."""
    return nn.Embedding(num, dim, _weight=torch.empty(num, dim))


def _tower(cfg: ClipConfig) -> nn.Module:
    """The modules both towers share, named as in CLIPModel (`embeddings`, `encoder.layers.N`)."""
    tower = nn.Module()
    tower.embeddings, tower.encoder = nn.Module(), nn.Module()
    tower.encoder.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
    return tower


class CLIP(nn.Module):
    """CLIP with CLIPModel's state_dict keys; `get_image_features` / `get_text_features` return the
    projected (not normalised) features as tensors."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        self.config = config
        t, v = config.text_config, config.vision_config
        self.text_model = _tower(t)
        self.text_model.embeddings.token_embedding = _embedding(t.vocab_size, t.hidden_size)
        self.text_model.embeddings.position_embedding = _embedding(t.max_position_embeddings, t.hidden_size)
        self.text_model.final_layer_norm = nn.LayerNorm(t.hidden_size, eps=t.layer_norm_eps)
        self.vision_model = _tower(v)
        emb = self.vision_model.embeddings
        emb.class_embedding = nn.Parameter(torch.empty(v.hidden_size))
        emb.patch_embedding = nn.Conv2d(v.num_channels, v.hidden_size, v.patch_size, v.patch_size, bias=False)
        emb.position_embedding = _embedding((v.image_size // v.patch_size) ** 2 + 1, v.hidden_size)
        self.vision_model.pre_layrnorm = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)  # sic, CLIPModel's name
        self.vision_model.post_layernorm = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)
        self.visual_projection = nn.Linear(v.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(t.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))

    @property
    def device(self) -> torch.device:
        return self.visual_projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.visual_projection.weight.dtype

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) preprocessed pixels -> (N, projection_dim): projected, layer-normed CLS token."""
        size = self.config.vision_config.image_size
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(f"CLIP takes {size}x{size} images, got {tuple(pixel_values.shape[-2:])}")
        vm = self.vision_model
        patches = vm.embeddings.patch_embedding(pixel_values.to(self.dtype)).flatten(2).transpose(1, 2)  # (N, P, D)
        cls = vm.embeddings.class_embedding.expand(patches.shape[0], 1, -1)
        x = vm.pre_layrnorm(torch.cat([cls, patches], 1) + vm.embeddings.position_embedding.weight)
        for layer in vm.encoder.layers:
            x = layer(x)
        return self.visual_projection(vm.post_layernorm(x[:, 0]))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(N, L) token ids (+ padding mask) -> (N, projection_dim): projected end-of-text token.

        Causal attention that never sees padding; the end-of-text token is the largest id when
        `eos_token_id` is the legacy 2 (as CLIPModel keeps it), else the first `eos_token_id`.
        """
        tm, length = self.text_model, input_ids.shape[-1]
        if length > (most := tm.embeddings.position_embedding.num_embeddings):
            raise ValueError(f"{length} text tokens; this CLIP takes at most {most}")
        x = tm.embeddings.token_embedding(input_ids) + tm.embeddings.position_embedding.weight[:length]  # (N, L, D)
        mask = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()  # (L, L): j sees k <= j
        if attention_mask is not None:  # a padding query sees itself: no row is all -inf (NaN), no real row changes
            eye = torch.eye(length, dtype=torch.bool, device=x.device)
            mask = mask & (attention_mask.bool()[:, None, None, :] | eye)  # (N, 1, L, L)
        for layer in tm.encoder.layers:
            x = layer(x, mask)
        x = tm.final_layer_norm(x)
        ids = input_ids.to(torch.int)
        eos_id = self.config.text_config.eos_token_id
        eos = ids.argmax(-1) if eos_id == 2 else (ids == eos_id).int().argmax(-1)
        return self.text_projection(x[torch.arange(x.shape[0], device=x.device), eos.to(x.device)])

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random weights with CLIPModel's `_init_weights` scales, each drawn once where it lives
        (only tests and benchmarks use random CLIPs)."""
        f, v = self.config.initializer_factor, self.config.vision_config
        for tower, cfg in ((self.text_model, self.config.text_config), (self.vision_model, v)):
            d, std_in = cfg.hidden_size, cfg.hidden_size ** -0.5 * (2 * cfg.num_hidden_layers) ** -0.5 * f
            std = {"q_proj": std_in, "k_proj": std_in, "v_proj": std_in, "out_proj": d ** -0.5 * f,
                   "fc1": (2 * d) ** -0.5 * f, "fc2": std_in}
            for name, m in tower.named_modules():
                if isinstance(m, nn.LayerNorm):
                    m.reset_parameters()
                elif isinstance(m, (nn.Linear, nn.Embedding, nn.Conv2d)):  # embeddings: initializer_range
                    nn.init.normal_(m.weight, std=std.get(name.rsplit(".", 1)[-1], cfg.initializer_range * f))
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
        nn.init.normal_(self.vision_model.embeddings.class_embedding, std=v.hidden_size ** -0.5 * f)
        nn.init.normal_(self.visual_projection.weight, std=v.hidden_size ** -0.5 * f)
        nn.init.normal_(self.text_projection.weight, std=self.config.text_config.hidden_size ** -0.5 * f)
        self.logit_scale.fill_(self.config.logit_scale_init_value)

    def load_clip_weights(self, state: dict[str, torch.Tensor], source: str, dtype: torch.dtype) -> None:
        """Take this CLIP's tensors from `state` as they are (no copy into freshly initialised ones:
        the module may be on the meta device); a missing key or a wrong shape names `source`."""
        ours = {k: v for k, v in self.state_dict().items() if k.split(".")[0] in
                ("text_model", "vision_model", "visual_projection", "text_projection", "logit_scale")}
        for key, param in ours.items():
            if key not in state:
                raise ValueError(f"{source}: no tensor {key}; is this a CLIPModel / TSPO-0.4B checkpoint?")
            if state[key].shape != param.shape:
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}, the config.json "
                                 f"architecture needs {tuple(param.shape)}")
        self.load_state_dict({k: state[k].to(dtype) for k in ours}, strict=False, assign=True)


def read_config(directory: Path, name_or_path: str = "") -> ClipConfig:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no config.json; give a CLIPModel / TSPO-0.4B directory")
    return ClipConfig.from_dict(json.loads(path.read_text()), name_or_path)


def read_weights(directory: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], str]:
    """({key: tensor} on `device`, the file name(s)) of a checkpoint directory, as transformers
    saves it: model.safetensors, shards + model.safetensors.index.json, or pytorch_model.bin.
    The `position_ids` buffers older versions saved are dropped (CLIPModel rebuilds them)."""
    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        files = [directory / "model.safetensors"]
    elif index.is_file():
        files = [directory / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    elif (directory / "pytorch_model.bin").is_file():
        state = torch.load(directory / "pytorch_model.bin", map_location=device, weights_only=True)
        return {k: v for k, v in state.items() if not k.endswith("position_ids")}, str(directory / "pytorch_model.bin")
    else:
        raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
    state = {}
    for file in files:
        state.update({k: v for k, v in read_safetensors(file, str(device)).items() if not k.endswith("position_ids")})
    return state, str(files[0]) if len(files) == 1 else f"{directory} ({len(files)} shards)"
