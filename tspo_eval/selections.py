"""The selection stage over a benchmark: cached features + scores -> K frames per question.

Output, the project's own format (JSON, one file per benchmark x method):

    {"format": "tspo-eval/selections@1",
     "meta": {"benchmark", "method", "k", "scores", "encoder", "agent", "fps", ...},
     "selections": {"<question index>": {"video": name, "frame_numbers": [...],
                                          "timestamps": [...], "num_candidates": T, "fps": f}},
     "failed": {"<question index>": "why"}}

`to_frame_idx` exports the published layout (benchmark JSON items + float `frame_idx`)
that the published lmms-eval fork consumes.

Scores: `tspo` uses the agent's S; the zero-shot methods (`topk`, `bin-max`, `aks`, `bolt`,
`dpp`) use the CLIP cosine of the cached frame features with the question stem (as AKS and
BOLT score with CLIP); `uniform` ignores scores.  `scores="agent"` / `"clip"` overrides that.
Methods that declare `features` (`dpp`) also receive the video's cached frame features.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .agent import TemporalAgent
from .benchmarks import Question, resolve_video, write_frame_idx
from .cache import FeatureCache, VideoFeatures
from .encoders import Encoder
from .extract import ExtractConfig, video_features
from .selection import SELECTORS, frames_for_question, takes
from .video import VideoError

FORMAT = "tspo-eval/selections@1"
ScoreSource = Literal["auto", "agent", "clip"]


@dataclass
class SelectConfig:
    """Which frames each question gets."""

    method: str = field(default="tspo", metadata={"help": "uniform | topk | bin-max | aks | bolt | dpp | tspo "
                                                           "(agent + the benchmark's published default)"})
    k: int = field(default=64, metadata={"help": "frames per question"})
    scores: ScoreSource = field(default="auto", metadata={
        "help": "auto: agent for tspo, CLIP cosine for the others; or force agent / clip"})
    official: bool = field(default=False, metadata={
        "help": "reproduce the published short-video fallback (K uniform frames when T < K)"})
    params: dict[str, Any] = field(default_factory=dict, metadata={"help": "method parameters, e.g. t1=0.2"})

    def __post_init__(self) -> None:
        if self.method not in SELECTORS:
            raise ValueError(f"unknown method {self.method!r}; known: {', '.join(sorted(SELECTORS))}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.scores not in ("auto", "agent", "clip"):
            raise ValueError(f"scores must be auto, agent or clip, got {self.scores!r}")

    @property
    def score_source(self) -> Literal["agent", "clip"]:
        if self.scores != "auto":
            return self.scores
        return "agent" if self.method == "tspo" else "clip"


@dataclass
class Selection:
    """The frames chosen for one question."""

    video: str
    frame_numbers: list[int]
    timestamps: list[float]
    num_candidates: int
    fps: float


@dataclass
class SelectionSet:
    """Selections for a whole benchmark, with what produced them and what failed."""

    meta: dict[str, Any]
    selections: dict[str, Selection] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"format": FORMAT, "meta": self.meta, "failed": self.failed,
                   "selections": {k: asdict(v) for k, v in self.selections.items()}}
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SelectionSet":
        payload = json.loads(Path(path).read_text())
        if payload.get("format") != FORMAT:
            raise ValueError(f"{path}: not a tspo-eval selections file (format {payload.get('format')!r}); "
                             f"published frame_idx files are read with benchmarks.read_frame_idx")
        return cls(payload["meta"], {k: Selection(**v) for k, v in payload["selections"].items()},
                   payload.get("failed", {}))

    def to_frame_idx(self, annotation_items: Sequence[dict], path: str | Path) -> Path:
        """Write the published `<method>_<Dataset>_frameIdx.json` layout for these selections."""
        write_frame_idx(annotation_items, {k: v.frame_numbers for k, v in self.selections.items()},
                        path, self.meta["benchmark"])
        return Path(path)


def question_scores(features: torch.Tensor, text: torch.Tensor, source: Literal["agent", "clip"],
                    agent: TemporalAgent | None) -> torch.Tensor:
    """(T,) per-candidate scores of one question: the agent's S or the CLIP cosine.

    The cosine is one matrix-vector product over the row norms (`F.cosine_similarity`'s
    value to float rounding, 4x less CPU: it broadcasts the text over every row).
    """
    if source == "agent":
        if agent is None:
            raise ValueError("agent scores were asked for but no agent was given")
        with torch.no_grad():
            return agent.score(features, text).float().cpu()
    frames, query = features.float(), text.float().reshape(-1)
    return (frames @ query) / (torch.linalg.vector_norm(frames, dim=-1) * torch.linalg.vector_norm(query)).clamp_min(
        1e-8)


def select_for_question(vf: VideoFeatures, text: torch.Tensor, cfg: SelectConfig, benchmark: str,
                        agent: TemporalAgent | None = None) -> tuple[Selection, torch.Tensor]:
    """One question's selection from its video's cached features and its stem's features."""
    scores = question_scores(vf.features, text, cfg.score_source, agent)
    params = dict(cfg.params)
    if takes(cfg.method, "benchmark"):
        params.setdefault("benchmark", benchmark)
    frames = frames_for_question(vf.frame_numbers, scores.numpy(), cfg.k, cfg.method, vf.num_frames,
                                 official=cfg.official, features=vf.features, **params)
    frames = np.asarray(frames, dtype=np.int64)
    if frames.size == 0:
        hint = (f"aks gives a leaf at depth d floor(k / 2**d) frames, none when k < 2**depth; use preset=tspo "
                f"(depth 3) or depth=N with 2**N <= {cfg.k}: `tspo-eval select --params preset=tspo`, "
                "`tspo-eval compare --methods aks:preset=tspo`" if cfg.method == "aks" else "try a larger --k")
        raise ValueError(f"method {cfg.method!r} with {cfg.params or 'default parameters'} chose no frames at "
                         f"k={cfg.k}; {hint}")
    selection = Selection(video=vf.video, frame_numbers=frames.tolist(), timestamps=(frames / vf.fps).tolist(),
                          num_candidates=len(vf.frame_numbers), fps=vf.fps)
    return selection, scores


def select_benchmark(questions: Sequence[Question], video_root: str | Path, encoder: Encoder,
                     cache: FeatureCache, cfg: SelectConfig, extract_cfg: ExtractConfig | None = None,
                     agent: TemporalAgent | None = None, progress: bool = True) -> SelectionSet:
    """Selections for every question; features come from the cache (extracted when missing).

    A question whose video fails is recorded in `failed` and the run goes on.
    """
    extract_cfg = extract_cfg or ExtractConfig()
    if not questions:
        raise ValueError("no questions to select frames for")
    benchmark = questions[0].benchmark
    texts = cache.text_features(encoder.identity, [q.question for q in questions], encoder.encode_text)
    meta = {"benchmark": benchmark, "method": cfg.method, "k": cfg.k, "scores": cfg.score_source,
            "official": cfg.official, "params": cfg.params, "encoder": encoder.identity,
            "agent": agent.config._name_or_path if agent is not None else None,
            "fps": extract_cfg.fps, "max_frames": extract_cfg.max_frames}
    result = SelectionSet(meta)
    by_video: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_video.setdefault(q.video_name, []).append(i)
    for video_name, members in tqdm(by_video.items(), desc=f"select {cfg.method}", unit="video",
                                    disable=not progress):
        try:
            vf = video_features(resolve_video(video_root, video_name, benchmark), encoder, cache, extract_cfg)
        except (VideoError, ValueError) as err:
            for i in members:
                result.failed[questions[i].index] = str(err)
            continue
        for i in members:
            try:
                result.selections[questions[i].index], _ = select_for_question(vf, texts[i], cfg, benchmark, agent)
            except ValueError as err:  # e.g. no frame chosen: this question fails, the run goes on
                result.failed[questions[i].index] = str(err)
    return result
