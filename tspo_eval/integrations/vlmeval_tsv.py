"""VLMEvalKit's video dataset TSVs and prompts <-> the benchmark registry (no VLMEvalKit needed).

VLMEvalKit writes its own TSV per dataset (in its `prepare_dataset`), indexed 0..N-1, with
columns that differ per dataset; the registry keys a question by the published TSV `index`,
which is also the key of selections files. A VLMEvalKit question is matched to its registry
question on (video file name, stem, option texts), whitespace-normalised, so one extraction /
selection run serves both frameworks: the same question gets the same frames.

The formats themselves (columns, prompt layouts, converters) are each benchmark's
`BenchmarkSpec.vlmeval` (`benchmarks.vlmeval_format`); a benchmark registered with one is
matched and converted like the built-ins.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from ..benchmarks import BENCHMARKS, BenchmarkSpec, Question
from ..benchmarks.core import letter, vlmeval_benchmark

log = logging.getLogger(__name__)


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


def dataset_names() -> list[str]:
    """The VLMEvalKit datasets of the registered benchmarks (VLMEvalKit's spelling)."""
    return [spec.vlmeval.dataset for spec in BENCHMARKS.values() if spec.vlmeval is not None]


def get_dataset(name: str) -> BenchmarkSpec:
    """The registered benchmark VLMEvalKit calls `name`; its `vlmeval` is the dataset's format."""
    spec = vlmeval_benchmark(name)
    if spec is None:
        raise ValueError(f"unknown VLMEvalKit dataset {name!r}; known: {', '.join(dataset_names())}")
    return spec


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
            question = spec.vlmeval.row_question(row)
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
    path, spec = Path(annotation_path), get_dataset(dataset)
    if path.suffix.lower() == ".tsv" and not spec.vlmeval.item_rows_from_tsv:
        wanted = spec.annotation_file
        raise ValueError(f"{dataset}: give the original annotation file ({wanted}), not a TSV: VLMEvalKit's "
                         "evaluation groups by fields only that file holds")
    return spec.vlmeval.item_rows(path)


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
