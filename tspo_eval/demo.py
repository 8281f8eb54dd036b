"""Offline demo: a generated long-video benchmark run through extract -> select -> quality.

Nothing is downloaded.  Each generated video is a sequence of plain coloured scenes with
one short "needle" segment (a coloured square on a striped background) whose colour the
question asks for, so the answer is visible only there; its span is the question's time
reference.  The benchmark is written in LVBench's own annotation format
(`video_info.meta.jsonl`) and converted to the published TSV by the same converter the
real LVBench uses, so the demo exercises the real data path end to end.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .agent import TemporalAgent, load_agent
from .benchmarks import convert, load_benchmark, resolve_video, write_tsv
from .cache import FeatureCache
from .extract import extract_videos
from .inspection import inspect_question
from .policy import ExtractConfig, FramePolicy
from .quality import quality_table
from .selections import SelectionSet, select_benchmark
from .synthetic import write_video

COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (240, 220, 30),
          "purple": (150, 40, 200), "orange": (250, 140, 20)}
# AKS's own depth 5 leaves floor(16 / 32) = 0 frames per leaf at K = 16: the demo uses TSPO's port.
DEMO_METHODS = {"uniform": {}, "topk": {}, "aks": {"preset": "tspo"}, "tspo": {}}


@dataclass
class DemoConfig:
    """The generated benchmark and the run over it."""

    out: Path = field(default=Path("demo_out"), metadata={"help": "output folder"})
    agent: str = field(default="random:clip-tiny", metadata={
        "help": "TSPO-0.4B directory or hub id; random:<config> for an untrained agent"})
    videos: int = field(default=6, metadata={"help": "generated videos (one question each)"})
    duration: float = field(default=120.0, metadata={"help": "seconds per generated video"})
    video_fps: float = field(default=8.0, metadata={"help": "frame rate of the generated videos"})
    needle: float = field(default=3.0, metadata={"help": "seconds the asked-about segment lasts"})
    seed: int = field(default=0, metadata={"help": "random seed of the generated benchmark"})
    trained_agent: str = field(default="toy_demo/agent", metadata={
        "help": "an agent trained by `tspo-eval toy --task demo --out toy_demo`; when the folder exists its selections "
                "join the table as `tspo-trained`"})


def _video_frames(rng: np.random.Generator, n_frames: int, fps: float, needle: tuple[int, int],
                  color: tuple[int, int, int], size: tuple[int, int] = (96, 128)) -> Iterator[np.ndarray]:
    """Scenes of 8-20 s in muted colours; frames in [needle) show a coloured square."""
    h, w = size
    scene_end, scene = 0, np.zeros((h, w, 3), np.uint8)
    stripes = (np.indices((h, w)).sum(0) // 8 % 2 * 60 + 90).astype(np.uint8)[..., None].repeat(3, -1)
    target = stripes.copy()
    target[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = color
    for i in range(n_frames):
        if needle[0] <= i < needle[1]:
            yield target
            continue
        if i >= scene_end:
            scene = np.empty((h, w, 3), np.uint8)
            scene[:] = rng.integers(60, 140, size=3)
            scene_end = i + int(rng.uniform(8, 20) * fps)
        yield scene


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def make_benchmark(root: Path, cfg: DemoConfig) -> tuple[Path, Path, Path]:
    """Write the videos, `video_info.meta.jsonl` and `LVBench.tsv`; returns (videos, jsonl, tsv)."""
    rng = np.random.default_rng(cfg.seed)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    lines = []
    for v in range(cfg.videos):
        n_frames = int(cfg.duration * cfg.video_fps)
        needle_len = int(cfg.needle * cfg.video_fps)
        start = int(rng.integers(int(5 * cfg.video_fps), n_frames - needle_len - int(5 * cfg.video_fps)))
        answer = names[int(rng.integers(len(names)))]
        options = [answer] + list(rng.choice([c for c in names if c != answer], size=3, replace=False))
        rng.shuffle(options)
        key = f"demo{v:03d}"
        path = videos / f"{key}.mp4"
        if not path.exists():
            write_video(path, _video_frames(rng, n_frames, cfg.video_fps, (start, start + needle_len),
                                            COLORS[answer]), cfg.video_fps)
        question = "What color is the square shown on the striped background?\n" + "\n".join(
            f"({'ABCD'[i]}) {opt}" for i, opt in enumerate(options))
        span = f"{_clock(start / cfg.video_fps)}-{_clock((start + needle_len) / cfg.video_fps)}"
        lines.append({"key": key, "type": "demo", "qa": [{
            "uid": "0", "question": question, "answer": "ABCD"[options.index(answer)],
            "question_type": ["key information retrieval"], "time_reference": span}]})
    jsonl = root / "video_info.meta.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tsv = root / "LVBench.tsv"
    write_tsv(convert("lvbench", jsonl), tsv)
    return videos, jsonl, tsv


# The demo's frame policy: K = 16 as in TSPO's demos; each method of DEMO_METHODS replaces the method.
DEMO_POLICY = FramePolicy(k=16)


def run_demo(cfg: DemoConfig, policy: FramePolicy = DEMO_POLICY, extract: ExtractConfig | None = None) -> pd.DataFrame:
    """Generate the benchmark, select frames with each method of `policy` (K, official,
    sampling) and write the table and plots; `extract`: how fast features are extracted."""
    out = Path(cfg.out)
    videos, jsonl, tsv = make_benchmark(out / "benchmark", cfg)
    questions = load_benchmark("lvbench", tsv, jsonl)
    agent: TemporalAgent = load_agent(cfg.agent)
    if cfg.agent.startswith("random:"):
        print(f"NOTE: no checkpoint given: using a randomly initialised agent ({cfg.agent}). Its scores are "
              "noise; pass --agent <TSPO-0.4B dir or hub id> for real selections.")
    encoder, cache = agent.encoder, FeatureCache(out / "feature_cache")
    report = extract_videos([resolve_video(videos, q.video_name, "lvbench") for q in questions],
                            encoder, cache, policy.sampling, extract)
    print(f"extracted {len(report.encoded)} videos, {len(report.cached)} from cache, {len(report.failed)} failed")
    runs: dict[str, SelectionSet] = {}
    policies = {method: policy.replace(method=method, params=params) for method, params in DEMO_METHODS.items()}
    for method, method_policy in policies.items():
        runs[method] = select_benchmark(questions, videos, encoder, cache, method_policy, extract, agent=agent,
                                        progress=False)
        runs[method].save(out / "selections" / f"{method}.json")
    if Path(cfg.trained_agent).is_dir():
        trained = load_agent(cfg.trained_agent)
        print(f"adding the trained agent in {cfg.trained_agent} as tspo-trained")
        runs["tspo-trained"] = select_benchmark(questions, videos, trained.encoder, cache,
                                                policies["tspo"], extract, agent=trained, progress=False)
        runs["tspo-trained"].save(out / "selections" / "tspo-trained.json")
    table = quality_table(runs, questions)
    (out / "quality.txt").write_text(table.to_string(float_format=lambda x: f"{x:.3f}") + "\n")
    table.to_csv(out / "quality.csv")
    for method, method_policy in policies.items():
        inspect_question(questions[0], videos, encoder, cache, method_policy, out / "plots" / method, extract, agent)
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    print(f"wrote {out}/quality.txt, {out}/selections/*.json, {out}/plots/*.png")
    return table

