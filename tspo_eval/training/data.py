"""Training data: question files -> `Sample`s -> per-question `Episode`s of cached features.

Two row formats, told apart per row (one file may mix them):

- TSPO-10K (SPEC section 7): `video`, `original_question` ("<image>\\nQ\\nA. ..\\nB. .."),
  `problem`, `solution` ("<answer>b</answer>"), `type` (`general` | `specific`).  A
  `specific` row becomes a needle-in-a-haystack episode.
- Temporal-RLT kinds: `video`, `problem` (the stem), `problem_type` (`multiple_choice`,
  `grounding`, `grounded_qa` or `open`), `options` (list), `solution` (letter or answer
  text; for grounding a [start, end] list), `timestamps` ([start, end] seconds) or a
  `solution` span in [0, 1] with `video_length` (Temporal-R1's normalised form), `dataset`
  (the source, for per-source reports).  An optional `prompt` overrides the LLM text.

An `Episode` is what one training step needs from a question: candidate features (from the
per-video feature cache, computed once per video, never per rollout), the stem's text
features, timestamps and the target mask (candidates that show the asked-about content).
Candidates follow the published training rule: 1 fps, but 128 spread uniformly over the
video when that gives more than 128 or fewer than 50.  Needle episodes splice 1-4 random
50-frame clips of the target among 12 clips of *other* videos (never the target), in
random order, from cached features: nothing is decoded to build them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from .. import distributed
from ..benchmarks import Question
from ..cache import FeatureCache, VideoFeatures
from ..config import existing_path
from ..encoders import Encoder
from ..extract import extract_videos, video_features
from ..policy import ExtractConfig, Sampling
from ..video import probe, read_frames

Kind = Literal["multiple_choice", "grounding", "grounded_qa", "open"]
KINDS = ("multiple_choice", "grounding", "grounded_qa", "open")
MC_INSTRUCTION = "\nPlease answer with the option's letter from the given choices directly."
SPAN_INSTRUCTION = ('\nGive the start and end time of the moment in seconds as '
                    '<answer>{"start_time": "S", "end_time": "E"}</answer>.')
# Instructions the published trainer strips from TSPO-10K questions (tspo_trainer.compute_loss).
_STRIPPED = ("Please provide your answer by stating the letter followed by the full option.",
             "Please respond with only the letter of the correct answer.")
_OPTION = re.compile(r"^\(?([A-Z])[.):]\s*(.*)$")


@dataclass
class Sample:
    """One training question."""

    id: str
    video: str  # relative to the video root, or absolute
    kind: Kind
    question: str  # the stem only: what the agent's CLIP encodes
    prompt: str  # what the LLM reads after the video
    options: tuple[str, ...] = ()
    answer: str = ""  # option letter, or free-form answer text
    span: tuple[float, float] | None = None  # ground-truth moment, seconds
    needle: bool = False  # TSPO `specific`: spliced among distractor clips
    source: str = "default"  # dataset name, for per-source reports
    raw: dict[str, Any] = field(default_factory=dict, repr=False)  # the row as read


def video_path(sample: Sample, root: str | Path | None) -> str:
    """The sample's video file (`video` is relative to `root` unless absolute or no root is given)."""
    p = Path(sample.video)
    return str(p if p.is_absolute() or not root else Path(root) / p)


def _options_prompt(stem: str, options: Sequence[str]) -> str:
    return stem + "".join(f"\n{chr(65 + i)}. {o}" for i, o in enumerate(options))


def _letter(solution: str) -> str:
    inner = re.search(r"<answer>(.*?)</answer>", solution, re.DOTALL)
    return (inner.group(1) if inner else solution).strip().strip("().").upper()


def _tspo_row(row: dict, n: int) -> Sample:
    """A TSPO-10K row (published format)."""
    text = row["original_question"].replace("<image>\n", "").replace("<image>", "")
    for junk in _STRIPPED:
        text = text.replace(junk, "")
    text = text.strip()
    lines = text.split("\n")
    first_option = next((i for i, line in enumerate(lines) if _OPTION.match(line.strip())), len(lines))
    stem = "\n".join(lines[:first_option]).strip()
    options = tuple(_OPTION.match(line.strip()).group(2) for line in lines[first_option:] if _OPTION.match(line.strip()))
    if not options:
        raise ValueError(f"row {n}: no 'A. ...' option lines in original_question")
    return Sample(id=str(row.get("id", n)), video=row["video"], kind="multiple_choice", question=stem,
                  prompt=text + MC_INSTRUCTION, options=options, answer=_letter(row["solution"]),
                  needle=row.get("type", "general") == "specific", source=row.get("dataset", "tspo10k"), raw=row)


def _rlt_span(row: dict) -> tuple[float, float] | None:
    if "timestamps" in row:
        start, end = (float(x) for x in row["timestamps"])
    elif isinstance(row.get("solution"), (list, tuple)) and "video_length" in row:
        start, end = (float(x) * float(row["video_length"]) for x in row["solution"])
    else:
        return None
    return (min(start, end), max(start, end))


def _rlt_row(row: dict, n: int) -> Sample:
    """A Temporal-RLT-style row (multiple choice, grounding, grounded QA, open)."""
    kind = row["problem_type"].replace(" ", "_").replace("tvg", "grounding")
    if kind not in KINDS:
        raise ValueError(f"row {n}: problem_type {row['problem_type']!r} is not one of {', '.join(KINDS)}")
    stem = row["problem"].replace("<image>\n", "").strip()
    options = tuple(row.get("options", ()))
    span = _rlt_span(row)
    if kind in ("grounding", "grounded_qa") and span is None:
        raise ValueError(f"row {n}: a {kind} row needs `timestamps` (seconds) or a normalised "
                         "`solution` span with `video_length`")
    solution = row.get("solution", "")
    answer = "" if kind == "grounding" else str(row.get("answer", solution))
    answer = _letter(answer) if options else re.sub(r"</?answer>", "", answer).strip()
    prompt = row.get("prompt") or (_options_prompt(stem, options) + MC_INSTRUCTION if options else stem)
    if kind in ("grounding", "grounded_qa") and "prompt" not in row:
        prompt += SPAN_INSTRUCTION
    return Sample(id=str(row.get("id", n)), video=row["video"], kind=kind, question=stem, prompt=prompt,
                  options=options, answer=answer, span=span, source=row.get("dataset", "default"), raw=row)


def parse_row(row: dict, n: int = 0) -> Sample:
    """One jsonl row of either format as a `Sample`."""
    if "original_question" in row:
        return _tspo_row(row, n)
    if "problem_type" in row:
        return _rlt_row(row, n)
    raise ValueError(f"row {n}: neither TSPO-10K (original_question) nor Temporal-RLT (problem_type)")


def sample_from_question(question: Question, video_path: str | Path) -> Sample:
    """A benchmark question (with its time reference, if any) as a training sample."""
    options = tuple(question.candidates)
    return Sample(id=question.index, video=str(video_path), kind="multiple_choice", question=question.question,
                  prompt=_options_prompt(question.question, options) + MC_INSTRUCTION, options=options,
                  answer=question.answer_letter, span=question.time_reference, source=question.benchmark)


def read_samples(path: str | Path) -> list[Sample]:
    """All rows of a jsonl file (or a JSON list) as `Sample`s; a bad row raises with its line."""
    text = existing_path(path, "--data", "the training questions: a TSPO-10K or Temporal-RLT jsonl").read_text()
    whole = text.lstrip().startswith("[")
    numbered = [(1, text)] if whole else [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    rows = []
    for number, chunk in numbered:
        try:
            rows += json.loads(chunk) if whole else [json.loads(chunk)]
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number + err.lineno - 1}: not JSON ({err.msg}, column {err.colno}); "
                             "fix or remove it") from err
    samples = []
    for n, row in enumerate(rows):
        try:
            samples.append(parse_row(row, n))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path}: row {n} lacks or mistypes {err}") from err
    return samples


def write_samples(samples: Iterable[Sample], path: str | Path) -> Path:
    """Write the samples' original rows back as jsonl (select-data's kept subset)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s.raw, ensure_ascii=False) + "\n" for s in samples))
    return path


PRELOAD_MAX_BYTES = 2**30  # candidate pixels kept per prefetched episode (128 frames of 1080p fit)


@dataclass
class Episode:
    """One question ready for rollouts: its candidates' features and where they come from."""

    sample: Sample
    features: torch.Tensor  # (T, D) candidate frame features
    text: torch.Tensor  # (D,) stem features
    timestamps: np.ndarray  # (T,) seconds on the episode's timeline
    duration: float
    target: np.ndarray | None  # (T,) bool: candidates showing the asked-about content
    videos: list[str]  # source videos; videos[0] is the sample's own
    source: np.ndarray  # (T,) index into `videos`
    frame_numbers: np.ndarray  # (T,) frame number in its source video
    key: str  # identity of this candidate set (vision-feature reuse inside a backbone)
    pixels: np.ndarray | None = None  # (T, H, W, 3) every candidate, once `preload` has run

    @functools.cached_property
    def frame_size(self) -> tuple[int, int]:
        """(H, W) of the sample's own video: the size every candidate's pixels are given in."""
        info = probe(self.videos[0])
        return info.height, info.width

    def preload(self, max_bytes: int = PRELOAD_MAX_BYTES) -> bool:
        """Decode every candidate now (on a prefetch thread, while the GPU works on the previous
        question), unless they would take more than `max_bytes`; then `frames` decodes on demand."""
        height, width = self.frame_size
        if len(self.source) * height * width * 3 > max_bytes:
            return False
        self.pixels = self.frames(np.arange(len(self.source)))
        return True

    def frames(self, positions: Sequence[int]) -> np.ndarray:
        """uint8 (n, H, W, 3) pixels of the given candidates (decoded now unless preloaded);
        frames of other videos (needle distractors) are resized to the sample video's size."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.pixels is not None:
            return self.pixels[positions]
        out: list[np.ndarray | None] = [None] * len(positions)
        for v in np.unique(self.source[positions]):
            where = np.flatnonzero(self.source[positions] == v)
            numbers, back = np.unique(self.frame_numbers[positions[where]], return_inverse=True)  # sorted, once
            decoded = read_frames(self.videos[v], numbers)
            for i, j in zip(where, back):
                out[i] = decoded[j]
        if len(self.videos) == 1:
            return np.stack(out)
        return np.stack([f if f.shape[:2] == self.frame_size else _resize(f, self.frame_size) for f in out])


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=size, mode="bilinear", antialias=True)[0].permute(1, 2, 0).round().clamp(
        0, 255).byte().numpy()


class EpisodeBuilder:
    """Turns samples into episodes from the feature cache (extracting what is missing)."""

    def __init__(self, video_root: str | Path | None, encoder: Encoder, cache: FeatureCache,
                 max_candidates: int = 128, min_candidates: int = 50, distractors: int = 12,
                 clip_len: int = 50, max_repeats: int = 4, span_tolerance: float = 0.5,
                 distractor_videos: Sequence[str | Path] = (), decode_resize: bool = False,
                 extract: ExtractConfig | None = None) -> None:
        """`decode_resize` keys the cached features (as for evaluation); `extract` only sets how
        fast missing ones are extracted."""
        self.root = Path(video_root) if video_root else None
        self.encoder, self.cache = encoder, cache
        self.sampling = Sampling(fps=1.0, max_frames=max_candidates, decode_resize=decode_resize)
        self.extract = extract or ExtractConfig()
        self.max_candidates, self.min_candidates = max_candidates, min_candidates
        self.distractors, self.clip_len, self.max_repeats = distractors, clip_len, max_repeats
        self.span_tolerance = span_tolerance
        self.pool = [str(p) for p in distractor_videos]
        self.features = functools.lru_cache(maxsize=512)(self._features)

    def path(self, sample: Sample) -> str:
        return video_path(sample, self.root)

    def _features(self, path: str) -> VideoFeatures:
        """1-fps candidates capped at max_candidates; too few -> max_candidates over all frames."""
        vf = video_features(path, self.encoder, self.cache, self.sampling, self.extract)
        if len(vf.frame_numbers) < self.min_candidates:
            vf = video_features(path, self.encoder, self.cache, dataclasses.replace(self.sampling, fps=vf.fps),
                                self.extract)
        return vf

    def prepare(self, samples: Sequence[Sample], progress: bool = True) -> dict[str, str]:
        """Extract the sample videos (and the distractor pool) into the cache up front, each
        rank its share; returns {video: why} for the videos that failed, over all ranks.
        Videos too short for 1-fps candidates get their uniform variant on first use."""
        paths = sorted({self.path(s) for s in samples} | set(self.pool))
        report = extract_videos(distributed.shard(paths), self.encoder, self.cache, self.sampling, self.extract,
                                progress=progress)
        failed = dict(report.failed)
        if dist.is_available() and dist.is_initialized():
            gathered: list[dict[str, str]] = [{} for _ in range(dist.get_world_size())]
            dist.all_gather_object(gathered, failed)
            failed = {k: v for part in gathered for k, v in part.items()}
        self.pool = [p for p in (self.pool or paths) if p not in failed]
        return failed

    def build(self, sample: Sample, rng: np.random.Generator) -> Episode:
        """The episode of one sample; `rng` draws the needle's clips (reproducible per step)."""
        path = self.path(sample)
        vf = self.features(path)
        text = self.cache.text_features(self.encoder.identity, [sample.question], self.encoder.encode_text)[0]
        if sample.needle:
            return self._haystack(sample, path, vf, text, rng)
        target = None
        if sample.span is not None:
            lo, hi = sample.span[0] - self.span_tolerance, sample.span[1] + self.span_tolerance
            target = (vf.timestamps >= lo) & (vf.timestamps <= hi)
        t = len(vf.frame_numbers)
        return Episode(sample, vf.features, text, np.asarray(vf.timestamps), vf.num_frames / vf.fps, target,
                       [path], np.zeros(t, dtype=np.int64), np.asarray(vf.frame_numbers), key=f"{path}@{t}")

    def _clip(self, t: int, rng: np.random.Generator) -> np.ndarray:
        """A sorted random subset of clip_len of t candidates (all of them when t <= clip_len)."""
        return np.arange(t) if t <= self.clip_len else np.sort(rng.choice(t, self.clip_len, replace=False))

    def _haystack(self, sample: Sample, path: str, vf: VideoFeatures, text: torch.Tensor,
                  rng: np.random.Generator) -> Episode:
        others = [p for p in self.pool if p != path]
        if not others:
            raise ValueError(f"needle sample {sample.id}: no distractor videos other than its own; "
                             "give more training videos or --distractor-videos")
        clips = [(0, path, self._clip(len(vf.frame_numbers), rng)) for _ in range(rng.integers(1, self.max_repeats + 1))]
        for _ in range(self.distractors):
            other = others[int(rng.integers(len(others)))]
            clips.append((1, other, self._clip(len(self.features(other).frame_numbers), rng)))
        order = rng.permutation(len(clips))
        videos = [path] + sorted({c[1] for c in clips} - {path})
        feats, target, source, numbers = [], [], [], []
        for i in order:
            is_distractor, video, positions = clips[i]
            other_vf = self.features(video)
            feats.append(other_vf.features[torch.as_tensor(positions)])
            target.append(np.full(len(positions), not is_distractor))
            source.append(np.full(len(positions), videos.index(video)))
            numbers.append(np.asarray(other_vf.frame_numbers)[positions])
        t = sum(len(c[2]) for c in clips)
        return Episode(sample, torch.cat(feats), text, np.arange(t, dtype=np.float64), float(t), np.concatenate(target),
                       videos, np.concatenate(source), np.concatenate(numbers),
                       key=f"haystack:{sample.id}:{int(rng.integers(1 << 62))}")
