"""The GRPO core against enumeration of every ordered draw, hand-derived gradients and invariants."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from tspo_eval.training.grpo import (
    Rollouts,
    group_advantages,
    gumbel_topk,
    independent_logprob,
    plackett_luce_logprob,
    policy_loss,
    sample_rollouts,
    tau_at,
)


def enumerated_probability(logits: list[float], draw: tuple[int, ...]) -> float:
    """P(ordered draw) without replacement, written from the definition with plain floats."""
    p = [math.exp(x) for x in logits]
    total = sum(p)
    p = [x / total for x in p]
    prob, used = 1.0, 0.0
    for i in draw:
        prob *= p[i] / (1.0 - used)
        used += p[i]
    return prob


def torch_enumerated_probability(logits: torch.Tensor, draw: tuple[int, ...]) -> torch.Tensor:
    """The same product in torch ops (softmax probabilities, no logsumexp), for autograd."""
    p = torch.softmax(logits, 0)
    prob, used = torch.ones((), dtype=logits.dtype), torch.zeros((), dtype=logits.dtype)
    for i in draw:
        prob = prob * p[i] / (1 - used)
        used = used + p[i]
    return prob


@pytest.mark.parametrize(("t", "k"), [(5, 3), (4, 4), (6, 2)])
def test_plackett_luce_equals_enumeration_of_all_ordered_draws(t, k):
    logits = torch.randn(t, dtype=torch.float64, generator=torch.Generator().manual_seed(t * 10 + k)) * 2
    draws = list(itertools.permutations(range(t), k))
    ours = plackett_luce_logprob(logits, torch.tensor(draws)).exp()
    truth = torch.tensor([enumerated_probability(logits.tolist(), d) for d in draws], dtype=torch.float64)
    torch.testing.assert_close(ours, truth, rtol=1e-10, atol=1e-12)
    assert float(ours.sum()) == pytest.approx(1.0, abs=1e-10)  # a distribution over ordered draws


def test_plackett_luce_gradient_matches_autograd_of_the_enumerated_probability():
    logits = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.1], dtype=torch.float64)
    for draw in [(2, 0, 4), (1, 3, 0), (4, 2, 3)]:
        a = logits.clone().requires_grad_(True)
        plackett_luce_logprob(a, torch.tensor([draw])).sum().backward()
        b = logits.clone().requires_grad_(True)
        torch.log(torch_enumerated_probability(b, draw)).backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_reinforce_with_the_ordered_logprob_is_the_exact_gradient_of_the_expected_set_reward():
    """sum_d P(d) R(set(d)) grad log P(d) == grad sum_S R(S) P(S), P(S) summing S's k! orders."""
    t, k = 5, 2
    logits = torch.tensor([0.5, -0.3, 1.1, 0.0, -0.8], dtype=torch.float64)
    reward = {s: float(hash(s) % 7) / 7 for s in itertools.combinations(range(t), k)}
    draws = torch.tensor(list(itertools.permutations(range(t), k)))
    a = logits.clone().requires_grad_(True)
    logp = plackett_luce_logprob(a, draws)
    r = torch.tensor([reward[tuple(sorted(d))] for d in draws.tolist()], dtype=torch.float64)
    (logp.exp().detach() * r * logp).sum().backward()
    b = logits.clone().requires_grad_(True)
    expected = sum(reward[s] * sum(torch_enumerated_probability(b, o) for o in itertools.permutations(s))
                   for s in reward)
    expected.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)


def test_gumbel_topk_samples_the_plackett_luce_distribution():
    logits = torch.tensor([1.0, 0.0, -0.5, 0.8])
    n = 40000
    draws = gumbel_topk(logits, 2, n, torch.Generator().manual_seed(0))
    assert draws.shape == (n, 2) and bool((draws[:, 0] != draws[:, 1]).all())
    counts: dict[tuple, int] = {}
    for d in map(tuple, draws.tolist()):
        counts[d] = counts.get(d, 0) + 1
    for d in itertools.permutations(range(4), 2):
        p = enumerated_probability(logits.tolist(), d)
        assert counts.get(d, 0) / n == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n) + 1e-3)


def test_rollouts_keep_draw_order_but_hand_the_answerer_time_order():
    rollouts = sample_rollouts(torch.tensor([0.0, 5.0, 1.0, 4.0]), 3, 2, "plackett-luce",
                               torch.Generator().manual_seed(1))
    for draw, sel in zip(rollouts.draws.tolist(), rollouts.selections):
        assert sorted(draw) == sel.tolist()
    assert sample_rollouts(torch.zeros(3), 16, 2, "plackett-luce").draws.shape == (2, 3)  # k capped at T


def test_official_logprob_and_surrogate_gradient_by_hand():
    """Published surrogate: value -mean(A) at ratio 1; gradient -(1/G) sum_g A_g / K sum_k (e_d - p)."""
    logits = torch.tensor([0.2, -0.4, 1.0, 0.1], dtype=torch.float64, requires_grad=True)
    draws = torch.tensor([[2, 0], [1, 3], [3, 2]])
    p = torch.softmax(logits.detach(), 0)
    torch.testing.assert_close(independent_logprob(logits.detach(), draws), p.log()[draws])
    adv = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    rollouts = Rollouts(draws, independent_logprob(logits.detach(), draws), logits.detach())
    loss, _ = policy_loss(logits, rollouts, adv, "official")
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-float(adv.mean()))
    expected = torch.zeros(4, dtype=torch.float64)
    for g in range(3):
        for i in draws[g]:
            expected -= adv[g] / 2 * (torch.nn.functional.one_hot(i, 4).double() - p) / 3
    torch.testing.assert_close(logits.grad, expected)


def test_group_advantages_by_hand():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]), eps=0.0)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    torch.testing.assert_close(adv[0], torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]))
    assert group_advantages(torch.tensor([2.0, 2.0, 2.0]), eps=1e-4).abs().max() == 0  # no signal, no NaN


def test_tau_anneals_linearly_from_start_to_end():
    assert tau_at(0, 11) == 0.025 and tau_at(10, 11) == pytest.approx(0.01)
    assert tau_at(5, 11) == pytest.approx(0.0175)
    assert tau_at(0, 1) == 0.025


def _loss_and_grad(objective, clip_eps=None, ref_shift=None, kl_coef=0.0, old_shift=0.0):
    logits = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.0], dtype=torch.float64)
    draws = torch.tensor([[2, 3], [0, 4], [1, 2]])
    adv = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    old = plackett_luce_logprob(logits, draws) + old_shift
    live = logits.clone().requires_grad_(True)
    ref = None if ref_shift is None else logits + ref_shift
    loss, stats = policy_loss(live, Rollouts(draws, old, logits), adv, objective, clip_eps, ref, kl_coef)
    loss.backward()
    return float(loss.detach()), live.grad, stats


def test_equivalent_configurations_give_equal_losses():
    base_loss, base_grad, _ = _loss_and_grad("plackett-luce")
    # PPO clipping is inactive on the rollout policy itself (ratio 1)
    loss, grad, stats = _loss_and_grad("plackett-luce", clip_eps=0.2)
    assert loss == base_loss and torch.equal(grad, base_grad) and stats["clip_frac"] == 0
    # KL to a reference equal to the policy: k3 = 0 with zero gradient
    loss, grad, stats = _loss_and_grad("plackett-luce", ref_shift=0.0, kl_coef=0.5)
    assert stats["kl"] == 0 and loss == pytest.approx(base_loss) and torch.allclose(grad, base_grad)
    # a reference shifted by a constant gives the same softmax: still zero KL
    _, _, stats = _loss_and_grad("plackett-luce", ref_shift=3.0, kl_coef=0.5)
    assert stats["kl"] == pytest.approx(0, abs=1e-12)


def test_clipping_stops_the_gradient_of_rollouts_pushed_past_the_trust_region():
    # old log-probs far below the current ones: ratio >> 1 + eps; positive advantages are clipped (no
    # gradient), the negative one keeps its unclipped term (min picks it)
    _, grad, stats = _loss_and_grad("plackett-luce", clip_eps=0.2, old_shift=-1.0)
    assert stats["clip_frac"] == pytest.approx(2 / 3)
    logits = torch.tensor([0.5, -1.0, 2.0, 0.3, 0.0], dtype=torch.float64, requires_grad=True)
    logp = plackett_luce_logprob(logits, torch.tensor([[0, 4]]))
    only_negative = -(-1.0 * torch.exp(logp - (logp.detach() - 1.0))) / 3
    only_negative.sum().backward()
    torch.testing.assert_close(grad, logits.grad)


def test_kl_needs_a_reference():
    with pytest.raises(ValueError, match="reference"):
        _loss_and_grad("plackett-luce", kl_coef=0.1)


def test_one_frame_per_rollout_makes_both_objectives_the_same_loss():
    """K = 1: the ordered draw is a single softmax draw, so PL and the published surrogate coincide."""
    logits = torch.tensor([0.4, -0.2, 1.5, 0.0], dtype=torch.float64)
    draws = torch.tensor([[2], [0], [2], [3]])
    adv = torch.tensor([0.5, -1.0, 0.5, 0.0], dtype=torch.float64)
    out = {}
    for objective in ("plackett-luce", "official"):
        live = logits.clone().requires_grad_(True)
        old = plackett_luce_logprob(logits, draws) if objective == "plackett-luce" else None
        loss, _ = policy_loss(live, Rollouts(draws, old, logits), adv, objective)
        loss.backward()
        out[objective] = (float(loss.detach()), live.grad)
    assert out["plackett-luce"][0] == pytest.approx(out["official"][0])
    torch.testing.assert_close(out["plackett-luce"][1], out["official"][1])
