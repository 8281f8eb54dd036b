"""One config dataclass per training command; each field's help is its CLI flag's help.

Defaults are the paper's (SPEC section 7): G = 8 rollouts, K = 16 frames, tau annealed
0.025 -> 0.01, AdamW lr 5e-4 with linear decay and no warmup, weight decay 0, one epoch,
rewards R_A + R_T.  Cross-field rules are checked when the config is built, before any
model is loaded.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .grpo import Objective


@dataclass
class TrainConfig:
    """TSPO training of the temporal agent's head against a frozen answerer."""

    data: str | None = field(default=None, metadata={"help": "training questions: TSPO-10K or Temporal-RLT jsonl"})
    video_root: str | None = field(default=None, metadata={"help": "folder the rows' `video` paths are relative to"})
    distractor_videos: str | None = field(default=None, metadata={
        "help": "text file of videos for needle distractors (default: the other training videos)"})
    agent: str = field(default="random:clip-tiny", metadata={
        "help": "starting agent: CLIP ViT-L/14 dir (fresh head), TSPO-0.4B dir, or random:<config>"})
    cache: str = field(default="feature_cache", metadata={"help": "feature cache root"})
    output_dir: str = field(default="runs/tspo", metadata={"help": "checkpoints, TensorBoard logs, metrics"})
    environment: Literal["synthetic", "backbone"] = field(default="backbone", metadata={
        "help": "answerer: a frozen video LLM, or the synthetic one (right iff a chosen frame shows the target)"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind"})
    backbone_path: str | None = field(default=None, metadata={"help": "backbone checkpoint dir or hub id"})
    answer_from: Literal["logits", "generate"] = field(default="logits", metadata={
        "help": "read the letter from the first-token logits (= greedy first token) or decode greedily"})
    max_new_tokens: int = field(default=16, metadata={"help": "tokens decoded with answer_from=generate"})
    answer_batch: int | None = field(default=None, metadata={"help": "rollouts per backbone call (default: all G)"})
    rollouts: int = field(default=8, metadata={"help": "G: rollouts per question"})
    k: int = field(default=16, metadata={"help": "K: frames per rollout"})
    k_general: int | None = field(default=None, metadata={
        "help": "K for non-needle questions (published code: 8; default: k)"})
    tau_start: float = field(default=0.025, metadata={"help": "temperature of S at step 0"})
    tau_end: float = field(default=0.01, metadata={"help": "temperature at the last step (linear anneal)"})
    objective: Objective = field(default="plackett-luce", metadata={
        "help": "plackett-luce: exact log-prob of the ordered draw; official: published per-frame surrogate"})
    clip_eps: float | None = field(default=None, metadata={"help": "PPO ratio clipping (None: off)"})
    updates_per_batch: int = field(default=1, metadata={"help": "optimiser steps on each batch of rollouts"})
    kl_coef: float = field(default=0.0, metadata={"help": "weight of the k3 KL to the frozen initial head"})
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "temporal_coverage": 1.0},
                                      metadata={"help": "reward name=weight (accuracy, format, temporal_coverage, "
                                                        "temporal_iou or registered)"})
    adv_eps: float = field(default=1e-4, metadata={"help": "added to the group std in the advantage"})
    lr: float = field(default=5e-4, metadata={"help": "AdamW learning rate, decayed linearly to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient clipping norm (None: off)"})
    grad_accum: int = field(default=2, metadata={"help": "questions per rank per optimiser step"})
    epochs: int = field(default=1, metadata={"help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    max_candidates: int = field(default=128, metadata={"help": "candidate cap per video (spread uniformly)"})
    min_candidates: int = field(default=50, metadata={"help": "fewer 1-fps candidates -> max_candidates uniformly"})
    distractors: int = field(default=12, metadata={"help": "distractor clips per needle question"})
    clip_len: int = field(default=50, metadata={"help": "frames per needle / distractor clip"})
    max_repeats: int = field(default=4, metadata={"help": "the target clip appears 1..max_repeats times"})
    prefetch: int = field(default=2, metadata={
        "help": "questions prepared ahead on threads (episode, and candidate pixels for a backbone answerer)"})
    save_every: int = field(default=500, metadata={"help": "checkpoint every N steps (and at the end)"})
    resume: bool = field(default=False, metadata={"help": "continue from the latest checkpoint in output_dir"})
    log_every: int = field(default=1, metadata={"help": "TensorBoard / metrics.jsonl every N steps"})
    seed: int = field(default=0, metadata={"help": "seed of data order, rollouts and needle clips"})
    device: str | None = field(default=None, metadata={"help": "cuda:N / cpu (default: this rank's GPU, else CPU)"})

    def __post_init__(self) -> None:
        from .rewards import get_rewards

        get_rewards(list(self.rewards))
        if self.objective not in ("plackett-luce", "official"):
            raise ValueError(f"objective must be plackett-luce or official, got {self.objective!r}")
        if self.environment not in ("synthetic", "backbone"):
            raise ValueError(f"environment must be synthetic or backbone, got {self.environment!r}")
        if min(self.rollouts, self.k, self.grad_accum, self.epochs, self.updates_per_batch, self.save_every) < 1:
            raise ValueError("rollouts, k, grad_accum, epochs, updates_per_batch and save_every must be >= 1")
        if self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (0: prepare each question when it is due), got {self.prefetch}")
        if self.rollouts < 2:
            raise ValueError("GRPO needs at least 2 rollouts per question (group-normalised advantages)")
        if not 0 < self.tau_end <= self.tau_start:
            raise ValueError(f"need 0 < tau_end <= tau_start, got {self.tau_start} -> {self.tau_end}")
        if self.objective == "official" and (self.clip_eps is not None or self.updates_per_batch != 1):
            raise ValueError("objective=official reproduces the published loss: no clipping, one update per batch")
        if self.clip_eps is not None and not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.environment == "backbone" and self.backbone_path is None:
            raise ValueError("environment=backbone needs --backbone-path (or use --environment synthetic)")

    @property
    def k_for_general(self) -> int:
        return self.k_general or self.k

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Field values from a YAML or JSON file (a saved run's config.json works too)."""
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise TypeError(f"{path}: expected a mapping of config fields")
    return values
