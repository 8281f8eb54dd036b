"""tspo-eval: temporal sampling (TSPO) for long-video LLMs, evaluated and trained.

The pipeline, one module per stage: `video` (candidate frames) -> `encoders` / `agent`
(features, scores) -> `cache` (per-video features) -> `selection` (K frames) ->
`backbones` -> `answering` -> benchmarks, CLI and framework adapters. Which frames a
question gets is decided by one `FramePolicy` (`policy`) and answered by one function,
`question_frames` (`selection.stage`), whatever the entry point.

Public names are imported lazily, so that `import tspo_eval.<anything>` (e.g. the
lmms-eval entry point) stays cheap.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {"TemporalAgent": ".agent", "select": ".selection.methods", "FramePolicy": ".policy", "parse_policy": ".policy",
           "question_frames": ".selection.stage", "FramePlanner": ".selection.stage"}
__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name], __name__), name)
    raise AttributeError(f"module 'tspo_eval' has no attribute {name!r}")
