"""Video-LLM backbones behind one interface (`Backbone`), built by name with `load_backbone`."""
from .base import Backbone, PhaseTimer, VideoQuery
from .registry import BACKBONES, backbone_loader, load_backbone, register_backbone

__all__ = ["BACKBONES", "Backbone", "PhaseTimer", "VideoQuery", "backbone_loader", "load_backbone",
           "register_backbone"]
