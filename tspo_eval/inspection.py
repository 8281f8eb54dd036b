"""Look at one question: its score timeline and its chosen frames, as PNGs."""
from __future__ import annotations

from pathlib import Path

from .agent import TemporalAgent
from .benchmarks import Question, resolve_video
from .cache import FeatureCache
from .encoders import Encoder
from .plots import frame_grid, score_timeline
from .policy import ExtractConfig, FramePolicy
from .quality import reference_spans
from .selection.stage import FramePlanner, QuestionRef, Selection
from .video import read_frames


def inspect_question(question: Question, video_root: str | Path, encoder: Encoder, cache: FeatureCache,
                     policy: FramePolicy, out_prefix: str | Path, extract: ExtractConfig | None = None,
                     agent: TemporalAgent | None = None) -> tuple[Selection, Path, Path]:
    """Select frames for one question and write `<prefix>_timeline.png` and `<prefix>_frames.png`."""
    path = resolve_video(video_root, question.video_name, question.benchmark)
    planner = FramePlanner(policy.replace(selections=None), agent=agent, encoder=encoder, cache=cache,
                           extract=extract, device=encoder.device)
    sel, scores, vf = planner.compute(QuestionRef(question.index, question.benchmark, str(path), question.question))
    title = f"{question.index} [{policy.method}, k={policy.k}] {question.question}"
    ylabel = {"agent": "agent score S", "blip": "BLIP ITM P(match)"}.get(policy.score_source,
                                                                       "CLIP cosine (frame, question)")
    timeline = score_timeline(vf.timestamps, scores.numpy(), sel.timestamps, f"{out_prefix}_timeline.png", title,
                              reference_spans(question, sel.fps), ylabel)
    grid = frame_grid(read_frames(vf.video, sel.frame_numbers), sel.timestamps, f"{out_prefix}_frames.png",
                      title=title)
    return sel, timeline, grid
