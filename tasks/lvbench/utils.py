"""lmms-eval hooks of `tspo_lvbench`: thin; documents, prompts and scoring live in tspo_eval."""
from __future__ import annotations

import datasets

from tspo_eval import scoring
from tspo_eval.benchmarks import docs

BENCHMARK = "lvbench"


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Documents from $TSPO_LVBENCH_ANNOTATIONS and $TSPO_LVBENCH_VIDEOS; the manifest row is a placeholder."""
    return datasets.Dataset.from_list(docs.docs_from_env(BENCHMARK))


def doc_to_visual(doc: dict) -> list[str]:
    return [doc["video_path"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return docs.prompt(doc, kwargs.get("pre_prompt", ""), kwargs.get("post_prompt"))


def process_results(doc: dict, results: list[str]) -> dict:
    return scoring.lmms_results(doc, results[0])


def accuracy(items: list[dict | None]) -> float:
    return scoring.lmms_aggregate(BENCHMARK, items)
