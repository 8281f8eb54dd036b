"""Long-video benchmarks: the published TSVs, their original annotations and TSPO frame indices.

Registered by name: "longvideobench" (val), "mlvu" (dev, multiple choice), "videomme"
(without subtitles), "lvbench", each one `BenchmarkSpec` in `specs.py` holding all the package
knows about it (files, converters, prompts, scoring, framework names, selector settings).
Add more with `register_benchmark(BenchmarkSpec(...))` (docs/benchmarks.md).

Video layout: a benchmark video lives at `<video root>/<spec.video_subdir>/<video_name>`,
`video_name` being the TSV column (e.g. `86CxyhFV9MI.mp4`). The built-ins have an empty
`video_subdir`, so the root a user passes is the benchmark's own video folder, which is how
the datasets unpack (one flat folder of `<id>.mp4`). To keep all benchmarks under one root,
re-register a spec with a subfolder:
`register_benchmark(dataclasses.replace(BENCHMARKS["mlvu"], video_subdir="MLVU/video"), replace=True)`.
A `video_name` that could leave the root (absolute, or with '..') is refused when a TSV is
read and when a path is resolved. By default the readers refuse the whole file on any bad
row; given a `refused` list, they refuse that row alone (a `RefusedRow` naming file, line
and reason, counted as a failed question) and read the rest.

Example:
    questions = load_benchmark("lvbench", "LVBench.tsv", "video_info.meta.jsonl")
    path = resolve_video("/data/LVBench/videos", questions[0].video_name, "lvbench")
    docs = build_docs("lvbench", "video_info.meta.jsonl", "/data/LVBench/videos")  # evaluation documents
"""
from . import specs  # noqa: F401  (registers the four published benchmarks)
from .annotations import convert, load_benchmark, read_frame_idx, write_frame_idx
from .core import (
    BENCHMARKS,
    BenchmarkFormatError,
    BenchmarkSpec,
    Question,
    RefusedRow,
    find_benchmark,
    get_benchmark,
    parse_time_range,
    register_benchmark,
    resolve_video,
)
from .docs import build_docs, docs_from_env
from .tsv import TSV_COLUMNS, read_tsv, write_tsv

__all__ = [
    "BENCHMARKS",
    "TSV_COLUMNS",
    "BenchmarkFormatError",
    "BenchmarkSpec",
    "Question",
    "RefusedRow",
    "build_docs",
    "convert",
    "docs_from_env",
    "find_benchmark",
    "get_benchmark",
    "load_benchmark",
    "parse_time_range",
    "read_frame_idx",
    "read_tsv",
    "register_benchmark",
    "resolve_video",
    "write_frame_idx",
    "write_tsv",
]
