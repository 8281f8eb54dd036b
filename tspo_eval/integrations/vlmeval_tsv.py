"""VLMEvalKit's video dataset TSVs and prompts <-> the benchmark registry (no VLMEvalKit needed).

VLMEvalKit writes its own TSV per dataset (in its `prepare_dataset`), indexed 0..N-1, with
columns that differ per dataset; the registry keys a question by the published TSV `index`,
which is also the key of selections files. A VLMEvalKit question is matched to its registry
question on (video file name, stem, option texts), whitespace-normalised, so one extraction /
selection run serves both frameworks: the same question gets the same frames.

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
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from ..benchmarks import Question, get_benchmark
from ..benchmarks.core import letter, letter_number
from ..benchmarks.docs import build_docs
from ..benchmarks.official import MLVU_TASK_NAMES, MLVU_TASK_TYPES, split_options

log = logging.getLogger(__name__)

VIDEOMME_COLUMNS = ("index", "video", "video_path", "duration", "domain", "candidates", "sub_category", "task_type",
                    "subtitle_path", "question", "answer")
MLVU_COLUMNS = ("task_type", "prefix", "duration", "video", "question", "answer", "candidates", "index")
LVBENCH_COLUMNS = ("index", "video", "video_path", "question_id", "task_name", "question", "candidates", "answer",
                   "question_type", "time_reference")


@dataclass(frozen=True)
class PromptLayout:
    """How a dataset's `build_prompt` writes the question text item:
    `lead + stem + sep + marker(A) + option + "\\n" + marker(B) + option ... + tail`."""

    lead: str
    sep: str
    marker: str
    tail: str

    def parse(self, text: str) -> tuple[str, list[str]] | None:
        """(stem, option texts) of a question text item; None when the text is not laid out so."""
        if not (text.startswith(self.lead) and text.endswith(self.tail)):
            return None
        body = text[len(self.lead): len(text) - len(self.tail)]
        first = self.sep + self.marker.format("A")
        at = body.find(first)
        if at < 0:
            return None
        stem, rest, options = body[:at], body[at + len(first):], []
        while True:
            marker = "\n" + self.marker.format(letter(len(options) + 1))
            cut = rest.find(marker)
            if cut < 0 and rest.endswith(marker.rstrip()):  # an empty last option, its space stripped (MLVU)
                cut = len(rest) - len(marker.rstrip())
            if cut < 0:
                return stem, options + [rest]
            options.append(rest[:cut])
            rest = rest[cut + len(marker):]


@dataclass(frozen=True)
class VLMEvalDataset:
    """One VLMEvalKit dataset (keyed in DATASETS by the name its models receive as `dataset`):
    the registry benchmark it holds, its prompt layout and its TSV rows.

    Attributes:
        benchmark: the registry benchmark.
        layout: the question text item of its prompt.
        row_question: VLMEvalKit TSV row (strings) -> Question, indexed by the row's own registry
            index where it holds one (LongVideoBench `id`, LVBench `question_id`), else `vlmeval-<index>`.
        item_rows: original annotation file -> VLMEvalKit's TSV rows, in VLMEvalKit's order.
    """

    benchmark: str
    layout: PromptLayout
    row_question: Callable[[Mapping[str, str]], Question]
    item_rows: Callable[[Path], pd.DataFrame]


def _norm(text: str) -> str:
    return " ".join(str(text).split())


def _unprefixed(number: int, option: str) -> str:
    """An option's text without its own "A. " prefix (VideoMME candidates carry one)."""
    return option.removeprefix(f"{letter(number)}. ")


def question_key(video: str, stem: str, options: Sequence[str]) -> tuple[str, str, tuple[str, ...]]:
    """What identifies a question in any framework: video file name, stem and option texts, whitespace-normalised."""
    name = PurePosixPath(str(video).replace("\\", "/")).name
    return name, _norm(stem), tuple(_norm(_unprefixed(n, option)) for n, option in enumerate(options))


class QuestionIndex:
    """Registry questions by `question_key`: where a VLMEvalKit question finds its registry index."""

    def __init__(self, questions: Iterable[Question]) -> None:
        self._by_key: dict[tuple, Question] = {}
        for q in questions:
            key = question_key(q.video_name, q.question, q.candidates)
            if key in self._by_key:
                raise ValueError(f"questions {self._by_key[key].index!r} and {q.index!r} have the same video, "
                                 "stem and options; they cannot be told apart")
            self._by_key[key] = q

    def find(self, video: str, stem: str, options: Sequence[str]) -> Question | None:
        return self._by_key.get(question_key(video, stem, options))


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

def _videomme_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    index = f"vlmeval-{row['index']}"
    return _question("videomme", index, "VideoMME", f"{row['video']}.mp4", index, row["question"], candidates,
                     letter_number(row["answer"]))


def _longvideobench_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    name = PurePosixPath(row["video_path"]).name
    return _question("longvideobench", row["id"], "LongVideoBench", name, row["id"], row["question"], candidates,
                     int(row["correct_choice"]))


def _mlvu_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    if row["answer"] not in candidates:
        raise ValueError(f"answer {row['answer']!r} is none of the candidates {candidates}")
    last = len(candidates) - 1 - candidates[::-1].index(row["answer"])  # the registry's rule (and VLMEvalKit's)
    task = row["task_type"]
    return _question("mlvu", f"vlmeval-{row['index']}", MLVU_TASK_NAMES.get(task, task), row["video"], "0",
                     row["question"], candidates, last)


def _lvbench_question(row: Mapping[str, str]) -> Question:
    candidates = _literal_list(row["candidates"])
    return _question("lvbench", row["question_id"], row["task_name"], row["video_path"], row["question_id"],
                     row["question"], candidates, letter_number(row["answer"]))


# ---------------------------------------------------------------- annotation file -> VLMEvalKit rows

def _videomme_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's Video-MME TSV from `videomme.json` (the same records as its parquet)."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [{"index": i, "video": it["videoID"], "video_path": f"./video/{it['videoID']}.mp4",
             "duration": it["duration"], "domain": it["domain"], "candidates": str(list(it["options"])),
             "sub_category": it["sub_category"], "task_type": it["task_type"],
             "subtitle_path": f"./subtitle/{it['videoID']}.srt", "question": it["question"], "answer": it["answer"]}
            for i, it in enumerate(items)]
    return pd.DataFrame(rows, columns=list(VIDEOMME_COLUMNS))


def _longvideobench_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's LongVideoBench TSV from `lvb_val.json`: its keys, then index and video."""
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = [{**it, "candidates": str(list(it["candidates"])), "video_path": f"./videos/{it['video_path']}",
             "index": i, "video": it["video_id"]} for i, it in enumerate(items)]
    return pd.DataFrame(rows)


def _mlvu_rows(path: Path) -> pd.DataFrame:
    """VLMEvalKit's MLVU_MCQ TSV from `mlvu.json` (or the published MLVU.tsv, whose rows lack only
    `duration`): task files in VLMEvalKit's order (`type_data_list`, MLVU's release order, numbered
    from 1 in `prefix`), stems without options."""
    if path.suffix.lower() == ".tsv":
        from ..benchmarks import read_tsv

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


def _lvbench_rows(path: Path) -> pd.DataFrame:
    """The LVBench dataset class's TSV from `video_info.meta.jsonl`: registry order, registry index as question_id."""
    rows = []
    for i, doc in enumerate(build_docs("lvbench", path, ".")):
        rows.append({"index": i, "video": Path(doc["video_name"]).stem, "video_path": doc["video_name"],
                     "question_id": doc["index"], "task_name": doc["task_name"], "question": doc["question_original"],
                     "candidates": str(doc["candidates"]), "answer": doc["answer"],
                     "question_type": json.dumps(doc.get("question_type")), "time_reference": json.dumps(
                         doc["time_reference"])})
    return pd.DataFrame(rows, columns=list(LVBENCH_COLUMNS))


DATASETS: dict[str, VLMEvalDataset] = {
    "Video-MME": VLMEvalDataset("videomme", PromptLayout("Question: ", "\n", "{}. ", "\nAnswer: "),
                                _videomme_question, _videomme_rows),
    "LongVideoBench": VLMEvalDataset(
        "longvideobench",
        PromptLayout("", "\n", "{}. ", "\nAnswer with the option's letter from the given choices directly."),
        _longvideobench_question, _longvideobench_rows),
    "MLVU_MCQ": VLMEvalDataset("mlvu", PromptLayout("Question: ", "\nOptions:\n", "({}) ", ""),
                               _mlvu_question, _mlvu_rows),
    "LVBench": VLMEvalDataset("lvbench",
                              PromptLayout("", "\n", "({}) ", "\nAnswer the question with the option letter"),
                              _lvbench_question, _lvbench_rows),
}


def get_dataset(name: str) -> VLMEvalDataset:
    """The known VLMEvalKit dataset `name` (VLMEvalKit's spelling)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown VLMEvalKit dataset {name!r}; known: {', '.join(DATASETS)}") from None


def read_vlmeval_tsv(path: str | Path) -> pd.DataFrame:
    """A VLMEvalKit TSV as strings (pandas would turn MLVU count answers such as "3" into numbers)."""
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def from_vlmeval(table: pd.DataFrame | str | Path, dataset: str,
                 registry: Iterable[Question] | None = None) -> list[Question]:
    """Registry questions of a VLMEvalKit dataset TSV, in its row order.

    A row matched in `registry` (same video, stem and options) takes the registry index and
    must agree with it on the answer; an unmatched row keeps its own registry index where
    the TSV holds one (LongVideoBench `id`, LVBench `question_id`), else `vlmeval-<index>`.
    """
    spec = get_dataset(dataset)
    frame = read_vlmeval_tsv(table) if isinstance(table, (str, Path)) else table.astype(str)
    index = QuestionIndex(registry) if registry is not None else None
    questions = []
    for number, row in enumerate(frame.to_dict("records"), start=1):
        try:
            question = spec.row_question(row)
        except (KeyError, ValueError, SyntaxError) as err:
            raise ValueError(f"{dataset} TSV row {number} (index {row.get('index')!r}): {err!r}") from None
        known = index.find(question.video_name, question.question, question.candidates) if index else None
        if known is not None:
            if known.answer_number != question.answer_number:
                raise ValueError(f"{dataset} TSV row {number} matches registry question {known.index!r} but answers "
                                 f"option {question.answer_letter}, the registry {known.answer_letter}: "
                                 "different releases?")
            question = known
        questions.append(question)
    return questions


def to_vlmeval(annotation_path: str | Path, dataset: str) -> pd.DataFrame:
    """VLMEvalKit's TSV rows for a dataset, built from the registry's original annotation file
    (MLVU_MCQ: or its published TSV; the others' TSVs lack the fields VLMEvalKit's scores group by)."""
    path = Path(annotation_path)
    if path.suffix.lower() == ".tsv" and dataset != "MLVU_MCQ":
        wanted = get_benchmark(get_dataset(dataset).benchmark).annotation_file
        raise ValueError(f"{dataset}: give the original annotation file ({wanted}), not a TSV: VLMEvalKit's "
                         "evaluation groups by fields only that file holds")
    return get_dataset(dataset).item_rows(path)


def write_vlmeval_tsv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write as VLMEvalKit does (`DataFrame.to_csv(sep='\\t', index=False)`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)
    return path


def questions_frame(questions: Sequence[Question]) -> pd.DataFrame:
    """Questions as the registry's published TSV rows (for `benchmarks.write_tsv`)."""
    from ..benchmarks import TSV_COLUMNS

    return pd.DataFrame([{"index": q.index, "task_name": q.task_name, "video_name": q.video_name,
                          "question_id": q.question_id, "question": q.question, "answer_number": q.answer_number,
                          "candidates": str(list(q.candidates)), "answer": q.answer} for q in questions],
                        columns=list(TSV_COLUMNS))


def load_registry(path: str | Path, benchmark: str) -> list[Question]:
    """Registry questions of `benchmark` from its published-layout TSV (*.tsv) or original annotation file.

    A bad row is left out with a warning naming it (its question then matches nothing and gets
    frames computed now), so one row never costs the others their selections."""
    from ..benchmarks import load_benchmark

    path = Path(path)
    refused: list = []
    if path.suffix.lower() == ".tsv":
        questions = load_benchmark(benchmark, tsv_path=path, refused=refused)
    else:
        questions = load_benchmark(benchmark, annotation_path=path, refused=refused)
    for row in refused:
        log.warning("registry row refused, its question will not be matched: %s", row)
    return questions
