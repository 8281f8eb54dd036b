"""Selecting K of T candidate frames from per-candidate scores (SPEC section 3).

`select` returns sorted, unique candidate *positions* (indices into `scores`);
`frames_for_question` maps them to absolute frame numbers, `uniform_frames` spreads K frames
over a whole video, and `published_feed` is what the published evaluation feeds for a list
of frame numbers; under `official=True` the first two end in it (or in the published
uniform loaders).

The score-curve selectors (`evenly-spaced`, `topk`, `bin-max`, `aks`, `tspo`, `bolt`) are
here; `dpp` (frame features too) and `focus` (scores on demand) have their own modules, and
the registry and `select` are in `registry`. Settings published
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

import math
from typing import Any, Literal

import numpy as np

from .registry import EVENLY_SPACED, SELECTORS, UNIFORM, FrameScorer, _as_scores, register_selector, select

# Published AKS defaults (frame_select.py argparse) and TSPO's port (AKS_sampling).
AKS_PRESETS: dict[str, dict[str, float]] = {
    "aks": {"t1": 0.8, "t2": -100.0, "depth": 5},
    "tspo": {"t1": 0.2, "t2": -100.0, "depth": 3},
}

# BOLT's frame_selection.sh: --power 3 (VideoMME, MLVU; a benchmark's spec may set another, as
# LongVideoBench's 2.5); benchmarks not in it get 3 (LVBench's hour-long videos are closest to MLVU's).
BOLT_DEFAULT_POWER = 3.0


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
