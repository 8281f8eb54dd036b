"""Export a trained head (+ its frozen CLIP) as a released-layout TSPO-0.4B directory.

The directory is what `TemporalAgent.from_pretrained` and the lmms-eval / VLMEvalKit
wrappers load: a CLIPConfig, safetensors with the CLIP keys and `selector.*` (bf16 by
default, as released), the CLIP tokenizer and image-processor files.  The head may come
from this package's checkpoints (`checkpoints/step-N/head.safetensors`, `selector.` keys),
a run's output folder (its newest checkpoint), or a published full training checkpoint
whose LLaVA model holds the head as `multiModal_align.` (any key prefix, sharded or not).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..agent import TemporalAgent, load_agent

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class ExportConfig:
    """Which head, which CLIP, where."""

    checkpoint: str = field(default="", metadata={
        "help": "run folder, checkpoints/step-N folder, or a published checkpoint (multiModal_align.* keys)"})
    out: str = field(default="TSPO-0.4B-export", metadata={"help": "output directory (released layout)"})
    clip: str | None = field(default=None, metadata={
        "help": "CLIP ViT-L/14 or TSPO-0.4B dir / hub id the head pairs with (default: the run's agent)"})
    dtype: Literal["bf16", "fp16", "fp32"] = field(default="bf16", metadata={"help": "weights dtype (released: bf16)"})
    tau: float = field(default=0.025, metadata={"help": "inference temperature written to the config"})

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its newest `checkpoints/step-N`; anything else is used as given."""
    path = Path(path)
    steps = sorted((path / "checkpoints").glob("step-[0-9]*[0-9]")) if path.is_dir() else []
    return steps[-1] if steps else path


def export_agent(agent: TemporalAgent, out: str | Path, dtype: torch.dtype = torch.bfloat16,
                 tau: float = 0.025) -> Path:
    """Save a copy of `agent` in `dtype` in the released layout (the agent itself is untouched)."""
    copy = TemporalAgent(agent.config)
    copy.load_state_dict(agent.state_dict())
    copy = copy.to(dtype)
    copy.tau, copy.tokenizer = tau, agent.tokenizer
    copy.save_pretrained(out)
    return Path(out)


def export_checkpoint(cfg: ExportConfig) -> Path:
    """Load the CLIP, put the checkpoint's head on it, write the released layout."""
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    clip = cfg.clip
    if clip is None:
        run_config = checkpoint / "config.json"
        if not run_config.is_file() or "agent" not in json.loads(run_config.read_text()):
            raise ValueError(f"{checkpoint} is not a tspo-eval checkpoint with a config.json: pass --clip "
                             "(the CLIP ViT-L/14 or TSPO-0.4B directory the head was trained on)")
        clip = json.loads(run_config.read_text())["agent"]
    agent = load_agent(clip, torch_dtype=torch.float32).load_head(checkpoint)
    return export_agent(agent, cfg.out, DTYPES[cfg.dtype], cfg.tau)
