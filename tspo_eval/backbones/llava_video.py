"""LLaVA-Video-7B-Qwen2 in plain transformers + torch, reproducing the original LLaVA-NeXT inference.

Per frame: squash to the tower's size (bicubic, no crop), /255, mean = std = 0.5 -> SigLIP,
the raw output of its last *stored* layer (the checkpoint keeps 26 of so400m's 27 layers; no
post-layernorm, no pooling head) -> projector (`mlp2x_gelu`) -> 2D pooling of the 27 x 27
patch grid (`mm_spatial_pool_mode` / `mm_spatial_pool_stride`).  Per video: the learned
`image_newline` placed per `mm_newline_position` ("grid": after every pooled row, 14 x 15 =
210 tokens per frame).  The visual sequence replaces "<image>" in the conversation template
and a Qwen2 LM answers greedily.

transformers' LlavaOnevision pools and places newlines differently for videos, so the model is
assembled here from transformers' `Qwen2ForCausalLM` and SigLIP modules under the original key
names (`model.vision_tower.vision_tower.vision_model.*`, `model.mm_projector.{0,2}.*`,
`model.image_newline`, `model.layers.*`, `model.embed_tokens`, `model.norm`, `lm_head`), so the
released checkpoint loads strictly and `save_pretrained` writes the same layout back.

Reference: LLaVA-NeXT `llava/model/llava_arch.py` (`get_2dPool`, `add_token_per_grid`,
`add_token_per_frame`, `prepare_inputs_labels_for_multimodal`), `multimodal_encoder/
siglip_encoder.py`, `conversation.py`, `mm_utils.tokenizer_image_token`.  Where the published
video path calls `get_2dPool` with its default stride 2 rather than the config's, this module
follows `mm_spatial_pool_stride` (the same for every released LLaVA-Video checkpoint: 2).
`mm_vision_select_layer` / `mm_vision_select_feature` are ignored, as the reference's SigLIP
tower ignores them (it always drops the last layer and keeps every patch).
"""
from __future__ import annotations

import itertools
import json
import math
import re
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from ..config import CheckpointError, safetensors_file
from ..distributed import device_for
from ..encoders import as_uint8_batch
from .base import (
    Backbone,
    VideoQuery,
    default_attention,
    resolve_dtype,
    without_cudnn_attention,
)
from .llava_layout import (
    VisualLayout,
    place_newlines,
    pool_frames,
    preprocess_frames,
)

if TYPE_CHECKING:
    from transformers import Qwen2ForCausalLM, SiglipVisionConfig

ConvTemplate = Literal["qwen_1_5", "chatml_direct"]

IMAGE_PLACEHOLDER = "<image>"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# LLaVA-NeXT's conv_qwen (SeparatorStyle.CHATML: "\n" after every <|im_end|>) and
# conv_chatml_direct (SeparatorStyle.MPT: nothing after <|im_end|>), for one user turn;
# {user} is "<image>\n" + the prompt.
CONV_TEMPLATES: dict[str, str] = {
    "qwen_1_5": ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"),
    "chatml_direct": ("<|im_start|>system\nAnswer the questions.<|im_end|>"
                      "<|im_start|>user\n{user}<|im_end|><|im_start|>assistant\n"),
}

# Towers whose (published, full-depth) config is built in, so loading needs no second download.
KNOWN_TOWERS: dict[str, dict[str, Any]] = {
    "google/siglip-so400m-patch14-384": {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
        "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
        "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3,
    },
}


# --------------------------------------------------------------------------- network


class SigLipVisionTower(nn.Module):
    """The original `model.vision_tower`: transformers' SigLIP modules under `vision_tower.vision_model`.

    Returns the raw output of the last stored encoder layer (what the reference takes as
    `hidden_states[-1]` after deleting the published tower's last layer and head).
    """

    def __init__(self, config: SiglipVisionConfig) -> None:
        super().__init__()
        from transformers import SiglipVisionModel

        model = SiglipVisionModel(config)
        vision_model = getattr(model, "vision_model", model)  # transformers 4.x nests, 5.x does not
        if hasattr(vision_model, "head"):  # versions without `vision_use_head`
            del vision_model.head
        self.vision_tower = nn.Module()
        self.vision_tower.vision_model = vision_model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, grid * grid, C)
        vision_model = self.vision_tower.vision_model
        return vision_model.encoder(inputs_embeds=vision_model.embeddings(pixels))[0]


@contextmanager
def _meta_parameters() -> Iterator[None]:
    """Create parameters on the meta device (no memory, no init) while buffers stay real."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=False)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def _tower_config(full: dict[str, Any], attn_implementation: str) -> SiglipVisionConfig:
    """The stored tower: the published config minus its last layer and pooling head."""
    from transformers import SiglipVisionConfig

    fields = {k: v for k, v in full.items() if k not in ("model_type", "architectures", "transformers_version")}
    fields["num_hidden_layers"] = int(full["num_hidden_layers"]) - 1
    return SiglipVisionConfig(**fields, vision_use_head=False, attn_implementation=attn_implementation)


def _build_net(config: dict[str, Any], tower: dict[str, Any], layout: VisualLayout,
               attn_implementation: str) -> Qwen2ForCausalLM:
    """Qwen2ForCausalLM with the LLaVA modules attached under their original names; parameters on meta."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if config.get("tie_word_embeddings"):
        raise ValueError("tie_word_embeddings=True is not supported (LLaVA-Video checkpoints store lm_head)")
    match = re.fullmatch(r"mlp(\d+)x_gelu", str(config.get("mm_projector_type", "linear")))
    if match is None:
        raise ValueError(f"mm_projector_type {config.get('mm_projector_type')!r}: only mlpNx_gelu is supported")
    if int(config["mm_hidden_size"]) != int(tower["hidden_size"]):
        raise ValueError(f"mm_hidden_size {config['mm_hidden_size']} != vision tower width {tower['hidden_size']}")
    lm_fields = {k: v for k, v in config.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
    lm_config = Qwen2Config(**lm_fields, attn_implementation=attn_implementation)
    hidden = lm_config.hidden_size
    with _meta_parameters():
        net = Qwen2ForCausalLM(lm_config)
        net.model.vision_tower = SigLipVisionTower(_tower_config(tower, attn_implementation))
        layers: list[nn.Module] = [nn.Linear(int(config["mm_hidden_size"]), hidden)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(hidden, hidden)]
        net.model.mm_projector = nn.Sequential(*layers)
        if layout.has_newline:
            net.model.image_newline = nn.Parameter(torch.empty(hidden))
    return net.eval()


def _set_tensor(net: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, attr = name.rpartition(".")
    module = net.get_submodule(module_name)
    if attr in module._parameters:
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    else:
        module._buffers[attr] = tensor


def _randomize(net: nn.Module, seed: int, device: torch.device, dtype: torch.dtype) -> None:
    """Deterministic random weights: norms 1 / 0, matrices N(0, 1 / fan_in), other vectors N(0, 0.02)."""
    generator = None if device.type == "meta" else torch.Generator(device).manual_seed(seed)
    for module_name, module in net.named_modules():
        is_norm = isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")
        for attr, param in list(module._parameters.items()):
            if param is None:
                continue
            tensor = torch.empty(param.shape, device=device, dtype=dtype)
            if generator is None:
                pass
            elif is_norm:
                tensor.fill_(1.0 if attr == "weight" else 0.0)
            else:
                std = math.prod(param.shape[1:]) ** -0.5 if param.ndim >= 2 else 0.02
                tensor.normal_(0.0, std, generator=generator)
            module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    net.to(device)


def _safetensors_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        return [directory / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no model.safetensors(.index.json); not a safetensors checkpoint")
    return files


def _load_weights(net: nn.Module, directory: Path, device: torch.device, dtype: torch.dtype) -> None:
    """Strictly load the original-layout safetensors (sharded or not) straight onto `device`."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    files = _safetensors_files(directory)
    where = "cpu" if device.type == "cpu" else f"{device.type}:{device.index or 0}"
    found: dict[str, Path] = {}
    for path in files:
        with safetensors_file(path, where) as fh:
            found.update((key, path) for key in fh.keys())  # noqa: SIM118 (safe_open is no dict)
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: tensors do not match the LLaVA-Video layout its config.json describes; "
            f"missing ({len(missing)}): {missing[:20]}; unexpected ({len(unexpected)}): {unexpected[:20]}")
    for path in files:
        with safetensors_file(path, where) as fh:
            for key in fh.keys():  # noqa: SIM118
                tensor = fh.get_tensor(key)
                if tuple(tensor.shape) != expected[key]:
                    raise CheckpointError(f"{path}: {key} has shape {tuple(tensor.shape)}, "
                                          f"the config implies {expected[key]}")
                _set_tensor(net, key, tensor.to(dtype))
    net.to(device)


def _save_weights(state: dict[str, torch.Tensor], directory: Path, max_shard_bytes: int) -> None:
    """model.safetensors, or model-0000i-of-0000n.safetensors + index when larger than one shard."""
    from safetensors.torch import save_file

    shards: list[list[str]] = [[]]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    for name, keys in zip(names, shards):
        save_file({k: state[k].detach().cpu().contiguous() for k in keys}, str(directory / name),
                  metadata={"format": "pt"})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        weight_map = {k: name for name, keys in zip(names, shards) for k in keys}
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def siglip_tower_config(name: str, base_dir: str | Path | None = None) -> dict[str, Any]:
    """The published (full-depth) config of vision tower `name`, as a SiglipVisionConfig dict.

    Built in for the known towers; otherwise read from `base_dir / name / config.json`,
    `name / config.json`, or the hub cache (which works offline once cached).  A SiglipConfig
    (model_type "siglip") contributes its vision_config.
    """
    if name in KNOWN_TOWERS:
        return dict(KNOWN_TOWERS[name])
    candidates = ([Path(base_dir) / name] if base_dir is not None else []) + [Path(name)]
    path = next((c / "config.json" for c in candidates if (c / "config.json").is_file()), None)
    if path is None:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(name, "config.json"))
        except Exception as exc:
            raise FileNotFoundError(
                f"vision tower {name!r}: not built in ({', '.join(KNOWN_TOWERS)}), no config.json in "
                f"{[str(c) for c in candidates]}, and not in the hub cache: {exc}") from exc
    raw = json.loads(path.read_text())
    if raw.get("model_type") == "siglip":
        raw = dict(raw["vision_config"], model_type="siglip_vision_model")
    if raw.get("model_type") != "siglip_vision_model":
        raise ValueError(f"{path}: vision tower of type {raw.get('model_type')!r}; only SigLIP towers are supported")
    return raw


# --------------------------------------------------------------------------- backbone


class LlavaVideo(Backbone):
    """LLaVA-Video (LLaVA-NeXT video path + Qwen2) answering `VideoQuery`s greedily, batched.

    `config` is the original LLaVA config.json (saved back unchanged); `tower` the published
    tower config.  Per-frame pooled features are cached (LRU, `vision_cache_frames` frames)
    under (query.video, frame number) when a query carries both.  Timestamps are not used:
    LLaVA-Video has no time encoding (put a time instruction in the prompt if wanted).

    At batch 1, `generate` keeps the last prompt's KV cache: a prompt that starts with the same
    embeddings (same template and frames; questions on one video under uniform sampling, or
    short videos whose candidates are all chosen) prefills only what follows the shared part.
    Reuse needs the shared part to be at least half the prompt: the rest then runs as a
    masked attention over the cache, which costs more per token than a fresh causal prefill
    (H200: `benchmarks/kernels_h200.json`).  That masked part keeps off cuDNN attention, which
    builds an execution plan for every new masked shape (0.6-1 s each on the H200, and each
    question's remainder has its own length) where flash / memory-efficient need none.
    `compile_vision` runs the SigLIP tower through `torch.compile` (about 20% faster on an H200
    after a ~45 s first call).
    """

    name = "llava_video"
    vision_modules = ("model.vision_tower", "model.mm_projector")  # frozen in LLM training

    def __init__(self, net: Qwen2ForCausalLM, tokenizer: Any, config: dict[str, Any], tower: dict[str, Any], *,
                 conv_template: ConvTemplate = "qwen_1_5", vision_cache_frames: int = 256,
                 vision_batch_size: int = 64, prefix_reuse: bool = True, compile_vision: bool = False) -> None:
        super().__init__()
        if conv_template not in CONV_TEMPLATES:
            raise ValueError(f"conv_template {conv_template!r}: expected one of {sorted(CONV_TEMPLATES)}")
        self.net = net.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.tower = tower
        self.conv_template = conv_template
        param = next(net.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.image_size = int(tower["image_size"])
        self.layout = VisualLayout.from_config(config, self.image_size // int(tower["patch_size"]))
        eos = config.get("eos_token_id")
        self.eos_token_ids = {eos} if isinstance(eos, int) else set(eos or ())
        if tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(tokenizer.eos_token_id)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_token_ids, default=0)
        self.max_length: int | None = config.get("tokenizer_model_max_length")
        self.vision_cache_frames = vision_cache_frames
        self.vision_batch_size = vision_batch_size
        self._vision_cache: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.prefix_reuse = prefix_reuse
        self._kept: tuple[torch.Tensor, Any] | None = None  # (last prompt's embeddings, its KV cache)
        tower_module = net.model.vision_tower
        self._tower = torch.compile(tower_module, dynamic=True) if compile_vision else tower_module

    # ---- geometry and prompt

    @property
    def tokens_per_frame(self) -> int:
        """Visual tokens each extra frame adds (210 for LLaVA-Video-7B)."""
        return self.layout.token_count(2) - self.layout.token_count(1)

    def visual_token_count(self, num_frames: int) -> int:
        """Visual tokens for `num_frames` frames (13,440 for 64 frames of LLaVA-Video-7B)."""
        return self.layout.token_count(num_frames)

    def prompt_text(self, prompt: str) -> str:
        """The templated conversation, with "<image>" where the visual sequence goes."""
        if IMAGE_PLACEHOLDER in prompt:
            raise ValueError(f"the prompt must not contain {IMAGE_PLACEHOLDER!r}; the video is placed before it")
        return CONV_TEMPLATES[self.conv_template].format(user=f"{IMAGE_PLACEHOLDER}\n{prompt}")

    # ---- vision

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) preprocessed frames -> (N, side * side, D): tower, projector, 2D pooling.

        The tower keeps off cuDNN attention: the number of new frames changes from call to call,
        and cuDNN would build a plan for each count (`base.without_cudnn_attention`)."""
        with without_cudnn_attention():
            features = self._tower(pixels.to(self.device, self.dtype))
        return pool_frames(self.net.model.mm_projector(features), self.layout)

    @torch.no_grad()
    def frame_features(self, queries: Sequence[VideoQuery]) -> list[torch.Tensor]:
        """Per query (F, side * side, D) pooled features; cached frames and in-batch repeats computed once."""
        keys = [self._frame_keys(q) for q in queries]
        out: list[list[torch.Tensor | None]] = [[None] * len(k) for k in keys]
        todo: list[tuple[int, int]] = []
        first: dict[Hashable, int] = {}
        repeats: list[tuple[int, int, int]] = []
        for qi, query_keys in enumerate(keys):
            for fi, key in enumerate(query_keys):
                if key is not None and key in self._vision_cache:
                    self._vision_cache.move_to_end(key)
                    out[qi][fi] = self._vision_cache[key]
                elif key is not None and key in first:
                    repeats.append((qi, fi, first[key]))
                else:
                    if key is not None:
                        first[key] = len(todo)
                    todo.append((qi, fi))
        if todo:
            with self.timings("vision"):
                computed = self._encode_frames(queries, todo)
            for j, (qi, fi) in enumerate(todo):
                out[qi][fi] = computed[j]
            for qi, fi, j in repeats:
                out[qi][fi] = computed[j]
            for key, j in first.items():
                self._remember(key, computed[j])
        return [torch.stack(frames) for frames in out]  # type: ignore[arg-type]

    def clear_vision_cache(self) -> None:
        """Forget every cached frame and the kept prompt cache (e.g. after changing weights)."""
        self._vision_cache.clear()
        self._kept = None

    def _frame_keys(self, query: VideoQuery) -> list[Hashable | None]:
        count = len(query.frames)
        if count == 0:
            raise ValueError("a query needs at least one frame")
        if query.video is None or query.frame_numbers is None:
            return [None] * count
        if len(query.frame_numbers) != count:
            raise ValueError(f"{len(query.frame_numbers)} frame_numbers for {count} frames")
        return [(query.video, int(n)) for n in query.frame_numbers]

    def _encode_frames(self, queries: Sequence[VideoQuery], todo: list[tuple[int, int]]) -> torch.Tensor:
        """Encode the (query, frame) pairs in `todo` (grouped by query): one upload and resize per
        query, then the tower on `vision_batch_size` frames at a time."""
        pixels = torch.cat([
            preprocess_frames(as_uint8_batch(queries[qi].frames)[[fi for _, fi in group]], self.image_size,
                              self.device)
            for qi, group in itertools.groupby(todo, key=lambda pair: pair[0])])
        return torch.cat([self.encode_pixels(pixels[start:start + self.vision_batch_size])
                          for start in range(0, len(pixels), self.vision_batch_size)])

    def _remember(self, key: Hashable, features: torch.Tensor) -> None:
        if self.vision_cache_frames <= 0:
            return
        self._vision_cache[key] = features.clone()
        while len(self._vision_cache) > self.vision_cache_frames:
            self._vision_cache.popitem(last=False)

    # ---- language model

    @torch.no_grad()
    def build_inputs(self, queries: Sequence[VideoQuery]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded (B, L, H) input embeddings, (B, L) attention mask and (B, L) position ids.

        Each sequence is the template's text before "<image>", the visual sequence, then the
        text after, the text chunks tokenized separately as `tokenizer_image_token` does, and
        cut to `tokenizer_model_max_length` as the reference does.
        """
        features = self.frame_features(queries)
        embed = self.net.get_input_embeddings()
        newline = getattr(self.net.model, "image_newline", None)
        sequences = []
        for query, frames in zip(queries, features):
            before, after = self.prompt_text(query.prompt).split(IMAGE_PLACEHOLDER)
            before_ids, after_ids = self.tokenizer(before).input_ids, self.tokenizer(after).input_ids
            text = embed(torch.tensor(before_ids + after_ids, device=self.device))
            sequence = torch.cat([text[:len(before_ids)], place_newlines(frames, newline, self.layout),
                                  text[len(before_ids):]])
            if self.max_length is not None and len(sequence) > self.max_length:
                warnings.warn(f"input of {len(sequence)} tokens cut to tokenizer_model_max_length={self.max_length}",
                              stacklevel=2)
                sequence = sequence[:self.max_length]
            sequences.append(sequence)
        length = max(len(s) for s in sequences)
        embeds = sequences[0].new_zeros(len(sequences), length, sequences[0].shape[-1])
        mask = torch.zeros(len(sequences), length, dtype=torch.long, device=self.device)
        for i, sequence in enumerate(sequences):
            embeds[i, length - len(sequence):] = sequence
            mask[i, length - len(sequence):] = 1
        return embeds, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _step(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any = None,
              use_cache: bool = True) -> tuple[torch.Tensor, Any]:
        out = self.net.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=use_cache)
        return self.net.lm_head(out.last_hidden_state[:, -1]).float(), out.past_key_values

    @torch.no_grad()
    def next_token_logits(self, queries: Sequence[VideoQuery]) -> torch.Tensor:
        embeds, mask, positions = self.build_inputs(queries)
        with self.timings("prefill"):
            logits, _ = self._step(embeds, mask, positions, use_cache=False)
        return logits

    def _shared_prefix(self, embeds: torch.Tensor) -> int:
        """Leading positions of `embeds` (1, L, H) equal to the kept prompt's, if reusable, else 0."""
        if not self.prefix_reuse or self._kept is None or embeds.shape[0] != 1:
            return 0
        kept = self._kept[0]
        n = min(kept.shape[0], embeds.shape[1] - 1)  # at least one token left to run
        same = (kept[:n] == embeds[0, :n]).all(-1)
        shared = n if bool(same.all()) else int(same.int().argmin())
        return shared if 2 * shared >= embeds.shape[1] else 0

    def _prefill(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor
                 ) -> tuple[torch.Tensor, Any]:
        """The prompt's forward; at batch 1 from the kept cache of a shared prefix, and kept."""
        shared = self._shared_prefix(embeds)
        self.timings.counts["prompt_tokens"] += int(mask.sum())
        if shared:
            cache = self._kept[1]
            cache.crop(shared - cache.get_seq_length())  # negative = tokens to drop (transformers 4.5x and 5.x)
            self.timings.counts["prefix_tokens_reused"] += shared
            with without_cudnn_attention():  # a remainder length is rarely seen twice
                logits, cache = self._step(embeds[:, shared:], mask, positions[:, shared:], cache)
        else:
            self._kept = None  # free the old cache before building a new one
            logits, cache = self._step(embeds, mask, positions)
        if self.prefix_reuse and embeds.shape[0] == 1:
            self._kept = (embeds[0], cache)
        return logits, cache

    @torch.no_grad()
    def generate_ids(self, queries: Sequence[VideoQuery], max_new_tokens: int = 16) -> list[list[int]]:
        """Greedy answer token ids per query, EOS excluded (equal to HF `generate` greedy).

        Own loop with a KV cache, so that prefill (the prompt's forward) and decode_tokens
        (every later token) are timed apart.
        """
        embeds, mask, positions = self.build_inputs(queries)
        with self.timings("prefill"):
            logits, cache = self._prefill(embeds, mask, positions)
        eos = torch.tensor(sorted(self.eos_token_ids), device=self.device)
        done = torch.zeros(len(queries), dtype=torch.bool, device=self.device)
        next_positions = positions[:, -1:] + 1
        steps = []
        with self.timings("decode_tokens"), without_cudnn_attention():
            for step in range(max_new_tokens):
                token = logits.argmax(-1).masked_fill(done, self.pad_token_id)
                steps.append(token)
                done |= torch.isin(token, eos)
                if step == max_new_tokens - 1 or bool(done.all()):
                    break
                mask = torch.cat([mask, mask.new_ones(len(queries), 1)], dim=1)
                logits, cache = self._step(self.net.get_input_embeddings()(token[:, None]), mask,
                                           next_positions, cache)
                next_positions = next_positions + 1
        answers = []
        for row in torch.stack(steps, dim=1).tolist() if steps else [[] for _ in queries]:
            cut = next((i for i, t in enumerate(row) if t in self.eos_token_ids), len(row))
            answers.append(row[:cut])
        return answers

    def generate(self, queries: Sequence[VideoQuery], max_new_tokens: int = 16) -> list[str]:
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                for ids in self.generate_ids(queries, max_new_tokens)]

    # ---- checkpoint

    def save_pretrained(self, directory: str | Path, max_shard_bytes: int = 5 * 2**30) -> Path:
        """Write the original layout (config.json, safetensors, tokenizer) that `from_pretrained` reads.

        A tower without a built-in config gets its config written to `vision_tower/config.json`,
        and `mm_vision_tower` points there.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("model*.safetensors*"):  # an older save's shards or index
            stale.unlink()
        config = dict(self.config)
        if config["mm_vision_tower"] not in KNOWN_TOWERS:
            (directory / "vision_tower").mkdir(exist_ok=True)
            (directory / "vision_tower" / "config.json").write_text(json.dumps(self.tower, indent=2))
            config["mm_vision_tower"] = "vision_tower"
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        _save_weights(self.net.state_dict(), directory, max_shard_bytes)
        self.tokenizer.save_pretrained(str(directory))
        return directory


def _checkpoint_dir(path_or_hub_id: str | Path) -> Path:
    if Path(path_or_hub_id).is_dir():
        return Path(path_or_hub_id)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_hub_id), allow_patterns=["*.json", "*.safetensors", "*.txt"]))


def from_pretrained(path_or_hub_id: str | Path, *, dtype: str | torch.dtype = "bfloat16",
                    device: str | torch.device | None = None, attn_implementation: str | None = None,
                    **options: Any) -> LlavaVideo:
    """Load an original-layout LLaVA-Video checkpoint (local directory, or hub id via the hub cache).

    `options` go to `LlavaVideo` (conv_template, vision_cache_frames, prefix_reuse, compile_vision).
    Example: `from_pretrained("lmms-lab/LLaVA-Video-7B-Qwen2", conv_template="chatml_direct")`
    (TSPO's published LLaVA-Video evaluation uses chatml_direct).
    """
    from transformers import AutoTokenizer

    directory = _checkpoint_dir(path_or_hub_id)
    config = json.loads((directory / "config.json").read_text())
    if "mm_vision_tower" not in config:
        raise ValueError(f"{directory}/config.json has no mm_vision_tower: not a LLaVA checkpoint")
    device, dtype = device_for(device), resolve_dtype(dtype)
    tower = siglip_tower_config(config["mm_vision_tower"], directory)
    layout = VisualLayout.from_config(config, int(tower["image_size"]) // int(tower["patch_size"]))
    net = _build_net(config, tower, layout, default_attention(attn_implementation, device, dtype))
    _load_weights(net, directory, device, dtype)
    return LlavaVideo(net, AutoTokenizer.from_pretrained(str(directory)), config, tower, **options)


def random_llava_video(size: Literal["tiny", "7b"] = "tiny", seed: int = 0, dtype: str | torch.dtype | None = None,
                       device: str | torch.device | None = None, *, attn_implementation: str | None = None,
                       **options: Any) -> LlavaVideo:
    """The real architecture with random weights, from `configs/llava-video-{size}.json`.

    "tiny" (float32 by default) for tests; "7b" (bfloat16 by default) has LLaVA-Video-7B-Qwen2's
    full dimensions for GPU timing (device "meta" builds it without memory).  The tokenizer is
    `tiny_qwen_tokenizer()`.
    """
    from .tokenizers import tiny_qwen_tokenizer

    if size not in ("tiny", "7b"):
        raise ValueError(f"size {size!r}: expected 'tiny' or '7b'")
    preset = json.loads((CONFIG_DIR / f"llava-video-{size}.json").read_text())
    config = preset["config"]
    tower = preset.get("vision_tower") or siglip_tower_config(config["mm_vision_tower"])
    device = device_for(device)
    dtype = resolve_dtype(dtype if dtype is not None else ("float32" if size == "tiny" else "bfloat16"))
    layout = VisualLayout.from_config(config, int(tower["image_size"]) // int(tower["patch_size"]))
    net = _build_net(config, tower, layout, default_attention(attn_implementation, device, dtype))
    _randomize(net, seed, device, dtype)
    tokenizer = tiny_qwen_tokenizer()
    if len(tokenizer) > int(config["vocab_size"]):
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens, the model {config['vocab_size']}")
    return LlavaVideo(net, tokenizer, config, tower, **options)

