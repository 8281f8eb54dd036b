"""tspo-eval: temporal sampling (TSPO) for long-video LLMs, evaluated and trained.

The pipeline, one module per stage: `video` (candidate frames) -> `encoders` / `agent`
(features, scores) -> `cache` (per-video features) -> `selection` (K frames) ->
benchmarks and CLI.
"""
from .agent import TemporalAgent
from .selection import select

__all__ = ["TemporalAgent", "select"]
