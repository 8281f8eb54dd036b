"""`focus`: FOCUS (Zhu et al., ICLR 2026; NUS-HPC-AI-Lab/FOCUS `focus.py` and
`select_keyframe.py`), a bandit search that scores only part of the candidates through a
`FrameScorer`."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np

from .registry import FrameScorer, register_selector

# FOCUS's published defaults (select_keyframe.py argparse; FOCUS.__init__ for the rest).
FOCUS_DEFAULTS: dict[str, float] = {
    "coarse_every_sec": 16.0, "fine_every_sec": 1.0, "zoom_ratio": 0.25, "final_min_arms": 4, "final_max_arms": 32,
    "min_coarse_segments": 8, "min_zoom_segments": 4, "extra_samples_per_region": 2, "min_variance": 1e-6,
    "fine_uniform_ratio": 0.5, "top_ratio": 0.2, "temperature": 0.06, "min_gap_sec": 1.0, "gap_ratio_of_avg": 0.25,
    "disable_gap_below_sec": 0.2, "seed": 42}


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
