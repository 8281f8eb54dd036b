"""The TSPO trainer on generated videos: parameters move, equivalent runs agree, resume is exact,
TensorBoard gets the metrics, export round-trips, and the toy runs learn."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tspo_eval.agent import TemporalAgent, random_agent
from tspo_eval.benchmarks import load_benchmark, resolve_video
from tspo_eval.cache import FeatureCache
from tspo_eval.synthetic import NeedleBenchmark, make_benchmark
from tspo_eval.synthetic import read_frame_number
from tspo_eval.training.config import TrainConfig
from tspo_eval.training.data import EpisodeBuilder, sample_from_question
from tspo_eval.training.environment import SyntheticEnvironment
from tspo_eval.training.export import ExportConfig, export_checkpoint
from tspo_eval.training.trainer import Trainer

RELEASED_HEAD_KEYS = {f"selector.{m}.{p}" for m in ("temporal.Self_q", "temporal.Self_k", "temporal.Self_v",
                                                     "temporal.ffn_o", "mlp.0", "mlp.2") for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_bench")
    videos, jsonl, tsv = make_benchmark(root, NeedleBenchmark(videos=4, duration=40.0, video_fps=4.0, seed=3))
    questions = load_benchmark("lvbench", tsv, jsonl)
    samples = [sample_from_question(q, resolve_video(videos, q.video_name, "lvbench")) for q in questions]
    return root, samples


def make_trainer(bench, tmp_path, environment=None, min_candidates=1, **overrides) -> Trainer:
    root, samples = bench
    cfg = TrainConfig(**{"environment": "synthetic", "output_dir": str(tmp_path / "run"), "rollouts": 6, "k": 4,
                         "grad_accum": 2, "epochs": 2, "max_steps": 3, "lr": 1e-3, "seed": 1, **overrides})
    agent = random_agent("clip-tiny", seed=0)
    builder = EpisodeBuilder(None, agent.encoder, FeatureCache(root / "cache"), min_candidates=min_candidates)
    builder.prepare(samples, progress=False)
    return Trainer(cfg, agent, samples, builder, environment or SyntheticEnvironment(), torch.device("cpu"))


def head_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.head.state_dict().items()}


def test_a_few_steps_change_every_trainable_parameter_and_nothing_else(bench, tmp_path):
    trainer = make_trainer(bench, tmp_path)
    clip_before = {k: v.clone() for k, v in trainer.agent.state_dict().items() if not k.startswith("selector.")}
    before = head_state(trainer)
    history = trainer.train()
    after = head_state(trainer)
    trainable = {n for n, p in trainer.head.named_parameters() if p.requires_grad}
    assert trainable == set(before) - {"temporal.ffn_o.weight", "temporal.ffn_o.bias"}  # unused by the forward
    for name in before:
        assert (not torch.equal(before[name], after[name])) == (name in trainable), name
    assert all(torch.equal(v, trainer.agent.state_dict()[k]) for k, v in clip_before.items())  # CLIP frozen
    assert [m["step"] for m in history] == [1, 2, 3]
    assert history[0]["tau"] == 0.025 and history[-1]["tau"] == pytest.approx(0.01)
    assert history[0]["lr"] == 1e-3 and history[1]["lr"] == pytest.approx(1e-3 * 2 / 3)


def test_clipping_and_kl_to_the_initial_head_are_inactive_where_they_must_be(bench, tmp_path):
    runs = {}
    for name, extra in {"plain": {}, "clip": {"clip_eps": 0.2}, "kl": {"kl_coef": 0.5}}.items():
        trainer = make_trainer(bench, tmp_path / name, **extra)
        runs[name] = (trainer.train(), head_state(trainer))
    plain, clip, kl = runs["plain"], runs["clip"], runs["kl"]
    assert [m["loss"] for m in clip[0]] == [m["loss"] for m in plain[0]]  # one update per batch: ratio 1
    assert all(torch.equal(plain[1][k], clip[1][k]) for k in plain[1])
    assert kl[0][0]["kl"] == 0 and kl[0][0]["loss"] == plain[0][0]["loss"]  # step 1: policy == reference
    assert kl[0][-1]["kl"] > 0


def test_needle_questions_with_the_official_objective(bench, tmp_path):
    """TSPO `specific` samples: haystacks of cached clips, R_A + R_T, the published surrogate, K for general."""
    root, samples = bench
    needles = [dataclasses.replace(s, needle=True, span=None) for s in samples]
    cfg = TrainConfig(environment="synthetic", output_dir=str(tmp_path / "run"), rollouts=4, k=6, k_general=3,
                      grad_accum=2, max_steps=2, objective="official", seed=2)
    agent = random_agent("clip-tiny", seed=0)
    builder = EpisodeBuilder(None, agent.encoder, FeatureCache(root / "cache"), min_candidates=1, distractors=3,
                             clip_len=10, max_repeats=2)
    builder.prepare(needles, progress=False)
    trainer = Trainer(cfg, agent, needles + samples[:2], builder, SyntheticEnvironment(), torch.device("cpu"))
    before = head_state(trainer)
    seen = []
    history = trainer.train(lambda step, groups, metrics: seen.extend(groups))
    for g in seen:
        k = 6 if g.episode.sample.needle else 3
        assert g.rollouts.draws.shape == (4, k)
        if g.episode.sample.needle:
            assert len(g.episode.timestamps) in (40, 50) and g.episode.target.sum() in (10, 20)
            assert g.per_reward["temporal_coverage"] == [float(g.episode.target[s].mean()) for s in g.rollouts.selections]
    assert all(np.isfinite(m["loss"]) and 0 <= m["rewards/temporal_coverage"] <= 1 for m in history)
    assert all(not torch.equal(before[k], v) for k, v in head_state(trainer).items() if "ffn_o" not in k)


class Interrupt(Exception):
    pass


def test_resume_continues_exactly_where_the_run_stopped(bench, tmp_path):
    straight = make_trainer(bench, tmp_path / "a", max_steps=4, save_every=2)
    full = straight.train()

    def stop_after_two(step, groups, metrics):
        if step == 2:  # the checkpoint of step 2 is written; step 3 is lost
            raise Interrupt

    first = make_trainer(bench, tmp_path / "b", max_steps=4, save_every=2)
    with pytest.raises(Interrupt):
        first.train(stop_after_two)
    resumed = make_trainer(bench, tmp_path / "b", max_steps=4, save_every=2, resume=True)
    rest = resumed.train()
    assert resumed.start_step == 2 and [m["step"] for m in rest] == [3, 4]
    assert [m["reward"] for m in rest] == [m["reward"] for m in full[2:]]
    assert [m["loss"] for m in rest] == [m["loss"] for m in full[2:]]
    final, expected = head_state(resumed), head_state(straight)
    assert all(torch.equal(final[k], expected[k]) for k in final)


def test_ctrl_c_between_steps_checkpoints_the_last_one_and_resume_is_exact(bench, tmp_path):
    """Ctrl-C (or SIGTERM, taken as it) after step 3 of 4 with checkpoints every 2: step 3 is not lost
    (it used to be): it is checkpointed on the way out, and --resume goes on from it exactly."""
    straight = make_trainer(bench, tmp_path / "a", max_steps=4, save_every=2)
    full = straight.train()

    def ctrl_c_after_three(step, groups, metrics):
        if step == 2:
            raise KeyboardInterrupt

    first = make_trainer(bench, tmp_path / "b", max_steps=4, save_every=2)
    with pytest.raises(KeyboardInterrupt):
        first.train(ctrl_c_after_three)
    checkpoints = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000003"]
    resumed = make_trainer(bench, tmp_path / "b", max_steps=4, save_every=2, resume=True)
    rest = resumed.train()
    assert resumed.start_step == 3 and [m["step"] for m in rest] == [4]
    assert [m["reward"] for m in rest] == [m["reward"] for m in full[3:]]
    final, expected = head_state(resumed), head_state(straight)
    assert all(torch.equal(final[k], expected[k]) for k in final)


class PixelReadingEnvironment(SyntheticEnvironment):
    """The synthetic rule, reading each rollout's pixels as a backbone does; notes where they came from."""

    needs_pixels = True

    def __init__(self) -> None:
        self.preloaded: list[bool] = []
        self.seen: list[list[int]] = []

    def complete(self, episode, selections):
        self.preloaded.append(episode.pixels is not None)
        self.seen += [[read_frame_number(f) for f in episode.frames(sel)] for sel in selections]
        return super().complete(episode, selections)


def test_questions_prepared_ahead_with_their_pixels_change_nothing(bench, tmp_path):
    envs = {ahead: PixelReadingEnvironment() for ahead in (0, 2)}
    runs = {ahead: make_trainer(bench, tmp_path / str(ahead), env, prefetch_episodes=ahead) for ahead, env in envs.items()}
    history = {ahead: trainer.train() for ahead, trainer in runs.items()}
    assert history[0] == history[2]
    assert all(torch.equal(head_state(runs[0])[k], v) for k, v in head_state(runs[2]).items())
    assert envs[0].seen == envs[2].seen and len(envs[0].seen) == 3 * 2 * 6  # steps x questions x rollouts
    assert envs[0].preloaded == [False] * 6 and envs[2].preloaded == [True] * 6


def test_select_data_scores_the_groups_training_draws(bench, tmp_path):
    """One rollout path: select-data's N rewards of a sample are those of the group the trainer draws
    for it in epoch 0 (same agent, seed, k, tau, answerer); the rewards vary, so other draws would show."""
    from tspo_eval.training.variance import VarianceConfig, agent_group_rewards

    root, samples = bench
    rewards = {"accuracy": 1.0, "temporal_coverage": 1.0}
    cfg = VarianceConfig(data="unused.jsonl", agent="random:clip-tiny", cache=str(root / "cache"),
                         environment="synthetic", runs=6, k=4, tau=0.2, rewards=rewards, seed=1)
    selecting = agent_group_rewards(cfg, samples)
    trainer = make_trainer(bench, tmp_path, min_candidates=50, rollouts=6, k=4, rewards=rewards, seed=1)
    scored = []
    for i, sample in enumerate(samples):
        group = trainer.rollout_group(0, i, 0.2, trainer.episode(0, i))
        scored.append(selecting(i, sample))
        np.testing.assert_array_equal(scored[-1], group.rewards)
    assert all(s.std() > 0 for s in scored)  # every group has hits and misses: other draws would differ


def test_tensorboard_and_metrics_file(bench, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(bench, tmp_path)
    history = trainer.train()
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("reward", "accuracy", "advantage_std", "frac_reward_zero_std", "tau", "lr", "loss",
                "rewards/accuracy", "rewards/temporal_coverage", "reward_std"):
        assert f"train/{tag}" in tags, tag
    assert [e.value for e in acc.Scalars("train/tau")] == pytest.approx([m["tau"] for m in history])
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["reward"] for m in lines] == [m["reward"] for m in history]
    for m in history:  # pooled statistics are consistent with their definitions
        assert 0 <= m["frac_reward_zero_std"] <= 1 and m["advantage_std"] >= 0
        assert m["accuracy"] == m["rewards/accuracy"]


def test_export_from_a_run_and_from_a_published_checkpoint(bench, tmp_path):
    trainer = make_trainer(bench, tmp_path)
    trainer.train()
    with pytest.raises(FileNotFoundError, match=r"--checkpoint .*/runn: no such file"):  # was "not a tspo-eval
        export_checkpoint(ExportConfig(checkpoint=str(tmp_path / "runn"), out=str(tmp_path / "x")))  # checkpoint"
    out = export_checkpoint(ExportConfig(checkpoint=str(tmp_path / "run"), out=str(tmp_path / "exported")))
    loaded = TemporalAgent.from_pretrained(out)
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        keys = set(fh.keys())
    assert {k for k in keys if k.startswith("selector.")} == RELEASED_HEAD_KEYS
    assert all(fh_dtype == torch.bfloat16 for fh_dtype in (p.dtype for p in loaded.parameters()))
    for name, value in trainer.head.state_dict().items():
        assert torch.equal(loaded.selector.state_dict()[name], value.to(torch.bfloat16)), name
    assert loaded.tau == 0.025
    # a published training checkpoint: the head inside the LLaVA model, sharded with other weights
    head = {k: v.float() for k, v in trainer.head.state_dict().items()}
    published = tmp_path / "published"
    published.mkdir()
    items = list(head.items())
    save_file({f"model.multiModal_align.{k}": v for k, v in items[:5]} | {"model.layers.0.w": torch.ones(2)},
              str(published / "model-00001-of-00002.safetensors"))
    save_file({f"model.multiModal_align.{k}": v for k, v in items[5:]} | {"lm_head.weight": torch.ones(2)},
              str(published / "model-00002-of-00002.safetensors"))
    out2 = export_checkpoint(ExportConfig(checkpoint=str(published), out=str(tmp_path / "exp2"),
                                          clip="random:clip-tiny", dtype="fp32"))
    again = TemporalAgent.from_pretrained(out2)
    for name, value in head.items():
        assert torch.equal(again.selector.state_dict()[name], value), name
    with pytest.raises(ValueError, match="--clip"):
        export_checkpoint(ExportConfig(checkpoint=str(published), out=str(tmp_path / "exp3")))


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_toy_beginning_learns_to_look_at_the_start(tmp_path):
    out = tmp_path / "toy"
    run("tspo-eval", "toy", "--out", str(out), "--steps", "20", "--plot-every", "10", "--seed", "0")
    summary = json.loads((out / "summary.json").read_text())
    history = [json.loads(x) for x in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = np.mean([m["reward"] for m in history[:5]]), np.mean([m["reward"] for m in history[-5:]])
    chance = 1 - math.comb(120 - 10, 6) / math.comb(120, 6)  # 120 one-fps candidates, 10 show the beginning
    assert summary["chance"] == pytest.approx(chance)
    assert last >= first + 0.4 and last > chance + 0.3, (first, last, chance)
    for name in ("reward_curve.png", "steps/step001_timeline.png", "steps/step011_frames.png", "agent/config.json"):
        assert (out / name).stat().st_size > 500, name
    agent = TemporalAgent.from_pretrained(out / "agent")  # the trained toy agent, released layout
    assert agent.tau == 0.025


def test_metrics_go_to_jsonl_when_tensorboard_is_missing(tmp_path, monkeypatch, caplog):
    """A plain `pip install` has no tensorboard: training (and so `tspo-eval demo`) still runs."""
    import sys

    from tspo_eval.training.trainer import log_metrics, metrics_writer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    writer = metrics_writer(tmp_path, 0)
    assert writer is None and "tensorboard is not installed" in caplog.text
    log_metrics(writer, tmp_path, {"step": 1, "reward": 0.5})
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "reward": 0.5}]
