"""Selection quality statistics: the intervals and the chance level the demo's table reports."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from tspo_eval.benchmarks import Question
from tspo_eval.benchmarks.core import parse_time_range
from tspo_eval.quality import (
    bootstrap_interval,
    chance_hit_rate,
    hit_and_coverage,
    question_quality,
    quality_table,
    wilson_interval,
)
from tspo_eval.selection.stage import Selection, SelectionSet


def test_hit_and_coverage_of_an_lvbench_range_by_hand():
    # LVBench Cm73ma6Ibcs, uid 55 (video_info.meta.jsonl): time_reference "00:15-00:19" -> 15 s to 19 s,
    # widened by the 0.5 s tolerance to [14.5, 19.5], both ends included.
    span = parse_time_range("00:15-00:19")
    assert span == (15.0, 19.0)
    # frames at:     14.4 (0.1 s before the widened start: out), 14.5 (on it: in), 17.0 (in),
    #                19.5 (on the widened end: in), 19.6 (out), 60.0 (out)
    # -> 3 of 6 inside: hit, coverage 0.5
    assert hit_and_coverage([14.4, 14.5, 17.0, 19.5, 19.6, 60.0], [span]) == (True, 0.5)
    # without tolerance [15, 19]: only 17.0 -> 1 / 6
    hit, coverage = hit_and_coverage([14.4, 14.5, 17.0, 19.5, 19.6, 60.0], [span], tolerance=0.0)
    assert hit and coverage == pytest.approx(1 / 6)
    # every frame outside: a miss, nothing of the budget on the moment
    assert hit_and_coverage([0.0, 10.0, 14.49, 19.51, 120.0], [span]) == (False, 0.0)


def test_hit_and_coverage_of_longvideobench_moments_by_hand():
    # LongVideoBench 86CxyhFV9MI_0 (lvb_val.json): position [854, 948, 1373] frames.  At 30 fps those are
    # moments at 28.4667, 31.6 and 45.7667 s; +-0.5 s: [27.9667, 28.9667], [31.1, 32.1], [45.2667, 46.2667].
    question = Question("longvideobench", "86CxyhFV9MI_0", "TOS", "86CxyhFV9MI.mp4", "86CxyhFV9MI_0",
                        "Which subtitles appear at the same time?", ("a", "b", "c", "d"), 1, "B",
                        reference_frames=(854, 948, 1373))
    # frames at 0.0 (out), 28.0 (in the first), 31.0 (0.1 s before the second: out), 32.0 (in the second),
    # 46.5 (0.23 s after the third: out), 95.08 (out) -> 2 of 6 inside: hit, coverage 1/3
    times = [0.0, 28.0, 31.0, 32.0, 46.5, 95.08]
    run = SelectionSet({"method": "x"}, {"86CxyhFV9MI_0": Selection("86CxyhFV9MI.mp4", [0, 840, 930, 960, 1395, 2852],
                                                                    times, 6, 30.0)})
    row = question_quality(run, [question]).iloc[0]
    assert bool(row["hit"]) and row["coverage"] == pytest.approx(1 / 3) and row["frames"] == 6
    # the same frames at 25 fps: moments 34.16, 37.92, 54.92 s -> none of the frames is within 0.5 s
    assert question_quality(SelectionSet({}, {"86CxyhFV9MI_0": Selection("v", [0] * 6, times, 6, 25.0)}),
                            [question])["hit"].tolist() == [False]


def test_a_frame_inside_overlapping_spans_counts_once():
    # spans [0, 5] and [4, 8], no tolerance: 1 (first), 4.5 (both: counted once), 7 (second), 9 (none)
    # -> 3 of 4 frames inside, coverage 0.75 (not 4 / 4)
    assert hit_and_coverage([1.0, 4.5, 7.0, 9.0], [(0.0, 5.0), (4.0, 8.0)], tolerance=0.0) == (True, 0.75)
    # no frames, or no spans: no hit and no coverage
    assert hit_and_coverage([], [(0.0, 5.0)]) == (False, 0.0)
    assert hit_and_coverage([1.0, 2.0], []) == (False, 0.0)


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
