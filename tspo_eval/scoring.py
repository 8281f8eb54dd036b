"""Scoring model outputs on a benchmark, as lmms-eval 0.7.x's built-in tasks score them (SPEC
section 5): pure functions over strings and dicts, driven by the benchmark's `BenchmarkSpec`.

Parsing: each spec's `parse_answer` (`benchmarks.protocol`: LongVideoBench's `lvb_acc` rule,
with an optional reproducible random fallback; lmms-eval's `extract_mcq_answer` rules for
MLVU, VideoMME and LVBench), over the question's option letters.
`parse_option_letter`: the first standalone option letter (the training reward's rule).

Scores: each spec's `metrics`: overall accuracy, one accuracy per category value (a
question counts in every category it carries; LVBench questions have up to 3 types, as
LVBench's own protocol counts them) and, for MLVU, the official macro average over task
types `mlvu_m_avg` beside the micro average `mlvu_micro_avg`. Values use each built-in's
scale (`spec.scale`): fractions for LongVideoBench and LVBench, percent for MLVU and
VideoMME. A category with no question scores NaN.

Failures: a question whose document was refused (`refused`: a bad row) or whose model
output is `NO_ANSWER` (its video or frames failed) scores as wrong, the published
convention. Every benchmark also reports `answered` and `failed` (counts) and its overall
accuracies over the answered questions only (`<metric>_answered`), so a run with failures
never passes for a run without.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .benchmarks import get_benchmark
from .benchmarks.protocol import Metric, option_letters

# What a tspo-eval model outputs for a question it could not answer: no capital letter, so
# any harness's option parser reads it as no answer, as it read the empty output before.
NO_ANSWER = "<tspo-eval: no answer, the question failed>"


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


def score(doc: Mapping[str, Any], output: str, random_fallback: int | None = None) -> dict[str, Any]:
    """One question's record: parsed letter, 0/1 score, whether it failed, and the fields its metrics
    group by. A failed question (refused document, `NO_ANSWER` output) has no letter and scores 0."""
    spec = get_benchmark(doc["benchmark"])
    failed = bool(doc.get("refused")) or output == NO_ANSWER
    pred = None if failed else spec.parse_answer(output, len(doc["candidates"]), random_fallback, str(doc["index"]))
    record = {"index": doc["index"], "video_name": doc["video_name"], "pred": pred, "answer": doc["answer"],
              "score": float(pred == doc["answer"]), "failed": failed}
    record.update({metric.field: doc.get(metric.field) for metric in spec.metrics if metric.field})
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
    records, spec = list(records), get_benchmark(benchmark)
    return {metric.name: (1.0 if metric.count else spec.scale) * metric_value(metric, records)
            for metric in spec.metrics}


# ---------------------------------------------------------------- lmms-eval adapters

def lmms_results(doc: Mapping[str, Any], output: str, random_fallback: int | None = None) -> dict[str, Any]:
    """`process_results`: per metric the question's record, or None where it does not count.

    So each metric's aggregation sees its own questions only, and lmms-eval's per-sample
    standard errors (`score`, clustered by `video_name`) are per metric.
    """
    record = score(doc, output, random_fallback)
    return {metric.name: record if metric.includes(record) else None
            for metric in get_benchmark(doc["benchmark"]).metrics}


def lmms_aggregate(benchmark: str, items: Iterable[Mapping[str, Any] | None], macro_field: str | None = None) -> float:
    """A metric's aggregation over the `lmms_results` items it received, in the built-in's scale."""
    records = [item for item in items if item is not None]
    value = macro_accuracy(records, macro_field) if macro_field else accuracy(records)
    return get_benchmark(benchmark).scale * value


def lmms_count(items: Iterable[Mapping[str, Any] | None], kind: Literal["answered", "failed"]) -> int:
    """The `answered` / `failed` aggregation over the `lmms_results` items."""
    return count((item for item in items if item is not None), kind)
