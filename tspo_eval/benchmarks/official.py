"""The four published benchmarks' converters: how each original annotation file becomes its TSV rows
(`specs.py` registers them with the rest of each benchmark's facts).

Every rule here was checked row by row against the published TSVs (tests do it again):

- LongVideoBench (`lvb_val.json`): index = question_id = `id`; answer = letter of
  `correct_choice`; file order.
- VideoMME (`videomme.json`): index = question_id = `question_id`; video `<videoID>.mp4`;
  candidates = `options` ("A. "-prefixed); file order.
- MLVU (`mlvu.json`): items carry no key that reaches the TSV. The TSV lists them grouped
  by MLVU's seven task files in their release order (plotQA, needle, ego, count, order,
  anomaly_reco, topic_reasoning; "needle" renamed "findNeedle"), file order within a task,
  indexed `<n>_mlvu_<n>` from 1, question_id "0", answer = option text. answer_number is
  the LAST candidate equal to that text (5 published rows repeat the correct option).
- LVBench (`video_info.meta.jsonl`, one line per video): index = question_id = key + uid,
  task_name = `<type>_<first question_type>`, candidates parsed from the "(A) opt" lines,
  answer = option text; file order.

Question stems are stored with newlines turned into spaces (a TSV line holds one row);
that is how the published VideoMME and MLVU TSVs hold them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from .core import BenchmarkFormatError, letter, letter_number

_OPTION_LINE = re.compile(r"\n\(([A-Z])\) ")
# MLVU's task types, in the release order of its task files (1_plotQA.json ... 7_topic_reasoning.json);
# the published TSV renames one.
MLVU_TASK_TYPES = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")
MLVU_TASK_NAMES = {"needle": "findNeedle"}


def _row(index: str, task_name: str, video_name: str, question_id: str, question: str,
         answer_number: int, candidates: list[str], answer: str) -> dict[str, Any]:
    """One TSV row with the published value formats."""
    return {"index": index, "task_name": task_name, "video_name": video_name, "question_id": question_id,
            "question": question.replace("\n", " "), "answer_number": answer_number,
            "candidates": str(list(candidates)), "answer": answer}


def split_options(text: str) -> tuple[str, list[str]]:
    """Split a question with embedded "(A) opt" lines into its stem and option texts."""
    parts = _OPTION_LINE.split(text)
    letters, options = parts[1::2], [option.rstrip("\n") for option in parts[2::2]]
    if not options or letters != [letter(n) for n in range(len(letters))]:
        raise ValueError(f"question {text[:80]!r} has no '(A) ...' option lines in order")
    return parts[0], options


def longvideobench_row(item: dict, number: int) -> dict[str, Any]:
    """lvb_val.json item -> LongVideoBench.tsv row."""
    choice = item["correct_choice"]
    return _row(item["id"], "LongVideoBench", item["video_path"], item["id"], item["question"],
                choice, item["candidates"], letter(choice))


def videomme_row(item: dict, number: int) -> dict[str, Any]:
    """videomme.json item -> VideoMME.tsv row."""
    return _row(item["question_id"], "VideoMME", f"{item['videoID']}.mp4", item["question_id"],
                item["question"], letter_number(item["answer"]), item["options"], item["answer"])


def mlvu_order(items: Sequence[dict]) -> list[int]:
    """Group by task file in release order; needs the complete mlvu.json, position is the only key."""
    for pos, item in enumerate(items):
        if item.get("question_id") != f"Q{pos}":
            raise ValueError(f"item {pos + 1} has question_id {item.get('question_id')!r}, expected 'Q{pos}': "
                             "MLVU TSV indices follow positions in the complete mlvu.json, pass all of it")
    return sorted(range(len(items)), key=lambda pos: MLVU_TASK_TYPES.index(items[pos]["task_type"]))


def mlvu_row(item: dict, number: int) -> dict[str, Any]:
    """mlvu.json item -> MLVU.tsv row (answer_number: the LAST candidate equal to the answer text)."""
    stem, _ = split_options(item["question"])
    candidates = item["candidates"]
    answer = candidates[letter_number(item["answer"])]
    last_match = len(candidates) - 1 - candidates[::-1].index(answer)
    task = item["task_type"]
    return _row(f"{number}_mlvu_{number}", MLVU_TASK_NAMES.get(task, task), item["video_name"], "0",
                stem, last_match, candidates, answer)


def read_lvbench_items(path: Path) -> list[dict]:
    """video_info.meta.jsonl (one video per line, questions under `qa`) -> one item per question."""
    items = []
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            video = json.loads(line)
            items.extend({"key": video["key"], "type": video["type"], "video_info": video.get("video_info"), **qa}
                         for qa in video["qa"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BenchmarkFormatError(path, f"line {line_number}", f"not an LVBench video record ({err!r}); "
                                       "expected a JSON object with 'key', 'type' and 'qa'") from None
    return items


def lvbench_row(item: dict, number: int) -> dict[str, Any]:
    """Flattened video_info.meta.jsonl question -> LVBench.tsv row (uid is an int in 4 items)."""
    index = f"{item['key']}{item['uid']}"
    stem, options = split_options(item["question"])
    choice = letter_number(item["answer"])
    return _row(index, f"{item['type']}_{item['question_type'][0]}", f"{item['key']}.mp4", index,
                stem, choice, options, options[choice])

