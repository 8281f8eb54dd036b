"""Selection quality without any LLM: does a selection hit the question's referenced moment?

Ground truth: LVBench `time_reference` spans (seconds) and LongVideoBench `position`
frames (each a moment, converted to seconds with the video's fps).  A selection *hits*
when one of its frames lies within a span widened by `tolerance` seconds on each side
(default 0.5 s: with 1-fps candidates every moment has a candidate within half a second,
so a perfect selector scores 1.0).  *Coverage* is the fraction of the selected frames
inside a (widened) span: how much of the budget went to the relevant moment.

With `intervals=True` the table adds 95% confidence intervals over questions: Wilson's
score interval for the hit rate (a proportion; sound near 0 and 1, unlike mean +- 1.96 SE)
and a percentile bootstrap for the mean coverage (2000 resamples, fixed seed, so the same
selections always give the same interval).  `chance_hit_rate` is what a uniformly random
choice of K candidates would hit: the yardstick a selector has to beat.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .benchmarks import Question
from .selection.stage import SelectionSet


def reference_spans(question: Question, fps: float) -> list[tuple[float, float]]:
    """The question's ground-truth spans in seconds (empty when it has none)."""
    if question.time_reference is not None:
        return [question.time_reference]
    moments = question.reference_seconds(fps)
    return [(t, t) for t in moments] if moments else []


def hit_and_coverage(timestamps: Sequence[float], spans: Sequence[tuple[float, float]],
                     tolerance: float = 0.5) -> tuple[bool, float]:
    """(any frame inside a span, fraction of frames inside a span), spans widened by `tolerance`."""
    ts = np.asarray(timestamps, dtype=np.float64)
    inside = np.zeros(len(ts), dtype=bool)
    for start, end in spans:
        inside |= (ts >= start - tolerance) & (ts <= end + tolerance)
    return bool(inside.any()), float(inside.mean()) if len(ts) else 0.0


def question_quality(run: SelectionSet, questions: Sequence[Question], tolerance: float = 0.5) -> pd.DataFrame:
    """Per question with a time reference and a selection: hit (bool), coverage, frames chosen."""
    rows = []
    for q in questions:
        sel = run.selections.get(q.index)
        if sel is None or not (spans := reference_spans(q, sel.fps)):
            continue
        hit, cov = hit_and_coverage(sel.timestamps, spans, tolerance)
        rows.append({"question": q.index, "hit": hit, "coverage": cov, "frames": len(sel.frame_numbers)})
    return pd.DataFrame(rows, columns=["question", "hit", "coverage", "frames"])


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% (z = 1.96) Wilson score interval of a proportion hits / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (deterministic for a given seed)."""
    x = np.asarray(values, dtype=np.float64)
    if not len(x):
        return float("nan"), float("nan")
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(resamples, len(x)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def chance_hit_rate(candidates: int, inside: int, k: int) -> float:
    """P(a uniformly random k-subset of `candidates` contains one of the `inside` ones)."""
    k = min(k, candidates)
    return 1.0 - math.comb(candidates - inside, k) / math.comb(candidates, k)


def quality_table(runs: Mapping[str, SelectionSet], questions: Sequence[Question],
                  tolerance: float = 0.5, intervals: bool = False) -> pd.DataFrame:
    """One row per method: questions scored, hit rate, mean coverage, mean frames chosen
    (with `intervals`, also the 95% intervals `hit_rate_lo`, `hit_rate_hi`, `coverage_lo`, `coverage_hi`)."""
    rows = []
    for name, run in runs.items():
        per = question_quality(run, questions, tolerance)
        n = len(per)
        row = {"method": name, "questions": n,
               "hit_rate": float(per["hit"].mean()) if n else float("nan"),
               "coverage": float(per["coverage"].mean()) if n else float("nan"),
               "frames": float(per["frames"].mean()) if n else float("nan")}
        if intervals:
            row["hit_rate_lo"], row["hit_rate_hi"] = wilson_interval(int(per["hit"].sum()), n)
            row["coverage_lo"], row["coverage_hi"] = bootstrap_interval(per["coverage"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
