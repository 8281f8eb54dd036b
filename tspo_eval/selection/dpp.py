"""`dpp`: relevance + diversity over the cached frame features, MDP3's conditional DPP
(Sun et al., ICCV 2025, arXiv 2501.02885; its public `MDP3` class: `MultiGaussianKernel`,
`seqdpp_select_super_fast`, `_select_frames_fast`), greedy MAP inference."""
from __future__ import annotations

import numpy as np

from .registry import register_selector

# MDP3's MultiGaussianKernel: bandwidths 2**-3 .. 2**1, summed (not averaged); lamda = 0.2.
DPP_BANDWIDTHS = (0.125, 0.25, 0.5, 1.0, 2.0)
DPP_LAMBDA = 0.2
# Kernel columns are computed DPP_BATCH at a time (the chosen frame and the next best candidates,
# one matrix product): a product of (T, D) by (D, 8) costs about 3 single columns on one core.
DPP_BATCH = 16
# A candidate whose Schur complement is below this share of the kernel diagonal duplicates the
# chosen frames: cosine above ~1 - 1.6e-6, which float32 features cannot resolve anyway.
DPP_DUPLICATE = 1e-5


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
