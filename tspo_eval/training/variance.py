"""Variance-aware data selection (Temporal-RLT, SPEC section 8).

A question whose N rollouts all earn the same reward gives every rollout a zero advantage:
GRPO learns nothing from it.  `select_data` runs the current policy N times on every
sample (the agent's frame selections answered by the environment, or the video LLM's
sampled answers) and keeps the samples whose rewards disagree:

- `disagree`: max(r) - min(r) > threshold (multiple choice: neither all right nor all wrong);
- `std`: population std of r > threshold (continuous rewards such as temporal IoU).

Writes `kept.jsonl` (the original rows, so it trains as is), `scores.jsonl` (per sample:
mean, std, range, kept) and `report.json` (kept fraction per source and overall).  Under
torchrun every rank scores its share and rank 0 merges.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import distributed
from .config import Statistic, VarianceConfig
from .data import Sample, read_samples, write_samples
from .rollout import VideoPolicy, answer_group, frame_group, sample_seed

GroupRewards = Callable[[int, Sample], np.ndarray]  # (sample index, sample) -> (N,) rewards


def keeps(rewards: np.ndarray, statistic: Statistic, threshold: float) -> bool:
    """Whether N rewards of one sample disagree enough to train on."""
    value = float(rewards.max() - rewards.min()) if statistic == "disagree" else float(rewards.std())
    return value > threshold


def score_samples(samples: list[Sample], group_rewards: GroupRewards, cfg: VarianceConfig,
                  progress: bool = True) -> list[dict]:
    """Per sample: N rewards from `group_rewards(index, sample)`, their statistics and the keep decision."""
    records = []
    for i, sample in tqdm(list(enumerate(samples)), desc="select-data", disable=not progress):
        try:
            r = np.asarray(group_rewards(i, sample), dtype=np.float64)
        except (ValueError, OSError, RuntimeError) as err:  # a broken video: recorded, the run goes on
            records.append({"id": sample.id, "source": sample.source, "error": str(err), "kept": False})
            continue
        records.append({"id": sample.id, "source": sample.source, "mean": float(r.mean()), "std": float(r.std()),
                        "range": float(r.max() - r.min()), "rewards": r.tolist(),
                        "kept": keeps(r, cfg.statistic, cfg.threshold)})
    return records


def report(records: list[dict]) -> dict:
    """Kept fraction per source and overall (the paper kept about 6.5% of its pool)."""
    by_source: dict[str, dict] = {}
    for rec in records:
        entry = by_source.setdefault(rec["source"], {"total": 0, "kept": 0, "failed": 0})
        entry["total"] += 1
        entry["kept"] += int(rec["kept"])
        entry["failed"] += int("error" in rec)
    total = {"total": len(records), "kept": sum(e["kept"] for e in by_source.values()),
             "failed": sum(e["failed"] for e in by_source.values())}
    for entry in [*by_source.values(), total]:
        entry["kept_fraction"] = entry["kept"] / entry["total"] if entry["total"] else 0.0
    return {"sources": by_source, "total": total}


def agent_group_rewards(cfg: VarianceConfig, samples: list[Sample]) -> GroupRewards:
    """N agent rollouts of a sample, answered by the environment and scored: `rollout.frame_group`,
    as training draws them in its first epoch (features extracted first)."""
    from ..agent import load_agent
    from ..cache import FeatureCache
    from .data import EpisodeBuilder
    from .environment import build_environment

    device = distributed.local_device()
    agent = load_agent(cfg.agent, device=device)
    builder = EpisodeBuilder(cfg.video_root, agent.encoder, FeatureCache(cfg.cache), decode_resize=cfg.decode_resize,
                             extract=cfg.extract)
    builder.prepare(samples, progress=distributed.rank() == 0)
    options = {"device": device} if cfg.environment == "backbone" else {}
    environment = build_environment(cfg.environment, cfg.backbone, cfg.backbone_path, cfg.answer_from, 16, **options)

    def group_rewards(index: int, sample: Sample) -> np.ndarray:
        seed = sample_seed(cfg.seed, 0, index)
        episode = builder.build(sample, np.random.default_rng(seed))
        return frame_group(agent.selector, episode, cfg.k, cfg.runs, cfg.tau, seed, environment, cfg.rewards).rewards

    return group_rewards


def llm_group_rewards(cfg: VarianceConfig) -> GroupRewards:
    """N sampled answers per sample on K uniform frames, scored: `rollout.answer_group`, with
    train-llm's prompt (`think`) and the seeds of its first epoch."""
    from ..backbones import load_backbone

    policy = VideoPolicy(load_backbone(cfg.backbone, cfg.backbone_path, device=distributed.local_device()))
    return lambda index, sample: answer_group(policy, sample, cfg, cfg.runs, sample_seed(cfg.seed, 0, index)).rewards


def select_data(cfg: VarianceConfig) -> dict | None:
    """Score this rank's share of the samples; rank 0 merges and writes the outputs."""
    from .trainer import init_distributed

    init_distributed(distributed.local_device())
    samples = read_samples(cfg.data)
    group_rewards = agent_group_rewards(cfg, samples) if cfg.policy == "agent" else llm_group_rewards(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    mine = distributed.shard(list(range(len(samples))))
    records = score_samples([samples[i] for i in mine], lambda j, s: group_rewards(mine[j], s), cfg,
                            progress=distributed.rank() == 0)
    part = out / f"scores.rank{distributed.rank()}.json"
    part.write_text(json.dumps([{**r, "index": i} for r, i in zip(records, mine)]))
    distributed.barrier()
    if distributed.rank() != 0:
        return None
    merged = sorted((r for k in range(distributed.world_size())
                     for r in json.loads((out / f"scores.rank{k}.json").read_text())), key=lambda r: r["index"])
    write_samples([samples[r["index"]] for r in merged if r["kept"]], out / "kept.jsonl")
    (out / "scores.jsonl").write_text("".join(json.dumps(r) + "\n" for r in merged))
    summary = {**report(merged), "config": {k: getattr(cfg, k) for k in ("policy", "runs", "statistic", "threshold",
                                                                         "rewards", "k", "tau")}}
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    return summary
