"""Selecting K of T candidate frames from per-candidate scores (SPEC section 3).

`select` returns sorted, unique candidate *positions* (indices into `scores`);
`frames_for_question` maps them to absolute frame numbers, `uniform_frames` spreads K frames
over a whole video, and `published_feed` is what the published evaluation feeds for a list
of frame numbers; under `official=True` the first two end in it (or in the published
uniform loaders).

Methods live in the `SELECTORS` registry; `@register_selector("name")` adds one from
outside the package. A selector is `fn(scores, k, *, <keyword params>) -> positions`;
`select` checks the parameter names against its signature, hands it only T > k (T <= k
always returns every candidate) and checks what it returns. Three keyword names are filled
in by the pipeline rather than by the user (`PIPELINE_KEYWORDS`): a selector that declares
`features` receives the (T, D) frame features (`dpp` does: it needs frame-to-frame
similarity, not only scores); one that declares `scorer` (`focus`) scores candidates on
demand through a `FrameScorer` (which keeps what it scored) instead of reading all the
scores, and `candidate_fps` gives it the candidates per second of video. Settings published
per benchmark (`tspo`'s rule, `bolt`'s power) are not kept here: the selection stage fills
them in from the benchmark's spec (`selector_params`) where the policy leaves them unset.

Where each rule comes from (published code, GitHub):

- `topk`, `bin-max`: Hui-design/TSPO `model/temporal_agent.py` (`TSPOModel.inference_ts`)
  and `model/utils.py` (`generate_uniform_integers`, `group_features_by_cluster`).
- `aks`: ncTimTang/AKS `frame_select.py` (`meanstd`, `main`); TSPO's port with its
  hard-coded t1/depth is `AKS_sampling` in Hui-design/TSPO `model/utils.py`.
- `tspo`: Hui-design/TSPO `mp_tools/vlmeval/vlm/gen_id_tspo.py` (rule per dataset).
- `bolt`: sming256/BOLT `select_frames.py` (`inverse_transform_sampling`) and
  `scripts/frame_selection.sh` (power per benchmark).
- `focus`: NUS-HPC-AI-Lab/FOCUS `focus.py` (`FOCUS`) and `select_keyframe.py` (defaults, min gap).
- `dpp`: MDP3 (Sun et al., ICCV 2025, arXiv 2501.02885), its public `MDP3` class
  (`MultiGaussianKernel`, `seqdpp_select_super_fast`, `_select_frames_fast`).
- official feed and uniform baselines: `load_video_index` and `load_video` in Hui-design/TSPO
  `lmms-eval/lmms_eval/models/simple/llava_vid_tspo.py`; `load_video_index`,
  `fetch_video`/`smart_nframes` in `.../models/simple/utils/qwen25vl_vision_process.py` and
  `generate_until` in `.../models/simple/qwen2_5_vl_tspo.py`.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Literal

import numpy as np

from ..deprecation import deprecation_note

Selector = Callable[..., Any]

SELECTORS: dict[str, Selector] = {}

# Two meanings of "uniform", two names: the frame policy's `uniform` method is K evenly spaced
# frames over ALL decoded frames of the video (`uniform_frames`: the baseline of lmms-eval and
# TSPO), while the selector `evenly-spaced` spreads K over the positions it is given (a
# question's candidates, like every other selector).
UNIFORM = "uniform"
EVENLY_SPACED = "evenly-spaced"

# Published AKS defaults (frame_select.py argparse) and TSPO's port (AKS_sampling).
AKS_PRESETS: dict[str, dict[str, float]] = {
    "aks": {"t1": 0.8, "t2": -100.0, "depth": 5},
    "tspo": {"t1": 0.2, "t2": -100.0, "depth": 3},
}

# BOLT's frame_selection.sh: --power 3 (VideoMME, MLVU; a benchmark's spec may set another, as
# LongVideoBench's 2.5); benchmarks not in it get 3 (LVBench's hour-long videos are closest to MLVU's).
BOLT_DEFAULT_POWER = 3.0

# FOCUS's published defaults (select_keyframe.py argparse; FOCUS.__init__ for the rest).
FOCUS_DEFAULTS: dict[str, float] = {
    "coarse_every_sec": 16.0, "fine_every_sec": 1.0, "zoom_ratio": 0.25, "final_min_arms": 4, "final_max_arms": 32,
    "min_coarse_segments": 8, "min_zoom_segments": 4, "extra_samples_per_region": 2, "min_variance": 1e-6,
    "fine_uniform_ratio": 0.5, "top_ratio": 0.2, "temperature": 0.06, "min_gap_sec": 1.0, "gap_ratio_of_avg": 0.25,
    "disable_gap_below_sec": 0.2, "seed": 42}
# keywords the pipeline fills in, never user parameters
PIPELINE_KEYWORDS = ("features", "scorer", "candidate_fps")

# MDP3's MultiGaussianKernel: bandwidths 2**-3 .. 2**1, summed (not averaged); lamda = 0.2.
DPP_BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)
DPP_LAMBDA = 0.2
# Kernel columns are computed DPP_BATCH at a time (the chosen frame and the next best candidates,
# one matrix product): a product of (T, D) by (D, 8) costs about 3 single columns on one core.
DPP_BATCH = 16
# A candidate whose Schur complement is below this share of the kernel diagonal duplicates the
# chosen frames: cosine above ~1 - 1.6e-6, which float32 features cannot resolve anyway.
DPP_DUPLICATE = 1e-5


def register_selector(name: str) -> Callable[[Selector], Selector]:
    """Decorator adding a selection method under `name`, so users extend without forking.

    Registering a taken name raises, so a plugin cannot silently shadow a built-in.
    """
    def add(fn: Selector) -> Selector:
        if name in SELECTORS:
            raise ValueError(f"selector {name!r} is already registered")
        SELECTORS[name] = fn
        return fn
    return add


def _as_scores(scores: Any) -> np.ndarray:
    """1-D float64 copy of a list, numpy array or torch tensor (bf16 included: exact in float32)."""
    if hasattr(scores, "detach"):  # torch, without importing it
        scores = scores.detach().float().cpu().numpy()
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be 1-D (one per candidate), got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("scores contain NaN")
    return arr


def _as_features(features: Any, T: int) -> np.ndarray:
    """(T, D) float32 copy of the frame features (numpy or torch, bf16 included)."""
    if hasattr(features, "detach"):
        features = features.detach().float().cpu().numpy()
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2 or len(arr) != T:
        raise ValueError(f"features must be (T, D) with T = {T} (one row per score), got shape {arr.shape}")
    return arr


def method_names() -> list[str]:
    """Every frame policy method: the selectors and `uniform` (over all decoded frames), sorted."""
    return sorted({UNIFORM, *SELECTORS})


def selector_of(method: str) -> str:
    """The selector that draws a policy method's frames (`uniform`: `evenly-spaced`, over all frames)."""
    return EVENLY_SPACED if method == UNIFORM else method


def takes(method: str, name: str) -> bool:
    """Whether the registered `method` declares the keyword `name` (e.g. `features`)."""
    return name in inspect.signature(SELECTORS[selector_of(method)]).parameters


def _check_params(method: str, fn: Selector, params: dict[str, Any]) -> None:
    """Reject parameter names the method does not take, before any work is done."""
    sig = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return
    valid = [n for n, p in list(sig.items())[2:] if n not in PIPELINE_KEYWORDS
             and p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(params) - set(valid) - (set(PIPELINE_KEYWORDS) & set(sig)))
    if unknown:
        raise ValueError(f"method {method!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(valid) or '(none)'}")


class FrameScorer:
    """Scores candidates on demand (`fn(positions) -> scores`), each at most once, and keeps
    what it scored: what a selector that declares `scorer` gets, so an expensive scorer (BLIP)
    runs on a few candidates only."""

    def __init__(self, fn: Callable[[np.ndarray], Any], num_candidates: int) -> None:
        self.fn, self.num_candidates = fn, int(num_candidates)
        self.known: dict[int, float] = {}  # position -> score, for every position scored

    @classmethod
    def of(cls, scores: Any) -> "FrameScorer":
        """A scorer reading a full score vector (cheap scores, or ones cached already)."""
        arr = _as_scores(scores)
        return cls(lambda positions: arr[positions], len(arr))

    def __call__(self, positions: Any) -> np.ndarray:
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        if pos.size and (pos.min() < 0 or pos.max() >= self.num_candidates):
            raise ValueError(f"positions outside [0, {self.num_candidates})")
        new = np.array([p for p in dict.fromkeys(pos.tolist()) if p not in self.known], dtype=np.int64)
        if new.size:
            values = _as_scores(self.fn(new))
            if len(values) != len(new):
                raise ValueError(f"the scorer returned {len(values)} scores for {len(new)} positions")
            self.known.update(zip(new.tolist(), values.tolist()))
        return np.array([self.known[p] for p in pos.tolist()], dtype=np.float64)

    @property
    def fraction(self) -> float:
        """Share of the candidates scored so far."""
        return len(self.known) / self.num_candidates if self.num_candidates else 0.0


def select(scores: Any, k: int, method: str, features: Any = None, scorer: FrameScorer | None = None,
           **params: Any) -> np.ndarray:
    """Pick at most k candidates; returns sorted, unique int64 positions into `scores`.

    Args:
        scores: (T,) per-candidate scores (list, numpy array or torch tensor); None for a method
            that declares `scorer` when a `scorer` is given.
        k: frame budget, >= 1.
        method: a key of `SELECTORS` (evenly-spaced, topk, bin-max, aks, tspo, bolt, dpp or a registered one);
            the former `uniform` is `evenly-spaced` (with a note): it spreads over the given positions.
        features: (T, D) frame features, required by methods that declare `features` (dpp), ignored otherwise.
        scorer: for methods that declare `scorer` (focus), scores on demand; by default one over `scores`.
        **params: the method's keyword parameters.
    Returns:
        (<=k,) int64 positions. T <= k returns every position (SPEC section 3); `aks`
        may return fewer than k (see `aks`).
    Example:
        >>> select([0.1, 0.9, 0.3, 0.8], 2, "topk").tolist()
        [1, 3]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if method == UNIFORM:
        deprecation_note("select(method='uniform')", f"{EVENLY_SPACED!r} (it spreads over the positions given; "
                         "the frame policy's uniform spreads over all decoded frames: uniform_frames)")
        method = EVENLY_SPACED
    if method not in SELECTORS:
        raise ValueError(f"unknown selection method {method!r}; known: {', '.join(sorted(SELECTORS))}")
    fn = SELECTORS[method]
    _check_params(method, fn, params)
    if scores is None:  # an on-demand scorer instead of the scores
        if scorer is None or not takes(method, "scorer"):
            raise ValueError(f"method {method!r} needs the scores of every candidate")
        arr, T = None, scorer.num_candidates
    else:
        arr = _as_scores(scores)
        T = len(arr)
    if takes(method, "features"):
        if features is None:
            raise ValueError(f"method {method!r} uses the frame features as well as the scores: pass features=(T, D)")
        params["features"] = _as_features(features, T)
    if takes(method, "scorer"):
        if scorer is None:
            scorer = FrameScorer.of(arr)
        elif scorer.num_candidates != T:
            raise ValueError(f"the scorer covers {scorer.num_candidates} candidates, the scores {T}")
        params["scorer"] = scorer
    if T <= k:
        return np.arange(T, dtype=np.int64)
    out = np.asarray(fn(arr, int(k), **params))
    if out.size and not np.issubdtype(out.dtype, np.integer):
        raise TypeError(f"selector {method!r} returned {out.dtype} positions, expected integers")
    pos = np.unique(out.astype(np.int64).ravel())
    if pos.size > k or (pos.size and (pos[0] < 0 or pos[-1] >= T)):
        raise ValueError(f"selector {method!r} returned {pos.size} positions in "
                         f"[{pos.min()}, {pos.max()}]; expected at most {k} in [0, {T})")
    return pos


def published_feed(frames: Any, k: int, num_video_frames: int) -> np.ndarray:
    """The frames the published lmms-eval fork feeds for a list of frame numbers (int64).

    `load_video_index` (LLaVA-Video and Qwen2.5-VL paths alike) takes `sorted(frames[:k])`;
    when that holds fewer than k frames it feeds `np.linspace(0, num_video_frames - 1, k,
    dtype=int)` over the whole video instead (numbers repeat when the video has fewer than k
    frames).  For a list of k or more it keeps the first k *in list order*, then sorts.
    """
    chosen = sorted(int(f) for f in list(frames)[:k])
    if len(chosen) < k:
        if num_video_frames < 1:
            raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
        return np.linspace(0, num_video_frames - 1, k, dtype=int).astype(np.int64)
    return np.asarray(chosen, dtype=np.int64)


def uniform_frames(num_video_frames: int, video_fps: float, k: int, official: bool = False,
                   loader: str = "llava_video", fps: float = 1.0, **params: Any) -> np.ndarray:
    """K uniform frame numbers over the whole video (no candidates, no scores).

    Default: `select(..., "evenly-spaced", **params)` over all `num_video_frames` frames, i.e.
    lmms-eval's `np.linspace(0, N-1, k, dtype=int)` (every frame when N <= k).
    `official=True` reproduces the published fork's uniform baselines (`is_uniform=True`):

    - `loader="llava_video"` (`LlavaVid_TSPO.load_video`, force_sample off): the frames
      `range(0, N, round(avg_fps / fps))`; only when there are more than k of them,
      `np.linspace(0, N-1, k, dtype=int)`. A video of at most k seconds gets all its 1-fps
      frames, fewer than k.
    - `loader="qwen2_5_vl"` (`process_vision_info` with no fps, then `generate_until`): a grid
      of n = smart_nframes frames at 2 fps (n = floor-to-even(min(max(N / avg_fps * 2, 4),
      floor-to-even(min(768, N)), N))), `torch.linspace(0, N-1, n).round()`; then
      `np.linspace(0, n-1, k, dtype=int)` of that grid, plus its last frame if missing. A
      video shorter than k/2 seconds gets k frames with repeats.
    """
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    n_all = int(num_video_frames)
    if not official:
        return np.arange(n_all, dtype=np.int64)[select(np.zeros(n_all), k, EVENLY_SPACED, **params)]
    if loader == "llava_video":
        step = max(1, round(video_fps / fps))
        frames = np.arange(0, n_all, step, dtype=np.int64)
        return np.linspace(0, n_all - 1, k, dtype=int).astype(np.int64) if len(frames) > k else frames
    if loader == "qwen2_5_vl":
        import torch

        def floor_even(x: float) -> int:
            return int(math.floor(x / 2) * 2)

        n = floor_even(min(min(max(n_all / video_fps * 2.0, 4), floor_even(min(768, n_all))), n_all))
        if n < 2:
            raise ValueError(f"the published Qwen2.5-VL loader needs at least 2 frames, the video has {n_all}")
        grid = torch.linspace(0, n_all - 1, n).round().long().numpy()
        picks = np.linspace(0, n - 1, k, dtype=int)
        if n - 1 not in picks:
            picks = np.append(picks, n - 1)
        return grid[picks].astype(np.int64)
    raise ValueError(f"unknown published loader {loader!r}; valid: llava_video, qwen2_5_vl")


def frames_for_question(candidate_frames: np.ndarray, scores: Any, k: int, method: str,
                        num_video_frames: int, official: bool = False, features: Any = None,
                        scorer: FrameScorer | None = None, **params: Any) -> np.ndarray:
    """Absolute frame numbers for one question: `candidate_frames[select(...)]`, int64.

    `official=True` feeds them as the published evaluation does (`published_feed`): when
    fewer than k were chosen (T < k, or an `aks` that drops remainders) the selection is
    discarded for `np.linspace(0, num_video_frames - 1, k, dtype=int)` over ALL decoded
    frames, whatever the method. Uniform frames need no candidates: see `uniform_frames`.
    """
    if method == UNIFORM:
        raise ValueError("uniform frames are spread over all decoded frames, not candidates: use uniform_frames "
                         f"({EVENLY_SPACED!r} spreads K over the candidates)")
    cands = np.asarray(candidate_frames, dtype=np.int64)
    arr = _as_scores(scores) if scores is not None else None
    if cands.ndim != 1 or len(cands) != (len(arr) if arr is not None else scorer.num_candidates):
        raise ValueError(f"candidate_frames {cands.shape} must be 1-D and match the scores")
    frames = cands[select(arr, k, method, features, scorer, **params)]
    return published_feed(frames, k, num_video_frames) if official else frames


@register_selector(EVENLY_SPACED)
def evenly_spaced(scores: np.ndarray, k: int, *,
            convention: Literal["lmms-eval", "vlmevalkit"] = "lmms-eval") -> np.ndarray:
    """k evenly spaced positions; scores are ignored.

    lmms-eval (`load_video` in its video models): `np.linspace(0, T-1, k, dtype=int)`,
    first and last candidate included, truncated. VLMEvalKit (video dataset
    `save_video_frames`): `int(i * (T / (k + 1)))` for i = 1..k, both ends excluded.
    """
    T = len(scores)
    if convention == "lmms-eval":
        return np.linspace(0, T - 1, k, dtype=int)
    if convention == "vlmevalkit":
        step = T / (k + 1)
        return np.array([int(i * step) for i in range(1, k + 1)], dtype=np.int64)
    raise ValueError(f"unknown {EVENLY_SPACED} convention {convention!r}; valid: lmms-eval, vlmevalkit")


def _top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the n largest scores, equal scores ordered earliest first.

    A stable sort of -scores: the same order as `heapq.nlargest(n, range(T), key)` that
    AKS uses, and a deterministic choice where torch.topk (published topk) leaves ties
    unspecified.
    """
    return np.argsort(-scores, kind="stable")[:n]


@register_selector("topk")
def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """The k highest scores, re-sorted into time order; ties go to the earlier position."""
    return np.sort(_top_positions(scores, k))


@register_selector("bin-max")
def bin_max(scores: np.ndarray, k: int) -> np.ndarray:
    """One frame per temporal bin: the argmax of the candidates nearest each of k anchors.

    Published rule (`inference_ts`, `generate_uniform_integers`): anchors
    `round(i * ((T-1)/(k-1)))` with Python's `round` (half to even: T=10, k=3 gives
    anchors 0, 4, 9); each candidate joins its nearest anchor, ties to the lower one
    (torch.argmin keeps the first minimum); argmax per bin, first maximum on ties.
    k = 1 is one bin (the published code anchors it at T-1): the global argmax. For
    T > k the anchors are distinct candidates and each is nearest to itself, so no bin
    is empty and exactly k frames come back.
    """
    T = len(scores)
    if k == 1:
        return np.array([int(np.argmax(scores))])
    step = (T - 1) / (k - 1)
    anchors = np.array([round(i * step) for i in range(k)], dtype=np.int64)
    # Candidate x belongs past anchor j iff it is strictly closer to anchor j+1:
    # 2x > a_j + a_{j+1}; equality (a tie) stays with the lower anchor.
    bins = np.searchsorted(anchors[:-1] + anchors[1:], 2 * np.arange(T), side="left")
    starts = np.searchsorted(bins, np.arange(k), side="left")
    ends = np.searchsorted(bins, np.arange(k), side="right")
    return np.array([s + int(np.argmax(scores[s:e])) for s, e in zip(starts, ends)], dtype=np.int64)


@register_selector("aks")
def aks(scores: np.ndarray, k: int, *, preset: str = "aks", t1: float | None = None,
        t2: float | None = None, depth: int | None = None) -> np.ndarray:
    """Adaptive Keyframe Sampling (Tang et al., CVPR 2025), as in the published code.

    Scores are min-max normalised over the whole video (constant scores become zeros;
    the published code divides by zero there). A segment, starting with the whole
    video at depth 0, is a leaf if mean(top-k of segment) - mean(segment) > t1 and
    std(segment) > t2 (population std), or if it is at depth `depth`; otherwise it is
    split at len//2 (the first half gets floor(len/2), so the second half gets the
    middle element of an odd length). K' = k at every depth: a segment no longer than
    k has a difference of 0 and is always split to the depth limit. A leaf at depth d
    keeps its top floor(k / 2**d) frames (ties to the earlier frame); remainders are
    dropped, so fewer than k frames (none at all when k < 2**depth and no segment
    stops early) can come back.

    With `preset="aks"` (t1=0.8, t2=-100, depth=5) and k=64 only a very peaked video
    stops early; otherwise it is 32 half-split bins x top-2. `preset="tspo"` is TSPO's
    port (t1=0.2, depth=3). Explicit t1 / t2 / depth override the preset.
    """
    if preset not in AKS_PRESETS:
        raise ValueError(f"unknown aks preset {preset!r}; valid: {', '.join(AKS_PRESETS)}")
    given = {"t1": t1, "t2": t2, "depth": depth}
    cfg = {**AKS_PRESETS[preset], **{n: v for n, v in given.items() if v is not None}}
    lo, span = scores.min(), scores.max() - scores.min()
    norm = (scores - lo) / span if span > 0 else np.zeros_like(scores)

    picks: list[np.ndarray] = []
    stack = [(0, len(norm), 0)]  # (start, stop, depth) of segments still to examine
    while stack:
        start, stop, d = stack.pop()
        seg = norm[start:stop]
        if seg.size == 0:  # a length-1 segment split in two leaves an empty half
            continue
        peak = np.sort(seg)[-k:].mean() - seg.mean()
        if (peak > cfg["t1"] and seg.std() > cfg["t2"]) or d >= cfg["depth"]:
            picks.append(start + _top_positions(seg, k // 2 ** d))
        else:
            mid = start + seg.size // 2
            stack += [(start, mid, d + 1), (mid, stop, d + 1)]
    return np.sort(np.concatenate(picks)) if picks else np.empty(0, dtype=np.int64)


@register_selector("tspo")
def tspo(scores: np.ndarray, k: int, *, rule: Literal["topk", "bin-max"] = "topk") -> np.ndarray:
    """The published TSPO evaluation's selection: `topk`, or `bin-max` on VideoMME.

    The benchmark's spec sets `rule` (`selector_params`); any other benchmark, or none,
    gets `topk`, as in the published code ("topk unless VideoMME"). The scores should be the agent's.
    """
    if rule not in ("topk", "bin-max"):
        raise ValueError(f"unknown tspo rule {rule!r}; valid: topk, bin-max")
    return SELECTORS[rule](scores, k)


def _spread_repeats(picks: np.ndarray, T: int) -> np.ndarray:
    """Distinct positions for sorted `picks`: each repeat moves to the nearest free candidate.

    Picks are handled in order; at equal distance the earlier candidate wins. T > len(picks),
    so a free candidate always exists.
    """
    taken = np.zeros(T, dtype=bool)
    out = []
    for p in picks:
        for d in range(T):
            for q in (p - d, p + d):
                if 0 <= q < T and not taken[q]:
                    break
            else:
                continue
            break
        taken[q] = True
        out.append(q)
    return np.array(out, dtype=np.int64)


@register_selector("bolt")
def bolt(scores: np.ndarray, k: int, *, power: float = BOLT_DEFAULT_POWER,
         repeats: Literal["spread", "drop"] = "spread") -> np.ndarray:
    """BOLT (Liu et al., CVPR 2025): inverse transform sampling over query-frame similarity.

    As published (`inverse_transform_sampling`): scores are min-max normalised to [0, 1],
    raised to `power`, divided by their sum and accumulated into a CDF; the k quantiles
    `linspace(1/k, 1 - 1/k, k)` are mapped to the first candidate whose CDF reaches them
    (`searchsorted`, left). Frames thus fall densely where the query matches and sparsely,
    but still, elsewhere; the least similar candidate has weight 0 and is never chosen.
    `power`: the benchmark's published value comes from its spec (3 for VideoMME and MLVU,
    2.5 for LongVideoBench); 3 elsewhere. The scale of the scores (BOLT multiplies the
    cosine by CLIP's logit scale) cancels in the normalisation, so the CLIP cosine gives
    the same frames.

    Choices where the published code is silent or breaks: it hands the VLM k indices with
    repeats (several quantiles in one candidate); here `repeats="spread"` moves each repeat
    to the nearest free candidate (ties to the earlier one), so k distinct frames stay
    concentrated where the quantiles fell, and `repeats="drop"` keeps only the distinct
    published picks (fewer than k). Constant scores (0/0 in the published code) are a
    uniform distribution. k = 1 (the published quantile 1.0 can fall past the last
    candidate) takes the median, quantile 0.5.
    """
    if not power > 0:
        raise ValueError(f"bolt power must be > 0, got {power}")
    if repeats not in ("spread", "drop"):
        raise ValueError(f"unknown bolt repeats {repeats!r}; valid: spread, drop")
    T = len(scores)
    lo, span = scores.min(), scores.max() - scores.min()
    weight = ((scores - lo) / span) ** power if span > 0 else np.ones(T)
    cdf = np.cumsum(weight / weight.sum())
    quantiles = np.linspace(1 / k, 1 - 1 / k, k) if k > 1 else np.array([0.5])
    picks = np.minimum(np.searchsorted(cdf, quantiles, side="left"), T - 1)
    return np.unique(picks) if repeats == "drop" else _spread_repeats(picks, T)


def _multi_gaussian(cosine: np.ndarray) -> np.ndarray:
    """MDP3's kernel sum_a exp(-||x - y||^2 / (2a)) for unit vectors, from their cosine (||x - y||^2 = 2 - 2cos).

    The bandwidths halve from 2 down, so with u = exp(-(1 - cos) / 2) the terms are u, u^2,
    u^4, u^8, u^16: one exp and four squarings instead of five exps.
    """
    u = np.exp((np.asarray(cosine, dtype=np.float64) - 1.0) / DPP_BANDWIDTHS[-1])
    total = u.copy()
    for _ in DPP_BANDWIDTHS[:-1]:
        u = u * u
        total += u
    return total


def _farthest_in_time(chosen: list[int], T: int, n: int) -> list[int]:
    """n more positions, each the candidate farthest from every chosen one (ties: earliest)."""
    chosen = list(chosen)
    gap = np.full(T, np.inf) if not chosen else np.min(np.abs(np.arange(T)[:, None] - np.array(chosen)), axis=1)
    for _ in range(n):
        i = int(np.argmax(gap))
        chosen.append(i)
        gap = np.minimum(gap, np.abs(np.arange(T) - i))
    return chosen[len(chosen) - n:]


@register_selector("dpp")
def dpp(scores: np.ndarray, k: int, *, features: np.ndarray, lam: float = DPP_LAMBDA) -> np.ndarray:
    """Relevance + diversity: MDP3's conditional DPP, greedy MAP over the frame features.

    MDP3 (Sun et al., ICCV 2025) scores a set S of frames by
    `(2 / lam) * sum_{i in S} log r_i + log det L_S`, where L is the multiple-Gaussian
    kernel (`DPP_BANDWIDTHS`, summed) between the L2-normalised frame features and r_i the
    same kernel between frame i and the query. A frame is added greedily, each time the
    one raising the objective most (first on ties), so relevant frames come first but a
    near-duplicate of a chosen frame adds almost no volume and waits. The Cholesky update
    of the published `seqdpp_select_super_fast` is done for all candidates at once (the
    fast greedy MAP of Chen et al., NeurIPS 2018): O(T k D) per question, one kernel
    column per chosen frame. Columns are computed `DPP_BATCH` at a time, for the chosen frame
    and the candidates ranked next (those most likely chosen next), in one matrix product;
    an unused one is simply not read, so the picks are those of one column at a time.

    What was matched: the kernel, its bandwidths, lam = 0.2 and the objective; `scores`
    are read as the query-frame cosine (the CLIP scores the pipeline gives non-agent
    methods), which yields the query kernel exactly for unit vectors. The published code
    runs with `segment_size = -1` (one segment), where its MDP over segments reduces to
    this single greedy pass; the segmented MDP is not reproduced. Choice: once every
    remaining candidate duplicates the chosen ones (`DPP_DUPLICATE`; the published code
    then keeps taking the earliest candidates), the rest of the budget goes
    to the candidates farthest in time from those chosen, so a static video is still covered.
    """
    if not lam > 0:
        raise ValueError(f"dpp lam must be > 0, got {lam}")
    import torch

    T = len(scores)
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    norms = np.maximum(torch.linalg.vector_norm(x, dim=1).numpy().astype(np.float64), 1e-12)
    quality = (2.0 / lam) * np.log(_multi_gaussian(np.clip(scores, -1.0, 1.0)))
    columns: dict[int, np.ndarray] = {}  # kernel columns computed ahead, by candidate
    diag = float(len(DPP_BANDWIDTHS))  # the kernel of a unit vector with itself
    residual = np.full(T, diag)  # det(L_{S+i}) / det(L_S): what candidate i would add
    basis = np.zeros((k, T))  # rows of the incremental Cholesky factor, one per chosen frame
    chosen: list[int] = []
    free = np.ones(T, dtype=bool)  # not chosen
    for j in range(k):
        open_ = free & (residual > DPP_DUPLICATE * diag)  # chosen or duplicating the chosen: out
        if not open_.any():
            break
        gain = np.where(open_, quality + np.log(np.where(open_, residual, 1.0)), -np.inf)
        i = int(np.argmax(gain))  # the first maximum
        if i not in columns:  # i and the best candidates after it not yet computed, in one product
            top = np.argpartition(-gain, min(4 * DPP_BATCH, T - 1))[:4 * DPP_BATCH]
            ahead = top[np.lexsort((top, -gain[top]))]  # best first, earlier on ties
            batch = [i] + [int(c) for c in ahead if c != i and c not in columns and open_[c]][:DPP_BATCH - 1]
            # torch's matmul on float32, not numpy's `@`: OpenBLAS's threads wake and park on every
            # call interleaved with other work, 3-10x slower per question on a busy machine
            cosine = (x @ x[batch].T).numpy() / (norms[:, None] * norms[batch][None, :])
            columns.update(zip(batch, _multi_gaussian(np.clip(cosine, -1.0, 1.0)).T))
        column = columns.pop(i)
        basis[j] = (column - np.einsum("jt,j->t", basis[:j], basis[:j, i])) / np.sqrt(residual[i])
        residual -= basis[j] ** 2
        free[i] = False
        chosen.append(i)
    if len(chosen) < k:
        chosen += _farthest_in_time(chosen, T, k - len(chosen))
    return np.sort(np.array(chosen, dtype=np.int64))


def _focus_arm_estimates(sampled: list[tuple[int, float]], start: int, end: int, method: str) -> np.ndarray:
    """Scores of the arm's positions start..end estimated from its sampled ones, clipped to [0, 1]
    (`estimate_arm_scores`): the nearest sample (first sampled on a tie) or linear interpolation."""
    where = np.array([i for i, _ in sampled], dtype=np.float64)
    values = np.array([v for _, v in sampled], dtype=np.float64)
    grid = np.arange(start, end + 1, dtype=np.float64)
    if method == "nearest":
        est = values[np.argmin(np.abs(grid[:, None] - where[None, :]), axis=1)]
    else:  # linear (np.interp wants ascending sample positions)
        order = np.argsort(where, kind="stable")
        est = np.interp(grid, where[order], values[order]) if len(where) > 1 else np.full(len(grid), values[0])
    return np.clip(est, 0.0, 1.0)


@register_selector("focus")
def focus(scores: np.ndarray | None, k: int, *, scorer: FrameScorer, candidate_fps: float = 1.0,
          interpolation: Literal["nearest", "linear", "uniform"] = "nearest", top_ratio: float | None = None,
          temperature: float | None = None, zoom_ratio: float | None = None,
          coarse_every_sec: float | None = None, seed: int | None = None) -> np.ndarray:
    """FOCUS (Zhu et al., ICLR 2026): a bandit search that scores only part of the candidates.

    Candidates are cut into arms of about `coarse_every_sec` seconds (at least 8 arms). Coarse
    stage: each arm's centre and 2 random other positions are scored. Each arm's optimistic
    value is its mean + sqrt(2 ln N var / n) + 3 ln N / n (empirical Bernstein; N samples in
    all, n in the arm, var floored at 1e-6). Fine stage: around the centres of the top
    max(4, ceil(zoom_ratio * arms)) arms, a window of one arm's length is scored densely (half
    evenly spaced, half random, one per `fine_every_sec`). Final: the round(top_ratio *
    min(k, scored)) best scored positions, then the rest spread evenly over the top
    clamp(ceil(zoom_ratio * arms), 4, 32) arms, each drawn without replacement from a softmax
    (temperature 0.06) of the min-max normalised scores the arm's samples give its positions
    (nearest sample), keeping a minimum gap of min(1 s, 0.25 x the mean spacing) (none when the
    mean spacing is at most 0.2 s) where the arm allows it. Only `scorer` is called, on the
    coarse and fine positions: `scorer.fraction` is the share of candidates scored.

    Matched (`focus.py`, `select_keyframe.py`): every stage above, its published defaults
    (`FOCUS_DEFAULTS`; `interpolation`, `top_ratio`, `temperature`, `zoom_ratio`,
    `coarse_every_sec` and `seed` can be set), its random draws in its order from
    `np.random.default_rng(42)`, and two quirks kept as published: the fine samples never
    update the arms' statistics (only `all_sampled_scores`, used by the top-ranked picks), and
    positions past the last whole arm (T mod arms) belong to no arm. Fewer than k frames can
    come back when the chosen arms hold too few positions (as published). `linear` sorts the
    samples before interpolating (the published code hands np.interp the centre first, unsorted).

    Chosen: FOCUS runs over all native frames of the video; here over the cached candidates
    (`candidate_fps` per second, 1 by default), as every selector here does. Its strides are in
    seconds, so the number of frames scored for a video of a given length is the same as
    published; the fraction is of candidates (1 fps), not of native frames (about 30x more).
    The published seed is per worker (42 + rank); here 42 for every question, so a selection
    is reproducible whatever the sharding.
    """
    cfg = dict(FOCUS_DEFAULTS)
    given = {"top_ratio": top_ratio, "temperature": temperature, "zoom_ratio": zoom_ratio,
             "coarse_every_sec": coarse_every_sec, "seed": seed}
    cfg.update({n: v for n, v in given.items() if v is not None})
    if interpolation not in ("nearest", "linear", "uniform"):
        raise ValueError(f"unknown focus interpolation {interpolation!r}; valid: nearest, linear, uniform")
    if not (0 <= cfg["top_ratio"] <= 1 and cfg["temperature"] > 0 and 0 < cfg["zoom_ratio"] <= 1
            and cfg["coarse_every_sec"] > 0 and candidate_fps > 0):
        raise ValueError("focus needs 0 <= top_ratio <= 1, temperature > 0, 0 < zoom_ratio <= 1, "
                         "coarse_every_sec > 0 and candidate_fps > 0")
    rng = np.random.default_rng(int(cfg["seed"]))
    T, fps = scorer.num_candidates, float(candidate_fps)
    duration = T / fps
    desired = max(int(cfg["min_coarse_segments"]), int(np.ceil(duration / cfg["coarse_every_sec"])))
    coarse_stride = max(1, T // desired)
    fine_stride = min(max(1, int(round(cfg["fine_every_sec"] * fps))), coarse_stride)
    half_window = max(1, int(round(max(1.0 / fps, duration / desired / 2.0) * fps)))

    # arms (start, end inclusive), their sampled (position, score) pairs and statistics
    n_arms = max(1, T // coarse_stride)
    size = max(1, T // n_arms)
    arms = [(a * size, min((a + 1) * size, T) - 1) for a in range(n_arms) if min((a + 1) * size, T) > a * size]
    coarse: list[list[int]] = []
    for start, end in arms:
        centre = (start + end) // 2
        others = np.array([i for i in range(start, end + 1) if i != centre], dtype=np.int64)
        extra = min(int(cfg["extra_samples_per_region"]), len(others))
        coarse.append([centre] + (rng.choice(others, size=extra, replace=False).tolist() if extra else []))
    coarse_flat = [i for arm in coarse for i in arm]
    coarse_scores = scorer(np.array(coarse_flat))
    sampled = dict(zip(coarse_flat, coarse_scores.tolist()))
    arm_samples = [[(i, sampled[i]) for i in arm] for arm in coarse]
    total = sum(len(a) for a in arm_samples)
    value = []
    for samples in arm_samples:
        v = np.array([s for _, s in samples])
        mean, var = float(v.mean()), max(float(v.var()) if len(v) > 1 else 0.0, cfg["min_variance"])
        bonus = math.sqrt(2 * math.log(total) * var / len(v)) + 3 * math.log(total) / len(v) if total > 1 else 0.0
        value.append(mean + bonus)
    ranked = sorted(range(len(arms)), key=lambda a: value[a], reverse=True)  # stable: earlier arm on ties

    # fine stage around the most promising arms' centres
    zoom = min(max(int(cfg["min_zoom_segments"]), int(np.ceil(len(arms) * cfg["zoom_ratio"]))), len(arms))
    taken, fine = set(coarse_flat), set()
    for a in ranked[:zoom]:
        centre = (arms[a][0] + arms[a][1]) // 2
        lo, hi = max(0, centre - half_window), min(T - 1, centre + half_window)
        width = hi - lo + 1
        need = max(1, width // fine_stride)
        even = int(round(need * cfg["fine_uniform_ratio"]))
        if even > 0:
            step = width / even
            spots = [(lo + hi) // 2] if width <= even else [min(lo + int(i * step + step / 2), hi) for i in range(even)]
            fine.update(i for i in spots if i not in taken)
        if need - even > 0:
            free = np.array([i for i in range(lo, hi + 1) if i not in taken and i not in fine], dtype=np.int64)
            if len(free):
                fine.update(rng.choice(free, size=min(need - even, len(free)), replace=False).tolist())
    fine_flat = sorted(fine)
    if fine_flat:
        sampled.update(zip(fine_flat, scorer(np.array(fine_flat)).tolist()))

    # final: the best scored positions, then softmax draws in the top arms
    k_top = int(round(cfg["top_ratio"] * min(k, len(sampled))))
    chosen = [i for i, _ in sorted(sampled.items(), key=lambda item: item[1], reverse=True)[:k_top]]
    spacing = duration / k
    gap_sec = 0.0 if spacing <= cfg["disable_gap_below_sec"] else min(cfg["gap_ratio_of_avg"] * spacing,
                                                                       cfg["min_gap_sec"])
    gap = int(round(gap_sec * fps)) if gap_sec > 0 else 0
    remaining = k - len(chosen)
    if remaining > 0:
        S = min(max(int(cfg["final_min_arms"]), int(np.ceil(len(arms) * cfg["zoom_ratio"]))),
                int(cfg["final_max_arms"]), len(arms))
        for rank, a in enumerate(ranked[:S]):
            need = remaining // S + (1 if rank < remaining % S else 0)
            start, end = arms[a]
            if need == 0:
                continue
            span = np.arange(start, end + 1)
            free = span[~np.isin(span, chosen)]
            if not len(free):
                continue
            spaced = free[np.abs(free[:, None] - np.array(chosen)[None, :]).min(1) >= gap] \
                if gap and chosen else free
            pool = (spaced if len(spaced) else free).tolist()
            if interpolation == "uniform":
                picks = rng.choice(np.array(pool), size=min(need, len(pool)), replace=False).tolist()
            else:
                est = _focus_arm_estimates(arm_samples[a], start, end, interpolation)[np.array(pool) - start]
                norm = (est - est.min()) / (est.max() - est.min()) if est.max() > est.min() else np.ones_like(est)
                logits = norm / cfg["temperature"]
                p = np.exp(logits - logits.max())
                picks = [pool[j] for j in rng.choice(len(pool), size=min(need, len(pool)), p=p / p.sum(),
                                                     replace=False)]
            chosen += [int(i) for i in picks]
    return np.array(sorted(dict.fromkeys(chosen))[:k], dtype=np.int64)
