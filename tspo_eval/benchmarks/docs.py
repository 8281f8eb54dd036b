"""Evaluation documents (one dict per question) and their prompts, for lmms-eval task configs
and any other harness.

A document is a `Question` (TSV order, TSV `index` as its key) plus what evaluation needs:
the video's absolute path, the stem as the annotation file writes it (the prompts use it,
as lmms-eval's built-in tasks do) and the category fields of the per-category scores.
Those extra fields come from the original annotation item, found through the registry's own
TSV order (`spec.order`), so the converters stay the single source of the mapping.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .annotations import _annotation_rows, load_benchmark
from .core import RefusedRow, get_benchmark, letter, letter_number, resolve_video
from .official import _split_options

# VideoMME's instruction, verbatim from lmms-eval's `videomme` task: it mentions subtitles
# although that task shows none (and so did the published TSPO runs).
VIDEOMME_HEADER = ("Select the best answer to the following multiple-choice question based on the video and the "
                   "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")

# lmms-eval's default post-prompt per benchmark (SPEC section 5); the task YAMLs repeat them.
POST_PROMPTS = {
    "longvideobench": "Answer with the option's letter from the given choices directly.\n",
    "mlvu": "\nOnly give the best option.\nBest option: (",
    "videomme": "\nAnswer with the option's letter from the given choices directly.",
    "lvbench": "\nAnswer the question with the option letter",
}


def _longvideobench_fields(item: dict) -> dict[str, Any]:
    return {"question_original": item["question"], "duration_group": item["duration_group"],
            "question_category": item["question_category"]}


def _videomme_fields(item: dict) -> dict[str, Any]:
    return {"question_original": item["question"], "duration": item["duration"], "domain": item["domain"],
            "task_type": item["task_type"]}


def _mlvu_fields(item: dict) -> dict[str, Any]:
    # mlvu.json's own letter: lmms-eval's MLVU scores against it. The TSV's answer_number
    # names the LAST equal option, which differs on the 5 questions that repeat the right option.
    return {"question_original": _split_options(item["question"])[0], "task_type": item["task_type"],
            "answer": item["answer"], "answer_number": letter_number(item["answer"])}


def _lvbench_fields(item: dict) -> dict[str, Any]:
    return {"question_original": _split_options(item["question"])[0], "question_type": list(item["question_type"]),
            "video_type": item["type"]}


# benchmark -> annotation item -> document fields beyond the Question's. Extensible.
ANNOTATION_FIELDS: dict[str, Callable[[dict], dict[str, Any]]] = {
    "longvideobench": _longvideobench_fields, "videomme": _videomme_fields, "mlvu": _mlvu_fields,
    "lvbench": _lvbench_fields,
}


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
        if question.index in extras and spec.name in ANNOTATION_FIELDS:
            doc.update(ANNOTATION_FIELDS[spec.name](extras[question.index]))
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


def _lines(candidates: list[str], template: str) -> str:
    return "\n".join(template.format(letter(number), text) for number, text in enumerate(candidates))


def longvideobench_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `longvideobench_val_v`: question, "A. option" lines, post-prompt."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '{}. {}')}\n{post_prompt}"


def videomme_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `videomme`: instruction, question, the "A. ..." options as published, post-prompt."""
    return f"{pre_prompt}{VIDEOMME_HEADER}\n{doc['question_original']}\n" + "\n".join(doc["candidates"]) + \
        f"\n{post_prompt}"


def mlvu_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `mlvu_dev`: mlvu.json's question as written (options as "(A) ..." lines, final line break)."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '({}) {}')}\n{post_prompt}"


def lvbench_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `lvbench`: question, "(A) option" lines, post-prompt."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '({}) {}')}{post_prompt}"


# benchmark -> prompt builder (doc, pre_prompt, post_prompt). Extensible.
PROMPTS: dict[str, Callable[[dict, str, str], str]] = {
    "longvideobench": longvideobench_prompt, "videomme": videomme_prompt, "mlvu": mlvu_prompt,
    "lvbench": lvbench_prompt,
}


def prompt(doc: dict, pre_prompt: str = "", post_prompt: str | None = None) -> str:
    """The question prompt of a document (post_prompt None: the benchmark's lmms-eval default)."""
    benchmark = doc["benchmark"]
    if benchmark not in PROMPTS:
        raise ValueError(f"no prompt for benchmark {benchmark!r}; add a builder to PROMPTS "
                         f"(known: {', '.join(sorted(PROMPTS))})")
    return PROMPTS[benchmark](doc, pre_prompt, POST_PROMPTS.get(benchmark, "") if post_prompt is None
                              else post_prompt)
