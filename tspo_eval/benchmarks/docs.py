"""Evaluation documents (one dict per question) and their prompts, for lmms-eval task configs
and any other harness.

A document is a `Question` (TSV order, TSV `index` as its key) plus what evaluation needs:
the video's absolute path, the stem as the annotation file writes it (the prompts use it,
as lmms-eval's built-in tasks do) and the category fields of the per-category scores.
Those extra fields come from the original annotation item (`spec.doc_fields`), found through the
registry's own TSV order (`spec.order`), so the converters stay the single source of the mapping.
The prompt is the spec's builder with its lmms-eval post-prompt.

Fields of every document: `index`, `benchmark`, `task_name`, `question_id`, `video_name`,
`video_path`, `question` (stem, options removed, as the TSV holds it: what the selector
encodes), `question_original` (the same stem with the annotation file's line breaks),
`candidates`, `answer` (letter), `answer_number` (0-based), `time_reference` ([start, end]
seconds or None), `reference_frames` (list or None). Category fields (original annotation
file only; a published TSV does not hold them): LongVideoBench `duration_group`,
`question_category`; VideoMME `duration`, `domain`, `task_type`; MLVU `task_type`; LVBench
`question_type` (list), `video_type`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .annotations import _annotation_rows, load_benchmark
from .core import RefusedRow, get_benchmark, resolve_video


def build_docs(benchmark: str, annotations: str | Path, video_root: str | Path,
               strict: bool = False) -> list[dict[str, Any]]:
    """The benchmark's documents in published TSV order, then one per refused row.

    Args:
        benchmark: registered benchmark name.
        annotations: the original annotation file (e.g. `mlvu.json`), or the published TSV
            (`*.tsv`: no category fields, and stems keep no line breaks).
        video_root: folder of the benchmark's videos; a missing video is not an error here
            (the model records it as a failed question).
        strict: a bad row refuses the whole file (BenchmarkFormatError). Otherwise a bad row
            (e.g. a video path leaving the root) becomes a document whose `refused` field says
            which file and line and why: it has no video and scores as a failed question.
    """
    spec = get_benchmark(benchmark)
    annotations = Path(annotations)
    refused: list[RefusedRow] | None = None if strict else []
    if annotations.suffix.lower() == ".tsv":
        questions, extras = load_benchmark(spec.name, tsv_path=annotations, refused=refused), {}
    else:
        items = spec.read_items(annotations)
        questions = load_benchmark(spec.name, annotation_path=annotations, refused=refused)
        extras = {row["index"]: items[pos] for pos, row in _annotation_rows(spec, items, annotations, [])}
    root = Path(video_root).expanduser().absolute()
    docs = []
    for question in questions:
        doc = {
            "index": question.index, "benchmark": spec.name, "task_name": question.task_name,
            "question_id": question.question_id, "video_name": question.video_name,
            "video_path": str(resolve_video(root, question.video_name, spec.name)),
            "question": question.question, "question_original": question.question,
            "candidates": list(question.candidates), "answer": question.answer_letter,
            "answer_number": question.answer_number,
            "time_reference": None if question.time_reference is None else list(question.time_reference),
            "reference_frames": None if question.reference_frames is None else list(question.reference_frames),
            "refused": None,
        }
        if question.index in extras:
            doc.update(spec.doc_fields(extras[question.index]))
        docs.append(doc)
    docs += [refused_doc(spec.name, row) for row in refused or ()]
    return docs


def refused_doc(benchmark: str, row: RefusedRow) -> dict[str, Any]:
    """The document of a refused row: its index and why, nothing that could be read."""
    return {"index": row.index, "benchmark": benchmark, "task_name": "", "question_id": "", "video_name": "",
            "video_path": "", "question": "", "question_original": "", "candidates": [], "answer": "",
            "answer_number": -1, "time_reference": None, "reference_frames": None, "refused": str(row)}


def env_names(benchmark: str) -> tuple[str, str]:
    """(`TSPO_<NAME>_ANNOTATIONS`, `TSPO_<NAME>_VIDEOS`): where the task configs find the data."""
    name = get_benchmark(benchmark).name.upper()
    return f"TSPO_{name}_ANNOTATIONS", f"TSPO_{name}_VIDEOS"


STRICT_VAR = "TSPO_STRICT_ROWS"


def docs_from_env(benchmark: str) -> list[dict[str, Any]]:
    """`build_docs` with the paths from the environment; errors name the variable to set.

    `TSPO_STRICT_ROWS=1` refuses a file holding a bad row (default: that row alone is refused)."""
    spec = get_benchmark(benchmark)
    annotations_var, videos_var = env_names(spec.name)
    annotations = _env_path(annotations_var, f"the original annotation file ({spec.annotation_file}) "
                                             f"or the published TSV ({spec.tsv_file})")
    if not annotations.is_file():
        raise FileNotFoundError(f"{annotations_var}={annotations}: no such file; it must be {spec.annotation_file} "
                                f"or {spec.tsv_file}")
    videos = _env_path(videos_var, f"the folder holding the {spec.name} videos")
    if not videos.is_dir():
        raise FileNotFoundError(f"{videos_var}={videos}: no such folder; it must hold the {spec.name} videos")
    return build_docs(spec.name, annotations, videos, strict=os.environ.get(STRICT_VAR, "0") == "1")


def _env_path(variable: str, what: str) -> Path:
    value = os.environ.get(variable, "").strip()
    if not value:
        raise ValueError(f"environment variable {variable} is not set: export {variable}=<path>, {what}")
    return Path(value).expanduser()


def prompt(doc: dict, pre_prompt: str = "", post_prompt: str | None = None) -> str:
    """The question prompt of a document (post_prompt None: the benchmark's lmms-eval default)."""
    spec = get_benchmark(doc["benchmark"])
    if spec.prompt is None:
        raise ValueError(f"benchmark {spec.name!r} has no prompt; give its BenchmarkSpec a `prompt` builder")
    return spec.prompt(doc, pre_prompt, spec.post_prompt if post_prompt is None else post_prompt)
