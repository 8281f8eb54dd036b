"""The selector registry and its one entry point, `select` (SPEC section 3).

Methods live in `SELECTORS`; `@register_selector("name")` adds one from outside the package.
A selector is `fn(scores, k, *, <keyword params>) -> positions`; `select` checks the
parameter names against its signature, hands it only T > k (T <= k always returns every
candidate) and checks what it returns. Three keyword names are filled in by the pipeline
rather than by the user (`PIPELINE_KEYWORDS`): a selector that declares `features` receives
the (T, D) frame features (`dpp`); one that declares `scorer` (`focus`) scores candidates on
demand through a `FrameScorer` (which keeps what it scored) instead of reading all the scores,
and `candidate_fps` gives it the candidates per second of video. The built-in selectors are
registered when `tspo_eval.selection` is imported (`methods`, `dpp`, `focus`).
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from typing import Any, Callable

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

# keywords the pipeline fills in, never user parameters
PIPELINE_KEYWORDS = ("features", "scorer", "candidate_fps")


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
    hints = _hints(fn)
    for name in set(params) & set(valid) & set(hints):
        wanted = _fits(hints[name], params[name])
        if wanted:
            raise ValueError(f"method {method!r}: {name}={params[name]!r} is not {wanted}")


@functools.cache
def _hints(fn: Selector) -> dict[str, Any]:
    """`fn`'s parameter types (none where they cannot be resolved: a plugin's names we cannot see)."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        return {}


def _fits(hint: Any, value: Any) -> str | None:
    """What a parameter typed `hint` must be, when `value` is not that (None when it is): numbers,
    Literal choices and Optional, which is what selectors declare."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
    if value is None and union and len(options) < len(typing.get_args(hint)):
        return None
    names = []
    for option in options:
        if typing.get_origin(option) is typing.Literal:
            if value in typing.get_args(option):
                return None
            names.append(f"one of {', '.join(map(str, typing.get_args(option)))}")
        elif option in (int, float):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                    option is float or float(value).is_integer()):
                return None
            names.append("a whole number" if option is int else "a number")
        elif not isinstance(option, type) or isinstance(value, option):
            return None
        else:
            names.append(option.__name__)
    return " or ".join(names)


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
