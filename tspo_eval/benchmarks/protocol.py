"""How a benchmark reads a model's answer and what it reports: the option-letter parsers and
the `Metric` description each `BenchmarkSpec` carries (SPEC section 5, lmms-eval 0.7.x rules).

Parsers share one signature, `(text, n_options, random_fallback=None, key="") -> letter | None`,
so a spec names its own (`BenchmarkSpec.parse_answer`):
- `parse_longvideobench` (`lvb_acc`): the first capital A-E in the output, after removing
  phrases such as "The best answer is". The built-in picks a random letter when there is
  none; here no letter means a wrong answer, unless `random_fallback=<seed>` asks for the
  built-in's behaviour, made reproducible: the letter is drawn from a generator seeded by
  (seed, question index), so it does not depend on question order or sharding.
- `parse_mcq` (MLVU, VideoMME, LVBench): lmms-eval's `extract_mcq_answer` rules
  (`extract_choice`), over the question's option letters; no random fallback.
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def option_letters(n_options: int) -> str:
    """The first `n_options` option letters ("ABCD" for 4)."""
    if not 1 <= n_options <= len(_LETTERS):
        raise ValueError(f"n_options must be 1-{len(_LETTERS)}, got {n_options}")
    return _LETTERS[:n_options]


# ---------------------------------------------------------------- parsing

_LVB_PHRASES = ("The best answer is", "The correct answer is", "The answer is", "The answer", "The best option is",
                "The correct option is", "Best answer:", "Best option:")
_LVB_LETTER = re.compile("[ABCDE]")


def parse_longvideobench(text: str, n_options: int, random_fallback: int | None = None, key: str = "") -> str | None:
    """LongVideoBench's `lvb_acc` parsing: the first A-E anywhere once the answer phrases are removed.

    The phrases go first because "Best answer: C" would otherwise read as B. With no letter
    the answer is None (wrong), or with `random_fallback` a letter among the question's
    `n_options`, drawn reproducibly from (random_fallback, key).
    """
    body = text.strip()
    for phrase in _LVB_PHRASES:
        body = body.replace(phrase, "")
    match = _LVB_LETTER.search(body)
    if match:
        return match[0]
    if random_fallback is None:
        return None
    return random.Random(f"{random_fallback}:{key}").choice(option_letters(n_options))


# "the answer is X" and the like (lmms-eval's list, multilingual); X is the next option letter after it.
_ANSWER_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
    "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
    "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)
# (rank, template) of the written forms of a letter X; a higher rank is more trusted.
_LETTER_FORMS = ((6, "({})"), (5, "{}."), (4, "{}:"), (3, "{})"), (2, "{} "))
_RANK_START, _RANK_END, _RANK_PHRASE, _RANK_ANYWHERE = 10, 9, 7, 0


def extract_choice(text: str, n_options: int = 4) -> str | None:
    """The option letter an output names, by lmms-eval 0.7's `extract_mcq_answer` rules (MLVU, VideoMME, LVBench).

    Every way the output can name a letter is a candidate (rank, position, letter); the
    highest rank wins, then the latest position. None when no letter occurs at all.
    """
    letters = option_letters(n_options)
    body = text.strip()
    for char in ",.!?;:'\"":
        body = body.strip(char)
    padded = f" {body} "
    found: list[tuple[int, int, str]] = []
    for rank, template in _LETTER_FORMS:
        found += [(rank, padded.rfind(template.format(x)), x) for x in letters if template.format(x) in padded]
    lowered = padded.lower()
    for phrase in _ANSWER_PHRASES:
        at = lowered.find(phrase)
        if at >= 0:
            found += [(_RANK_PHRASE, padded.find(x, at + len(phrase)), x) for x in letters
                      if padded.find(x, at + len(phrase)) >= 0]
    core = padded.strip()
    if core:
        if core[0] in letters and (len(core) == 1 or not core[1].isalpha()):
            found.append((_RANK_START, 0, core[0]))
        if core[-1] in letters and (len(core) == 1 or not core[-2].isalpha()):
            found.append((_RANK_END, len(padded) - 1, core[-1]))
    if not found:
        found = [(_RANK_ANYWHERE, padded.rfind(x), x) for x in letters if x in padded]
    return max(found, key=lambda candidate: candidate[:2])[2] if found else None


def parse_mcq(text: str, n_options: int, random_fallback: int | None = None, key: str = "") -> str | None:
    """`extract_choice` with the parser signature; these built-ins have no random fallback, so it is ignored."""
    return extract_choice(text, n_options)


# ---------------------------------------------------------------- metrics

@dataclass(frozen=True)
class Metric:
    """One reported number: accuracy over the questions whose `field` holds `value` (all when
    `field` is None), or with `macro` the mean over `field`'s values of their accuracies;
    `answered_only`: over the questions that did not fail; `count` ("answered" / "failed"):
    how many questions did not / did fail."""

    name: str
    field: str | None = None
    value: Any = None
    macro: bool = False
    answered_only: bool = False
    count: Literal["answered", "failed"] | None = None

    def includes(self, record: Mapping[str, Any]) -> bool:
        """Whether a question counts in this number (list-valued fields: any of their values)."""
        if self.answered_only and record.get("failed"):
            return False
        if self.field is None or self.macro:
            return True
        held = record.get(self.field)
        return self.value in held if isinstance(held, list) else held == self.value


def _slug(value: Any) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_")


def per_value(prefix: str, field: str, values: Iterable[Any]) -> tuple[Metric, ...]:
    """One accuracy per category value, named `<prefix>_<value slug>`."""
    return tuple(Metric(f"{prefix}_{_slug(value)}", field, value) for value in values)


def with_failures(*metrics: Metric) -> tuple[Metric, ...]:
    """`metrics`, each overall accuracy again over the answered questions, and the two counts."""
    overall = [Metric(f"{m.name}_answered", m.field, m.value, m.macro, answered_only=True)
               for m in metrics if m.field is None or m.macro]
    return (*metrics, *overall, Metric("answered", count="answered"), Metric("failed", count="failed"))
