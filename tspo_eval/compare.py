"""Every frame selector over one benchmark's cached features, side by side (`tspo-eval compare`).

Each video's features are read from the cache once (extracted when missing) and every method
selects from them, so methods differ in nothing but their rule. Per method the table holds
the time-reference hit rate and coverage (`quality.quality_table`: LVBench, LongVideoBench),
the questions whose selection failed, the share of candidates scored (`scored`: below 1 only
for methods that score on demand, `focus`), and the mean selection time per question: scoring (CLIP
cosine, or the agent's forward pass for `tspo`) plus selection, from the cached features,
without decoding or cache reads (one untimed warm-up call per method first). A method scored
by BLIP (`NAME:scores=blip`) has its scores computed (or read from the cache) per video before
the clock starts: its time is the selection alone. With a
backbone, each method's selections also go through lmms-eval (`integrations.lmms_runner.evaluate`) and
the benchmark's overall accuracy joins the table.

Outputs under `out`: `compare_<benchmark>.csv` and `.md` (the table), `compare_<benchmark>.png`
(the chart) and `selections/<label>_<benchmark>.json` (each method's selections).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .agent import TemporalAgent
from .benchmarks import Question, RefusedRow, get_benchmark, resolve_video
from .cache import FeatureCache
from .config import BACKBONES, DEFAULT_METHODS, CompareConfig, method_spec  # noqa: F401  (re-exported)
from .encoders import Encoder
from .extract import video_features
from .policy import ExtractConfig, FramePolicy
from .quality import quality_table
from .selection.blip import BlipScorer, blip_scores
from .selection.stage import SelectionSet, select_for_question
from .video import VideoError


def file_label(label: str) -> str:
    """A method label as a file-name part ("aks:preset=tspo" -> "aks-preset-tspo")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label)


@dataclass
class Comparison:
    """Each method's selections and per-question selection times (seconds), and the table."""

    runs: dict[str, SelectionSet]
    seconds: dict[str, list[float]]
    table: pd.DataFrame


def compare_selectors(questions: Sequence[Question], video_root: str | Path, encoder: Encoder, cache: FeatureCache,
                      cfg: CompareConfig, policy: FramePolicy | None = None, extract: ExtractConfig | None = None,
                      agent: TemporalAgent | None = None, progress: bool = True,
                      refused: Sequence[RefusedRow] = ()) -> Comparison:
    """Run every method of `cfg` over the questions, each under `policy` (its sampling, `official`)
    with the method's name, K and parameters; a video or question that fails is recorded in the
    method's `failed` and the run goes on, as are the annotation rows the reader `refused`.
    `extract`: how fast missing features are extracted."""
    policy = policy or FramePolicy()
    if not questions:
        raise ValueError("no questions to compare selectors on")
    benchmark = questions[0].benchmark
    specs = dict(method_spec(m, policy) for m in cfg.methods)
    if agent is None:
        skipped = [label for label, scfg in specs.items() if scfg.score_source == "agent"]
        if skipped:
            print(f"NOTE: no agent given: skipping {', '.join(skipped)} (scored by the TSPO agent)")
        specs = {label: scfg for label, scfg in specs.items() if label not in skipped}
        if not specs:
            raise ValueError("every method needs the agent: pass --agent or methods scored by CLIP")
    texts = cache.text_features(encoder.identity, [q.question for q in questions], encoder.encode_text)
    runs = {label: SelectionSet({"benchmark": benchmark, "method": scfg.method, "label": label, "k": scfg.k,
                                 "scores": scfg.score_source, "params": scfg.params, "encoder": encoder.identity,
                                 "agent": agent.config._name_or_path if agent is not None else None,
                                 "policy": scfg.identity(), "fingerprint": scfg.fingerprint(),
                                 "fps": policy.sampling.fps, "max_frames": policy.sampling.max_frames})
            for label, scfg in specs.items()}
    for run in runs.values():
        run.failed.update({row.index: str(row) for row in refused})
    seconds: dict[str, list[float]] = {label: [] for label in specs}
    blip = {model: BlipScorer.from_pretrained(model, encoder.device) for model in
            {scfg.identity()["blip_model"] for scfg in specs.values() if scfg.score_source == "blip"}}
    warmed: set[str] = set()
    by_video: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_video.setdefault(q.video_name, []).append(i)
    for video_name, members in tqdm(by_video.items(), desc="compare", unit="video", disable=not progress):
        path = resolve_video(video_root, video_name, benchmark)
        try:
            vf = video_features(path, encoder, cache, policy.sampling, extract)
        except (VideoError, ValueError) as err:
            for run in runs.values():
                run.failed.update({questions[i].index: str(err) for i in members})
            continue
        stems = [questions[i].question for i in members]
        try:  # every BLIP model's scores of this video's questions, one decoding pass each
            scored = {model: dict(zip(members, blip_scores(scorer, vf, path, stems, cache, policy.sampling)))
                      for model, scorer in blip.items()}
        except (VideoError, OSError) as err:
            for label, scfg in specs.items():
                if scfg.score_source == "blip":
                    runs[label].failed.update({questions[i].index: str(err) for i in members})
            scored = {}
        for label, scfg in specs.items():
            given = scored.get(scfg.identity()["blip_model"]) if scfg.score_source == "blip" else None
            if scfg.score_source == "blip" and given is None:
                continue
            if label not in warmed:  # untimed warm-up: lazy imports, first allocations
                warmed.add(label)
                try:
                    select_for_question(vf, texts[members[0]], scfg, benchmark, agent,
                                        given[members[0]] if given else None)
                except ValueError:
                    pass
            for i in members:
                start = time.perf_counter()
                try:
                    selection, _ = select_for_question(vf, texts[i], scfg, benchmark, agent,
                                                       given[i] if given else None)
                except ValueError as err:
                    runs[label].failed[questions[i].index] = str(err)
                    continue
                seconds[label].append(time.perf_counter() - start)
                runs[label].selections[questions[i].index] = selection
    return Comparison(runs, seconds, comparison_table(runs, seconds, questions, cfg.tolerance))


def comparison_table(runs: dict[str, SelectionSet], seconds: dict[str, list[float]], questions: Sequence[Question],
                     tolerance: float = 0.5) -> pd.DataFrame:
    """`quality_table` plus, per method, failed questions and the mean selection time (ms)."""
    table = quality_table(runs, questions, tolerance)
    table["failed"] = [len(runs[label].failed) for label in table.index]
    table["scored"] = [scored_fraction(runs[label]) for label in table.index]
    table["ms_per_question"] = [1000 * float(np.mean(seconds[label])) if seconds[label] else float("nan")
                                for label in table.index]
    return table


def scored_fraction(run: SelectionSet) -> float:
    """Mean share of the candidates a method scored per question: what an on-demand method
    (focus) asked its scorer for, 1 for the methods that read every score, 0 for uniform."""
    every = 0.0 if run.meta.get("method") == "uniform" else 1.0
    shares = [every if sel.scored is None else sel.scored for sel in run.selections.values()]
    return float(np.mean(shares)) if shares else float("nan")


def write_comparison(comparison: Comparison, out: str | Path, benchmark: str) -> list[Path]:
    """The table (CSV, markdown), the chart (PNG) and each method's selections; returns the paths."""
    from .plots import comparison_chart

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compare_{benchmark}"
    comparison.table.to_csv(stem.with_suffix(".csv"))
    stem.with_suffix(".md").write_text(comparison.table.to_markdown(floatfmt=".3f") + "\n")
    paths = [stem.with_suffix(".csv"), stem.with_suffix(".md"),
             comparison_chart(comparison.table, stem.with_suffix(".png"), title=f"{benchmark}: frame selectors")]
    for label, run in comparison.runs.items():
        paths.append(run.save(out / "selections" / f"{file_label(label)}_{benchmark}.json"))
    return paths


def add_accuracy(comparison: Comparison, cfg: CompareConfig, benchmark: str, annotations: str | Path,
                 videos: str | Path, cache: str | Path, agent: str | None = None, policy: FramePolicy | None = None,
                 extract: ExtractConfig | None = None) -> pd.DataFrame:
    """Run each method's saved selections through lmms-eval (`integrations.lmms_runner.evaluate`, one run per
    method on `cfg.backbone`) and add the benchmark's overall accuracy as an `accuracy` column
    (fractions, whatever the benchmark's own scale). `write_comparison` must have saved the
    selections under `cfg.out` first: evaluate reads `<out>/selections/<method>_<benchmark>.json`.

    `uniform` runs as evaluate's uniform baseline: K frames over all decoded frames, not over
    the candidates (what the published evaluation compares against).
    """
    from .integrations.lmms_runner import EvaluateConfig, evaluate

    kwargs = {"agent": agent} if agent else {}
    eval_cfg = EvaluateConfig(benchmark=benchmark, annotations=Path(annotations), videos=Path(videos),
                              backbone=cfg.backbone, pretrained=cfg.pretrained, methods=tuple(comparison.runs),
                              out=Path(cfg.out), cache=Path(cache), limit=cfg.limit, model_args=cfg.model_args,
                              **kwargs)
    scores = evaluate(eval_cfg, policy or FramePolicy(), extract)
    spec = get_benchmark(benchmark)
    comparison.table["accuracy"] = [float(scores.loc[spec.metrics[0].name, label]) / spec.scale
                                    for label in comparison.table.index]
    return comparison.table
