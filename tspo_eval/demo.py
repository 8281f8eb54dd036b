"""Offline demo: what TSPO is for, in one command, with nothing downloaded.

1. generate a training split and a held-out split of long videos, each with one short
   segment that alone shows the answer (`synthetic.make_benchmark`, LVBench format, read
   back through the real LVBench converter);
2. extract the candidates' CLIP features into the feature cache (the extract stage);
3. train the agent head with the package's GRPO (`training.Trainer`) against the
   synthetic answerer, which is right exactly when a chosen frame shows the segment;
4. choose K frames per held-out question with uniform, topk, aks (CLIP cosine), the
   untrained and the trained agent (the selection stage);
5. score the selections against the segments (the quality stage): hit rate and coverage
   with 95% intervals, next to what randomly chosen frames would get;
6. compare every CLIP-scored selector and the trained agent over the same cache
   (`compare.compare_selectors`): hit rate, coverage, share scored, time per question;
7. draw the table, the training reward and a few held-out questions.

Everything is synthetic (videos, a tiny randomly initialised CLIP, the answerer): the
numbers show that the agent learns where to look from answer rewards alone, not how a
video LLM scores on a real benchmark.  `--agent DIR` skips training and evaluates that
agent (e.g. a released TSPO-0.4B) on the held-out split instead.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .agent import TemporalAgent, load_agent
from .benchmarks import Question, load_benchmark, resolve_video
from .cache import FeatureCache
from .compare import Comparison, compare_selectors, write_comparison
from .config import DEMO_POLICY, CompareConfig, DemoConfig
from .distributed import local_device
from .extract import extract_videos, video_features
from .plots import Panel, comparison_chart, method_frames, method_timelines, reward_curve
from .policy import ExtractConfig, FramePolicy
from .quality import chance_hit_rate, hit_and_coverage, quality_table, reference_spans
from .selection.stage import SelectionSet, question_scores, select_benchmark
from .synthetic import NeedleBenchmark, make_benchmark
from .training.config import TrainConfig
from .training.data import EpisodeBuilder, sample_from_question
from .training.environment import SyntheticEnvironment
from .training.export import export_agent
from .training.trainer import Trainer
from .video import read_frames

UNTRAINED, TRAINED = "tspo, untrained head", "tspo, trained head"
# the compare stage: every selector scored by CLIP (aks at TSPO's depth 3: AKS's own depth 5 needs
# K >= 32), then the agent (`tspo`: the trained head, or the --agent given)
DEMO_SELECTORS = ("uniform", "topk", "bin-max", "aks:preset=tspo", "bolt", "dpp", "focus", "tspo")
LEGEND = """\
hit_rate   share of held-out questions where at least one chosen frame lies in the answer
           segment (widened by 0.5 s), i.e. where the synthetic answerer would be right;
           95% interval: Wilson score interval over questions
coverage   share of the chosen frames that lie in the segment, averaged over questions;
           95% interval: percentile bootstrap over questions (2000 resamples, seed 0)
frames     frames chosen per question (K)
chance     expected values for K candidates drawn uniformly at random (exact, no interval)
uniform    K evenly spaced frames over the whole video; topk / aks rank the candidates by the
           CLIP cosine of frame and question (aks with TSPO's preset); tspo ranks them by
           the agent's score S (top-k)
Synthetic: generated videos{clip} and a synthetic answerer.
The numbers measure frame selection against known segments, not a video LLM's accuracy."""


class _Stages:
    """Prints each stage as it starts and its time when it ends; keeps the times."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.seconds = total, 0, {}
        self.start = time.perf_counter()

    @contextmanager
    def __call__(self, name: str, what: str) -> Iterator[None]:
        self.done += 1
        print(f"[{self.done}/{self.total}] {name}: {what}", flush=True)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"      {name} done in {self.seconds[name]:.1f} s", flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


def _split(cfg: DemoConfig, name: str, videos: int) -> NeedleBenchmark:
    return NeedleBenchmark(videos=videos, duration=cfg.duration, video_fps=cfg.video_fps, needle=cfg.needle,
                           seed=cfg.seed, prefix=name)


def _generate(root: Path, spec: NeedleBenchmark) -> tuple[list[Question], Path]:
    with tqdm(total=spec.videos, desc=f"generate {spec.prefix}", unit="video") as bar:
        videos, jsonl, tsv = make_benchmark(root, spec, lambda done, total: bar.update(done - bar.n))
    return load_benchmark("lvbench", tsv, jsonl), videos


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run the block on `n` intra-op threads (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# A CLIP this small (the tiny random one has 3.5M parameters, ViT-L/14 430M) gains nothing from
# intra-op threads, whose spinning takes the cores the decoders need: measured 15 s instead of
# 32-38 s for 20 videos on a busy 2-core machine.  The head (120 x 64 tensors) trains on one
# thread for the same reason (6 s instead of 47 s).
SMALL_MODEL_PARAMETERS = 50_000_000


@contextmanager
def _head(agent: TemporalAgent, state: dict[str, torch.Tensor] | None) -> Iterator[TemporalAgent]:
    """The agent with another head's weights (None: its own) for the duration of the block."""
    if state is None:
        yield agent
        return
    current = {k: v.clone() for k, v in agent.selector.state_dict().items()}
    agent.selector.load_state_dict(state)
    try:
        yield agent
    finally:
        agent.selector.load_state_dict(current)


def _format_table(table: pd.DataFrame) -> str:
    """The table as text: value [95% interval] per measure."""
    def cell(row: pd.Series, col: str) -> str:
        if pd.isna(row.get(f"{col}_lo")):
            return f"{row[col]:.3f}"
        return f"{row[col]:.3f} [{row[f'{col}_lo']:.3f}, {row[f'{col}_hi']:.3f}]"

    rows = [r for _, r in table.iterrows()]
    text = pd.DataFrame({"questions": table["questions"].astype(int),
                         "hit_rate [95% CI]": [cell(r, "hit_rate") for r in rows],
                         "coverage [95% CI]": [cell(r, "coverage") for r in rows],
                         "frames": table["frames"].map(lambda x: f"{x:.1f}")}, index=table.index)
    return text.to_string()


class _Demo:
    """One demo run's state; each method is one stage, called in order by `run_demo`."""

    def __init__(self, cfg: DemoConfig, policy: FramePolicy, extract: ExtractConfig | None) -> None:
        self.cfg, self.out, self.train = cfg, Path(cfg.out), cfg.agent is None
        self.policy, self.k, self.extract_cfg = policy, policy.k, extract or ExtractConfig()
        self.cache = FeatureCache(self.out / "feature_cache")
        self.heads: dict[str, dict[str, torch.Tensor]] = {}  # method -> the head it scores with
        self.history: list[dict] = []
        self.train_chance = float("nan")
        methods = {"uniform": policy.replace(method="uniform"), "topk": policy.replace(method="topk"),
                   "aks": policy.replace(method="aks", params={"preset": "tspo"})}  # AKS's own depth 5 needs K >= 32
        agents = [UNTRAINED, TRAINED] if self.train else [f"tspo ({Path(cfg.agent).name or cfg.agent})"]
        self.methods = {**methods, **{name: policy.replace(method="tspo") for name in agents}}
        self.chance = f"chance ({self.k} random frames)"

    def generate(self) -> None:
        if self.train:
            self.train_questions, self.train_root = _generate(self.out / "benchmark" / "train",
                                                              _split(self.cfg, "train", self.cfg.train_videos))
        self.questions, self.video_root = _generate(self.out / "benchmark" / "heldout",
                                                    _split(self.cfg, "heldout", self.cfg.heldout_videos))

    def extract(self) -> None:
        """Held-out candidates at the evaluation's sampling; training ones at the published
        training rule (1 fps, at most 128) through the episode builder."""
        torch.manual_seed(self.cfg.seed)  # a plain CLIP directory as base_agent gets the same fresh head every run
        # An agent to evaluate (a released TSPO-0.4B: CLIP ViT-L/14) runs on this process's GPU when
        # there is one, as `tspo-eval select` does; the trained one stays on the CPU with its trainer.
        device = local_device() if self.cfg.agent else torch.device("cpu")
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.agent = load_agent(self.cfg.agent or self.cfg.base_agent, torch_dtype=dtype, device=device)
        small = sum(p.numel() for p in self.agent.parameters()) < SMALL_MODEL_PARAMETERS
        with _torch_threads(1 if small else None):
            report = extract_videos([self.video(q) for q in self.questions], self.agent.encoder, self.cache,
                                    self.policy.sampling, self.extract_cfg)
            failed = dict(report.failed)
            if self.train:
                self.builder = EpisodeBuilder(None, self.agent.encoder, self.cache, extract=self.extract_cfg)
                samples = [sample_from_question(q, resolve_video(self.train_root, q.video_name, "lvbench"))
                           for q in self.train_questions]
                failed.update(self.builder.prepare(samples, progress=True))
                self.samples = [s for s in samples if self.builder.path(s) not in failed]
        for why in sorted(failed.values()):
            print(f"      FAILED {why}")

    def video(self, question: Question) -> Path:
        return resolve_video(self.video_root, question.video_name, "lvbench")

    def train_head(self) -> None:
        """GRPO on the training split against the synthetic answerer; exports the trained agent."""
        cfg, out = self.cfg, self.out / "training"
        shutil.rmtree(out, ignore_errors=True)  # a rerun trains afresh: no appended metrics, no resumed state
        accum = 2
        train_cfg = TrainConfig(agent=cfg.base_agent, output_dir=str(out), environment="synthetic",
                                rollouts=cfg.rollouts, k=self.k, rewards={"accuracy": 1.0}, lr=cfg.lr, grad_accum=accum,
                                epochs=math.ceil(cfg.steps * accum / len(self.samples)), max_steps=cfg.steps,
                                save_every=cfg.steps, seed=cfg.seed, device="cpu", prefetch_episodes=0)
        self.heads[UNTRAINED] = {k: v.clone() for k, v in self.agent.selector.state_dict().items()}
        trainer = Trainer(train_cfg, self.agent, self.samples, self.builder, SyntheticEnvironment(),
                          torch.device("cpu"))
        with _torch_threads(1):  # see SMALL_MODEL_PARAMETERS
            self.history = trainer.train()
        self.heads[TRAINED] = {k: v.clone() for k, v in self.agent.selector.state_dict().items()}
        export_agent(self.agent, self.out / "agent", dtype=torch.float32)
        episodes = [self.builder.build(s, np.random.default_rng(0)) for s in self.samples]
        self.train_chance = float(np.mean([chance_hit_rate(len(e.timestamps), int(e.target.sum()), self.k)
                                           for e in episodes]))
        first, last = (np.mean([m["reward"] for m in part]) for part in (self.history[:50], self.history[-50:]))
        print(f"      mean reward: first 50 steps {first:.2f}, last 50 steps {last:.2f} (random frames: "
              f"{self.train_chance:.2f}); trained agent -> {self.out / 'agent'}")

    def select(self) -> None:
        self.runs: dict[str, SelectionSet] = {}
        for name, policy in self.methods.items():
            with _head(self.agent, self.heads.get(name)) as scorer:
                self.runs[name] = select_benchmark(self.questions, self.video_root, self.agent.encoder, self.cache,
                                                   policy, self.extract_cfg, agent=scorer, progress=False)
            self.runs[name].save(self.out / "selections" / f"{_slug(name)}.json")

    def score(self, legend: str) -> None:
        self.table = quality_table(self.runs, self.questions, intervals=True)
        self.table.loc[self.chance] = pd.Series(self.chance_row())
        failures = {name: len(run.failed) for name, run in self.runs.items() if run.failed}
        self.text = _format_table(self.table)
        (self.out / "quality.txt").write_text(self.text + "\n\n" + legend + "\n" + (
            f"failed questions (not counted): {failures}\n" if failures else ""))
        self.table.to_csv(self.out / "quality.csv")

    def compare(self) -> Comparison:
        """Every selector of `DEMO_SELECTORS` on the held-out split's cache; `tspo` with the trained head."""
        cfg = CompareConfig(methods=DEMO_SELECTORS, out=self.out / "compare")
        with _head(self.agent, self.heads.get(TRAINED)) as scorer:
            comparison = compare_selectors(self.questions, self.video_root, self.agent.encoder, self.cache, cfg,
                                           self.policy, self.extract_cfg, agent=scorer, progress=False)
        write_comparison(comparison, cfg.out, "lvbench")
        return comparison

    def chance_row(self) -> dict[str, float]:
        """Expected hit rate and coverage of K candidates drawn uniformly at random, per question, averaged."""
        hits, coverage = [], []
        for q in self.questions:
            try:
                vf = video_features(self.video(q), self.agent.encoder, self.cache, self.policy.sampling,
                                    self.extract_cfg)
            except ValueError:
                continue  # its video failed: the methods' rows do not count it either
            _, inside = hit_and_coverage(vf.timestamps, reference_spans(q, vf.fps))
            t = len(vf.timestamps)
            hits.append(chance_hit_rate(t, round(inside * t), self.k))
            coverage.append(inside)
        return {"questions": len(hits), "hit_rate": float(np.mean(hits)), "coverage": float(np.mean(coverage)),
                "frames": float(self.k)}

    def draw(self) -> list[Path]:
        plots = self.out / "plots"
        shutil.rmtree(plots, ignore_errors=True)  # no picture of an earlier run's questions survives
        pictures = [comparison_chart(self.table, plots / "summary.png",
                                     f"{len(self.questions)} held-out generated videos, K = {self.k} of "
                                     f"{self.cfg.duration:.0f} 1-per-second candidates (synthetic)", self.chance)]
        if self.train:
            pictures.append(reward_curve(self.history, plots / "training_reward.png", self.train_chance,
                                         "GRPO training of the agent head against the synthetic answerer "
                                         "(reward 1: a chosen frame shows the answer segment)"))
        for q in self.questions[:self.cfg.examples]:  # in benchmark order, not picked by outcome
            pictures += self.draw_question(q, plots)
        return pictures

    def draw_question(self, q: Question, plots: Path) -> list[Path]:
        """Every method's scores and choice on one time axis, and the chosen frames, row by row."""
        encoder = self.agent.encoder
        try:
            vf = video_features(self.video(q), encoder, self.cache, self.policy.sampling, self.extract_cfg)
        except ValueError:
            return []
        text = self.cache.text_features(encoder.identity, [q.question], encoder.encode_text)[0]
        spans = reference_spans(q, vf.fps)
        panels, verdicts = [], {}
        for name, policy in self.methods.items():
            sel = self.runs[name].selections.get(q.index)
            if sel is None:
                continue
            scores, ylabel = None, "(uses no score)"
            if policy.method != "uniform":
                with _head(self.agent, self.heads.get(name)) as scorer:
                    scores = question_scores(vf.features, text, policy.score_source, scorer).numpy()
                ylabel = "agent score S" if policy.score_source == "agent" else "CLIP cosine\n(frame, question)"
            panels.append(Panel(name, vf.timestamps, scores, ylabel, sel.timestamps,
                                read_frames(vf.video, sel.frame_numbers)))
            verdicts[name] = "hit" if hit_and_coverage(sel.timestamps, spans)[0] else "miss"
        answer = q.candidates["ABCD".index(q.answer_letter)] if q.answer_letter in "ABCD" else q.answer_letter
        span = ", ".join(f"{a:.0f}-{b:.0f} s" for a, b in spans)
        title = (f"held-out question {q.index} ({q.video_name}), K = {self.k}: {q.question.splitlines()[0]}\n"
                 f"answer: {answer}, shown only in the segment {span}")
        return [method_timelines(panels, spans, plots / f"{q.index}_timelines.png", title, verdicts),
                method_frames(panels, spans, plots / f"{q.index}_frames.png", title, verdicts)]


def run_demo(cfg: DemoConfig, policy: FramePolicy = DEMO_POLICY, extract: ExtractConfig | None = None) -> pd.DataFrame:
    """Generate, extract, train (unless `cfg.agent`), select, score, draw; returns the quality table.
    `policy`: K, sampling and `official` for every method (each method replaces its name);
    `extract`: how fast features are extracted."""
    demo, stages = _Demo(cfg, policy, extract), _Stages(7 if cfg.agent is None else 6)
    k = policy.k
    random_clip = (cfg.agent or cfg.base_agent).startswith("random:")
    legend = LEGEND.format(clip=", a tiny randomly initialised CLIP" if random_clip else "")
    print("Synthetic demo: generated videos, a synthetic answerer (right iff a chosen frame shows the answer "
          "segment)" + (", a tiny randomly initialised CLIP." if random_clip else "."), flush=True)
    with stages("generate", f"{cfg.train_videos if demo.train else 0} training + {cfg.heldout_videos} held-out "
                            f"videos of {cfg.duration:.0f} s, each with one {cfg.needle:g} s answer segment"):
        demo.generate()
    with stages("extract", f"CLIP features of every video's candidates ({policy.sampling.fps:g} per second)"):
        demo.extract()
    if demo.train:
        with stages("train", f"the agent head with GRPO on {len(demo.samples)} training questions, {cfg.steps} "
                             f"steps x 2 questions x {cfg.rollouts} rollouts of {k} frames, synthetic answerer"):
            demo.train_head()
    with stages("select", f"{k} frames for each of {len(demo.questions)} held-out questions with "
                          f"{', '.join(demo.methods)}"):
        demo.select()
    with stages("quality", "hit rate and coverage against the answer segments, 95% intervals, chance"):
        demo.score(legend)
    with stages("compare", f"{len(DEMO_SELECTORS)} selectors on the same cache: hit rate, coverage, share "
                           "scored, time per question"):
        comparison = demo.compare()
    with stages("pictures", f"summary chart{', training reward' if demo.train else ''}, {cfg.examples} held-out "
                            "questions"):
        pictures = demo.draw()
    (demo.out / "demo.json").write_text(json.dumps({
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "seconds": {**stages.seconds, "total": round(stages.elapsed, 1)},
        "table": demo.table.reset_index().to_dict("records")}, indent=1))
    print("\n" + demo.text + "\n\n" + legend)
    print(f"\nSelectors side by side (compare/compare_lvbench.md; tspo: the "
          f"{'trained head' if demo.train else 'agent given'}; scored: share of the candidates scored; "
          f"ms_per_question: scoring + selection from the cache):\n"
          + comparison.table.to_markdown(floatfmt=".3f"))
    print(f"\nwrote {demo.out}/quality.txt, quality.csv, selections/*.json, plots/*.png ({len(pictures)} pictures), "
          f"compare/ (table, chart, selections)"
          + (f", agent/ (the trained agent: --agent {demo.out / 'agent'})" if demo.train else ""))
    print(f"demo finished in {stages.elapsed:.0f} s")
    return demo.table


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")
