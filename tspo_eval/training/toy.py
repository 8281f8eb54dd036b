"""Offline toy runs of TSPO training: nothing downloaded, minutes on a CPU.

`beginning` reproduces the published toy example's idea (SPEC section 7): one generated
2-minute video whose first seconds show a sandy shore and the rest forest, grassland and
elephant scenes; the question "What is the scene at the beginning of the video?" with the
published four options; rewards from answer accuracy only (no frame labels).  The
answerer is the synthetic environment (right iff a chosen frame shows the beginning), or a
real backbone with `--environment backbone`.  Output: the reward curve, per-step score
timelines and sampled frames, and the trained agent (released layout).

`demo` trains the same way on generated benchmark videos of `tspo-eval demo` (coloured
square on stripes, asked about) and compares the time-reference hit rate of uniform, the
untrained agent and the trained agent on held-out generated videos.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..agent import TemporalAgent, load_agent
from ..benchmarks import load_benchmark, resolve_video
from ..cache import FeatureCache
from ..demo import DemoConfig, make_benchmark
from ..plots import frame_grid, score_timeline
from ..quality import quality_table
from ..policy import FramePolicy
from ..selections import select_benchmark
from ..synthetic import write_video
from .config import TrainConfig
from .data import EpisodeBuilder, Sample, sample_from_question
from .environment import build_environment
from .export import export_agent
from .trainer import StepGroup, Trainer

QUESTION = "What is the scene at the beginning of the video?"
OPTIONS = ("Windswept sandy shore.", "Enchanted, mist-shrouded forest.", "Boundless grassland.",
           "Trumpeting elephants.")

TASK_DEFAULTS = {"beginning": {"steps": 30, "rollouts": 12, "k": 6}, "demo": {"steps": 60, "rollouts": 8, "k": 8}}


@dataclass
class ToyConfig:
    """An offline training run on generated videos."""

    out: Path = field(default=Path("toy_out"), metadata={"help": "output folder"})
    task: Literal["beginning", "demo"] = field(default="beginning", metadata={
        "help": "beginning: the published toy question; demo: generated benchmark + held-out hit rates"})
    agent: str = field(default="random:clip-tiny", metadata={"help": "starting agent (random:<config> or a dir)"})
    environment: Literal["synthetic", "backbone"] = field(default="synthetic", metadata={
        "help": "synthetic answerer (right iff a chosen frame shows the content) or a real backbone"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind"})
    backbone_path: str | None = field(default=None, metadata={"help": "backbone checkpoint dir"})
    steps: int | None = field(default=None, metadata={"help": "optimiser steps (default: 30 beginning, 60 demo)"})
    rollouts: int | None = field(default=None, metadata={"help": "G (default: 12 as the published toy; demo 8)"})
    k: int | None = field(default=None, metadata={"help": "K (default: 6 as the published toy; demo 8)"})
    lr: float = field(default=5e-3, metadata={"help": "AdamW learning rate (above the paper's 5e-4: the tiny random CLIP separates scenes weakly)"})
    tau_start: float = field(default=0.025, metadata={"help": "temperature at step 0"})
    tau_end: float = field(default=0.01, metadata={"help": "temperature at the last step"})
    duration: float = field(default=120.0, metadata={"help": "seconds per generated video"})
    begin: float = field(default=10.0, metadata={"help": "beginning: seconds of the first scene"})
    train_videos: int = field(default=8, metadata={"help": "demo: generated training videos"})
    eval_videos: int = field(default=10, metadata={"help": "demo: held-out generated videos"})
    plot_every: int = field(default=1, metadata={"help": "score timeline + frames every N steps (0: none)"})
    seed: int = field(default=0, metadata={"help": "seed of videos, head init and rollouts"})

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise ValueError(f"task must be beginning or demo, got {self.task!r}")
        for name, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if not 0 < self.begin < self.duration:
            raise ValueError("begin must lie inside the video")


# ----------------------------------------------------------------------------- generated data
def _scene(kind: str, h: int, w: int, phase: int) -> np.ndarray:
    """A textured RGB scene: sandy shore, forest, grassland or elephants."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.float32)
    if kind == "shore":
        img[:] = (222, 200, 150)
        img[: h // 3] = (60, 120, 200)
        img[..., :] += 18 * np.sin((y + phase) / 3.0)[..., None]
    elif kind == "forest":
        img[:] = (25, 80, 35)
        img[(x + phase) % 12 < 4] = (60, 40, 20)
    elif kind == "grassland":
        img[:] = (120, 190, 70)
        img[: h // 2] = (170, 210, 240)
    else:  # elephants
        img[:] = (200, 180, 140)
        for cx in (w // 4, 3 * w // 4):
            img[((x - cx - phase % 7) / 18.0) ** 2 + ((y - h // 2) / 12.0) ** 2 < 1] = (110, 110, 115)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_toy_video(path: Path, duration: float, begin: float, fps: float = 2.0, seed: int = 0,
                    size: tuple[int, int] = (96, 128)) -> Path:
    """Sandy shore for the first `begin` seconds, then 10-25 s scenes of the other three."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    n, first = int(duration * fps), int(begin * fps)
    kinds, frames, scene_end, kind = ("forest", "grassland", "elephants"), [], first, "forest"
    for i in range(n):
        if i >= scene_end:
            kind = kinds[int(rng.integers(3))]
            scene_end = i + int(rng.uniform(10, 25) * fps)
        frames.append(_scene("shore" if i < first else kind, *size, phase=i))
    return write_video(path, frames, fps)


def beginning_samples(cfg: ToyConfig) -> list[Sample]:
    video = write_toy_video(cfg.out / "video" / "toy.mp4", cfg.duration, cfg.begin, seed=cfg.seed)
    prompt = QUESTION + "".join(f"\n{chr(65 + i)}. {o}" for i, o in enumerate(OPTIONS))
    return [Sample(id="toy", video=str(video), kind="multiple_choice", question=QUESTION,
                   prompt=prompt + "\nPlease answer with the option's letter from the given choices directly.",
                   options=OPTIONS, answer="A", span=(0.0, cfg.begin - 1.0), source="toy")]


def demo_questions(cfg: ToyConfig, split: str, videos: int, seed: int):
    """A generated demo benchmark (see `tspo_eval.demo`): its questions and video folder."""
    demo = DemoConfig(videos=videos, duration=cfg.duration, video_fps=4.0, seed=seed)
    video_dir, jsonl, tsv = make_benchmark(cfg.out / split, demo)
    return load_benchmark("lvbench", tsv, jsonl), video_dir


# ----------------------------------------------------------------------------- pictures
def plot_rewards(history: list[dict], path: Path, chance: float | None = None) -> Path:
    """PNG: mean reward (and accuracy) per step."""
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=110)
    steps = [m["step"] for m in history]
    ax.plot(steps, [m["reward"] for m in history], marker="o", ms=3, label="mean reward")
    if chance is not None:
        ax.axhline(chance, color="gray", ls="--", lw=1, label=f"uniform-random selection ({chance:.2f})")
    ax.set_xlabel("step")
    ax.set_ylabel("reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def step_pictures(out: Path, every: int) -> Callable[[int, list[StepGroup], dict], None]:
    """A trainer callback writing the first question's score timeline and rollout-0 frames."""
    def callback(step: int, groups: list[StepGroup], metrics: dict) -> None:
        if not every or step % every:
            return
        g = groups[0]
        ep, sel = g.episode, g.rollouts.selections[0]
        scores = (g.rollouts.logits * metrics["tau"]).float().cpu().numpy()  # S = logits * tau
        title = f"step {step + 1}: mean reward {metrics['reward']:.2f}, tau {metrics['tau']:.4f}"
        spans = [ep.sample.span] if ep.sample.span else []
        score_timeline(ep.timestamps, scores, ep.timestamps[sel], out / f"step{step + 1:03d}_timeline.png", title, spans)
        frame_grid(ep.frames(sel), ep.timestamps[sel], out / f"step{step + 1:03d}_frames.png", cols=len(sel),
                   title=title)
    return callback


def hit_chance(candidates: int, inside: int, k: int) -> float:
    """P(a uniformly random k-subset of the candidates contains one of `inside` targets)."""
    return 1.0 - math.comb(candidates - inside, k) / math.comb(candidates, k)


# ----------------------------------------------------------------------------- the run
def run_toy(cfg: ToyConfig) -> dict:
    """Generate, train, plot, export; for `demo`, also the held-out hit-rate table."""
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    agent: TemporalAgent = load_agent(cfg.agent)
    cache = FeatureCache(out / "feature_cache")
    if cfg.task == "beginning":
        samples = beginning_samples(cfg)
    else:
        questions, video_dir = demo_questions(cfg, "train", cfg.train_videos, cfg.seed)
        samples = [sample_from_question(q, resolve_video(video_dir, q.video_name, "lvbench")) for q in questions]
    builder = EpisodeBuilder(None, agent.encoder, cache)
    builder.prepare(samples, progress=False)
    accum = 1 if cfg.task == "beginning" else 2
    train_cfg = TrainConfig(agent=cfg.agent, output_dir=str(out / "run"), environment=cfg.environment,
                            backbone=cfg.backbone, backbone_path=cfg.backbone_path, rollouts=cfg.rollouts, k=cfg.k,
                            tau_start=cfg.tau_start, tau_end=cfg.tau_end, rewards={"accuracy": 1.0}, lr=cfg.lr,
                            grad_accum=accum, epochs=math.ceil(cfg.steps * accum / len(samples)),
                            max_steps=cfg.steps, save_every=cfg.steps, seed=cfg.seed, device="cpu")
    environment = build_environment(cfg.environment, cfg.backbone, cfg.backbone_path)
    initial_head = {k: v.clone() for k, v in agent.selector.state_dict().items()}
    trainer = Trainer(train_cfg, agent, samples, builder, environment, torch.device("cpu"))
    history = trainer.train(step_pictures(out / "steps", cfg.plot_every))
    first = builder.build(samples[0], np.random.default_rng(0))
    chance = hit_chance(len(first.timestamps), int(first.target.sum()), cfg.k) if cfg.task == "beginning" else None
    plot_rewards(history, out / "reward_curve.png", chance)
    agent_dir = export_agent(agent, out / "agent")
    summary = {"task": cfg.task, "environment": environment.name, "steps": len(history),
               "reward_first": float(np.mean([m["reward"] for m in history[:5]])),
               "reward_last": float(np.mean([m["reward"] for m in history[-5:]])), "chance": chance,
               "agent": str(agent_dir)}
    if cfg.task == "demo":
        summary["heldout"] = heldout_table(cfg, agent, initial_head, cache).reset_index().to_dict("records")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary


def heldout_table(cfg: ToyConfig, agent: TemporalAgent, initial_head: dict, cache: FeatureCache) -> pd.DataFrame:
    """Hit rate on held-out generated videos: uniform vs the untrained vs the trained agent."""
    questions, video_dir = demo_questions(cfg, "heldout", cfg.eval_videos, cfg.seed + 1000)
    trained_head = {k: v.clone() for k, v in agent.selector.state_dict().items()}
    runs, encoder = {}, agent.encoder
    runs["uniform"] = select_benchmark(questions, video_dir, encoder, cache, FramePolicy("uniform", cfg.k),
                                       progress=False)
    for name, head in (("untrained agent", initial_head), ("trained agent", trained_head)):
        agent.selector.load_state_dict(head)
        runs[name] = select_benchmark(questions, video_dir, encoder, cache,
                                      FramePolicy("topk", cfg.k, scores="agent"), agent=agent, progress=False)
    agent.selector.load_state_dict(trained_head)
    table = quality_table(runs, questions)
    table.to_csv(cfg.out / "heldout_quality.csv")
    return table
