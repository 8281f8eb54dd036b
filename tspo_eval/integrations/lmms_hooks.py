"""The functions the shipped lmms-eval task YAMLs name (`!function utils.<name>`).

Each `tasks/<benchmark>/utils.py` names every function its YAML references: the hooks that
serve any benchmark (they read the document's `benchmark` field) are imported from here, the
per-benchmark ones are taken from a `BenchmarkHooks`. Documents, prompts and scoring live in
`benchmarks` (the benchmark's `BenchmarkSpec`) and `scoring`.
"""
from __future__ import annotations

import logging

import datasets

from .. import scoring
from ..benchmarks import docs_from_env
from ..benchmarks.docs import prompt

log = logging.getLogger(__name__)

# Seed of the LongVideoBench built-in's random letter for outputs naming none (`process_results_random_fallback`).
RANDOM_FALLBACK_SEED = 0


def doc_to_visual(doc: dict) -> list[str]:
    """The question's video."""
    return [doc["video_path"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The benchmark's prompt; the YAML's per-model `pre_prompt` / `post_prompt` where given."""
    kwargs = lmms_eval_specific_kwargs or {}
    return prompt(doc, kwargs.get("pre_prompt", ""), kwargs.get("post_prompt"))


def process_results(doc: dict, results: list[str]) -> dict:
    """Per metric, the question's record (None where it does not count)."""
    return scoring.lmms_results(doc, results[0])


def process_results_random_fallback(doc: dict, results: list[str]) -> dict:
    """As LongVideoBench's built-in: an output naming no letter gets a random one (seeded per question)."""
    return scoring.lmms_results(doc, results[0], random_fallback=RANDOM_FALLBACK_SEED)


def answered(items: list[dict | None]) -> int:
    """Questions that got an answer (a refused row or a failed video did not)."""
    return scoring.lmms_count(items, "answered")


def failed(items: list[dict | None]) -> int:
    """Questions that failed: refused rows, videos or frames that could not be read; scored wrong."""
    return scoring.lmms_count(items, "failed")


class BenchmarkHooks:
    """The hooks that depend on the benchmark: its documents and its aggregations (scale)."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark

    def process_docs(self, dataset: datasets.Dataset) -> datasets.Dataset:
        """Documents from $TSPO_<NAME>_ANNOTATIONS and $TSPO_<NAME>_VIDEOS; the manifest row is a placeholder."""
        try:
            return datasets.Dataset.from_list(docs_from_env(self.benchmark))
        except Exception as err:  # one clear line before lmms-eval's retries and wrapped tracebacks
            log.error("tspo task %s cannot load its documents: %s: %s", self.benchmark, type(err).__name__, err)
            raise

    def accuracy(self, items: list[dict | None]) -> float:
        """Accuracy over the questions this metric counts, in the benchmark's scale."""
        return scoring.lmms_aggregate(self.benchmark, items)

    def macro_accuracy(self, items: list[dict | None]) -> float:
        """MLVU's official `mlvu_m_avg`: the mean of the per-task-type accuracies."""
        return scoring.lmms_aggregate(self.benchmark, items, macro_field="task_type")
