"""Each benchmark as VLMEvalKit holds it: its dataset name, the TSV VLMEvalKit writes for it and
the layout of its prompts (data only; VLMEvalKit is not needed). `specs.py` gives each
published benchmark its `VLMEvalFormat` (defined in `core`) from the converters here;
`integrations.vlmeval_tsv` converts and matches with it.

VLMEvalKit's columns (its `generate_tsv` functions):

- Video-MME: index, video (YouTube id), video_path (./video/<id>.mp4), duration, domain,
  candidates ("A. "-prefixed), sub_category, task_type, subtitle_path, question, answer (letter).
  No question_id: matching is the only way back to the registry index ("001-1").
- LongVideoBench: every `lvb_val.json` key (id, candidates, correct_choice, ...) with
  video_path made ./videos/<file>, then index and video (= video_id).
- MLVU_MCQ: task_type, prefix (./MLVU/video/<n>_<task>), duration, video, question (stem),
  answer (option text), candidates, index.
- LVBench (this project's dataset class, VLMEvalKit has none): see `LVBENCH_COLUMNS`.

The prompt layouts (`PromptLayout`) are those of each dataset's `build_prompt`, so the stem
and options can be read back from the message a VLMEvalKit model receives.
"""
from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from .core import Question, get_benchmark, letter, letter_number
from .docs import build_docs
from .official import MLVU_TASK_NAMES, MLVU_TASK_TYPES, split_options
from .tsv import read_tsv

VIDEOMME_COLUMNS = ("index", "video", "video_path", "duration", "domain", "candidates", "sub_category", "task_type",
                    "subtitle_path", "question", "answer")
MLVU_COLUMNS = ("task_type", "prefix", "duration", "video", "question", "answer", "candidates", "index")
LVBENCH_COLUMNS = ("index", "video", "video_path", "question_id", "task_name", "question", "candidates", "answer",
                   "question_type", "time_reference")


def _literal_list(text: str) -> list[str]:
    value = ast.literal_eval(text)
    if not isinstance(value, list) or not all(isinstance(option, str) for option in value):
        raise ValueError(f"candidates {text[:80]!r} is not a Python list of strings")
    return value


def _question(benchmark: str, index: str, task_name: str, video_name: str, question_id: str, stem: str,
              candidates: Sequence[str], number: int) -> Question:
    spec = get_benchmark(benchmark)
    answer = letter(number) if spec.answer_kind == "letter" else candidates[number]
    return Question(benchmark=spec.name, index=index, task_name=task_name, video_name=video_name,
                    question_id=question_id, question=stem.replace("\n", " "), candidates=tuple(candidates),
                    answer_number=number, answer=answer)


# ---------------------------------------------------------------- VLMEvalKit row -> Question

def videomme_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    index = f"vlmeval-{row['index']}"
    return _question("videomme", index, "VideoMME", f"{row['video']}.mp4", index, row["question"], candidates,
                     letter_number(row["answer"]))


def longvideobench_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    name = PurePosixPath(row["video_path"]).name
    return _question("longvideobench", row["id"], "LongVideoBench", name, row["id"], row["question"], candidates,
                     int(row["correct_choice"]))


def mlvu_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    if row["answer"] not in candidates:
        raise ValueError(f"answer {row['answer']!r} is none of the candidates {candidates}")
    last = len(candidates) - 1 - candidates[::-1].index(row["answer"])  # the registry's rule (and VLMEvalKit's)
    task = row["task_type"]
    return _question("mlvu", f"vlmeval-{row['index']}", MLVU_TASK_NAMES.get(task, task), row["video"], "0",
                     row["question"], candidates, last)


def lvbench_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    return _question("lvbench", row["question_id"], row["task_name"], row["video_path"], row["question_id"],
                     row["question"], candidates, letter_number(row["answer"]))


# ---------------------------------------------------------------- annotation file -> VLMEvalKit rows

def videomme_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's Video-MME TSV from `videomme.json` (the same records as its parquet)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [{"index": i, "video": it["videoID"], "video_path": f"./video/{it['videoID']}.mp4",
             "duration": it["duration"], "domain": it["domain"], "candidates": str(list(it["options"])),
             "sub_category": it["sub_category"], "task_type": it["task_type"],
             "subtitle_path": f"./subtitle/{it['videoID']}.srt", "question": it["question"], "answer": it["answer"]}
            for i, it in enumerate(items)]
    return pd.DataFrame(rows, columns=list(VIDEOMME_COLUMNS))


def longvideobench_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's LongVideoBench TSV from `lvb_val.json`: its keys, then index and video."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [{**it, "candidates": str(list(it["candidates"])), "video_path": f"./videos/{it['video_path']}",
             "index": i, "video": it["video_id"]} for i, it in enumerate(items)]
    return pd.DataFrame(rows)


def mlvu_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's MLVU_MCQ TSV from `mlvu.json` (or the published MLVU.tsv, whose rows lack only
    `duration`): task files in VLMEvalKit's order (`type_data_list`, MLVU's release order, numbered
    from 1 in `prefix`), stems without options."""
    if path.suffix.lower() == ".tsv":
        tasks = {MLVU_TASK_NAMES.get(task, task): task for task in MLVU_TASK_TYPES}
        records = [(tasks[q.task_name], None, q.video_name, q.question, q.answer, list(q.candidates))
                   for q in read_tsv(path, "mlvu")]
    else:
        items = json.loads(path.read_text(encoding="utf-8"))
        records = [(it["task_type"], it["duration"], it["video_name"], split_options(it["question"])[0],
                    it["candidates"][letter_number(it["answer"])], it["candidates"]) for it in items]
    records.sort(key=lambda record: MLVU_TASK_TYPES.index(record[0]))
    rows = [{"task_type": task, "prefix": f"./MLVU/video/{MLVU_TASK_TYPES.index(task) + 1}_{task}",
             "duration": duration, "video": video, "question": stem, "answer": answer,
             "candidates": str(list(candidates)), "index": i}
            for i, (task, duration, video, stem, answer, candidates) in enumerate(records)]
    return pd.DataFrame(rows, columns=list(MLVU_COLUMNS))


def lvbench_rows(path: Path) -> pd.DataFrame:
    """The LVBench dataset class's TSV from `video_info.meta.jsonl`: registry order, registry index as question_id."""
    rows = []
    for i, doc in enumerate(build_docs("lvbench", path, ".")):
        rows.append({"index": i, "video": Path(doc["video_name"]).stem, "video_path": doc["video_name"],
                     "question_id": doc["index"], "task_name": doc["task_name"], "question": doc["question_original"],
                     "candidates": str(doc["candidates"]), "answer": doc["answer"],
                     "question_type": json.dumps(doc.get("question_type")), "time_reference": json.dumps(
                         doc["time_reference"])})
    return pd.DataFrame(rows, columns=list(LVBENCH_COLUMNS))
