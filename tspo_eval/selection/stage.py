"""The selection stage: which frames each question gets under a `FramePolicy`.

`FramePlanner.plan` (and its one-shot form `question_frames`) is the one answer to "which
frame numbers and timestamps does this question get": from a selections file (ours, or a
published `frame_idx` JSON) when the policy names one and it holds the question; otherwise
uniform frames over the whole video, or computed now from the video's cached candidate
features (extracted on the fly when missing) scored by the agent or CLIP.  `tspo-eval select`,
`inspect`, answering (lmms-eval, VLMEvalKit, `evaluate`) and the demo all go through it, so a
question's frames do not depend on the entry point.

Output of `select_benchmark`, the project's own format (JSON, one file per benchmark x method):

    {"format": "tspo-eval/selections@1",
     "meta": {"benchmark", "method", "k", "policy": {...}, "fingerprint", "encoder", "agent", ...},
     "selections": {"<question index>": {"video": name, "frame_numbers": [...],
                                          "timestamps": [...], "num_candidates": T, "fps": f}},
     "failed": {"<question index>": "why"}}

`to_frame_idx` exports the published layout (benchmark JSON items + float `frame_idx`)
that the published lmms-eval fork consumes.

Scores: `tspo` uses the agent's S; the zero-shot methods (`topk`, `bin-max`, `aks`, `bolt`,
`dpp`) use the CLIP cosine of the cached frame features with the question stem (as AKS and
BOLT score with CLIP); `uniform` ignores scores.  `scores=agent` / `clip` overrides that, and
`scores=blip` scores every candidate with BLIP image-text matching (`selection.blip`, AKS's
scorer; decoded and scored once per video and question, then cached).
Methods that declare `features` (`dpp`) also receive the video's cached frame features.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..agent import TemporalAgent, load_agent
from ..benchmarks import Question, find_benchmark, read_frame_idx, resolve_video, write_frame_idx
from ..cache import FeatureCache, VideoFeatures
from ..encoders import Encoder
from ..extract import ExtractConfig, video_features
from ..policy import FramePolicy
from .blip import BlipScorer, blip_frame_scorer, blip_scores
from .methods import frames_for_question, published_feed, uniform_frames
from .registry import FrameScorer, takes
from ..video import VideoError, probe

FORMAT = "tspo-eval/selections@1"


@dataclass
class Selection:
    """The frames chosen for one question."""

    video: str
    frame_numbers: list[int]
    timestamps: list[float]
    num_candidates: int
    fps: float
    scored: float | None = None  # share of the candidates scored, for methods that score on demand (focus)


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
        # a name of its own per save: two processes saving one file never replace each other's half
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_text(json.dumps(payload, indent=1))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
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


def _selection(video: str, frames: np.ndarray, num_candidates: int, fps: float,
               scored: float | None = None) -> Selection:
    frames = np.asarray(frames, dtype=np.int64)
    return Selection(video=video, frame_numbers=frames.tolist(), timestamps=(frames / fps).tolist(),
                     num_candidates=num_candidates, fps=fps, scored=scored)


def method_params(policy: FramePolicy, benchmark: str) -> dict[str, Any]:
    """The policy's parameters over the benchmark's published ones for its method (`selector_params`)."""
    spec = find_benchmark(benchmark)
    return {**(spec.selector_params.get(policy.method, {}) if spec else {}), **policy.params}


def _candidate_fps(vf: VideoFeatures) -> float:
    """Candidates per second of video (below the policy's fps when `max_frames` capped them)."""
    return len(vf.frame_numbers) * vf.fps / max(vf.num_frames, 1)


def uniform_selection(video: str | Path, num_frames: int, fps: float, policy: FramePolicy) -> Selection:
    """Uniform frames over the whole video (`selection.uniform_frames`): no features needed."""
    frames = uniform_frames(num_frames, fps, policy.k, policy.official, policy.loader, policy.sampling.fps,
                            **policy.params)
    return _selection(str(video), frames, num_frames, fps)


def select_for_question(vf: VideoFeatures, text: torch.Tensor | None, policy: FramePolicy, benchmark: str,
                        agent: TemporalAgent | None = None, scores: torch.Tensor | None = None,
                        scorer: FrameScorer | None = None) -> tuple[Selection, torch.Tensor]:
    """One question's selection from its video's cached features and its stem's features,
    with the per-candidate scores (for plots; a uniform policy ignores them; NaN where an
    on-demand scorer did not score). `scores`: the question's (T,) scores when computed
    elsewhere (`scores=blip`: `FramePlanner.blip_scores`); `scorer`: scores on demand instead,
    for a method that declares `scorer` (focus with BLIP scoring only the frames it asks for)."""
    on_demand = takes(policy.method, "scorer")
    if scorer is not None and not on_demand:
        raise ValueError(f"method {policy.method!r} reads every score: pass scores, not a scorer")
    if scores is None and scorer is None:
        if policy.score_source == "blip":
            raise ValueError("scores=blip: pass the question's BLIP scores (FramePlanner.blip_scores)")
        scores = question_scores(vf.features, text, policy.score_source, agent)
    if policy.method == "uniform":
        return uniform_selection(vf.video, vf.num_frames, vf.fps, policy), scores
    if on_demand and scorer is None:
        scorer = FrameScorer.of(scores.numpy())
    params = method_params(policy, benchmark)
    if takes(policy.method, "candidate_fps"):
        params["candidate_fps"] = _candidate_fps(vf)
    frames = frames_for_question(vf.frame_numbers, None if scorer is not None else scores.numpy(), policy.k,
                                 policy.method, vf.num_frames, official=policy.official, features=vf.features,
                                 scorer=scorer, **params)
    if scores is None:  # only what the scorer scored is known
        scores = torch.full((len(vf.frame_numbers),), float("nan"))
        if scorer.known:
            scores[list(scorer.known)] = torch.tensor(list(scorer.known.values()), dtype=torch.float32)
    if frames.size == 0:
        hint = (f"aks gives a leaf at depth d floor(k / 2**d) frames, none when k < 2**depth; use preset=tspo "
                f"(depth 3) or depth=N with 2**N <= {policy.k}: `tspo-eval select --params preset=tspo`, "
                "`tspo-eval compare --methods aks:preset=tspo`" if policy.method == "aks" else "try a larger --k")
        raise ValueError(f"method {policy.method!r} with {policy.params or 'default parameters'} chose no frames at "
                         f"k={policy.k}; {hint}")
    selection = _selection(vf.video, frames, len(vf.frame_numbers), vf.fps,
                           scorer.fraction if scorer is not None else None)
    return selection, scores


@dataclass
class QuestionRef:
    """What frame planning and answering need from a question: its id, video, stem and LLM prompt."""

    index: str
    benchmark: str
    video_path: str
    question: str
    prompt: str = ""


def _policy_mismatch(asked: FramePolicy, meta: dict[str, Any]) -> list[str]:
    """Settings in which a selections file's recorded policy differs from the asked one."""
    recorded = meta.get("policy")
    if not isinstance(recorded, dict):
        return []  # written before policies were recorded: trusted as is
    mine = asked.identity()
    return sorted(k for k in set(mine) | set(recorded)
                  if k not in ("selections", "format") and recorded.get(k) != mine.get(k))


class FramePlanner:
    """Chooses each question's frames under one `FramePolicy` (see the module docstring).

    `agent` may be a checkpoint spec (directory, hub id, random:<config>), loaded when a
    question first needs it: a run served entirely from a selections file, or a uniform one,
    never loads it. `extract` sets how fast missing features are extracted (never which).
    """

    def __init__(self, policy: FramePolicy, agent: TemporalAgent | str | None = None,
                 encoder: Encoder | None = None, cache: FeatureCache | None = None,
                 extract: ExtractConfig | None = None, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        if policy.method != "uniform" and policy.selections is None and agent is None and encoder is None:
            raise ValueError(f"method {policy.method!r} needs an agent (or encoder) to score frames, "
                             "or a precomputed selections file")
        if policy.score_source == "agent" and policy.selections is None and agent is None \
                and policy.method != "uniform":
            raise ValueError(f"scores=agent (method {policy.method!r}) needs an agent")
        self.policy, self.extract = policy, extract or ExtractConfig()
        self._agent, self._encoder = agent, encoder
        self.cache = cache or FeatureCache("feature_cache")
        self.device, self.dtype = device, dtype
        self._precomputed: dict[str, tuple[dict[str, list[int]], bool]] = {}
        self._features: tuple[str, VideoFeatures] | None = None  # the last video's, for its next question
        self._blip: BlipScorer | None = None
        self._lock = threading.Lock()

    def _scorer(self) -> tuple[TemporalAgent | None, Encoder]:
        with self._lock:
            if isinstance(self._agent, str):
                self._agent = load_agent(self._agent, torch_dtype=self.dtype, device=self.device)
            if self._encoder is None:
                if self._agent is None:
                    raise ValueError(f"method {self.policy.method!r} needs an agent to select frames")
                self._encoder = self._agent.encoder
            return self._agent, self._encoder

    def _load_selections(self, benchmark: str) -> tuple[dict[str, list[int]], bool]:
        """(frame numbers by question index, whether they are a published frame_idx file) for one
        benchmark; ({}, False) when a folder has no file for it."""
        with self._lock:
            if benchmark not in self._precomputed:
                self._precomputed[benchmark] = self._read_selections(benchmark)
            return self._precomputed[benchmark]

    def _read_selections(self, benchmark: str) -> tuple[dict[str, list[int]], bool]:
        path = Path(self.policy.selections)
        if path.is_dir():
            path = path / f"{self.policy.method}_{benchmark}.json"
            if not path.is_file():
                return {}, False
        elif not path.is_file():
            raise FileNotFoundError(f"selections file {path} does not exist; run `tspo-eval select` first")
        payload = json.loads(path.read_text())
        if isinstance(payload, dict) and str(payload.get("format", "")).startswith("tspo-eval/selections"):
            sset = SelectionSet.load(path)
            differ = _policy_mismatch(self.policy, sset.meta)
            if differ:
                recorded = sset.meta["policy"]
                raise ValueError(f"{path} was selected under another frame policy ("
                                 + ", ".join(f"{k}={recorded.get(k)!r} there, {self.policy.identity().get(k)!r} here"
                                             for k in differ) + "): select again with these settings, or give "
                                 "the file's settings")
            return {k: v.frame_numbers for k, v in sset.selections.items()}, False
        return read_frame_idx(path, benchmark), True

    def _video_features(self, path: str) -> VideoFeatures:
        _, encoder = self._scorer()
        with self._lock:
            if self._features is not None and self._features[0] == path:
                return self._features[1]
        vf = video_features(path, encoder, self.cache, self.policy.sampling, self.extract)
        with self._lock:
            self._features = (path, vf)
        return vf

    def _blip_model(self) -> BlipScorer:
        """The BLIP ITM model of `scores=blip`, loaded once, on this planner's device (by default
        the encoder's: a GPU when the features are extracted on one)."""
        _, encoder = self._scorer()
        with self._lock:
            if self._blip is None:
                self._blip = BlipScorer.from_pretrained(self.policy.identity()["blip_model"],
                                                        self.device or encoder.device, self.dtype)
            return self._blip

    def blip_scores(self, path: str, vf: VideoFeatures, questions: Sequence[str]) -> torch.Tensor:
        """(len(questions), T) BLIP ITM scores of the video's candidates (`scores=blip`): from the
        cache, or decoded and scored in one pass for all the given questions (then cached)."""
        return blip_scores(self._blip_model(), vf, path, questions, self.cache, self.policy.sampling)

    def plan(self, ref: QuestionRef, text: torch.Tensor | None = None) -> Selection:
        """The frames for one question; raises VideoError / ValueError when it has none.
        `text`: the stem's features when the caller has them already (batch-encoded)."""
        policy = self.policy
        if policy.selections is not None:
            found, published = self._load_selections(ref.benchmark)
            chosen = found.get(ref.index)
            if chosen is not None:
                info = probe(ref.video_path)
                frames = published_feed(chosen, policy.k, info.num_frames) if published and policy.official \
                    else np.asarray(chosen, dtype=np.int64)
                return _selection(Path(ref.video_path).name, frames, info.num_frames, info.fps)
            if self._agent is None and self._encoder is None and policy.method != "uniform":
                raise ValueError(f"question {ref.index} is not in {policy.selections} and no agent was given "
                                 "to select its frames now")
        if policy.method == "uniform":
            info = probe(ref.video_path)
            return uniform_selection(Path(ref.video_path).name, info.num_frames, info.fps, policy)
        return self.compute(ref, text)[0]

    def compute(self, ref: QuestionRef, text: torch.Tensor | None = None
                ) -> tuple[Selection, torch.Tensor, VideoFeatures]:
        """One question's selection computed now from its video's features (never from a
        selections file), with its per-candidate scores (NaN where an on-demand scorer did not
        score) and the video's features: what `plan` and `tspo-eval inspect` use."""
        policy = self.policy
        agent, encoder = self._scorer()
        vf = self._video_features(ref.video_path)
        scores = scorer = None
        if policy.score_source == "blip" and takes(policy.method, "scorer"):  # BLIP on the frames it asks for
            scorer = blip_frame_scorer(self._blip_model(), vf, ref.video_path, ref.question, self.cache,
                                       policy.sampling)
        elif policy.score_source == "blip":
            scores = self.blip_scores(ref.video_path, vf, [ref.question])[0]
        if text is None and scores is None and scorer is None:
            text = self.cache.text_features(encoder.identity, [ref.question], encoder.encode_text)[0]
        selection, scores = select_for_question(vf, text, policy, ref.benchmark, agent, scores, scorer)
        return selection, scores, vf


def question_frames(ref: QuestionRef, policy: FramePolicy, **planner_args: Any) -> Selection:
    """Which frame numbers (and timestamps) `ref` gets under `policy`: `FramePlanner(policy,
    **planner_args).plan(ref)`, for one question (a planner serves many, loading models once)."""
    return FramePlanner(policy, **planner_args).plan(ref)


def select_benchmark(questions: Sequence[Question], video_root: str | Path, encoder: Encoder | None,
                     cache: FeatureCache, policy: FramePolicy, extract: ExtractConfig | None = None,
                     agent: TemporalAgent | None = None, progress: bool = True) -> SelectionSet:
    """Selections for every question through `FramePlanner` (features from the cache, extracted
    when missing; stems encoded in one batch). A question whose video fails is recorded in
    `failed` and the run goes on."""
    if not questions:
        raise ValueError("no questions to select frames for")
    benchmark = questions[0].benchmark
    planner = FramePlanner(policy, agent=agent, encoder=encoder, cache=cache, extract=extract)
    computed = policy.method != "uniform"
    texts = cache.text_features(encoder.identity, [q.question for q in questions], encoder.encode_text) \
        if computed and encoder is not None else None
    meta = {"benchmark": benchmark, "method": policy.method, "k": policy.k, "scores": policy.score_source,
            "official": policy.official, "params": dict(policy.params), "policy": policy.identity(),
            "fingerprint": policy.fingerprint(), "encoder": encoder.identity if encoder is not None else None,
            "agent": agent.config._name_or_path if agent is not None else None,
            "fps": policy.sampling.fps, "max_frames": policy.sampling.max_frames}
    result = SelectionSet(meta)
    by_video: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_video.setdefault(q.video_name, []).append(i)
    for video_name, members in tqdm(by_video.items(), desc=f"select {policy.method}", unit="video",
                                    disable=not progress):
        path = str(resolve_video(video_root, video_name, benchmark))
        if policy.score_source == "blip" and computed and not takes(policy.method, "scorer"):
            # all the video's questions in one decoding pass
            try:
                planner.blip_scores(path, planner._video_features(path), [questions[i].question for i in members])
            except (VideoError, OSError) as err:
                result.failed.update({questions[j].index: str(err) for j in members})
                continue
        for n, i in enumerate(members):
            q = questions[i]
            try:
                result.selections[q.index] = planner.plan(QuestionRef(q.index, benchmark, path, q.question),
                                                          None if texts is None else texts[i])
            except (VideoError, OSError) as err:  # the video failed: so do its other questions
                result.failed.update({questions[j].index: str(err) for j in members[n:]})
                break
            except ValueError as err:  # this question (e.g. a selector that chose nothing)
                result.failed[q.index] = str(err)
    return result
