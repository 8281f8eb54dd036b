"""Selection quality statistics: the intervals and the chance level the demo's table reports."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tspo_eval.benchmarks import Question
from tspo_eval.quality import bootstrap_interval, chance_hit_rate, quality_table, wilson_interval
from tspo_eval.selection.stage import Selection, SelectionSet


def test_wilson_interval_matches_hand_computed_values():
    # 0/10: [0, z^2 / (n + z^2)] = [0, 3.8415 / 13.8415]; 5/10: 0.5 +- 0.2634 (textbook values)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-5)
    assert all(np.isnan(wilson_interval(0, 0)))


def test_chance_hit_rate_matches_enumeration():
    for candidates, inside, k in ((7, 2, 3), (10, 1, 4), (6, 3, 6), (5, 0, 2)):
        subsets = list(itertools.combinations(range(candidates), k))
        hitting = sum(any(i < inside for i in subset) for subset in subsets)
        assert chance_hit_rate(candidates, inside, k) == pytest.approx(hitting / len(subsets))


def test_bootstrap_interval_is_reproducible_and_sensible():
    values = np.r_[np.ones(30), np.zeros(70)]
    lo, hi = bootstrap_interval(values)
    assert (lo, hi) == bootstrap_interval(values)  # fixed seed: the same table every run
    normal = 1.96 * np.sqrt(0.3 * 0.7 / 100)
    assert lo == pytest.approx(0.3 - normal, abs=0.02) and hi == pytest.approx(0.3 + normal, abs=0.02)
    assert bootstrap_interval([0.25] * 8) == pytest.approx((0.25, 0.25))


def test_quality_table_intervals_count_the_questions_it_scores():
    questions = [Question("lvbench", f"q{i}", "t", f"v{i}.mp4", f"q{i}", "?", ("a", "b"), 0, "A",
                          time_reference=(10.0, 12.0)) for i in range(4)]
    near, far = [11.0, 50.0], [30.0, 50.0]  # a frame inside [9.5, 12.5] / none
    run = SelectionSet({"method": "x"}, {f"q{i}": Selection(f"v{i}.mp4", [0, 0], ts, 2, 1.0)
                                         for i, ts in enumerate([near, near, near, far])})
    row = quality_table({"x": run}, questions, intervals=True).loc["x"]
    assert row["questions"] == 4 and row["hit_rate"] == 0.75 and row["coverage"] == pytest.approx(3 / 8)
    assert (row["hit_rate_lo"], row["hit_rate_hi"]) == pytest.approx(wilson_interval(3, 4))
    assert row["coverage_lo"] <= row["coverage"] <= row["coverage_hi"]
    plain = quality_table({"x": run}, questions)
    assert "hit_rate_lo" not in plain.columns and plain.loc["x", "hit_rate"] == 0.75
