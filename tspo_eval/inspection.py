"""Look at one question: its score timeline and its chosen frames, as PNGs."""
from __future__ import annotations

from pathlib import Path

from .agent import TemporalAgent
from .benchmarks import Question, resolve_video
from .cache import FeatureCache
from .encoders import Encoder
from .extract import video_features
from .plots import frame_grid, score_timeline
from .policy import ExtractConfig, FramePolicy
from .quality import reference_spans
from .selection.stage import Selection, select_for_question
from .video import read_frames


def inspect_question(question: Question, video_root: str | Path, encoder: Encoder, cache: FeatureCache,
                     policy: FramePolicy, out_prefix: str | Path, extract: ExtractConfig | None = None,
                     agent: TemporalAgent | None = None) -> tuple[Selection, Path, Path]:
    """Select frames for one question and write `<prefix>_timeline.png` and `<prefix>_frames.png`."""
    vf = video_features(resolve_video(video_root, question.video_name, question.benchmark), encoder, cache,
                        policy.sampling, extract)
    text = cache.text_features(encoder.identity, [question.question], encoder.encode_text)[0]
    sel, scores = select_for_question(vf, text, policy, question.benchmark, agent)
    title = f"{question.index} [{policy.method}, k={policy.k}] {question.question}"
    ylabel = "agent score S" if policy.score_source == "agent" else "CLIP cosine (frame, question)"
    timeline = score_timeline(vf.timestamps, scores.numpy(), sel.timestamps, f"{out_prefix}_timeline.png", title,
                              reference_spans(question, sel.fps), ylabel)
    grid = frame_grid(read_frames(vf.video, sel.frame_numbers), sel.timestamps, f"{out_prefix}_frames.png",
                      title=title)
    return sel, timeline, grid
