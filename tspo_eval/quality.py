"""Selection quality without any LLM: does a selection hit the question's referenced moment?

Ground truth: LVBench `time_reference` spans (seconds) and LongVideoBench `position`
frames (each a moment, converted to seconds with the video's fps).  A selection *hits*
when one of its frames lies within a span widened by `tolerance` seconds on each side
(default 0.5 s: with 1-fps candidates every moment has a candidate within half a second,
so a perfect selector scores 1.0).  *Coverage* is the fraction of the selected frames
inside a (widened) span: how much of the budget went to the relevant moment.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .benchmarks import Question
from .selections import SelectionSet


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


def quality_table(runs: Mapping[str, SelectionSet], questions: Sequence[Question],
                  tolerance: float = 0.5) -> pd.DataFrame:
    """One row per method: questions scored, hit rate, mean coverage, mean frames chosen."""
    rows = []
    for name, run in runs.items():
        hits, coverage, frames = [], [], []
        for q in questions:
            sel = run.selections.get(q.index)
            if sel is None or not (spans := reference_spans(q, sel.fps)):
                continue
            hit, cov = hit_and_coverage(sel.timestamps, spans, tolerance)
            hits.append(hit)
            coverage.append(cov)
            frames.append(len(sel.frame_numbers))
        rows.append({"method": name, "questions": len(hits),
                     "hit_rate": float(np.mean(hits)) if hits else float("nan"),
                     "coverage": float(np.mean(coverage)) if coverage else float("nan"),
                     "frames": float(np.mean(frames)) if frames else float("nan")})
    return pd.DataFrame(rows).set_index("method")
