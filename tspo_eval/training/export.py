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
from pathlib import Path

import torch

from ..agent import TemporalAgent, load_agent
from ..config import existing_path, torch_dtype
from .config import ExportConfig


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder means its newest `checkpoints/step-N`; anything else is used as given."""
    path = existing_path(path, "--checkpoint", "a train run folder, its checkpoints/step-N folder, or a "
                                               "published checkpoint")
    steps = sorted((path / "checkpoints").glob("step-[0-9]*[0-9]")) if path.is_dir() else []
    return steps[-1] if steps else path


def export_agent(agent: TemporalAgent, out: str | Path, dtype: torch.dtype = torch.bfloat16,
                 tau: float = 0.025) -> Path:
    """Save `agent` in `dtype`, temperature `tau`, in the released layout (the agent itself is untouched)."""
    agent.save_pretrained(out, dtype=dtype, tau=tau)
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
    return export_agent(agent, cfg.out, torch_dtype(cfg.dtype), cfg.tau)
