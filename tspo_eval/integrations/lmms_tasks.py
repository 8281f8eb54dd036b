"""The lmms-eval task configs shipped inside the package, and the functions their YAMLs name
(`!function utils.<name>`), for any benchmark.

The configs are package data (`tspo_eval/tasks/<benchmark>/`), so an installed wheel has them:
`tspo-eval tasks-path` prints the folder for lmms-eval's `--include_path`.  lmms-eval 0.7.3's
own plugin route (`LMMS_EVAL_PLUGINS=<pkg>` adds `<pkg>.tasks`) does not work there: the path
is appended after the task index is built, and the same variable makes lmms-eval import
`<pkg>.models.AVAILABLE_MODELS`, a legacy model registry this package replaces with entry points.

Each `tasks/<benchmark>/utils.py` is two lines: `globals().update(task_hooks("<name>"))`;
documents, prompts and scoring live in `benchmarks.docs` and `scoring`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def tasks_path() -> Path:
    """The folder of the tspo task configs inside the installed package (lmms-eval `--include_path`)."""
    return Path(__file__).resolve().parents[1] / "tasks"


def task_hooks(benchmark: str, random_fallback_seed: int = 0) -> dict[str, Callable[..., Any]]:
    """process_docs, doc_to_visual, doc_to_text, process_results(_random_fallback), accuracy, macro_accuracy,
    answered, failed."""
    import datasets

    from .. import scoring
    from ..benchmarks import docs

    def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
        """Documents from $TSPO_<NAME>_ANNOTATIONS and $TSPO_<NAME>_VIDEOS; the manifest row is a placeholder."""
        try:
            return datasets.Dataset.from_list(docs.docs_from_env(benchmark))
        except Exception as err:  # one clear line before lmms-eval's retries and wrapped tracebacks
            log.error("tspo task %s cannot load its documents: %s: %s", benchmark, type(err).__name__, err)
            raise

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
