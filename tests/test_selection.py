"""Selection methods against hand-computed positions and the published frame-index files."""
from __future__ import annotations

import json
import math
from functools import reduce

import numpy as np
import pytest

from tspo_eval.benchmarks import get_benchmark
from tspo_eval.policy import FramePolicy
from tspo_eval.selection.methods import AKS_PRESETS, frames_for_question, published_feed, uniform_frames
from tspo_eval.selection.registry import SELECTORS, FrameScorer, register_selector, select
from tspo_eval.selection.stage import method_params

BUILTINS = ["evenly-spaced", "topk", "bin-max", "aks", "tspo", "bolt"]
# T = 10. Bin-max (k=3) anchors 0, 4, 9 -> bins {0,1,2} {3..6} {7,8,9}.
S10 = np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.5, 0.6, 0.4])


def sel(scores, k, method, **params) -> list[int]:
    return select(scores, k, method, **params).tolist()


# ---------------------------------------------------------------- uniform

def test_uniform_lmms_eval_linspace_truncates():
    # linspace(0, 9, 3) = 0, 4.5, 9; linspace(0, 10, 4) = 0, 3.33, 6.67, 10
    assert sel(S10, 3, "evenly-spaced") == [0, 4, 9]
    assert sel(S10, 4, "evenly-spaced") == [0, 3, 6, 9]
    assert sel(np.zeros(11), 4, "evenly-spaced") == [0, 3, 6, 10]


def test_uniform_vlmevalkit_excludes_ends():
    # step 10/4 = 2.5 -> int(2.5), int(5.0), int(7.5); step 10/5 = 2 -> 2, 4, 6, 8
    assert sel(S10, 3, "evenly-spaced", convention="vlmevalkit") == [2, 5, 7]
    assert sel(S10, 4, "evenly-spaced", convention="vlmevalkit") == [2, 4, 6, 8]
    assert sel(S10, 1, "evenly-spaced", convention="vlmevalkit") == [5]


def test_uniform_ignores_scores_and_checks_convention():
    assert sel(S10, 3, "evenly-spaced") == sel(S10[::-1], 3, "evenly-spaced")
    with pytest.raises(ValueError, match="lmms-eval, vlmevalkit"):
        select(S10, 3, "evenly-spaced", convention="decord")


# ---------------------------------------------------------------- topk

def test_topk_highest_in_time_order():
    # 0.9 @1, 0.8 @3, 0.7 @5, then 0.6 @8
    assert sel(S10, 3, "topk") == [1, 3, 5]
    assert sel(S10, 4, "topk") == [1, 3, 5, 8]


def test_topk_ties_go_to_earlier_position():
    assert sel([1, 5, 5, 5, 2], 2, "topk") == [1, 2]
    assert sel(np.full(10, 0.3), 3, "topk") == [0, 1, 2]
    # long enough that an unstable sort would scramble the tied candidates
    s = np.zeros(300)
    s[::7] = 1.0
    assert sel(s, 5, "topk") == [0, 7, 14, 21, 28]


def test_topk_accepts_bf16_tensor():
    torch = pytest.importorskip("torch")
    t = torch.tensor(S10, dtype=torch.bfloat16)
    assert sel(t, 3, "topk") == [1, 3, 5]


# ---------------------------------------------------------------- bin-max

def test_bin_max_argmax_per_bin():
    # bins {0,1,2} -> 0.9 @1; {3..6} -> 0.8 @3; {7,8,9} -> 0.6 @8
    assert sel(S10, 3, "bin-max") == [1, 3, 8]
    # T=7, k=3: anchors 0, 3, 6 -> bins {0,1} {2,3,4} {5,6}
    assert sel([0, 1, 9, 0, 0, 2, 0], 3, "bin-max") == [1, 2, 5]


def test_bin_max_equidistant_candidate_joins_lower_anchor():
    # Position 2 is 2 away from anchors 0 and 4: it belongs to bin 0, so bin 0 picks it
    # and bin 1 ({3..6}) picks 3. Ties to the upper anchor would give [0, 2, 8].
    assert sel([0, 0, 9, 8, 1, 1, 1, 0, 5, 0], 3, "bin-max") == [2, 3, 8]


def test_bin_max_rounds_half_to_even_like_python_round():
    # (T-1)/(k-1) = 4.5 -> anchor round(4.5) = 4, so position 7 (3 from 4, 2 from 9) is in
    # the last bin. Half-up rounding (anchor 5) would put 7 in bin {3..7} -> [2, 3, 8].
    assert sel([0, 0, 9, 8, 1, 1, 1, 7, 5, 0], 3, "bin-max") == [2, 3, 7]


def test_bin_max_constant_scores_take_first_of_each_bin():
    assert sel(np.ones(10), 3, "bin-max") == [0, 3, 7]


def test_bin_max_k1_is_global_argmax():
    assert sel(S10, 1, "bin-max") == [1]


# ---------------------------------------------------------------- aks

def _tspo_preset_scores() -> np.ndarray:
    """T=64 already spanning [0, 1]; the AKS recursion for k=8, t1=0.2, depth=3 by hand.

    whole:   top-8 mean 0.9725 - mean 0.8045 = 0.168 <= 0.2 -> split
    0..31:   top-8 mean 0.95   - mean 0.6875 = 0.2625 > 0.2 -> leaf at depth 1, top 4
             (1.0 @7, 0.99 @19, 0.98 @3, 0.97 @27)
    32..63:  0.955 - 0.9216 = 0.033 -> split; 32..47: 0.061, 48..63: 0.001 -> split
    depth 3: four 8-frame leaves, top 1 each: 0.96 @34, @45, @50, @63
    """
    s = np.full(64, 0.6)
    for pos, v in {3: 0.98, 7: 1.0, 11: 0.92, 15: 0.9, 19: 0.99, 23: 0.91, 27: 0.97, 31: 0.93}.items():
        s[pos] = v
    s[32:] = 0.95
    s[40] = 0.0
    s[[34, 45, 50, 63]] = 0.96
    return s


def test_aks_tspo_preset_recursion_by_hand():
    s = _tspo_preset_scores()
    expected = [3, 7, 19, 27, 34, 45, 50, 63]
    assert sel(s, 8, "aks", preset="tspo") == expected
    assert sel(s, 8, "aks", t1=0.2, depth=3) == expected
    # min-max normalisation: an affine rescaling changes nothing
    assert sel(3.0 + 0.5 * s, 8, "aks", preset="tspo") == expected


def _shuffled_ramp(T: int = 320) -> np.ndarray:
    return np.random.default_rng(0).permutation(np.linspace(0.0, 1.0, T))


def test_aks_defaults_degenerate_to_32_bins_top2_at_k64():
    # Whole video: top-64 of a 0..1 ramp average 0.90, mean 0.5 -> 0.40 <= 0.8; halves of
    # 160 and quarters of 80 stay far below 0.8 and segments of <= 64 frames give 0, so
    # every segment splits to depth 5: 32 bins of 10, floor(64/32) = 2 frames each.
    s = _shuffled_ramp()
    bins = s.reshape(32, 10)
    top2 = np.argsort(-bins, axis=1)[:, :2] + 10 * np.arange(32)[:, None]
    assert AKS_PRESETS["aks"] == {"t1": 0.8, "t2": -100.0, "depth": 5}
    assert sel(s, 64, "aks") == sorted(top2.ravel().tolist())


def test_aks_tspo_preset_stops_at_depth0_on_the_same_scores():
    # 0.40 > t1 = 0.2: the whole video is a leaf keeping its top 64 = plain topk.
    s = _shuffled_ramp()
    assert sel(s, 64, "aks", preset="tspo") == sel(s, 64, "topk")


def test_aks_peaked_video_stops_early_even_with_defaults():
    # 64 frames at 1, 576 at 0: top-64 mean 1 - mean 0.1 = 0.9 > 0.8 -> one leaf, top 64,
    # all clustered at the start (not 2 per bin).
    s = np.zeros(640)
    s[:64] = 1.0
    assert sel(s, 64, "aks") == list(range(64))


def test_aks_t2_blocks_a_leaf_and_depth_override():
    # Same video, std = 0.3 < t2 = 0.35: no leaf at depth 0; depth 1 is the limit, each
    # half keeps floor(64/2) = 32 frames (the second half is all zeros: earliest 32).
    s = np.zeros(640)
    s[:64] = 1.0
    expected = list(range(32)) + list(range(320, 352))
    assert sel(s, 64, "aks", t2=0.35, depth=1) == expected


def test_aks_odd_length_middle_goes_to_second_half():
    # T=9 splits into 0..3 and 4..8; depth 0: 0.8 - 0.356 < 0.8. Top-1 per half: 3 and 4.
    # (Middle in the first half would give 4 and 6.)
    s = [0.2, 0.1, 0.3, 0.4, 1.0, 0.5, 0.6, 0.0, 0.1]
    assert sel(s, 2, "aks", depth=1) == [3, 4]


def test_aks_drops_remainders():
    # k=5, one split: each half keeps floor(5/2) = 2 -> 4 frames, top 2 of each half.
    s = _shuffled_ramp(20)
    first, second = np.argsort(-s[:10])[:2], 10 + np.argsort(-s[10:])[:2]
    assert sel(s, 5, "aks", depth=1) == sorted([*first.tolist(), *second.tolist()])


def test_aks_constant_scores_are_defined():
    # normalised to zeros: all split to depth 5, the first 2 frames of each 10-frame bin
    assert sel(np.full(320, 0.7), 64, "aks") == [10 * b + j for b in range(32) for j in (0, 1)]


def test_aks_unknown_preset():
    with pytest.raises(ValueError, match="aks, tspo"):
        select(S10, 3, "aks", preset="fast")


# ---------------------------------------------------------------- tspo

def published_params(method: str, benchmark: str, **params) -> dict:
    """What the selection stage hands `method` on `benchmark` (the spec's published settings under the policy's)."""
    return method_params(FramePolicy(method=method, params=params), benchmark)


def test_tspo_method_per_benchmark():
    s = [9, 8, 7, 0, 0, 0, 0, 0, 0, 1]  # topk [0,1,2]; bin-max [0,3,9]
    # gen_id_tspo.py: `method = 'topk' if dataset != 'VideoMME' else 'bin-max'`
    assert {name: get_benchmark(name).selector_params["tspo"] for name in
            ("longvideobench", "mlvu", "lvbench", "videomme")} == {
        "longvideobench": {"rule": "topk"}, "mlvu": {"rule": "topk"}, "lvbench": {"rule": "topk"},
        "videomme": {"rule": "bin-max"}}
    assert sel(s, 3, "tspo", **published_params("tspo", "videomme")) == [0, 3, 9]
    assert sel(s, 3, "tspo", **published_params("tspo", "VideoMME")) == [0, 3, 9]
    for bench in ("longvideobench", "mlvu", "lvbench", "my-own", ""):
        assert sel(s, 3, "tspo", **published_params("tspo", bench)) == [0, 1, 2]
    assert sel(s, 3, "tspo") == [0, 1, 2]
    assert sel(s, 3, "tspo", **published_params("tspo", "videomme", rule="topk")) == [0, 1, 2]  # the policy's wins
    with pytest.raises(ValueError, match="topk, bin-max"):
        select(s, 3, "tspo", rule="max")


# ---------------------------------------------------------------- edge cases and errors

@pytest.mark.parametrize("method", BUILTINS)
def test_t_not_above_k_returns_all(method):
    assert sel(S10[:4], 6, method) == [0, 1, 2, 3]
    assert sel(S10[:6], 6, method) == list(range(6))
    assert sel([0.5], 3, method) == [0]
    assert sel([0.5], 1, method) == [0]


def test_k1():
    assert sel(S10, 1, "evenly-spaced") == [0]
    assert sel(S10, 1, "topk") == [1]
    # aks, k=1: normalised S10 (/0.9) has top-1 1.0 and mean 0.5: 0.5 <= 0.8 -> split, and
    # floor(1/2^d) = 0 frames at every deeper leaf (published behaviour); 0.5 > 0.4 -> leaf
    assert sel(S10, 1, "aks") == []
    assert sel(S10, 1, "aks", t1=0.4) == [1]


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="aks, bin-max, .*evenly-spaced, .*topk"):
        select(S10, 3, "random")
    with pytest.raises(ValueError, match="valid: preset, t1, t2, depth"):
        select(S10, 3, "aks", t3=1.0)
    with pytest.raises(ValueError, match=r"valid: \(none\)"):
        select(S10, 3, "topk", window=12)
    with pytest.raises(ValueError, match="no parameter"):  # checked even when T <= k
        select(S10[:2], 3, "topk", window=12)
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            select(S10, k, "topk")
    with pytest.raises(ValueError, match="1-D"):
        select(np.zeros((2, 5)), 3, "topk")
    with pytest.raises(ValueError, match="NaN"):
        select([0.1, np.nan, 0.3], 1, "topk")


# ---------------------------------------------------------------- registry

def test_register_custom_selector():
    name = "test-lowest"
    try:
        @register_selector(name)
        def lowest(scores: np.ndarray, k: int, *, offset: int = 0) -> np.ndarray:
            return np.argsort(scores, kind="stable")[:k] + offset

        assert SELECTORS[name] is lowest
        assert sel(S10, 3, name) == [0, 4, 6]  # 0.0 @6, 0.1 @0, 0.2 @4
        with pytest.raises(ValueError, match="valid: offset"):
            select(S10, 3, name, offst=1)
        with pytest.raises(ValueError, match="expected at most 3 in"):
            select(S10, 3, name, offset=5)  # 11 is out of range
        with pytest.raises(ValueError, match="already registered"):
            register_selector(name)(lowest)
    finally:
        SELECTORS.pop(name, None)


# ---------------------------------------------------------------- frame numbers

CANDS = np.arange(0, 300, 30)  # 10 candidates at 1 fps of a 30 fps, 300-frame video


def test_frames_for_question_maps_positions():
    assert frames_for_question(CANDS, S10, 3, "topk", 300).tolist() == [30, 90, 150]
    with pytest.raises(ValueError, match="uniform_frames"):  # uniform frames come from the whole video
        frames_for_question(CANDS, S10, 3, "uniform", 300)


def test_uniform_frames_span_the_whole_video():
    # linspace(0, 299, 3) = 0, 149.5, 299 -> 0, 149, 299: all 300 frames, not the 10 candidates
    assert uniform_frames(300, 30.0, 3).tolist() == [0, 149, 299]
    assert uniform_frames(5, 30.0, 8).tolist() == [0, 1, 2, 3, 4]  # N <= k: every frame once
    # VLMEvalKit's convention through the method's parameter: int(i * 300 / 4), i = 1..3
    assert uniform_frames(300, 30.0, 3, convention="vlmevalkit").tolist() == [75, 150, 225]


def test_official_uniform_llava_video_loader():
    # 30 fps, 300 frames: range(0, 300, 30) = 10 one-fps frames; k = 16 > 10 -> all of them (load_video
    # only spreads k frames when there are more than k), k = 10 too; k = 4 -> linspace(0, 299, 4) truncated
    assert uniform_frames(300, 30.0, 16, official=True).tolist() == list(range(0, 300, 30))
    assert uniform_frames(300, 30.0, 10, official=True).tolist() == list(range(0, 300, 30))
    assert uniform_frames(300, 30.0, 4, official=True).tolist() == [0, 99, 199, 299]
    # round(29.97 / 1) = 30; fps=2 candidates: round(29.97 / 2) = 15 -> range(0, 100, 15) = 7 frames
    assert uniform_frames(100, 29.97, 8, official=True, fps=2.0).tolist() == [0, 15, 30, 45, 60, 75, 90]


def test_official_uniform_qwen_loader():
    # 10 s at 10 fps: n = 100 / 10 * 2 = 20 frames at 2 fps, grid = round(linspace(0, 99, 20)) (step 99/19);
    # k = 8 of them: linspace(0, 19, 8, int) = 0, 2, 5, 8, 10, 13, 16, 19 (19 = n - 1 already there)
    grid = [round(i * 99 / 19) for i in range(20)]
    assert uniform_frames(100, 10.0, 8, official=True, loader="qwen2_5_vl").tolist() == \
        [grid[i] for i in (0, 2, 5, 8, 10, 13, 16, 19)]
    # a 3 s video (n = 6) at k = 8: linspace(0, 5, 8, int) = 0, 0, 1, 2, 2, 3, 4, 5 -> repeats, as published
    grid6 = [round(i * 29 / 5) for i in range(6)]
    assert uniform_frames(30, 10.0, 8, official=True, loader="qwen2_5_vl").tolist() == \
        [grid6[i] for i in (0, 0, 1, 2, 2, 3, 4, 5)]
    # n is capped at floor-to-even(min(768, N)): 1000 frames at 1 fps -> 2000 wanted -> n = 768;
    # picks linspace(0, 767, 4, int) = 0, 255, 511, 767 of round(linspace(0, 999, 768)): 255 * 999 / 767 = 332.1
    assert uniform_frames(1000, 1.0, 4, official=True, loader="qwen2_5_vl").tolist() == [0, 332, 666, 999]
    with pytest.raises(ValueError, match="llava_video, qwen2_5_vl"):
        uniform_frames(100, 10.0, 8, official=True, loader="decord")


def test_published_feed_sorts_the_first_k_and_falls_back_when_short():
    assert published_feed([90.0, 30.0, 60.0, 0.0], 3, 300).tolist() == [30, 60, 90]  # first 3 in list order
    # fewer than k: linspace(0, 299, 4) over the whole video, the list is dropped
    assert published_feed([0, 30], 4, 300).tolist() == [0, 99, 199, 299]
    assert published_feed([0, 1], 4, 3).tolist() == [0, 0, 1, 2]  # fewer than k video frames: repeats


def test_official_fallback_is_uniform_over_all_video_frames():
    # linspace(0, 299, 16): step 299/15 = 19.93 -> 0, 19.93, 39.87, ..., 279.07, 299 truncated
    expected = [0, 19, 39, 59, 79, 99, 119, 139, 159, 179, 199, 219, 239, 259, 279, 299]
    for method in BUILTINS[1:]:
        assert frames_for_question(CANDS, S10, 16, method, 300, official=True).tolist() == expected
    # an aks whose leaves drop remainders chooses fewer than k even with T > k: published fallback too
    # (k = 3, depth 1: two halves of 5, floor(3 / 2) = 1 frame each -> 2 < 3)
    assert len(select(S10, 3, "aks", t1=2.0, depth=1)) == 2
    assert frames_for_question(CANDS, S10, 3, "aks", 300, official=True, t1=2.0, depth=1).tolist() == [0, 149, 299]
    # without `official` (and for T == k even with it) the candidates themselves
    assert frames_for_question(CANDS, S10, 16, "topk", 300).tolist() == CANDS.tolist()
    assert frames_for_question(CANDS, S10, 10, "topk", 300, official=True).tolist() == CANDS.tolist()
    # T > k: the selection, official or not
    assert frames_for_question(CANDS, S10, 3, "topk", 300, official=True).tolist() == [30, 90, 150]


def test_frames_for_question_checks_lengths():
    with pytest.raises(ValueError, match="match the scores"):
        frames_for_question(CANDS[:5], S10, 3, "topk", 300)


# ---------------------------------------------------------------- published selections

def _load(official_dir, name: str) -> list[dict]:
    return json.loads((official_dir / f"TSPO_{name}_frameIdx.json").read_text())


def _step(frames: np.ndarray) -> int:
    return reduce(math.gcd, frames.tolist())


def _bin_max_explains(frames: np.ndarray) -> bool:
    """Is there a candidate count T for which bin-max picks exactly these frames?

    Candidates are multiples of the step (gcd); score 1 on the picks and 0 elsewhere:
    bin-max returns the picks iff every bin holds exactly one of them.
    """
    pos = frames // _step(frames)
    last = int(pos.max())
    for T in range(last + 1, last + last // 63 + 3):  # the last bin spans ~T/64 candidates
        s = np.zeros(T)
        s[pos] = 1.0
        if np.array_equal(select(s, 64, "bin-max"), pos):
            return True
    return False


def test_published_longvideobench_selections(official_dir):
    items = _load(official_dir, "LongVideoBench")
    assert len(items) == 1337
    short = [x for x in items if len(x["frame_idx"]) < 64]
    assert len(short) == 361  # SPEC: the fallback silently disables TSPO for these
    for x in items:
        f = np.asarray(x["frame_idx"])
        assert np.array_equal(f, np.round(f)) and np.all(np.diff(f) > 0)
        f = f.astype(np.int64)
        if len(f) == 64:
            # 1 fps candidates: frames are multiples of round(fps) (>= 20 here), within the video
            assert _step(f) >= 20 and f.max() / _step(f) < x["duration"] + 1
        else:
            # T <= K: the agent's stage kept every 1 fps candidate, range(0, N, round(fps))
            step = int(f[1] - f[0])
            assert f.tolist() == list(range(0, step * len(f), step))
            assert abs(len(f) - x["duration"]) <= 1
            assert frames_for_question(f, np.zeros(len(f)), 64, "topk", step * len(f)).tolist() == f.tolist()
    # topk picks are not one-per-bin: the bin-max check below rejects them
    assert not any(_bin_max_explains(np.asarray(x["frame_idx"], dtype=np.int64))
                   for x in items[:300] if len(x["frame_idx"]) == 64)


def test_published_videomme_selections_are_bin_max(official_dir):
    items = _load(official_dir, "VideoMME")
    long_items = [np.asarray(x["frame_idx"], dtype=np.int64) for x in items if len(x["frame_idx"]) == 64]
    assert len(items) - len(long_items) == 261
    assert all(_bin_max_explains(f) for f in long_items)


# ---------------------------------------------------------------- bolt

# Weights after min-max normalisation (power 1): [0, 1, 1, 1, 1, 6, 1, 1, 1, 1] / 6, so
# 14 * CDF = [0, 1, 2, 3, 4, 10, 11, 12, 13, 14].
PEAK10 = [0, 1, 1, 1, 1, 6, 1, 1, 1, 1]


def test_bolt_inverse_transform_by_hand():
    # k=4: quantiles linspace(1/4, 3/4, 4) * 14 = 3.5, 5.83, 8.17, 10.5 -> first CDF reaching
    # each: positions 4, 5, 5, 6 (the peak takes two quantiles)
    assert sel(PEAK10, 4, "bolt", power=1, repeats="drop") == [4, 5, 6]
    # spread, picks in order: 4, 5; the second 5 -> nearest free (4 is taken) 6; then 6 -> 7
    assert sel(PEAK10, 4, "bolt", power=1) == [4, 5, 6, 7]
    # power 2: weights [0, 1, 1, 1, 1, 36, 1, 1, 1, 1] / 36, 44 * CDF = [0, 1, 2, 3, 4, 40, 41, ..., 44];
    # quantiles * 44 = 11, 18.3, 25.7, 33 -> all in the peak
    assert sel(PEAK10, 4, "bolt", power=2, repeats="drop") == [5]
    # spread: 5, then 4 (4 and 6 tie: the earlier), 6, then 3 (3 and 7 tie)
    assert sel(PEAK10, 4, "bolt", power=2) == [3, 4, 5, 6]


def test_bolt_one_peak_concentrates_yet_covers_the_video():
    # 100 candidates, background 1, one minimum (0) at 0, a peak of 100 at 50. Normalised:
    # background 0.01, peak 1, total 1.98. k=8 quantiles q = 1/8 .. 7/8; before the peak the
    # CDF at j is 0.01 j / 1.98, so q=0.125 -> j >= 24.75 -> 25 and q=0.232 -> j >= 45.96 -> 46;
    # the CDF jumps to 0.7525 at 50, taking 0.339 .. 0.661 (four picks); after it the CDF at
    # 50+m is (1.49 + 0.01 m) / 1.98: q=0.768 -> m >= 3.06 -> 54, q=0.875 -> m >= 24.25 -> 75.
    s = np.ones(100)
    s[0], s[50] = 0.0, 100.0
    assert sel(s, 8, "bolt", power=1, repeats="drop") == [25, 46, 50, 54, 75]
    # spread: the three repeats of 50 go to 49 (tie with 51: earlier), 51, then 48
    chosen = sel(s, 8, "bolt", power=1)
    assert chosen == [25, 46, 48, 49, 50, 51, 54, 75]
    # 6 of 8 frames within 4 candidates of the peak (uniform: none, its nearest are 42 and 56),
    # yet 25 .. 75 is spanned
    assert sum(abs(c - 50) <= 4 for c in chosen) == 6 and min(chosen) <= 25 and max(chosen) >= 75
    assert sum(abs(c - 50) <= 4 for c in sel(s, 8, "evenly-spaced")) == 0


def test_bolt_published_power_per_benchmark():
    # BOLT's frame_selection.sh: --power 3 (VideoMME, MLVU), 2.5 (LongVideoBench); LVBench is not in it
    assert {name: get_benchmark(name).selector_params.get("bolt") for name in
            ("longvideobench", "mlvu", "lvbench", "videomme")} == {
        "longvideobench": {"power": 2.5}, "mlvu": {"power": 3.0}, "lvbench": None, "videomme": {"power": 3.0}}
    s = np.random.default_rng(3).random(200)
    for bench, power in (("videomme", 3), ("longvideobench", 2.5), ("lvbench", 3), ("", 3)):
        assert sel(s, 16, "bolt", **published_params("bolt", bench)) == sel(s, 16, "bolt", power=power)
    assert sel(s, 16, "bolt", power=2.5) != sel(s, 16, "bolt", power=3)
    with pytest.raises(ValueError, match="power must be > 0"):
        select(s, 16, "bolt", power=-1)
    with pytest.raises(ValueError, match="spread, drop"):
        select(s, 16, "bolt", repeats="keep")


def test_bolt_ties_k1_and_scale():
    # constant scores: a uniform distribution, CDF 0.1 .. 1.0; quantiles 0.25, 0.42, 0.58, 0.75
    assert sel(np.full(10, 0.3), 4, "bolt") == [2, 4, 5, 7]
    # k = 1: the median quantile: 14 * 0.5 = 7 -> the peak
    assert sel(PEAK10, 1, "bolt", power=1) == [5]
    # scores are min-max normalised: BOLT's logit-scaled cosine gives the frames of the cosine
    s = np.random.default_rng(4).uniform(-0.2, 0.4, 300)
    assert sel(100 * s, 32, "bolt") == sel(s, 32, "bolt")
    assert len(sel(s, 32, "bolt")) == 32


# ---------------------------------------------------------------- dpp

def _unit(*rows):
    x = np.array(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dpp_skips_duplicates_where_topk_does_not():
    # two scenes, two identical frames each, equal relevance: the second frame of scene 1 adds
    # no volume, so the second pick is scene 2
    feats = _unit([1, 0], [1, 0], [0, 1], [0, 1])
    assert sel([0.5] * 4, 2, "dpp", features=feats) == [0, 2]
    assert sel([0.5] * 4, 2, "topk") == [0, 1]
    # k=3: both scenes chosen, the rest duplicates: the budget goes to the candidate farthest
    # in time from {0, 2} (1 and 3 are both 1 away: the earlier)
    assert sel([0.5] * 4, 3, "dpp", features=feats) == [0, 1, 2]


def test_dpp_lambda_trades_relevance_for_diversity():
    # f0, f1 nearly equal (cosine 0.99), relevance 0.9; f2 orthogonal, relevance 0.5.
    # Kernel K(c) = sum_a exp(-(1 - c) / a), a = 1/8 .. 2: r(0.9) = 3.7944, r(0.5) = 1.9069,
    # K(0.99) = 4.8491, K(0) = 1.1284, K(1) = 5. After f0 (first of the tie), the second pick
    # gains (2/lam) log r + log(5 - K^2 / 5): f1: (2/lam) 1.3336 - 1.213, f2: (2/lam) 0.6455 + 1.557.
    # lam = 0.2: 13.34 - 1.21 > 6.46 + 1.56 -> f1; lam = 2: 1.33 - 1.21 < 0.65 + 1.56 -> f2.
    feats = _unit([1, 0, 0], [0.99, np.sqrt(1 - 0.99**2), 0], [0, 0, 1])
    scores = [0.9, 0.9, 0.5]
    assert sel(scores, 2, "dpp", features=feats) == [0, 1]
    assert sel(scores, 2, "dpp", features=feats, lam=2.0) == [0, 2]
    assert sel(scores, 1, "dpp", features=feats) == [0]  # k=1: the most relevant, first on ties
    assert sel([0.1, 0.9, 0.9], 1, "dpp", features=feats) == [1]


def test_dpp_static_video_is_still_covered():
    # every frame identical: one DPP pick, then the farthest in time: 9, then 4 (4 and 5 are
    # both 4 away from {0, 9}: the earlier)
    feats = np.ones((10, 3))
    assert sel(np.full(10, 0.2), 3, "dpp", features=feats) == [0, 4, 9]


def _greedy_by_determinants(scores, feats, k, lam):
    """The published objective evaluated directly: (2/lam) sum log r + slogdet(L_S), greedy."""
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    kernel = sum(np.exp(-((x[:, None] - x[None]) ** 2).sum(-1) / (2 * a)) for a in (0.125, 0.25, 0.5, 1, 2))
    rel = sum(np.exp(-(2 - 2 * np.asarray(scores)) / (2 * a)) for a in (0.125, 0.25, 0.5, 1, 2))
    chosen: list[int] = []
    for _ in range(k):
        best, best_i = -np.inf, -1
        for i in range(len(scores)):
            if i in chosen:
                continue
            s = chosen + [i]
            obj = 2 / lam * np.log(rel[s]).sum() + np.linalg.slogdet(kernel[np.ix_(s, s)])[1]
            if obj > best:
                best, best_i = obj, i
        chosen.append(best_i)
    return sorted(chosen)


@pytest.mark.parametrize("lam, T, k", [(0.2, 40, 8), (1.0, 40, 8), (0.2, 150, 40), (5.0, 150, 40)])
def test_dpp_matches_the_objective_computed_with_determinants(lam, T, k):
    # (150, 40): several batches of kernel columns computed ahead, some never used
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(6, 24))
    feats = centres[rng.integers(0, 6, T)] + 0.3 * rng.normal(size=(T, 24))
    scores = rng.uniform(0.1, 0.4, T)
    assert sel(scores, k, "dpp", features=feats, lam=lam) == _greedy_by_determinants(scores, feats, k, lam)


def test_dpp_needs_features_and_checks_them():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="pass features"):
        select(S10, 3, "dpp")
    with pytest.raises(ValueError, match=r"\(T, D\) with T = 10"):
        select(S10, 3, "dpp", features=np.zeros((9, 4)))
    with pytest.raises(ValueError, match="valid: lam"):  # `features` is filled in, never a user parameter
        select(S10, 3, "dpp", features=np.eye(10), lamda=0.2)
    feats = torch.eye(10, dtype=torch.bfloat16)
    assert sel(S10, 3, "dpp", features=feats) == sel(S10, 3, "topk")  # orthogonal frames: relevance decides
    assert sel(S10[:4], 6, "dpp", features=np.eye(4)) == [0, 1, 2, 3]  # T <= k


def test_clip_scores_are_the_cosine():
    torch = pytest.importorskip("torch")
    from tspo_eval.selection.stage import question_scores

    gen = torch.Generator().manual_seed(0)
    feats, text = torch.randn(50, 16, generator=gen).bfloat16(), torch.randn(16, generator=gen)
    feats[3] = 0  # a black frame: score 0, not NaN
    expected = torch.nn.functional.cosine_similarity(feats.float(), text.reshape(1, -1), dim=-1)
    torch.testing.assert_close(question_scores(feats, text, "clip", None), expected, rtol=0, atol=1e-6)
    assert question_scores(feats, text, "clip", None)[3] == 0


# ---------------------------------------------------------------- focus (FOCUS, ICLR 2026)
def _arm_scores(T: int = 40, hot: int = 3) -> np.ndarray:
    """0.9 on the 5 positions of arm `hot` (T = 40 at 1 fps: 8 arms of 5), 0.1 elsewhere."""
    scores = np.full(T, 0.1)
    scores[5 * hot:5 * hot + 5] = 0.9
    return scores


def test_focus_by_hand_on_constant_arms():
    # T = 40 s at 1 fps: max(8, ceil(40 / 16)) = 8 arms of 5; centre + 2 random per arm (24, all equal
    # within an arm, so var -> 1e-6): arm 3 has the best bound, the others tie (earlier first). Fine
    # stage: windows of +-round(2.5) = 2 around the centres of arms 3, 0, 1, 2 need 5 samples each:
    # those 20 positions are all scored, the other arms keep their 3 coarse ones: 32 of 40 scored.
    scorer = FrameScorer.of(_arm_scores())
    picks = select(None, 4, "focus", scorer=scorer).tolist()
    assert scorer.fraction == 32 / 40 and set(range(20)) <= set(scorer.known)
    assert all(sum(5 * a <= p < 5 * a + 5 for p in scorer.known) == 3 for a in range(4, 8))
    # final: round(0.2 * 4) = 1 top frame, the first 0.9 scored (arm 3's centre, 17); the other 3 go
    # one each to the top arms 3, 0, 1 (arm 2 gets none), drawn from flat estimates
    assert 17 in picks and len(picks) == 4
    others = sorted(p for p in picks if p != 17)
    assert 0 <= others[0] <= 4 and 5 <= others[1] <= 9 and 15 <= others[2] <= 19
    assert select(None, 4, "focus", scorer=FrameScorer.of(_arm_scores())).tolist() == picks  # seeded


def test_focus_one_peak_concentrates_and_scores_a_fraction():
    T = 1800  # 30 min at 1 fps
    t = np.arange(T)
    scores = 0.2 + 0.1 * np.exp(-0.5 * ((t - 1000) / 20.0) ** 2)
    scorer = FrameScorer.of(scores)
    picks = select(None, 64, "focus", scorer=scorer)
    assert len(picks) == 64
    # the coarse stage covers the whole video: every 16-s arm was scored (113 arms of 15 candidates)
    scored = np.array(sorted(scorer.known))
    assert all(((scored >= a * 15) & (scored < a * 15 + 15)).any() for a in range(1800 // 15))
    assert 0.2 < scorer.fraction < 0.6  # not every candidate
    # frames concentrate near the peak (29 of 113 arms get frames, the peak's neighbours first; the
    # flat arms tie and the earliest of them come next): most within 160 s, the peak itself among them
    assert np.mean(np.abs(picks - 1000) <= 160) > 0.75 and np.min(np.abs(picks - 1000)) <= 2


def test_focus_ties_k1_and_short_videos():
    flat = FrameScorer.of(np.full(40, 0.5))
    picks = select(None, 4, "focus", scorer=flat).tolist()
    # all arms tie: the first scored (arm 0's centre, 2) is the top frame; arms 0, 1, 2 get one each
    assert 2 in picks and sorted(p // 5 for p in picks) == [0, 0, 1, 2]
    one = select(None, 1, "focus", scorer=FrameScorer.of(_arm_scores())).tolist()
    assert len(one) == 1 and 15 <= one[0] <= 19  # round(0.2) = 0 top frames: one draw in the best arm
    short = FrameScorer.of(np.arange(5.0))
    assert select(None, 8, "focus", scorer=short).tolist() == [0, 1, 2, 3, 4] and short.fraction == 0
    # with the scores given instead of a scorer, focus reads them through one
    assert select(_arm_scores(), 4, "focus").tolist() == select(None, 4, "focus",
                                                               scorer=FrameScorer.of(_arm_scores())).tolist()


def test_focus_checks_its_inputs():
    with pytest.raises(ValueError, match="interpolation"):
        select(np.zeros(50), 4, "focus", interpolation="rbf")
    with pytest.raises(ValueError, match="needs the scores"):
        select(None, 4, "topk", scorer=FrameScorer.of(np.zeros(50)))
    with pytest.raises(ValueError, match="no parameter"):
        select(np.zeros(50), 4, "focus", scorer_model="x")
    bad = FrameScorer(lambda pos: np.zeros(len(pos) + 1), 50)
    with pytest.raises(ValueError, match="returned 25 scores for 24"):
        select(None, 4, "focus", scorer=bad)
