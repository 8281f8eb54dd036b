"""Selecting K of T candidate frames from per-candidate scores (SPEC section 3).

`select` returns sorted, unique candidate *positions* (indices into `scores`);
`frames_for_question` maps them to absolute frame numbers and, under `official=True`,
reproduces the published evaluation's short-video fallback.

Methods live in the `SELECTORS` registry; `@register_selector("name")` adds one from
outside the package. A selector is `fn(scores, k, *, <keyword params>) -> positions`;
`select` checks the parameter names against its signature, hands it only T > k (T <= k
always returns every candidate) and checks what it returns.

Where each rule comes from (published code, GitHub):

- `topk`, `bin-max`: Hui-design/TSPO `model/temporal_agent.py` (`TSPOModel.inference_ts`)
  and `model/utils.py` (`generate_uniform_integers`, `group_features_by_cluster`).
- `aks`: ncTimTang/AKS `frame_select.py` (`meanstd`, `main`); TSPO's port with its
  hard-coded t1/depth is `AKS_sampling` in Hui-design/TSPO `model/utils.py`.
- `tspo`: Hui-design/TSPO `mp_tools/vlmeval/vlm/gen_id_tspo.py` (method per dataset).
- official fallback: `load_video_index` in Hui-design/TSPO
  `lmms-eval/lmms_eval/models/simple/llava_vid_tspo.py` and
  `.../models/simple/utils/qwen25vl_vision_process.py`.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Literal

import numpy as np

Selector = Callable[..., Any]

SELECTORS: dict[str, Selector] = {}

# Published AKS defaults (frame_select.py argparse) and TSPO's port (AKS_sampling).
AKS_PRESETS: dict[str, dict[str, float]] = {
    "aks": {"t1": 0.8, "t2": -100.0, "depth": 5},
    "tspo": {"t1": 0.2, "t2": -100.0, "depth": 3},
}

# gen_id_tspo.py: `method = 'topk' if dataset != 'VideoMME' else 'bin-max'`.
TSPO_DEFAULT_METHOD: dict[str, str] = {
    "longvideobench": "topk",
    "mlvu": "topk",
    "lvbench": "topk",
    "videomme": "bin-max",
}


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


def _check_params(method: str, fn: Selector, params: dict[str, Any]) -> None:
    """Reject parameter names the method does not take, before any work is done."""
    sig = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return
    valid = [n for n, p in list(sig.items())[2:]
             if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"method {method!r} has no parameter(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(valid) or '(none)'}")


def select(scores: Any, k: int, method: str, **params: Any) -> np.ndarray:
    """Pick at most k candidates; returns sorted, unique int64 positions into `scores`.

    Args:
        scores: (T,) per-candidate scores (list, numpy array or torch tensor).
        k: frame budget, >= 1.
        method: a key of `SELECTORS` (uniform, topk, bin-max, aks, tspo or a registered one).
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
    if method not in SELECTORS:
        raise ValueError(f"unknown selection method {method!r}; known: {', '.join(sorted(SELECTORS))}")
    fn = SELECTORS[method]
    _check_params(method, fn, params)
    arr = _as_scores(scores)
    T = len(arr)
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


def frames_for_question(candidate_frames: np.ndarray, scores: Any, k: int, method: str,
                        num_video_frames: int, official: bool = False, **params: Any) -> np.ndarray:
    """Absolute frame numbers for one question: `candidate_frames[select(...)]`, int64.

    `official=True` reproduces the published evaluation (`load_video_index`): when
    fewer than k candidates exist (T < k; T == k keeps the candidates) it discards the
    selection and feeds `np.linspace(0, num_video_frames - 1, k, dtype=int)` over ALL
    decoded frames, whatever the method. Those k numbers may repeat when the video has
    fewer than k frames, as in the published code. Otherwise T <= k returns all candidates.
    """
    cands = np.asarray(candidate_frames, dtype=np.int64)
    arr = _as_scores(scores)
    positions = select(arr, k, method, **params)
    if cands.ndim != 1 or len(cands) != len(arr):
        raise ValueError(f"candidate_frames {cands.shape} must be 1-D and match the scores")
    if official and len(cands) < k:
        if num_video_frames < 1:
            raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
        return np.linspace(0, num_video_frames - 1, k, dtype=int).astype(np.int64)
    return cands[positions]


@register_selector("uniform")
def uniform(scores: np.ndarray, k: int, *,
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
    raise ValueError(f"unknown uniform convention {convention!r}; valid: lmms-eval, vlmevalkit")


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


def _benchmark_key(name: str) -> str:
    """'VideoMME', 'Video-MME', 'videomme' -> 'videomme'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@register_selector("tspo")
def tspo(scores: np.ndarray, k: int, *, benchmark: str | None = None) -> np.ndarray:
    """The published TSPO evaluation's method for `benchmark` (`TSPO_DEFAULT_METHOD`).

    Any benchmark outside the table, or none, gets `topk`, as in the published code
    ("topk unless VideoMME"). The scores should be the agent's.
    """
    method = TSPO_DEFAULT_METHOD.get(_benchmark_key(benchmark), "topk") if benchmark else "topk"
    return SELECTORS[method](scores, k)
