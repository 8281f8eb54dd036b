"""Video-LLM backbones behind one interface (`Backbone`), built by name with `load_backbone`."""
from .base import (
    BACKBONES,
    Backbone,
    PhaseTimer,
    VideoQuery,
    load_backbone,
    register_backbone,
)

__all__ = ["BACKBONES", "Backbone", "PhaseTimer", "VideoQuery", "load_backbone", "register_backbone"]
