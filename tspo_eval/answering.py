"""The answering stage: benchmark questions -> chosen frames -> decoded pixels -> backbone answers.

This is the one place where frames meet a video LLM; the lmms-eval and VLMEvalKit
adapters and the `tspo-eval evaluate` runner all call `answer_questions`.

Which frames (`FrameConfig`):
- a selections file (ours, or the published `frame_idx` JSON) when it names the question;
- otherwise `method="uniform"`: lmms-eval's own video sampling, `np.linspace(0, N-1, k)`
  over all N decoded frames, so a uniform baseline differs from TSPO only in frame choice;
- otherwise computed now: the video's cached candidate features (extracted on the fly
  when missing) scored by the agent (or CLIP) and selected as `tspo-eval select` does.

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

from .agent import TemporalAgent, load_agent
from .backbones import Backbone, VideoQuery
from .benchmarks import read_frame_idx
from .cache import FeatureCache
from .encoders import Encoder
from .extract import ExtractConfig, video_features
from .prefetch import prefetched
from .selections import SelectConfig, Selection, SelectionSet, select_for_question
from .video import VideoError, probe, read_frames

log = logging.getLogger(__name__)


@dataclass
class FrameConfig:
    """Which frames a question gets."""

    method: str = field(default="tspo", metadata={"help": "uniform (lmms-eval sampling over all frames) or a "
                                                           "selection method computed from cached features"})
    k: int = field(default=64, metadata={"help": "frame budget per question"})
    fps: float = field(default=1.0, metadata={"help": "candidate fps for computed selections"})
    max_frames: int | None = field(default=None, metadata={"help": "candidate cap for computed selections"})
    selections: str | None = field(default=None, metadata={
        "help": "precomputed selections: a tspo-eval selections file, a published frame_idx JSON, or a "
                "folder of <method>_<benchmark>.json files (as `tspo-eval select` writes them)"})
    official: bool = field(default=False, metadata={"help": "published short-video fallback (see select)"})

    def __post_init__(self) -> None:
        if self.method != "uniform":
            SelectConfig(method=self.method, k=self.k)  # validates the method name and k
        elif self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


@dataclass
class QuestionRef:
    """What answering needs from a benchmark question: its id, video, stem and LLM prompt."""

    index: str
    benchmark: str
    video_path: str
    question: str
    prompt: str


@dataclass
class Answer:
    """A backbone's answer and exactly which frames it was given (or why there is none)."""

    index: str
    text: str
    frame_numbers: list[int]
    timestamps: list[float]
    error: str | None = None


class FramePlanner:
    """Chooses each question's frames per `FrameConfig` (see the module docstring)."""

    def __init__(self, cfg: FrameConfig, agent: TemporalAgent | str | None = None, encoder: Encoder | None = None,
                 cache: FeatureCache | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        """`agent` may be a checkpoint spec (directory, hub id, random:<config>), loaded when
        a question first needs it: a run served entirely from a selections file never loads it."""
        if cfg.method != "uniform" and cfg.selections is None and agent is None and encoder is None:
            raise ValueError(f"method {cfg.method!r} needs an agent (or encoder) to score frames, "
                             "or a precomputed selections file")
        self.cfg = cfg
        self._agent, self._encoder = agent, encoder
        self.cache = cache or FeatureCache("feature_cache")
        self.device, self.dtype = device, dtype
        self._precomputed: dict[str, dict[str, list[int]]] = {}
        self._lock = threading.Lock()

    def _scorer(self) -> tuple[TemporalAgent | None, Encoder]:
        with self._lock:
            if isinstance(self._agent, str):
                self._agent = load_agent(self._agent, torch_dtype=self.dtype, device=self.device)
            if self._encoder is None:
                if self._agent is None:
                    raise ValueError(f"method {self.cfg.method!r} needs an agent to select frames")
                self._encoder = self._agent.encoder
            return self._agent, self._encoder

    def _load_selections(self, benchmark: str) -> dict[str, list[int]]:
        """Frame numbers by question index for one benchmark ({} when a folder has no file for it)."""
        with self._lock:
            if benchmark not in self._precomputed:
                path = Path(self.cfg.selections)
                if path.is_dir():
                    path = path / f"{self.cfg.method}_{benchmark}.json"
                    if not path.is_file():
                        self._precomputed[benchmark] = {}
                        return {}
                elif not path.is_file():
                    raise FileNotFoundError(f"selections file {path} does not exist; run `tspo-eval select` first")
                payload = json.loads(path.read_text())
                if isinstance(payload, dict) and str(payload.get("format", "")).startswith("tspo-eval/selections"):
                    sset = SelectionSet.load(path)
                    self._precomputed[benchmark] = {k: v.frame_numbers for k, v in sset.selections.items()}
                else:
                    self._precomputed[benchmark] = read_frame_idx(path, benchmark)
            return self._precomputed[benchmark]

    def plan(self, ref: QuestionRef) -> Selection:
        """The frames for one question; raises VideoError / ValueError when it has none."""
        if self.cfg.selections is not None:
            chosen = self._load_selections(ref.benchmark).get(ref.index)
            if chosen is not None:
                info = probe(ref.video_path)
                return Selection(video=Path(ref.video_path).name, frame_numbers=[int(f) for f in chosen],
                                 timestamps=[f / info.fps for f in chosen], num_candidates=info.num_frames,
                                 fps=info.fps)
            if self._agent is None and self._encoder is None and self.cfg.method != "uniform":
                raise ValueError(f"question {ref.index} is not in {self.cfg.selections} and no agent was given "
                                 "to select its frames now")
        if self.cfg.method == "uniform":
            info = probe(ref.video_path)
            frames = np.linspace(0, info.num_frames - 1, self.cfg.k, dtype=int)
            return Selection(video=Path(ref.video_path).name, frame_numbers=frames.tolist(),
                             timestamps=(frames / info.fps).tolist(), num_candidates=info.num_frames, fps=info.fps)
        agent, encoder = self._scorer()
        vf = video_features(ref.video_path, encoder, self.cache,
                            ExtractConfig(fps=self.cfg.fps, max_frames=self.cfg.max_frames))
        text = self.cache.text_features(encoder.identity, [ref.question], encoder.encode_text)[0]
        cfg = SelectConfig(method=self.cfg.method, k=self.cfg.k, official=self.cfg.official)
        selection, _ = select_for_question(vf, text, cfg, ref.benchmark, agent)
        return selection


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


@dataclass
class AnswerConfig:
    """How answering runs."""

    batch_size: int = field(default=1, metadata={"help": "questions per backbone call"})
    max_new_tokens: int = field(default=16, metadata={"help": "generation length"})
    decode_workers: int = field(default=4, metadata={"help": "threads planning and decoding ahead"})
    prefetch: int = field(default=8, metadata={"help": "questions decoded ahead of the backbone"})

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "decode_workers", "prefetch"):
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
        stream = prefetched(lambda i: _prepare(i, refs[i], planner, memo), order, cfg.decode_workers, cfg.prefetch,
                            name="tspo-decode")
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
            if len(batch) >= cfg.batch_size:
                with torch.inference_mode():
                    flush()
        with torch.inference_mode():
            flush()
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return [answers[i] for i in range(len(refs))]
