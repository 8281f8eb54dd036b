"""The four published benchmarks, each in one `BenchmarkSpec`: files and converters, documents
and prompts, answer parsing and metrics, framework names and the selectors' published settings.

Sources: the converters are checked row by row against the published TSVs (`official.py`);
prompts, post-prompts, generation lengths, parsing and metrics are lmms-eval 0.7.x's built-in
tasks (`longvideobench_val_v`, `mlvu_dev`, `videomme`, `lvbench`; SPEC section 5), which the
task configs in `tspo_eval/tasks/` repeat; `selector_params` come from the published code:
TSPO `mp_tools/vlmeval/vlm/gen_id_tspo.py` (`method = 'topk' if dataset != 'VideoMME' else
'bin-max'`) and BOLT `scripts/frame_selection.sh` (`--power` 3 for VideoMME and MLVU, 2.5 for
LongVideoBench; LVBench is not in it and gets the selector's default). docs/benchmarks.md says
how to add a benchmark.
"""
from __future__ import annotations

from typing import Any

from .core import (
    BenchmarkSpec,
    PromptLayout,
    VLMEvalFormat,
    letter,
    letter_number,
    parse_time_range,
    register_benchmark,
)
from .official import (
    MLVU_TASK_TYPES,
    longvideobench_row,
    lvbench_row,
    mlvu_order,
    mlvu_row,
    read_lvbench_items,
    split_options,
    videomme_row,
)
from .protocol import Metric, parse_longvideobench, per_value, with_failures
from .vlmeval_format import (
    longvideobench_question,
    longvideobench_rows,
    lvbench_question,
    lvbench_rows,
    mlvu_question,
    mlvu_rows,
    videomme_question,
    videomme_rows,
)


def _lines(candidates: list[str], template: str) -> str:
    return "\n".join(template.format(letter(number), text) for number, text in enumerate(candidates))


# ---------------------------------------------------------------- LongVideoBench (val)

LONGVIDEOBENCH_DURATION_GROUPS = (15, 60, 600, 3600)
LONGVIDEOBENCH_CATEGORIES = ("S2E", "S2O", "S2A", "E2O", "O2E", "T2E", "T2O", "T2A",  # perception
                             "E3E", "O3O", "SSS", "SOS", "SAA", "T3E", "T3O", "TOS", "TAA")  # relation


def longvideobench_fields(item: dict) -> dict[str, Any]:
    return {"question_original": item["question"], "duration_group": item["duration_group"],
            "question_category": item["question_category"]}


def longvideobench_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `longvideobench_val_v`: question, "A. option" lines, post-prompt."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '{}. {}')}\n{post_prompt}"


LONGVIDEOBENCH = register_benchmark(BenchmarkSpec(
    name="longvideobench", tsv_file="LongVideoBench.tsv", annotation_file="lvb_val.json",
    answer_kind="letter", row=longvideobench_row,
    time_refs=lambda item: {"reference_frames": tuple(item["position"])},
    frame_idx_file="TSPO_LongVideoBench_frameIdx.json",
    doc_fields=longvideobench_fields, prompt=longvideobench_prompt,
    post_prompt="Answer with the option's letter from the given choices directly.\n", max_new_tokens=32,
    parse_answer=parse_longvideobench,
    metrics=with_failures(Metric("lvb_acc"),
                          *per_value("lvb_acc_duration", "duration_group", LONGVIDEOBENCH_DURATION_GROUPS),
                          *per_value("lvb_acc", "question_category", LONGVIDEOBENCH_CATEGORIES)),
    scale=1.0, lmms_task="tspo_longvideobench_val", vlmeval=VLMEvalFormat(
        "LongVideoBench",
        PromptLayout("", "\n", "{}. ", "\nAnswer with the option's letter from the given choices directly."),
        longvideobench_question, longvideobench_rows),
    selector_params={"tspo": {"rule": "topk"}, "bolt": {"power": 2.5}}))


# ---------------------------------------------------------------- MLVU (dev, multiple choice)

def mlvu_fields(item: dict) -> dict[str, Any]:
    # mlvu.json's own letter: lmms-eval's MLVU scores against it. The TSV's answer_number
    # names the LAST equal option, which differs on the 5 questions that repeat the right option.
    return {"question_original": split_options(item["question"])[0], "task_type": item["task_type"],
            "answer": item["answer"], "answer_number": letter_number(item["answer"])}


def mlvu_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `mlvu_dev`: mlvu.json's question as written (options as "(A) ..." lines, final line break)."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '({}) {}')}\n{post_prompt}"


MLVU = register_benchmark(BenchmarkSpec(
    name="mlvu", tsv_file="MLVU.tsv", annotation_file="mlvu.json", answer_kind="text",
    row=mlvu_row, order=mlvu_order, frame_idx_file="TSPO_MLVU_frameIdx.json",
    doc_fields=mlvu_fields, prompt=mlvu_prompt,
    post_prompt="\nOnly give the best option.\nBest option: (", max_new_tokens=16,
    metrics=with_failures(Metric("mlvu_m_avg", "task_type", macro=True), Metric("mlvu_micro_avg"),
                          *per_value("mlvu_acc", "task_type", MLVU_TASK_TYPES)),
    scale=100.0, lmms_task="tspo_mlvu_dev", vlmeval=VLMEvalFormat(
        "MLVU_MCQ", PromptLayout("Question: ", "\nOptions:\n", "({}) ", ""), mlvu_question, mlvu_rows,
        item_rows_from_tsv=True),
    selector_params={"tspo": {"rule": "topk"}, "bolt": {"power": 3.0}}))


# ---------------------------------------------------------------- VideoMME (without subtitles)

VIDEOMME_DURATIONS = ("short", "medium", "long")
VIDEOMME_DOMAINS = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record",
                    "Multilingual")
VIDEOMME_TASK_TYPES = ("Temporal Perception", "Spatial Perception", "Attribute Perception", "Action Recognition",
                       "Object Recognition", "OCR Problems", "Counting Problem", "Temporal Reasoning",
                       "Spatial Reasoning", "Action Reasoning", "Object Reasoning", "Information Synopsis")
# VideoMME's instruction, verbatim from lmms-eval's `videomme` task: it mentions subtitles
# although that task shows none (and so did the published TSPO runs).
VIDEOMME_HEADER = ("Select the best answer to the following multiple-choice question based on the video and the "
                   "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")


def videomme_fields(item: dict) -> dict[str, Any]:
    return {"question_original": item["question"], "duration": item["duration"], "domain": item["domain"],
            "task_type": item["task_type"]}


def videomme_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `videomme`: instruction, question, the "A. ..." options as published, post-prompt."""
    return f"{pre_prompt}{VIDEOMME_HEADER}\n{doc['question_original']}\n" + "\n".join(doc["candidates"]) + \
        f"\n{post_prompt}"


VIDEOMME = register_benchmark(BenchmarkSpec(
    name="videomme", tsv_file="VideoMME.tsv", annotation_file="videomme.json", answer_kind="letter",
    row=videomme_row, frame_idx_file="TSPO_VideoMME_frameIdx.json",
    doc_fields=videomme_fields, prompt=videomme_prompt,
    post_prompt="\nAnswer with the option's letter from the given choices directly.", max_new_tokens=16,
    metrics=with_failures(Metric("videomme_acc"), *per_value("videomme_acc", "duration", VIDEOMME_DURATIONS),
                          *per_value("videomme_acc_domain", "domain", VIDEOMME_DOMAINS),
                          *per_value("videomme_acc_task", "task_type", VIDEOMME_TASK_TYPES)),
    scale=100.0, lmms_task="tspo_videomme", vlmeval=VLMEvalFormat(
        "Video-MME", PromptLayout("Question: ", "\n", "{}. ", "\nAnswer: "), videomme_question, videomme_rows),
    selector_params={"tspo": {"rule": "bin-max"}, "bolt": {"power": 3.0}}))


# ---------------------------------------------------------------- LVBench

LVBENCH_QUESTION_TYPES = ("entity recognition", "event understanding", "key information retrieval",
                          "temporal grounding", "reasoning", "summarization")


def lvbench_fields(item: dict) -> dict[str, Any]:
    return {"question_original": split_options(item["question"])[0], "question_type": list(item["question_type"]),
            "video_type": item["type"]}


def lvbench_prompt(doc: dict, pre_prompt: str, post_prompt: str) -> str:
    """lmms-eval `lvbench`: question, "(A) option" lines, post-prompt."""
    return f"{pre_prompt}{doc['question_original']}\n{_lines(doc['candidates'], '({}) {}')}{post_prompt}"


LVBENCH = register_benchmark(BenchmarkSpec(
    name="lvbench", tsv_file="LVBench.tsv", annotation_file="video_info.meta.jsonl", answer_kind="text",
    row=lvbench_row, read_items=read_lvbench_items,
    time_refs=lambda item: {"time_reference": parse_time_range(item["time_reference"])},
    doc_fields=lvbench_fields, prompt=lvbench_prompt,
    post_prompt="\nAnswer the question with the option letter", max_new_tokens=16,
    metrics=with_failures(Metric("lvbench_acc"), *per_value("lvbench_acc", "question_type", LVBENCH_QUESTION_TYPES)),
    scale=1.0, lmms_task="tspo_lvbench", vlmeval=VLMEvalFormat(
        "LVBench", PromptLayout("", "\n", "({}) ", "\nAnswer the question with the option letter"),
        lvbench_question, lvbench_rows),
    selector_params={"tspo": {"rule": "topk"}}))
