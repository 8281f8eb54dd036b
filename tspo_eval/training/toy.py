"""Offline toy runs of TSPO training: nothing downloaded, minutes on a CPU.

`beginning` reproduces the published toy example's idea (SPEC section 7): one generated
2-minute video whose first seconds show a sandy shore and the rest forest, grassland and
elephant scenes; the question "What is the scene at the beginning of the video?" with the
published four options; rewards from answer accuracy only (no frame labels).  The
answerer is the synthetic environment (right iff a chosen frame shows the beginning), or a
real backbone with `--environment backbone`.  Output: the reward curve, per-step score
timelines and sampled frames, and the trained agent (released layout).

`tspo-eval demo` trains the same way on a generated benchmark and evaluates on held-out
videos (`tspo_eval.demo`).
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..agent import TemporalAgent, load_agent
from ..cache import FeatureCache
from ..plots import frame_grid, reward_curve, score_timeline
from ..quality import chance_hit_rate
from ..synthetic import write_video
from .config import ToyConfig, TrainConfig
from .data import EpisodeBuilder, Sample
from .environment import build_environment
from .export import export_agent
from .trainer import StepGroup, Trainer

QUESTION = "What is the scene at the beginning of the video?"
OPTIONS = ("Windswept sandy shore.", "Enchanted, mist-shrouded forest.", "Boundless grassland.",
           "Trumpeting elephants.")


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


# ----------------------------------------------------------------------------- pictures
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
        score_timeline(ep.timestamps, scores, ep.timestamps[sel], out / f"step{step + 1:03d}_timeline.png", title,
                       spans, ylabel="agent score S")
        frame_grid(ep.frames(sel), ep.timestamps[sel], out / f"step{step + 1:03d}_frames.png", cols=len(sel),
                   title=title)
    return callback


# ----------------------------------------------------------------------------- the run
def run_toy(cfg: ToyConfig) -> dict:
    """Generate, train, plot, export."""
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    agent: TemporalAgent = load_agent(cfg.agent, seed=cfg.seed)  # a random agent is drawn from the run's seed
    shutil.rmtree(out / "run", ignore_errors=True)  # a rerun trains afresh (no appended metrics)
    samples = beginning_samples(cfg)
    builder = EpisodeBuilder(None, agent.encoder, FeatureCache(out / "feature_cache"))
    builder.prepare(samples, progress=False)
    train_cfg = TrainConfig(agent=cfg.agent, output_dir=str(out / "run"), environment=cfg.environment,
                            backbone=cfg.backbone, backbone_path=cfg.backbone_path, rollouts=cfg.rollouts, k=cfg.k,
                            tau_start=cfg.tau_start, tau_end=cfg.tau_end, rewards={"accuracy": 1.0}, lr=cfg.lr,
                            grad_accum=1, epochs=cfg.steps, max_steps=cfg.steps, save_every=cfg.steps, seed=cfg.seed,
                            device="cpu")
    environment = build_environment(cfg.environment, cfg.backbone, cfg.backbone_path)
    trainer = Trainer(train_cfg, agent, samples, builder, environment, torch.device("cpu"))
    history = trainer.train(step_pictures(out / "steps", cfg.plot_every))
    first = builder.build(samples[0], np.random.default_rng(0))
    chance = chance_hit_rate(len(first.timestamps), int(first.target.sum()), cfg.k)
    reward_curve(history, out / "reward_curve.png", chance, f"toy: {QUESTION}", window=5)
    agent_dir = export_agent(agent, out / "agent")
    summary = {"environment": environment.name, "steps": len(history),
               "reward_first": float(np.mean([m["reward"] for m in history[:5]])),
               "reward_last": float(np.mean([m["reward"] for m in history[-5:]])), "chance": chance,
               "agent": str(agent_dir)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return summary
