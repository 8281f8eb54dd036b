"""The answering stage: benchmark questions -> chosen frames -> decoded pixels -> backbone answers.

This is the one place where frames meet a video LLM; the lmms-eval and VLMEvalKit
adapters and the `tspo-eval evaluate` runner all call `answer_questions`.

Which frames: `selections.FramePlanner` under one `FramePolicy`, the same planner
`tspo-eval select` uses (a selections file, uniform frames over the whole video, or computed
now from cached features), so a uniform baseline differs from TSPO only in frame choice.

Speed: questions are planned and decoded on worker threads while the backbone works on
earlier ones; decoded frames of a video are kept while later questions on the same video
need them, and the backbone reuses vision features of frames it has already seen.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbones import Backbone, VideoQuery
from .config import former_spellings
from .prefetch import prefetched
from .selection.stage import FramePlanner, QuestionRef, Selection
from .video import VideoError, read_frames

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """A backbone's answer and exactly which frames it was given (or why there is none)."""

    index: str
    text: str
    frame_numbers: list[int]
    timestamps: list[float]
    error: str | None = None


class _FrameMemo:
    """Decoded frames of the most recent videos, so questions on one video decode each frame once.

    Frames another thread is decoding right now are waited for, not decoded again: the
    prefetch threads often work on questions of the same video at once.
    """

    def __init__(self, max_frames: int = 4096) -> None:
        self.max_frames = max_frames
        self._frames: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._pending: dict[tuple[str, int], Future] = {}
        self._lock = threading.Lock()

    def read(self, path: str, frame_numbers: Sequence[int]) -> np.ndarray:
        have: dict[int, np.ndarray] = {}
        waits: dict[int, Future] = {}
        mine: list[int] = []
        with self._lock:
            for f in sorted({int(f) for f in frame_numbers}):
                key = (path, f)
                if key in self._frames:
                    have[f] = self._frames[key]
                elif key in self._pending:
                    waits[f] = self._pending[key]
                else:
                    mine.append(f)
            job: Future = Future()
            for f in mine:
                self._pending[(path, f)] = job
        if mine:
            try:
                decoded = dict(zip(mine, read_frames(path, mine)))
            except BaseException as err:
                self._settle(path, mine)
                job.set_exception(err)
                raise
            self._settle(path, mine, decoded)
            job.set_result(decoded)
            have.update(decoded)
        for f, other in waits.items():
            have[f] = other.result()[f]  # re-raises the decoding thread's error
        return np.stack([have[int(f)] for f in frame_numbers])

    def _settle(self, path: str, numbers: list[int], decoded: dict[int, np.ndarray] | None = None) -> None:
        with self._lock:
            for f in numbers:
                del self._pending[(path, f)]
                if decoded is not None:
                    self._frames[(path, f)] = decoded[f]
            while len(self._frames) > self.max_frames:
                self._frames.popitem(last=False)


@dataclass
class _Prepared:
    slot: int
    ref: QuestionRef
    selection: Selection | None
    frames: np.ndarray | None
    error: str | None


def _prepare(slot: int, ref: QuestionRef, planner: FramePlanner, memo: _FrameMemo) -> _Prepared:
    try:
        selection = planner.plan(ref)
        return _Prepared(slot, ref, selection, memo.read(ref.video_path, selection.frame_numbers), None)
    except (VideoError, ValueError, FileNotFoundError, RuntimeError) as err:
        return _Prepared(slot, ref, None, None, f"{ref.video_path}: {err}")


@former_spellings
@dataclass
class AnswerConfig:
    """How answering runs."""

    answer_batch: int = field(default=1, metadata={"help": "questions per backbone call", "renamed_from": "batch_size"})
    max_new_tokens: int = field(default=16, metadata={"help": "generation length"})
    answer_threads: int = field(default=4, metadata={
        "help": "threads planning and decoding the next questions' frames while the backbone answers",
        "renamed_from": "decode_workers"})
    prefetch_questions: int = field(default=8, metadata={
        "help": "questions planned and decoded ahead of the backbone", "renamed_from": "prefetch"})

    def __post_init__(self) -> None:
        for name in ("answer_batch", "max_new_tokens", "answer_threads", "prefetch_questions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def answer_questions(refs: Sequence[QuestionRef], planner: FramePlanner, backbone: Backbone,
                     cfg: AnswerConfig | None = None, record: str | Path | None = None,
                     progress: bool = True) -> list[Answer]:
    """Answers in the order of `refs`; a question whose frames fail gets `error` and text "".

    Questions are processed grouped by video (stable), so decoded frames and vision
    features are reused; `record` appends one JSON line per answer (index, frames, text,
    error) as soon as it exists, so an interrupted run loses nothing already answered.
    `backbone.timings.seconds["decode"]` receives the time the backbone waited for frames.
    """
    cfg = cfg or AnswerConfig()
    first_seen: dict[str, int] = {}
    for i, ref in enumerate(refs):
        first_seen.setdefault(ref.video_path, i)
    order = sorted(range(len(refs)), key=lambda i: first_seen[refs[i].video_path])
    answers: dict[int, Answer] = {}
    if record is not None:
        Path(record).parent.mkdir(parents=True, exist_ok=True)
    sink = open(record, "a") if record is not None else None  # noqa: SIM115 (closed below)
    bar = tqdm(total=len(refs), desc=f"answer ({backbone.name})", unit="q", disable=not progress)
    batch: list[_Prepared] = []

    def flush() -> None:
        if not batch:
            return
        queries = [VideoQuery(frames=p.frames, timestamps=p.selection.timestamps, prompt=p.ref.prompt,
                              video=p.ref.video_path, frame_numbers=p.selection.frame_numbers) for p in batch]
        texts = backbone.generate(queries, max_new_tokens=cfg.max_new_tokens)
        for p, text in zip(batch, texts):
            _store(Answer(p.ref.index, text, list(p.selection.frame_numbers), list(p.selection.timestamps)), p)
        batch.clear()

    def _store(answer: Answer, p: _Prepared) -> None:
        answers[p.slot] = answer
        if sink is not None:
            sink.write(json.dumps(asdict(answer)) + "\n")
            sink.flush()
        bar.update(1)

    try:
        memo = _FrameMemo()
        stream = prefetched(lambda i: _prepare(i, refs[i], planner, memo), order, cfg.answer_threads,
                            cfg.prefetch_questions, name="tspo-decode")
        while True:
            waited = time.perf_counter()
            p = next(stream, None)
            backbone.timings.seconds["decode"] += time.perf_counter() - waited
            if p is None:
                break
            if p.error is not None:
                log.warning("question %s failed: %s", p.ref.index, p.error)
                _store(Answer(p.ref.index, "", [], [], p.error), p)
                continue
            batch.append(p)
            if len(batch) >= cfg.answer_batch:
                with torch.inference_mode():
                    flush()
        with torch.inference_mode():
            flush()
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return [answers[i] for i in range(len(refs))]
