"""The reward library on hand-made answers with hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from tspo_eval.training.config import TrainConfig
from tspo_eval.training.data import Sample
from tspo_eval.training.rewards import (
    REWARDS,
    Group,
    parse_option_letter,
    parse_span,
    register_reward,
    score_group,
    span_iou,
)


def mc(answer: str = "C", span=None) -> Sample:
    return Sample(id="q", video="v.mp4", kind="multiple_choice", question="Q?", prompt="Q?",
                  options=("w", "x", "y", "z"), answer=answer, span=span)


def group(sample: Sample, completions, selections=None, target=None, duration=100.0) -> Group:
    selections = selections or [np.arange(2)] * len(completions)
    return Group(sample, list(completions), selections, np.arange(10.0), target, duration)


@pytest.mark.parametrize(("text", "letter"), [
    ("C", "C"), ("(C)", "C"), ("C. the third", "C"), ("The answer is D.", "D"), ("answer: b", "B"),
    ("I think B", "B"), ("<think>A is wrong, so</think> <answer>C</answer>", "C"), ("Apple", None),
    ("E", None), ("", None), ("B) x\nA) y", "B"),
])
def test_first_standalone_option_letter(text, letter):
    assert parse_option_letter(text, 4) == letter


def test_accuracy_for_letters_and_free_form_answers():
    assert REWARDS["accuracy"](group(mc("C"), ["C", "(c)", "B", "the answer is c"])) == [1.0, 1.0, 0.0, 1.0]
    open_q = Sample(id="o", video="v", kind="open", question="Where?", prompt="Where?", answer="The Eiffel Tower")
    assert REWARDS["accuracy"](group(open_q, ["eiffel tower.", "<answer>The  Eiffel Tower</answer>", "Louvre"])) \
        == [1.0, 1.0, 0.0]
    grounding = Sample(id="g", video="v", kind="grounding", question="When?", prompt="When?", span=(1.0, 2.0))
    assert REWARDS["accuracy"](group(grounding, ["x", "y"])) == [None, None]


def test_format_reward_needs_think_then_answer_and_nothing_else():
    texts = ["<think>look</think><answer>B</answer>", " <think>a\nb</think>\n<answer>B</answer> ",
             "<answer>B</answer>", "<think>x</think><answer>B</answer> trailing", "B"]
    assert REWARDS["format"](group(mc(), texts)) == [1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(("text", "span"), [
    ('<answer>{"start_time": "12.5", "end_time": "20"}</answer>', (12.5, 20.0)),
    ('{"start_time": 30, "end_time": 10}', (10.0, 30.0)),
    ("from 30 to 10 seconds", (10.0, 30.0)), ("01:05 - 01:15", (65.0, 75.0)), ("[3, 7]", (3.0, 7.0)),
    ("'4.5' and '6'", (4.5, 6.0)), ("no numbers here", None), ("only 5", None),
])
def test_lenient_span_parsing(text, span):
    assert parse_span(text) == span


def test_span_iou_by_hand():
    assert span_iou((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert span_iou((0, 1), (2, 3)) == 0 and span_iou((2, 2), (2, 2)) == 0
    assert span_iou((1, 4), (1, 4)) == 1


def test_temporal_iou_normalises_and_clips_to_the_video():
    sample = Sample(id="g", video="v", kind="grounding", question="When?", prompt="When?", span=(20.0, 60.0))
    values = REWARDS["temporal_iou"](group(sample, ["40 - 80", "80 - 150", "nothing", "60 to 20"], duration=100.0))
    # [0.4, 0.8] vs [0.2, 0.6] -> 0.2 / 0.6; [0.8, 1.0] (clipped) vs [0.2, 0.6] -> 0; unparsable -> 0; swapped -> 1
    assert values == pytest.approx([0.2 / 0.6, 0.0, 0.0, 1.0])
    assert REWARDS["temporal_iou"](group(mc(span=(1, 2)), ["1 - 2"])) == [None]  # a letter answers no span


def test_temporal_coverage_is_the_fraction_of_chosen_frames_in_the_target():
    target = np.zeros(10, dtype=bool)
    target[[2, 3, 4]] = True
    g = group(mc(), ["C", "C"], selections=[np.array([2, 3, 8, 9]), np.array([0, 1])], target=target)
    assert REWARDS["temporal_coverage"](g) == [0.5, 0.0]
    assert REWARDS["temporal_coverage"](group(mc(), ["C"])) == [None]


def test_weighted_sum_counts_not_applicable_as_zero_and_logs_each_reward():
    target = np.zeros(10, dtype=bool)
    target[:5] = True
    g = group(mc("A"), ["A", "B"], selections=[np.array([0, 1, 2, 9]), np.array([8, 9])], target=target)
    total, per = score_group(g, {"accuracy": 1.0, "temporal_coverage": 0.5, "temporal_iou": 2.0})
    np.testing.assert_allclose(total, [1.0 + 0.5 * 0.75, 0.0])
    assert per["accuracy"] == [1.0, 0.0] and per["temporal_iou"] == [None, None]


def test_registry_is_extensible_and_checked_when_the_config_is_built():
    @register_reward("test_length")
    def length(g: Group) -> list[float | None]:
        return [float(len(c)) for c in g.completions]

    try:
        assert score_group(group(mc(), ["ab", "abcd"]), {"test_length": 0.5})[0].tolist() == [1.0, 2.0]
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_length")(length)
        assert TrainConfig(environment="synthetic", rewards={"test_length": 1.0}).rewards == {"test_length": 1.0}
    finally:
        REWARDS.pop("test_length")
    with pytest.raises(ValueError, match="unknown reward.*nope"):
        TrainConfig(environment="synthetic", rewards={"nope": 1.0})
