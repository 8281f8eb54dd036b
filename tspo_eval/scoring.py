"""Answer parsing and accuracy breakdowns for the four benchmarks, as lmms-eval 0.7.x's
built-in tasks score them (SPEC section 5); pure functions over strings and dicts.

Parsing:
- LongVideoBench (`lvb_acc`): the first capital A-E in the output, after removing phrases
  such as "The best answer is". The built-in picks a random letter when there is none;
  here no letter means a wrong answer, unless `random_fallback=<seed>` asks for the
  built-in's behaviour, made reproducible: the letter is drawn from a generator seeded by
  (seed, question index), so it does not depend on question order or sharding.
- MLVU, VideoMME, LVBench: lmms-eval's `extract_mcq_answer` rules (a standalone leading
  or trailing letter, then "the answer is X", "(X)", "X.", "X:", "X)", "X ", then any
  occurrence; the last occurrence of the best-ranked form wins), over the question's
  option letters (A-D for all their questions, as the built-ins fix them).
- `parse_option_letter`: the first standalone option letter (the training reward's rule).

Scores: each benchmark's metrics are named in `METRICS`: overall accuracy, one accuracy per
category value (a question counts in every category it carries; LVBench questions have
up to 3 types, as LVBench's own protocol counts them) and, for MLVU, the official macro
average over task types `mlvu_m_avg` beside the micro average `mlvu_micro_avg`. Values
use each built-in's scale (`SCALE`): fractions for LongVideoBench and LVBench, percent for
MLVU and VideoMME. A category with no question scores NaN.

Failures: a question whose document was refused (`refused`: a bad row) or whose model
output is `NO_ANSWER` (its video or frames failed) scores as wrong, the published
convention. Every benchmark also reports `answered` and `failed` (counts) and its overall
accuracies over the answered questions only (`<metric>_answered`), so a run with failures
never passes for a run without.
"""
from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
# What a tspo-eval model outputs for a question it could not answer: no capital letter, so
# any harness's option parser reads it as no answer, as it read the empty output before.
NO_ANSWER = "<tspo-eval: no answer, the question failed>"


def option_letters(n_options: int) -> str:
    """The first `n_options` option letters ("ABCD" for 4)."""
    if not 1 <= n_options <= len(_LETTERS):
        raise ValueError(f"n_options must be 1-{len(_LETTERS)}, got {n_options}")
    return _LETTERS[:n_options]


# ---------------------------------------------------------------- parsing

_STANDALONE_CAPITAL = re.compile(r"(?<![A-Za-z])[A-Z](?![A-Za-z])")


def parse_option_letter(text: str, n_options: int) -> str | None:
    """The first capital option letter not inside a word ("B", "(B)", "B. cat", "<answer>B</answer>").

    Capitals that are no option letter ("I think C" with 4 options) are skipped; lower-case
    letters never count (an "a" is an article). None when the text names no option.
    """
    letters = option_letters(n_options)
    for match in _STANDALONE_CAPITAL.finditer(text):
        if match[0] in letters:
            return match[0]
    return None


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


def parse_answer(benchmark: str, text: str, n_options: int, random_fallback: int | None = None,
                 key: str = "") -> str | None:
    """The letter an output names, by the benchmark's own rule (see the module docstring)."""
    if benchmark == "longvideobench":
        return parse_longvideobench(text, n_options, random_fallback, key)
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


def _per_value(prefix: str, field: str, values: Iterable[Any]) -> tuple[Metric, ...]:
    return tuple(Metric(f"{prefix}_{_slug(value)}", field, value) for value in values)


# Category values as the benchmarks define them (all present in the published annotations).
LONGVIDEOBENCH_DURATION_GROUPS = (15, 60, 600, 3600)
LONGVIDEOBENCH_CATEGORIES = ("S2E", "S2O", "S2A", "E2O", "O2E", "T2E", "T2O", "T2A",  # perception
                             "E3E", "O3O", "SSS", "SOS", "SAA", "T3E", "T3O", "TOS", "TAA")  # relation
VIDEOMME_DURATIONS = ("short", "medium", "long")
VIDEOMME_DOMAINS = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record",
                    "Multilingual")
VIDEOMME_TASK_TYPES = ("Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition",
                       "Object Recognition", "OCR Problems", "Counting Problem", "Temporal Reasoning",
                       "Spatial Reasoning", "Action Reasoning", "Object Reasoning", "Information Synopsis")
MLVU_TASK_TYPES = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")
LVBENCH_QUESTION_TYPES = ("entity recognition", "event understanding", "key information retrieval",
                          "temporal grounding", "reasoning", "summarization")

def _with_failures(*metrics: Metric) -> tuple[Metric, ...]:
    """`metrics`, each overall accuracy again over the answered questions, and the two counts."""
    overall = [Metric(f"{m.name}_answered", m.field, m.value, m.macro, answered_only=True)
               for m in metrics if m.field is None or m.macro]
    return (*metrics, *overall, Metric("answered", count="answered"), Metric("failed", count="failed"))


METRICS: dict[str, tuple[Metric, ...]] = {
    "longvideobench": _with_failures(Metric("lvb_acc"), *_per_value("lvb_acc_duration", "duration_group",
                                                                    LONGVIDEOBENCH_DURATION_GROUPS),
                                     *_per_value("lvb_acc", "question_category", LONGVIDEOBENCH_CATEGORIES)),
    "mlvu": _with_failures(Metric("mlvu_m_avg", "task_type", macro=True), Metric("mlvu_micro_avg"),
                           *_per_value("mlvu_acc", "task_type", MLVU_TASK_TYPES)),
    "videomme": _with_failures(Metric("videomme_acc"), *_per_value("videomme_acc", "duration", VIDEOMME_DURATIONS),
                               *_per_value("videomme_acc_domain", "domain", VIDEOMME_DOMAINS),
                               *_per_value("videomme_acc_task", "task_type", VIDEOMME_TASK_TYPES)),
    "lvbench": _with_failures(Metric("lvbench_acc"),
                              *_per_value("lvbench_acc", "question_type", LVBENCH_QUESTION_TYPES)),
}
SCALE = {"longvideobench": 1.0, "lvbench": 1.0, "mlvu": 100.0, "videomme": 100.0}


def score(doc: Mapping[str, Any], output: str, random_fallback: int | None = None) -> dict[str, Any]:
    """One question's record: parsed letter, 0/1 score, whether it failed, and the fields its metrics
    group by. A failed question (refused document, `NO_ANSWER` output) has no letter and scores 0."""
    benchmark = doc["benchmark"]
    failed = bool(doc.get("refused")) or output == NO_ANSWER
    pred = None if failed else parse_answer(benchmark, output, len(doc["candidates"]), random_fallback,
                                            str(doc["index"]))
    record = {"index": doc["index"], "video_name": doc["video_name"], "pred": pred, "answer": doc["answer"],
              "score": float(pred == doc["answer"]), "failed": failed}
    record.update({metric.field: doc.get(metric.field) for metric in METRICS.get(benchmark, ()) if metric.field})
    return record


def accuracy(records: Iterable[Mapping[str, Any]]) -> float:
    """Fraction of records scored correct; NaN for none."""
    scores = [record["score"] for record in records]
    return sum(scores) / len(scores) if scores else math.nan


def macro_accuracy(records: Iterable[Mapping[str, Any]], field: str) -> float:
    """Mean over the values of `field` present in the records of their accuracies; NaN for none.

    Records without the field (documents from a published TSV) are left out, never pooled.
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get(field) is not None:
            groups.setdefault(record[field], []).append(record)
    return sum(accuracy(group) for group in groups.values()) / len(groups) if groups else math.nan


def count(records: Iterable[Mapping[str, Any]], kind: Literal["answered", "failed"]) -> int:
    """How many records did not fail ("answered") or did ("failed")."""
    return sum(bool(record.get("failed")) == (kind == "failed") for record in records)


def metric_value(metric: Metric, records: Iterable[Mapping[str, Any]]) -> float:
    """One metric over records (unscaled fraction, or a count)."""
    members = [record for record in records if metric.includes(record)]
    if metric.count is not None:
        return count(members, metric.count)
    return macro_accuracy(members, metric.field) if metric.macro else accuracy(members)


def breakdown(benchmark: str, records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Every metric of the benchmark, in the built-in's scale (counts as counts), keyed by metric name."""
    records = list(records)
    return {metric.name: (1.0 if metric.count else SCALE[benchmark]) * metric_value(metric, records)
            for metric in METRICS[benchmark]}


# ---------------------------------------------------------------- lmms-eval adapters

def lmms_results(doc: Mapping[str, Any], output: str, random_fallback: int | None = None) -> dict[str, Any]:
    """`process_results`: per metric the question's record, or None where it does not count.

    So each metric's aggregation sees its own questions only, and lmms-eval's per-sample
    standard errors (`score`, clustered by `video_name`) are per metric.
    """
    record = score(doc, output, random_fallback)
    return {metric.name: record if metric.includes(record) else None for metric in METRICS[doc["benchmark"]]}


def lmms_aggregate(benchmark: str, items: Iterable[Mapping[str, Any] | None], macro_field: str | None = None) -> float:
    """A metric's aggregation over the `lmms_results` items it received, in the built-in's scale."""
    records = [item for item in items if item is not None]
    value = macro_accuracy(records, macro_field) if macro_field else accuracy(records)
    return SCALE[benchmark] * value


def lmms_count(items: Iterable[Mapping[str, Any] | None], kind: Literal["answered", "failed"]) -> int:
    """The `answered` / `failed` aggregation over the `lmms_results` items."""
    return count((item for item in items if item is not None), kind)
