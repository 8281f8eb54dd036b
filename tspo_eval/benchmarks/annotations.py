"""Original annotation files: conversion to the TSV, time-reference joins, TSPO frame-index files.

Every annotation item maps to its TSV row through the spec's `order` and `row`, so one
mechanism serves conversion, joins and frame-index files; a join is then verified on
(video_name, question text), which catches annotation and TSV files of different releases.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from .core import BenchmarkFormatError, BenchmarkSpec, Question, RefusedRow, get_benchmark, read_json_items
from .tsv import TSV_COLUMNS, parse_row, read_tsv

_ITEM_ERRORS = (KeyError, IndexError, ValueError, TypeError)


def _annotation_rows(spec: BenchmarkSpec, items: Sequence[dict], source: str | Path,
                     refused: list[RefusedRow] | None = None) -> list[tuple[int, dict]]:
    """(item position, TSV row) pairs in TSV order; errors name the item in `source` (with a
    `refused` list, an item that cannot be converted is appended to it and left out)."""
    try:
        order = spec.order(items)
    except _ITEM_ERRORS as err:
        raise BenchmarkFormatError(source, "annotation items",
                                   f"cannot order them as the {spec.name} TSV: {err}") from None
    rows = []
    for number, pos in enumerate(order, start=1):
        try:
            rows.append((pos, spec.row(items[pos], number)))
        except _ITEM_ERRORS as err:
            problem = f"cannot convert it to a {spec.name} TSV row: {err!r}"
            if refused is None:
                raise BenchmarkFormatError(source, f"item {pos + 1}", problem) from None
            refused.append(RefusedRow(source, f"item {pos + 1}", problem, f"{Path(source).name}:item {pos + 1}"))
    return rows


def convert(benchmark: str, annotation_path: str | Path) -> pd.DataFrame:
    """The published TSV's rows (columns TSV_COLUMNS, same values and order) from an annotation file."""
    spec = get_benchmark(benchmark)
    rows = _annotation_rows(spec, spec.read_items(Path(annotation_path)), annotation_path)
    return pd.DataFrame([row for _, row in rows], columns=list(TSV_COLUMNS))


def load_benchmark(name: str, tsv_path: str | Path | None = None, annotation_path: str | Path | None = None,
                   refused: list[RefusedRow] | None = None) -> list[Question]:
    """Questions of a benchmark, from its TSV, its annotation file, or both.

    With an annotation file the ground-truth time references it holds are attached
    (LVBench `time_reference`, LongVideoBench `position`); without a TSV the questions are
    converted from the annotation file, exactly as the published TSV holds them.
    Without `refused` any bad row refuses the file (BenchmarkFormatError); with a list, each
    bad row or item is appended to it as a `RefusedRow` and the others are returned.
    """
    spec = get_benchmark(name)
    if annotation_path is None:
        if tsv_path is None:
            raise ValueError(f"load_benchmark({name!r}) needs tsv_path ({spec.tsv_file}), "
                             f"annotation_path ({spec.annotation_file}) or both")
        return read_tsv(tsv_path, spec.name, refused)
    items = spec.read_items(Path(annotation_path))
    bad_items: list[RefusedRow] | None = None if refused is None else []
    rows = _annotation_rows(spec, items, annotation_path, bad_items)
    if tsv_path is None:
        questions = []
        for pos, row in rows:
            try:
                questions.append(parse_row(row, spec))
            except ValueError as err:
                if refused is None:
                    raise BenchmarkFormatError(annotation_path, f"item {pos + 1}", str(err)) from None
                refused.append(RefusedRow(annotation_path, f"item {pos + 1}", str(err), row["index"] or
                                          f"{Path(annotation_path).name}:item {pos + 1}"))
        if refused is not None:
            refused.extend(bad_items)
        return _attach_time_refs(spec, questions, items, rows, annotation_path, refused)
    # with a TSV, its questions are the questions: one whose item was refused is refused in the join
    questions = read_tsv(tsv_path, spec.name, refused)
    return _attach_time_refs(spec, questions, items, rows, annotation_path, refused, bad_items)


def _attach_time_refs(spec: BenchmarkSpec, questions: list[Question], items: Sequence[dict],
                      rows: list[tuple[int, dict]], annotation_path: str | Path,
                         refused: list[RefusedRow] | None = None,
                      bad_items: Sequence[RefusedRow] = ()) -> list[Question]:
    """Join each question to its annotation item by TSV index, verified on (video_name, question).

    With a `refused` list a question that cannot be joined is refused alone (its item may be
    one of `bad_items`, which are named in the reason)."""
    by_index = {row["index"]: (pos, row) for pos, row in rows}
    joined = []
    for question in questions:
        try:
            if question.index not in by_index:
                items_hint = f" (refused items: {'; '.join(str(r) for r in bad_items[:3])})" if bad_items else ""
                raise BenchmarkFormatError(annotation_path, "join", f"no annotation item gives TSV index "
                                           f"{question.index!r}; is this the {spec.annotation_file} of that TSV?"
                                           + items_hint)
            pos, row = by_index[question.index]
            where = f"item {pos + 1}"
            if (row["video_name"], row["question"]) != (question.video_name, question.question):
                raise BenchmarkFormatError(annotation_path, where, f"maps to TSV index {question.index!r} but "
                                           f"holds video {row['video_name']!r} / question {row['question'][:60]!r}, "
                                           f"the TSV {question.video_name!r} / {question.question[:60]!r}: "
                                           "different releases?")
            try:
                refs = spec.time_refs(items[pos])
            except _ITEM_ERRORS as err:
                raise BenchmarkFormatError(annotation_path, where, f"unreadable time reference: {err}") from None
        except BenchmarkFormatError as err:
            if refused is None:
                raise
            refused.append(RefusedRow(err.path, err.where, err.problem, question.index))
            continue
        joined.append(dataclasses.replace(question, **refs))
    return joined


def read_frame_idx(path: str | Path, benchmark: str) -> dict[str, list[int]]:
    """A TSPO `<method>_<Dataset>_frameIdx.json` (annotation items plus `frame_idx`) -> TSV index -> frames.

    The frames are absolute frame numbers of the video (stored as floats, all whole).
    For LVBench the items are the per-question objects its reader flattens the JSONL into.
    """
    spec = get_benchmark(benchmark)
    items = read_json_items(Path(path))
    selections: dict[str, list[int]] = {}
    for pos, row in _annotation_rows(spec, items, path):
        frames = items[pos].get("frame_idx")
        if not isinstance(frames, list) or not all(_is_frame_number(frame) for frame in frames):
            raise BenchmarkFormatError(path, f"item {pos + 1}", "frame_idx must be a list of whole, non-negative "
                                       f"frame numbers, got {str(frames)[:80]}")
        if row["index"] in selections:
            raise BenchmarkFormatError(path, f"item {pos + 1}", f"a second item for TSV index {row['index']!r}")
        selections[row["index"]] = [int(frame) for frame in frames]
    return selections


def _is_frame_number(value: Any) -> bool:
    """JSON numbers that are whole and non-negative (TSPO writes them as floats such as 30.0)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and value >= 0 and float(value).is_integer())


def write_frame_idx(annotation_items: Sequence[dict], selections: Mapping[str, Sequence[int]],
                    path: str | Path, benchmark: str) -> None:
    """Write selections in the published frame-index layout: each annotation item plus `frame_idx` (floats).

    `selections` maps TSV index -> frame numbers and must cover exactly the items' indices,
    since consumers (and the MLVU index rule) expect the complete annotation list.
    """
    spec = get_benchmark(benchmark)
    index_of = {pos: row["index"] for pos, row in _annotation_rows(spec, annotation_items, "annotation items")}
    missing = sorted(set(index_of.values()) - set(selections))
    unknown = sorted(set(selections) - set(index_of.values()))
    if missing or unknown:
        raise ValueError(f"selections must cover exactly the {len(index_of)} {spec.name} items: "
                         f"missing {missing[:5]} ({len(missing)}), unknown {unknown[:5]} ({len(unknown)})")
    merged = [{**item, "frame_idx": [float(frame) for frame in selections[index_of[pos]]]}
              for pos, item in enumerate(annotation_items)]
    Path(path).write_text(json.dumps(merged), encoding="utf-8")
