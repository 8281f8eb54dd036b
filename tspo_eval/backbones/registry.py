"""Backbones by name: `load_backbone("qwen2_5_vl", path)`.

The registry maps a name to its loader, `fn(path_or_hub_id, **options) -> Backbone`, or to
the loader's "module:attr" path, imported only when that backbone is built: naming a
backbone costs no import, and the backbone modules (which import `base`) are never imported
by it, so the package has no import cycle.  Third parties add theirs with `register_backbone`.
"""
from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ..config import model_location

if TYPE_CHECKING:
    from .base import Backbone

Loader = Callable[..., "Backbone"]

BACKBONES: dict[str, Loader | str] = {
    "llava_video": "tspo_eval.backbones.llava_video:from_pretrained",
    "qwen2_5_vl": "tspo_eval.backbones.qwen_vl:from_pretrained",
}
BACKBONE_VALUES = ("a checkpoint directory or a hub id (lmms-lab/LLaVA-Video-7B-Qwen2, "
                   "Qwen/Qwen2.5-VL-7B-Instruct)")


def register_backbone(name: str, loader: Loader | str) -> None:
    """Register `loader` (a callable or its "module:attr" path) under `name`."""
    BACKBONES[name] = loader


def backbone_loader(kind: str) -> Loader:
    """The loader registered under `kind` (its module imported now); an unknown name lists the known ones."""
    if kind not in BACKBONES:
        raise ValueError(f"unknown backbone {kind!r}; known: {', '.join(sorted(BACKBONES))}")
    loader = BACKBONES[kind]
    if isinstance(loader, str):
        module, _, attr = loader.partition(":")
        loader = getattr(import_module(module), attr)
    return loader


def load_backbone(kind: str, path_or_hub_id: str, **options: Any) -> Backbone:
    """Build a registered backbone (`llava_video`, `qwen2_5_vl`) from a local dir or hub id."""
    loader = backbone_loader(kind)
    model_location(str(path_or_hub_id), f"{kind} checkpoint", BACKBONE_VALUES)
    return loader(path_or_hub_id, **options)
