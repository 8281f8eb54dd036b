"""The functions an lmms-eval task YAML names (`!function utils.<name>`), for any benchmark.

Each `tasks/<benchmark>/utils.py` is two lines: `globals().update(task_hooks("<name>"))`;
documents, prompts and scoring live in `benchmarks.docs` and `scoring`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def task_hooks(benchmark: str, random_fallback_seed: int = 0) -> dict[str, Callable[..., Any]]:
    """process_docs, doc_to_visual, doc_to_text, process_results(_random_fallback), accuracy, macro_accuracy,
    answered, failed."""
    import datasets

    from .. import scoring
    from ..benchmarks import docs

    def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
        """Documents from $TSPO_<NAME>_ANNOTATIONS and $TSPO_<NAME>_VIDEOS; the manifest row is a placeholder."""
        return datasets.Dataset.from_list(docs.docs_from_env(benchmark))

    def doc_to_visual(doc: dict) -> list[str]:
        return [doc["video_path"]]

    def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
        kwargs = lmms_eval_specific_kwargs or {}
        return docs.prompt(doc, kwargs.get("pre_prompt", ""), kwargs.get("post_prompt"))

    def process_results(doc: dict, results: list[str]) -> dict:
        return scoring.lmms_results(doc, results[0])

    def process_results_random_fallback(doc: dict, results: list[str]) -> dict:
        """As LongVideoBench's built-in: an output naming no letter gets a random one (seeded per question)."""
        return scoring.lmms_results(doc, results[0], random_fallback=random_fallback_seed)

    def accuracy(items: list[dict | None]) -> float:
        return scoring.lmms_aggregate(benchmark, items)

    def macro_accuracy(items: list[dict | None]) -> float:
        """MLVU's official `mlvu_m_avg`: the mean of the per-task-type accuracies."""
        return scoring.lmms_aggregate(benchmark, items, macro_field="task_type")

    def answered(items: list[dict | None]) -> int:
        """Questions that got an answer (a refused row or a failed video did not)."""
        return scoring.lmms_count(items, "answered")

    def failed(items: list[dict | None]) -> int:
        """Questions that failed: refused rows, videos or frames that could not be read; scored wrong."""
        return scoring.lmms_count(items, "failed")

    return {fn.__name__: fn for fn in (process_docs, doc_to_visual, doc_to_text, process_results,
                                       process_results_random_fallback, accuracy, macro_accuracy, answered, failed)}
