"""TSPO training of the agent head: one explicit loop that reads top to bottom.

Per optimiser step, every rank takes `grad_accum` questions; per question:

    episode  = builder.build(sample)                 # cached CLIP features (+ the candidates' pixels for
                                                     # a backbone answerer), `prefetch_episodes` ahead
    logits   = head(features, text) / tau            # one forward, no grad: the rollout policy
    rollouts = sample_rollouts(logits, K, G)         # Gumbel-top-k, G ordered draws
    texts    = environment.complete(episode, ...)    # the frozen answerer, G answers batched
    rewards  = score(...)                            # weighted reward library
    adv      = group_advantages(rewards)

(logits to rewards is `rollout.frame_group`, the rollout path `select-data` runs too),

then `updates_per_batch` times: a forward with grad per question, `policy_loss`, backward
(DistributedDataParallel averages the gradients over ranks at the last question), clip,
AdamW step; the linear schedule steps once per optimiser step.

Reproducible and resumable: the data order is a permutation per (seed, epoch), and each
question's rollout noise and needle clips come from a generator seeded by (seed, epoch,
sample index), never by rank, so a resumed run equals an uninterrupted one and a run on
two ranks equals one rank with twice the accumulation.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import distributed
from ..agent import TemporalAgent, TemporalHead
from ..config import read_safetensors
from ..prefetch import prefetched
from .config import TrainConfig
from .data import Episode, EpisodeBuilder, Sample
from .environment import Environment
from .grpo import group_advantages, policy_loss, tau_at
from .rollout import FrameGroup, frame_group, sample_seed

log = logging.getLogger(__name__)


@dataclass
class StepGroup(FrameGroup):
    """One question's group inside a step: the rollout path's `FrameGroup` plus its advantages."""

    index: int  # the sample's position in the data
    advantages: torch.Tensor  # (G,)


def total_steps(cfg: TrainConfig, num_samples: int, world: int) -> int:
    """Optimiser steps of the run: full steps per epoch x epochs, capped by max_steps."""
    per_epoch = num_samples // (world * cfg.grad_accum)
    if per_epoch == 0:
        raise ValueError(f"{num_samples} samples cannot fill one step of {world} ranks x {cfg.grad_accum} questions")
    steps = per_epoch * cfg.epochs
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def step_samples(cfg: TrainConfig, step: int, num_samples: int, rank: int, world: int) -> list[tuple[int, int]]:
    """(epoch, sample index) of this rank's questions at `step`: rank r takes every world-th
    question of the step's slice of the epoch's permutation."""
    per_step = world * cfg.grad_accum
    per_epoch = num_samples // per_step
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(num_samples)
    return [(epoch, int(order[pos * per_step + a * world + rank])) for a in range(cfg.grad_accum)]


def metrics_writer(out: Path, start_step: int):
    """TensorBoard writer of `out/tensorboard`, dropping what a resumed run will redo; None
    (metrics.jsonl only, with a warning) where tensorboard is not installed, e.g. a plain
    `pip install` running `tspo-eval demo`."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed (pip install tensorboard, or the [train] extra): "
                    "metrics go to %s only", out / "metrics.jsonl")
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)


def checkpoint_interrupted(save: Callable[[int], object], world: int, between_steps: bool, done: int,
                           saved: int) -> None:
    """On Ctrl-C / SIGTERM (the caller re-raises): one process between steps holds exactly the state
    after step `done`, so it is checkpointed (--resume goes on from there). Mid-step, or with several
    processes (the others may be elsewhere), the last checkpoint stands."""
    if world == 1 and between_steps and done > saved:
        log.warning("interrupted: checkpointing step %d", done)
        save(done)


def log_metrics(writer, out: Path, metrics: dict[str, float]) -> None:
    """One step's metrics: TensorBoard scalars `train/<name>` and a line of `out/metrics.jsonl`."""
    step = int(metrics["step"])
    for key, value in metrics.items():
        if writer is not None and key != "step" and np.isfinite(value):
            writer.add_scalar(f"train/{key}", value, step)
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(metrics) + "\n")


def init_distributed(device: torch.device) -> None:
    """Join the process group of a torchrun / accelerate launch (NCCL on GPUs, gloo on CPUs)."""
    if distributed.world_size() > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


class Trainer:
    """Holds the head, its optimiser and the run's outputs; `train()` is the loop."""

    def __init__(self, cfg: TrainConfig, agent: TemporalAgent, samples: Sequence[Sample], builder: EpisodeBuilder,
                 environment: Environment, device: torch.device | None = None) -> None:
        self.cfg, self.samples, self.builder, self.environment = cfg, list(samples), builder, environment
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.device = device or distributed.local_device()
        init_distributed(self.device)
        self.out = Path(cfg.output_dir)
        self.agent = agent
        self.head: TemporalHead = agent.selector.float().to(self.device)
        agent.requires_grad_(False)
        self.head.requires_grad_(True)
        self.head.temporal.ffn_o.requires_grad_(False)  # in the released layout, unused by the forward
        self.model = DistributedDataParallel(self.head) if self.world > 1 else self.head  # broadcasts rank 0's head
        self.ref_head = copy.deepcopy(self.head).requires_grad_(False) if cfg.kl_coef > 0 else None
        self.params = [p for p in self.head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps = total_steps(cfg, len(self.samples), self.world)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: max(0.0, 1 - s / self.steps))
        self.start_step = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------ one question
    def episode(self, epoch: int, index: int, preload: bool = False) -> Episode:
        """The question's episode (needle clips drawn from its seed); with `preload` its
        candidates' pixels too, when the environment reads them."""
        episode = self.builder.build(self.samples[index],
                                     np.random.default_rng(sample_seed(self.cfg.seed, epoch, index)))
        if preload and self.environment.needs_pixels:
            episode.preload()
        return episode

    def episodes(self, first_step: int) -> Iterator[Episode]:
        """Episodes of every step from `first_step` on, in order, `prefetch_episodes` questions ahead."""
        work = [item for step in range(first_step, self.steps)
                for item in step_samples(self.cfg, step, len(self.samples), self.rank, self.world)]
        if self.cfg.prefetch_episodes == 0:
            return (self.episode(*item) for item in work)
        return prefetched(lambda item: self.episode(*item, preload=True), work, self.cfg.prefetch_episodes,
                          self.cfg.prefetch_episodes, name="tspo-episode")

    def rollout_group(self, epoch: int, index: int, tau: float, episode: Episode) -> StepGroup:
        """The rollout path's group of the question (`rollout.frame_group`), with its advantages."""
        k = self.cfg.k if self.samples[index].needle else self.cfg.k_for_general
        group = frame_group(self.head, episode, k, self.cfg.rollouts, tau, sample_seed(self.cfg.seed, epoch, index),
                            self.environment, self.cfg.rewards, self.cfg.objective)
        advantages = group_advantages(torch.as_tensor(group.rewards, dtype=torch.float32), self.cfg.adv_eps)
        return StepGroup(**vars(group), index=index, advantages=advantages.to(self.device))

    # ------------------------------------------------------------------ one optimiser step
    def update(self, groups: Sequence[StepGroup], tau: float) -> dict[str, float]:
        """`updates_per_batch` x (forward with grad, loss, backward per question; clip; AdamW step)."""
        stats: dict[str, list[float]] = {"loss": [], "grad_norm": []}
        for _ in range(self.cfg.updates_per_batch):
            for i, g in enumerate(groups):
                sync = i == len(groups) - 1
                with nullcontext() if sync or self.world == 1 else self.model.no_sync():
                    logits = self.model(g.episode.features.to(self.device), g.episode.text.to(self.device)) / tau
                    ref = None
                    if self.ref_head is not None:
                        with torch.no_grad():
                            ref = self.ref_head(g.episode.features.to(self.device), g.episode.text.to(self.device)) / tau
                    loss, extra = policy_loss(logits, g.rollouts, g.advantages, self.cfg.objective,
                                              self.cfg.clip_eps, ref, self.cfg.kl_coef)
                    (loss / len(groups)).backward()
                stats["loss"].append(float(loss.detach()))
                for key, value in extra.items():
                    stats.setdefault(key, []).append(value)
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm or float("inf"))
            stats["grad_norm"].append(float(norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return {key: float(np.mean(values)) for key, values in stats.items()}

    # ------------------------------------------------------------------ the loop
    def train(self, callback: Callable[[int, list[StepGroup], dict[str, float]], None] | None = None
              ) -> list[dict[str, float]]:
        """Run to the last step (from the latest checkpoint with `resume`); returns the metrics."""
        if self.cfg.resume:
            self.load_latest()
        if self.start_step == 0 and self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            save_file(self._head_state(self.head), str(self.out / "initial_head.safetensors"))
        writer = self._writer()
        bar = tqdm(range(self.start_step, self.steps), desc="train", unit="step", disable=self.rank != 0,
                   initial=self.start_step, total=self.steps)
        episodes = self.episodes(self.start_step)
        done = saved = self.start_step  # steps finished, and checkpointed
        between = True  # the head is the one after step `done`: no update of the next one yet
        try:
            for step in bar:
                tau = tau_at(step, self.steps, self.cfg.tau_start, self.cfg.tau_end)
                lr = self.scheduler.get_last_lr()[0]
                groups = [self.rollout_group(epoch, index, tau, next(episodes))
                          for epoch, index in step_samples(self.cfg, step, len(self.samples), self.rank, self.world)]
                rollout_metrics = self.group_metrics(groups)
                between = False
                update_metrics = self.update(groups, tau)
                between, done = True, step + 1
                metrics = self.reduce({**rollout_metrics, **update_metrics})
                metrics.update(step=step + 1, tau=tau, lr=lr)
                self.history.append(metrics)
                if self.rank == 0:
                    bar.set_postfix(reward=f"{metrics['reward']:.3f}", tau=f"{tau:.4f}")
                    if (step + 1) % self.cfg.log_every == 0 or step + 1 == self.steps:
                        self._log(writer, metrics)
                if callback is not None:
                    callback(step, groups, metrics)
                if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.steps:
                    self.save(step + 1)
                    saved = step + 1
        except KeyboardInterrupt:
            checkpoint_interrupted(self.save, self.world, between, done, saved)
            raise
        finally:
            if writer is not None:
                writer.close()
        return self.history

    # ------------------------------------------------------------------ metrics
    def group_metrics(self, groups: Sequence[StepGroup]) -> dict[str, tuple[float, float]]:
        """(sum, count) pairs, so ranks can be pooled exactly by `reduce`."""
        rewards = np.concatenate([g.rewards for g in groups])
        adv = torch.cat([g.advantages for g in groups]).float().cpu().numpy()
        stds = [g.rewards.std(ddof=1) for g in groups]
        out = {"reward": (rewards.sum(), len(rewards)), "reward_std": (sum(stds), len(stds)),
               "frac_reward_zero_std": (sum(float(s < 1e-8) for s in stds), len(stds)),
               "advantage_sq": ((adv ** 2).sum(), len(adv)), "advantage": (adv.sum(), len(adv)),
               "candidates": (sum(len(g.episode.timestamps) for g in groups), len(groups))}
        for name in self.cfg.rewards:
            values = [v for g in groups for v in g.per_reward[name] if v is not None]
            out[f"rewards/{name}"] = (sum(values), len(values))
        return out

    def reduce(self, local: dict[str, tuple[float, float] | float]) -> dict[str, float]:
        """Pool (sum, count) metrics over ranks; plain floats (update stats) are averaged."""
        keys = sorted(local)
        pairs = torch.tensor([local[k] if isinstance(local[k], tuple) else (local[k], 1.0) for k in keys],
                             dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(pairs)
        means = {k: float(s / c) if c else float("nan") for k, (s, c) in zip(keys, pairs.tolist())}
        means["advantage_std"] = float(np.sqrt(max(means.pop("advantage_sq") - means.pop("advantage") ** 2, 0.0)))
        means["accuracy"] = means.get("rewards/accuracy", float("nan"))
        return means

    def _writer(self):
        return metrics_writer(self.out, self.start_step) if self.rank == 0 else None

    def _log(self, writer, metrics: dict[str, float]) -> None:
        log_metrics(writer, self.out, metrics)

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path | None:
        """`checkpoints/step-N/`: head (released `selector.` keys), optimiser + schedule, config."""
        if self.rank != 0:
            if self.world > 1:
                dist.barrier()
            return None
        final = self.out / "checkpoints" / f"step-{step:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(self._head_state(self.head), str(tmp / "head.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                    "step": step}, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        if self.world > 1:
            dist.barrier()
        return final

    @staticmethod
    def _head_state(head: TemporalHead) -> dict[str, torch.Tensor]:
        return {f"selector.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}

    @staticmethod
    def _load_head(head: TemporalHead, path: Path) -> None:
        head.load_checkpoint({k.removeprefix("selector."): v for k, v in read_safetensors(path).items()}, str(path))

    def load_latest(self) -> None:
        """Restore head, optimiser, schedule and step from the newest checkpoint, if any."""
        found = sorted((self.out / "checkpoints").glob("step-[0-9]*[0-9]"))
        if not found:
            log.warning("resume: no checkpoint in %s; starting from step 0", self.out)
            return
        self._load_head(self.head, found[-1] / "head.safetensors")
        if self.ref_head is not None:  # the KL reference stays the head the run started from
            self._load_head(self.ref_head, self.out / "initial_head.safetensors")
        trainer = torch.load(found[-1] / "trainer.pt", map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(trainer["optimizer"])
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.start_step = int(trainer["step"])
        self.history = []


def run_training(cfg: TrainConfig) -> list[dict[str, float]]:
    """`tspo-eval train`: read the data, load agent and answerer, extract features, train."""
    from ..agent import load_agent
    from ..cache import FeatureCache
    from .data import read_samples
    from .environment import build_environment

    if not cfg.data:
        raise ValueError("--data is required: a TSPO-10K or Temporal-RLT jsonl file")
    device = distributed.device_for(cfg.device or None)
    init_distributed(device)
    samples = read_samples(cfg.data)
    torch.manual_seed(cfg.seed)  # a fresh head (plain CLIP directory) starts the same on every run
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    agent = load_agent(cfg.agent, torch_dtype=dtype, device=device)
    pool = []
    if cfg.distractor_videos:
        root = Path(cfg.video_root or ".")
        pool = [str(root / line.strip()) for line in Path(cfg.distractor_videos).read_text().splitlines() if line.strip()]
    builder = EpisodeBuilder(cfg.video_root, agent.encoder, FeatureCache(cfg.cache), cfg.max_candidates,
                             cfg.min_candidates, cfg.distractors, cfg.clip_len, cfg.max_repeats,
                             distractor_videos=pool, decode_resize=cfg.decode_resize, extract=cfg.extract)
    failed = builder.prepare(samples, progress=distributed.rank() == 0)
    kept = [s for s in samples if builder.path(s) not in failed]
    if failed and distributed.rank() == 0:
        log.warning("%d of %d samples dropped: their videos failed (%s)", len(samples) - len(kept), len(samples),
                    "; ".join(sorted(failed.values())[:3]))
    options = {"device": device} if cfg.environment == "backbone" else {}
    environment = build_environment(cfg.environment, cfg.backbone, cfg.backbone_path, cfg.answer_from,
                                    cfg.max_new_tokens, cfg.answer_batch, **options)
    if distributed.rank() == 0:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(cfg.output_dir) / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    return Trainer(cfg, agent, kept, builder, environment, device).train()
