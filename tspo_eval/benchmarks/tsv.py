"""The published benchmark TSV format, read strictly and written byte-for-byte alike.

The published files are plain tab-separated text WITHOUT quoting: a field may begin with
a double quote (MLVU and LVBench answers do) and is still literal text, and fields keep
their leading/trailing spaces. So a CSV reader with default quoting misreads them; this
module splits on tabs and newlines only, which is also why a field can hold neither.
The files end without a final newline; reading accepts one, writing reproduces the files.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .core import (
    BenchmarkFormatError,
    BenchmarkSpec,
    Question,
    RefusedRow,
    get_benchmark,
    letter,
    unsafe_relative_path,
)

if TYPE_CHECKING:
    import pandas as pd

TSV_COLUMNS = ("index", "task_name", "video_name", "question_id", "question", "answer_number", "candidates",
               "answer")


def read_tsv(path: str | Path, benchmark: str, refused: list[RefusedRow] | None = None) -> list[Question]:
    """Read and validate a benchmark TSV; every problem raises BenchmarkFormatError naming file and line.

    With a `refused` list, a bad row (a video path leaving the root, a field that does not parse)
    is appended to it instead and the other rows are read; problems of the whole file (header,
    encoding, a repeated index) still raise.
    """
    spec = get_benchmark(benchmark)
    lines = _read_lines(Path(path))
    header = lines[0].split("\t") if lines else []
    missing = [column for column in TSV_COLUMNS if column not in header]
    if missing:
        raise BenchmarkFormatError(path, "line 1", f"header lacks column(s) {', '.join(missing)}; the first line "
                                   f"must name the tab-separated columns {', '.join(TSV_COLUMNS)}")
    if len(set(header)) != len(header):
        raise BenchmarkFormatError(path, "line 1", "header repeats a column name")
    questions, first_line = [], {}
    for line_number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        index = fields[header.index("index")] if len(fields) == len(header) else ""
        if index in first_line:
            raise BenchmarkFormatError(path, f"line {line_number}", f"duplicate index {index!r} (first on "
                                       f"line {first_line[index]}); every row needs its own index")
        try:
            if len(fields) != len(header):
                raise ValueError(f"{len(fields)} tab-separated field(s), the header has {len(header)}; fields cannot "
                                 "hold tabs or line breaks")
            question = parse_row(dict(zip(header, fields)), spec)
        except ValueError as err:
            if refused is None:
                raise BenchmarkFormatError(path, f"line {line_number}", str(err)) from None
            refused.append(RefusedRow(path, f"line {line_number}", str(err),
                                      index or f"{Path(path).name}:line {line_number}"))
            question = None
        if index:
            first_line[index] = line_number
        if question is not None:
            questions.append(question)
    return questions


def _read_lines(path: Path) -> list[str]:
    """The file's lines (CRLF or LF, optional final newline), undecodable bytes located by line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_number = raw[:err.start].count(b"\n") + 1
        raise BenchmarkFormatError(path, f"line {line_number}",
                                   "is not UTF-8 text; re-save the file as UTF-8") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def parse_row(row: Mapping[str, Any], spec: BenchmarkSpec) -> Question:
    """One TSV row (column -> value) as a Question; ValueError says what is wrong with it."""
    if not row["index"]:
        raise ValueError("index is empty; every row needs a unique index")
    if problem := unsafe_relative_path(row["video_name"]):
        raise ValueError(f"video_name {row['video_name']!r} {problem}; "
                         "it must be a path relative to the video root")
    number_text = str(row["answer_number"])
    if not (number_text.isascii() and number_text.isdigit()):
        raise ValueError(f"answer_number {number_text!r} is not a 0-based option number")
    candidates, number = _parse_candidates(row["candidates"]), int(number_text)
    if number >= len(candidates):
        raise ValueError(f"answer_number {number} is out of range for {len(candidates)} candidates "
                         f"(0-based, so at most {len(candidates) - 1})")
    expected = letter(number) if spec.answer_kind == "letter" else candidates[number]
    if row["answer"] != expected:
        raise ValueError(f"answer {row['answer']!r} disagrees with answer_number {number}: {spec.name} answers "
                         f"hold the option {spec.answer_kind}, so it should be {expected!r}")
    return Question(benchmark=spec.name, index=row["index"], task_name=row["task_name"],
                    video_name=row["video_name"], question_id=row["question_id"], question=row["question"],
                    candidates=candidates, answer_number=number, answer=row["answer"])


def _parse_candidates(text: str) -> tuple[str, ...]:
    """A Python list literal of option strings, parsed without evaluating code."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list) or not value or not all(isinstance(option, str) for option in value):
        raise ValueError(f"candidates {text[:80]!r} is not a non-empty Python list literal of strings, "
                         "e.g. ['yes', 'no']")
    return tuple(value)


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """Write rows with exactly the columns TSV_COLUMNS in the published layout (byte-identical for them)."""
    if tuple(df.columns) != TSV_COLUMNS:
        raise ValueError(f"columns must be exactly {', '.join(TSV_COLUMNS)} in that order, "
                         f"got {', '.join(map(str, df.columns))}")
    lines = ["\t".join(TSV_COLUMNS)]
    for row_number, values in enumerate(df.itertuples(index=False, name=None), start=1):
        texts = [str(value) for value in values]
        for column, text in zip(TSV_COLUMNS, texts):
            if any(char in text for char in "\t\n\r"):
                raise ValueError(f"row {row_number} (index {texts[0]!r}), column {column}: holds a tab or line "
                                 "break, which the unquoted TSV format cannot store; replace it with a space")
        lines.append("\t".join(texts))
    Path(path).write_bytes("\n".join(lines).encode("utf-8"))
