"""One config dataclass per training command; each field's help is its CLI flag's help.

No torch here: `tspo-eval <command> --help` builds its parser from these alone.

Defaults are the paper's (SPEC section 7): G = 8 rollouts, K = 16 frames, tau annealed
0.025 -> 0.01, AdamW lr 5e-4 with linear decay and no warmup, weight decay 0, one epoch,
rewards R_A + R_T.  Cross-field rules are checked when the config is built, before any
model is loaded.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import DTYPE_NAMES, former_spellings
from ..policy import ExtractConfig, Sampling

# The policy's own help for the one candidate-sampling setting training leaves free (fps is 1 and
# the cap is max_candidates, the published training rule); extraction knobs: `extract`.
_DECODE_RESIZE = {"help": next(f for f in dataclasses.fields(Sampling) if f.name == "decode_resize").metadata["help"]}
_EXTRACT = {"help": "extraction speed knobs (--readers, --backend, ...: flags as for `tspo-eval extract`; "
                    "in a --config file a mapping under `extract`)"}

Objective = Literal["plackett-luce", "official"]


@former_spellings
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
    decode_resize: bool = field(default=False, metadata=_DECODE_RESIZE)
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata=_EXTRACT)
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
    prefetch_episodes: int = field(default=2, metadata={
        "help": "questions prepared ahead on threads (episode, and candidate pixels for a backbone answerer)",
        "renamed_from": "prefetch"})
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
        if self.prefetch_episodes < 0:
            raise ValueError("prefetch_episodes must be >= 0 (0: prepare each question when it is due), "
                             f"got {self.prefetch_episodes}")
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


@dataclass
class LLMTrainConfig:
    """GRPO of the video LLM on fixed frames."""

    data: str = field(default="", metadata={"help": "training questions (TSPO-10K / Temporal-RLT jsonl)"})
    video_root: str | None = field(default=None, metadata={"help": "folder the rows' `video` paths are relative to"})
    output_dir: str = field(default="runs/llm", metadata={"help": "checkpoints, metrics"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind (needs build_inputs)"})
    backbone_path: str = field(default="", metadata={"help": "backbone checkpoint dir or hub id"})
    finetune: Literal["lora", "full"] = field(default="lora", metadata={"help": "LoRA adapters (peft) or all LM weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    frames: Literal["uniform", "agent"] = field(default="uniform", metadata={
        "help": "uniform: linspace over all frames (lmms-eval); agent: the agent's top-k"})
    agent: str = field(default="random:clip-tiny", metadata={"help": "agent for frames=agent"})
    cache: str = field(default="feature_cache", metadata={"help": "feature cache root (frames=agent)"})
    decode_resize: bool = field(default=False, metadata=_DECODE_RESIZE)
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata=_EXTRACT)
    k: int = field(default=16, metadata={"help": "frames per question"})
    think: bool = field(default=False, metadata={"help": "append the <think>/<answer> instruction to prompts"})
    rollouts: int = field(default=8, metadata={"help": "G: sampled answers per question"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=256, metadata={"help": "answer length cap"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO ratio clipping"})
    kl_coef: float = field(default=1e-2, metadata={"help": "k3 KL to the reference policy"})
    entropy_coef: float = field(default=1e-3, metadata={"help": "entropy bonus"})
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.5, "temporal_iou": 0.5, "format": 0.5},
                                      metadata={"help": "reward name=weight"})
    adv_eps: float = field(default=1e-4, metadata={"help": "added to the group std"})
    lr: float = field(default=1e-6, metadata={"help": "AdamW learning rate, decayed linearly to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    grad_accum: int = field(default=1, metadata={"help": "questions per rank per optimiser step"})
    epochs: int = field(default=1, metadata={"help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    save_every: int = field(default=500, metadata={"help": "checkpoint every N steps (and at the end)"})
    seed: int = field(default=0, metadata={"help": "seed of data order and sampling"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each LM layer in the backward instead of keeping its activations"})
    resume: bool = field(default=False, metadata={"help": "continue from the newest checkpoint in output_dir"})

    def __post_init__(self) -> None:
        from .rewards import get_rewards

        get_rewards(list(self.rewards))
        if self.finetune not in ("lora", "full") or self.frames not in ("uniform", "agent"):
            raise ValueError("finetune must be lora or full; frames uniform or agent")
        if self.rollouts < 2 or self.temperature <= 0:
            raise ValueError("need rollouts >= 2 and temperature > 0")


Statistic = Literal["disagree", "std"]


@dataclass
class VarianceConfig:
    """Which samples to score, with which policy, and the keep rule."""

    data: str = field(default="", metadata={"help": "candidate training samples (TSPO-10K / Temporal-RLT jsonl)"})
    video_root: str | None = field(default=None, metadata={"help": "folder the rows' `video` paths are relative to"})
    out: str = field(default="selected", metadata={"help": "output folder (kept.jsonl, scores.jsonl, report.json)"})
    policy: Literal["agent", "llm"] = field(default="agent", metadata={
        "help": "agent: frame selections answered by the environment; llm: the video LLM's sampled answers"})
    runs: int = field(default=8, metadata={"help": "N: rollouts per sample"})
    statistic: Statistic = field(default="disagree", metadata={"help": "disagree (max - min) or std of the rewards"})
    threshold: float = field(default=0.0, metadata={"help": "keep when the statistic exceeds this"})
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "temporal_coverage": 1.0},
                                      metadata={"help": "reward name=weight"})
    agent: str = field(default="random:clip-tiny", metadata={"help": "agent (policy=agent, or frames=agent)"})
    cache: str = field(default="feature_cache", metadata={"help": "feature cache root"})
    decode_resize: bool = field(default=False, metadata=_DECODE_RESIZE)
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata=_EXTRACT)
    k: int = field(default=16, metadata={"help": "frames per rollout / per LLM query"})
    tau: float = field(default=0.025, metadata={"help": "agent temperature of the rollouts"})
    environment: Literal["synthetic", "backbone"] = field(default="backbone", metadata={
        "help": "answerer for policy=agent"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind"})
    backbone_path: str | None = field(default=None, metadata={"help": "backbone checkpoint dir"})
    answer_from: Literal["logits", "generate"] = field(default="logits", metadata={"help": "see train"})
    temperature: float = field(default=1.0, metadata={"help": "LLM sampling temperature (policy=llm)"})
    max_new_tokens: int = field(default=256, metadata={"help": "LLM tokens per answer (policy=llm)"})
    think: bool = field(default=False, metadata={
        "help": "policy=llm: the <think>/<answer> instruction on the prompts, as train-llm --think (score the "
                "prompt you will train on)"})
    seed: int = field(default=0, metadata={"help": "seed of the rollouts"})

    def __post_init__(self) -> None:
        from .rewards import get_rewards

        get_rewards(list(self.rewards))
        if not self.data:
            raise ValueError("--data is required")
        if self.runs < 2:
            raise ValueError("runs must be >= 2: a single rollout has no variance")
        if self.statistic not in ("disagree", "std"):
            raise ValueError(f"statistic must be disagree or std, got {self.statistic!r}")
        if self.policy not in ("agent", "llm"):
            raise ValueError(f"policy must be agent or llm, got {self.policy!r}")


@dataclass
class ToyConfig:
    """An offline training run on generated videos."""

    out: Path = field(default=Path("toy_out"), metadata={"help": "output folder"})
    agent: str = field(default="random:clip-tiny", metadata={"help": "starting agent (random:<config> or a dir)"})
    environment: Literal["synthetic", "backbone"] = field(default="synthetic", metadata={
        "help": "synthetic answerer (right iff a chosen frame shows the content) or a real backbone"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind"})
    backbone_path: str | None = field(default=None, metadata={"help": "backbone checkpoint dir"})
    steps: int = field(default=30, metadata={"help": "optimiser steps"})
    rollouts: int = field(default=12, metadata={"help": "G (12 as the published toy)"})
    k: int = field(default=6, metadata={"help": "K (6 as the published toy)"})
    lr: float = field(default=5e-3, metadata={
        "help": "AdamW learning rate (above the paper's 5e-4: the tiny random CLIP separates scenes weakly)"})
    tau_start: float = field(default=0.025, metadata={"help": "temperature at step 0"})
    tau_end: float = field(default=0.01, metadata={"help": "temperature at the last step"})
    duration: float = field(default=120.0, metadata={"help": "seconds per generated video"})
    begin: float = field(default=10.0, metadata={"help": "seconds of the first scene"})
    plot_every: int = field(default=1, metadata={"help": "score timeline + frames every N steps (0: none)"})
    seed: int = field(default=0, metadata={"help": "seed of the video, a random agent's weights and the rollouts"})

    def __post_init__(self) -> None:
        if not 0 < self.begin < self.duration:
            raise ValueError("begin must lie inside the video")


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
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {self.dtype!r}")
        if not self.checkpoint:
            raise ValueError("--checkpoint is required")
