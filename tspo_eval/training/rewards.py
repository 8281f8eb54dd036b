"""Reward library shared by agent training (TSPO) and LLM training (Temporal-RLT), by name.

A reward is a plain callable `fn(group) -> list[float | None]`: one value per rollout of
one question, None where it does not apply (a grounding reward on a multiple-choice
question), so a weighted sum can mix question kinds.  Each is logged under its own name.
Add one with `@register_reward("name")`.

- `accuracy`: multiple choice: 1 if the first standalone option letter of the answer (the
  `<answer>` tag's content when present) is the correct one (SPEC 7; the published
  `map_prediction_to_option` rule); free-form: normalised exact match.
- `format`: 1 for `<think>...</think><answer>...</answer>` and nothing else (Temporal-RLT).
- `temporal_coverage` (TSPO's R_T): the fraction of the chosen frames inside the target
  (the needle clip, or the ground-truth span).
- `temporal_iou`: IoU of the predicted span with the ground truth, both normalised by the
  duration; parsing is lenient (JSON or plain numbers, quoted or not, "MM:SS", swapped
  ends, clipped to [0, 1]).
"""
from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import scoring
from .data import Sample


@dataclass
class Group:
    """One question's rollouts, as the rewards see them."""

    sample: Sample
    completions: list[str]  # the answerer's text, one per rollout
    selections: list[np.ndarray]  # each rollout's candidate positions, time order
    timestamps: np.ndarray  # (T,) seconds of every candidate on the episode's timeline
    target: np.ndarray | None  # (T,) bool: candidates showing the asked-about content
    duration: float  # seconds of the (episode) video


RewardFn = Callable[[Group], list]
REWARDS: dict[str, RewardFn] = {}


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Add a reward under `name`; a taken name raises, so a plugin cannot shadow a built-in."""
    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        return fn
    return add


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)


def answer_content(text: str) -> str:
    """The `<answer>` tag's content when there is one, else the whole text, stripped."""
    match = _ANSWER_TAG.search(text)
    return (match.group(1) if match else text).strip()


def parse_option_letter(text: str, num_options: int = 5) -> str | None:
    """The first option letter standing alone (not inside a word) in the answer, upper case.

    "B", "(B)", "B. cat", "The answer is b" -> "B"; letters past the option count are
    skipped (with the published default of five options, A-E). Case-insensitive, since
    TSPO-10K solutions are lower case; otherwise `scoring.parse_option_letter`.
    """
    return scoring.parse_option_letter(answer_content(text).upper(), max(1, num_options))


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


_NUMBER = r"\d+(?::\d{1,2}){0,2}(?:\.\d+)?"


def _seconds(token: str) -> float:
    """"75", "75.5", "1:15", "01:01:15" -> seconds."""
    value = 0.0
    for part in token.split(":"):
        value = value * 60 + float(part)
    return value


def parse_span(text: str) -> tuple[float, float] | None:
    """A predicted (start, end) in seconds from free text, or None.

    Reads `{"start_time": .., "end_time": ..}` JSON when present, else the first two
    numbers (quoted or not, "MM:SS" allowed); swapped ends are put in order.
    """
    content = answer_content(text)
    try:
        data = json.loads(content)
        if isinstance(data, dict) and {"start_time", "end_time"} <= set(data):
            start, end = _seconds(str(data["start_time"])), _seconds(str(data["end_time"]))
            return (min(start, end), max(start, end))
    except (json.JSONDecodeError, ValueError):
        pass
    numbers = re.findall(_NUMBER, content)
    if len(numbers) < 2:
        return None
    start, end = _seconds(numbers[0]), _seconds(numbers[1])
    return (min(start, end), max(start, end))


def span_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two spans; 0 when they are disjoint or both empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


@register_reward("accuracy")
def accuracy_reward(group: Group) -> list[float | None]:
    """1 for the correct answer (option letter or free-form), else 0; None for grounding-only."""
    sample = group.sample
    if sample.kind == "grounding":
        return [None] * len(group.completions)
    if sample.options:
        return [float(parse_option_letter(c, len(sample.options)) == sample.answer.upper())
                for c in group.completions]
    truth = normalize_answer(sample.answer)
    return [float(normalize_answer(answer_content(c)) == truth) for c in group.completions]


_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)


@register_reward("format")
def format_reward(group: Group) -> list[float | None]:
    """1 when the whole completion is <think>...</think><answer>...</answer>."""
    return [float(_FORMAT.fullmatch(c) is not None) for c in group.completions]


@register_reward("temporal_coverage")
def temporal_coverage_reward(group: Group) -> list[float | None]:
    """R_T: fraction of the chosen frames inside the target; None without a target."""
    if group.target is None:
        return [None] * len(group.selections)
    return [float(group.target[sel].mean()) if len(sel) else 0.0 for sel in group.selections]


@register_reward("temporal_iou")
def temporal_iou_reward(group: Group) -> list[float | None]:
    """IoU of the predicted span with the ground truth, normalised by the duration and
    clipped to [0, 1]; 0 when no span can be read; None when the question has no span."""
    span = group.sample.span
    if span is None or group.sample.kind == "multiple_choice":
        return [None] * len(group.completions)
    d = group.duration if group.duration > 0 else 1.0
    truth = (min(max(span[0] / d, 0.0), 1.0), min(max(span[1] / d, 0.0), 1.0))
    rewards: list[float | None] = []
    for completion in group.completions:
        pred = parse_span(completion)
        if pred is None:
            rewards.append(0.0)
            continue
        rewards.append(span_iou((min(max(pred[0] / d, 0.0), 1.0), min(max(pred[1] / d, 0.0), 1.0)), truth))
    return rewards


def get_rewards(names: Sequence[str]) -> dict[str, RewardFn]:
    """The named rewards; an unknown name raises before any work is done."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise ValueError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(sorted(REWARDS))}")
    return {n: REWARDS[n] for n in names}


def score_group(group: Group, weights: Mapping[str, float]) -> tuple[np.ndarray, dict[str, list[float | None]]]:
    """(G,) weighted sum of the rewards (None counts 0) and each reward's own values."""
    per_reward = {name: fn(group) for name, fn in get_rewards(list(weights)).items()}
    total = np.zeros(len(group.completions))
    for name, values in per_reward.items():
        total += weights[name] * np.array([0.0 if v is None else v for v in values])
    return total, per_reward
