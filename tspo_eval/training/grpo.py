"""The GRPO core over frame selections: rollouts, log-probabilities, advantages, loss.

The policy of one question is a distribution over ordered draws of K of its T candidate
frames: Gumbel-top-k on the logits S / tau, i.e. K draws without replacement from
softmax(S / tau) (Plackett-Luce).  Everything here works on those logits, so the same
functions serve any scorer (the agent head, or a test's free tensor).

Two objectives (SPEC section 7, step 9):

- `plackett-luce` (default): the exact log-probability of the ordered draw,
  sum_j [l_{d_j} - logsumexp_{i not drawn before j} l_i].  The rollout *is* an ordered
  draw, so A * grad log P(ordered draw) is an unbiased REINFORCE estimate of the gradient
  of the expected reward of the selected set (the reward depends on the set only).  The
  set's own probability would need a sum over K! orders and gives the same expected
  gradient.  PPO-style clipping of exp(logp - logp_rollout) and a k3 KL estimate to a
  frozen reference are optional.
- `official`: the published surrogate, mean over the K frames of exp(logp - logp.detach())
  with logp = log softmax of the noise-free logits (the K picks treated as independent
  draws), times the advantage; no clipping, no reference, as published.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import Objective


def tau_at(step: int, total_steps: int, start: float = 0.025, end: float = 0.01) -> float:
    """Linearly annealed temperature: `start` at step 0, `end` at the last step (published rule)."""
    if total_steps <= 1:
        return start
    return start + (end - start) * min(step, total_steps - 1) / (total_steps - 1)


def gumbel_topk(logits: torch.Tensor, k: int, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`num` ordered draws of k distinct candidates from softmax(logits) without replacement.

    logits: (T,).  Returns (num, k) int64 positions in draw order (largest perturbed logit
    first).  The noise is drawn on the CPU from `generator`, so a run is reproducible on
    any device.
    """
    t = logits.shape[-1]
    if not 1 <= k <= t:
        raise ValueError(f"cannot draw k={k} of {t} candidates")
    uniform = torch.rand((num, t), generator=generator, dtype=torch.float64).clamp_(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(uniform))  # (G, T)
    perturbed = logits.detach().double().cpu().unsqueeze(0) + gumbel
    return perturbed.topk(k, dim=-1).indices.to(logits.device)  # (G, K), sorted by perturbed value


def plackett_luce_logprob(logits: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Exact log-probability of each ordered draw under sampling without replacement.

    logits: (T,) or (G, T); draws: (G, K) positions in draw order.  Returns (G,).
    """
    g = draws.shape[0]
    logits = logits.expand(g, -1) if logits.ndim == 1 else logits  # (G, T)
    picked = torch.nn.functional.one_hot(draws, logits.shape[-1]).to(torch.bool)  # (G, K, T)
    drawn_before = (picked.cumsum(1) - picked.long()).bool()  # (G, K, T): drawn at an earlier step
    remaining = logits.unsqueeze(1).masked_fill(drawn_before, float("-inf"))  # (G, K, T)
    chosen = logits.gather(1, draws)  # (G, K)
    return (chosen - remaining.logsumexp(-1)).sum(-1)


def independent_logprob(logits: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Published per-frame log-probabilities: log softmax(logits) at each drawn position, (G, K)."""
    return torch.log_softmax(logits, dim=-1).expand(draws.shape[0], -1).gather(1, draws)


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group (last dim); unbiased std, as published."""
    mean = rewards.mean(-1, keepdim=True)
    std = rewards.std(-1, keepdim=True) if rewards.shape[-1] > 1 else torch.zeros_like(mean)
    return (rewards - mean) / (std + eps)


@dataclass
class Rollouts:
    """G rollouts of one question: the ordered draws and what the rollout policy gave them."""

    draws: torch.Tensor  # (G, K) positions in draw order
    old_logp: torch.Tensor  # (G,) PL log-prob under the rollout policy, or (G, K) for `official`
    logits: torch.Tensor  # (T,) rollout logits (detached), for plots and statistics

    @property
    def selections(self) -> list[np.ndarray]:
        """Each rollout's positions sorted by time: what the answerer sees."""
        return [np.sort(d) for d in self.draws.cpu().numpy()]


def logprob(logits: torch.Tensor, draws: torch.Tensor, objective: Objective) -> torch.Tensor:
    """(G,) ordered log-probabilities (`plackett-luce`) or (G, K) per-frame ones (`official`)."""
    return plackett_luce_logprob(logits, draws) if objective == "plackett-luce" else independent_logprob(logits, draws)


def sample_rollouts(logits: torch.Tensor, k: int, num: int, objective: Objective,
                    generator: torch.Generator | None = None) -> Rollouts:
    """Draw `num` rollouts of k frames from (T,) logits (at most all T frames)."""
    logits = logits.detach()
    draws = gumbel_topk(logits, min(k, logits.shape[-1]), num, generator)
    return Rollouts(draws=draws, old_logp=logprob(logits, draws, objective), logits=logits)


def policy_loss(logits: torch.Tensor, rollouts: Rollouts, advantages: torch.Tensor, objective: Objective,
                clip_eps: float | None = None, ref_logits: torch.Tensor | None = None,
                kl_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one question's group and its statistics.

    logits: (T,) current policy logits (with grad); advantages: (G,).
    `plackett-luce`: -mean_g min(rho_g A_g, clip(rho_g) A_g) with rho = exp(logp - logp_rollout)
    (no clipping when clip_eps is None) + kl_coef * mean k3(ref || policy).
    `official`: -mean_g A_g * mean_k exp(logp_gk - logp_gk.detach()) (+ the same KL term).
    """
    logp = logprob(logits, rollouts.draws, objective)  # (G,) or (G, K)
    stats: dict[str, float] = {}
    if objective == "official":
        surrogate = torch.exp(logp - logp.detach()).mean(-1) * advantages  # (G,)
    else:
        ratio = torch.exp(logp - rollouts.old_logp)  # (G,)
        surrogate = ratio * advantages
        if clip_eps is not None:
            clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
            stats["clip_frac"] = float((clipped < surrogate).float().mean())
            surrogate = torch.minimum(surrogate, clipped)
    loss = -surrogate.mean()
    if kl_coef > 0:
        if ref_logits is None:
            raise ValueError("kl_coef > 0 needs the reference policy's logits")
        log_ratio = logprob(ref_logits.detach(), rollouts.draws, objective) - logp  # log pi_ref / pi
        kl = (torch.exp(log_ratio) - log_ratio - 1).mean()  # k3 estimator, >= 0
        loss = loss + kl_coef * kl
        stats["kl"] = float(kl.detach())
    return loss, stats
