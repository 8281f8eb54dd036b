"""The benchmark data model: one `Question` per TSV row, one `BenchmarkSpec` per benchmark,
and the registry that maps a lowercase name to its spec.

Every benchmark is handled through its spec, so a benchmark added with
`register_benchmark` is read, converted, joined, prompted, scored and evaluated exactly like
the built-ins (which `specs.py` registers; docs/benchmarks.md says how to add one).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

from .protocol import Metric, parse_mcq

if TYPE_CHECKING:
    import pandas as pd

AnswerKind = Literal["letter", "text"]

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class BenchmarkFormatError(ValueError):
    """A benchmark file is malformed; the message names the file and where (line or item)."""

    def __init__(self, path: str | Path, where: str, problem: str) -> None:
        self.path, self.where, self.problem = str(path), where, problem
        super().__init__(f"{path}, {where}: {problem}")

    def __reduce__(self):  # keep it picklable across worker processes
        return type(self), (self.path, self.where, self.problem)


class RefusedRow(BenchmarkFormatError):
    """One question refused on its own (readers given a `refused` list): its video is never read and it
    counts as a failed question under `index` (the row's own, else `<file>:<where>`)."""

    def __init__(self, path: str | Path, where: str, problem: str, index: str) -> None:
        super().__init__(path, where, problem)
        self.index = index

    def __reduce__(self):
        return type(self), (self.path, self.where, self.problem, self.index)


def letter(number: int) -> str:
    """Option letter of a 0-based option number (0 -> 'A')."""
    return _LETTERS[number]


def letter_number(text: str) -> int:
    """0-based option number of an option letter ('A' -> 0)."""
    if len(text) != 1 or text not in _LETTERS:
        raise ValueError(f"{text!r} is not an option letter A-Z")
    return _LETTERS.index(text)


@dataclass(frozen=True)
class Question:
    """One multiple-choice question, as a benchmark TSV row holds it.

    `question` is the stem without options: it is the text the selector's CLIP encodes.
    `answer` is kept as the TSV holds it (a letter or the option text, see the spec's
    `answer_kind`). Time references are ground truth for scoring a selector without a
    video LLM: `time_reference` is a (start, end) range in seconds (LVBench) and
    `reference_frames` are frame numbers at the video's native fps (LongVideoBench).
    """

    benchmark: str
    index: str
    task_name: str
    video_name: str
    question_id: str
    question: str
    candidates: tuple[str, ...]
    answer_number: int
    answer: str
    time_reference: tuple[float, float] | None = None
    reference_frames: tuple[int, ...] | None = None

    @property
    def answer_letter(self) -> str:
        """The correct option's letter, whatever the benchmark's answer kind."""
        return letter(self.answer_number)

    def option_lines(self) -> list[str]:
        """Options as "A. text" lines; VideoMME candidates already carry the prefix, kept once."""
        lines = []
        for number, text in enumerate(self.candidates):
            prefix = f"{letter(number)}. "
            lines.append(text if text.startswith(prefix) else prefix + text)
        return lines

    def reference_seconds(self, fps: float) -> tuple[float, ...] | None:
        """`reference_frames` in seconds, given the video's native frame rate."""
        if self.reference_frames is None:
            return None
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return tuple(frame / fps for frame in self.reference_frames)


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
class VLMEvalFormat:
    """A benchmark as VLMEvalKit holds it (a `BenchmarkSpec`'s `vlmeval`).

    Attributes:
        dataset: the dataset name VLMEvalKit's models receive as `dataset`.
        layout: the question text item of its prompt.
        row_question: VLMEvalKit TSV row (strings) -> Question, indexed by the row's own registry
            index where it holds one (LongVideoBench `id`, LVBench `question_id`), else `vlmeval-<index>`.
        item_rows: original annotation file -> VLMEvalKit's TSV rows, in VLMEvalKit's order.
        item_rows_from_tsv: whether `item_rows` also takes the published TSV (it holds every
            field VLMEvalKit's scores group by: MLVU's task type); else the annotation file only.
    """

    dataset: str
    layout: PromptLayout
    row_question: Callable[[Mapping[str, str]], Question]
    item_rows: Callable[[Path], pd.DataFrame]
    item_rows_from_tsv: bool = False


def parse_time_range(text: str) -> tuple[float, float] | None:
    """Parse an LVBench time reference such as "04:19-08:41", "114:16-120:00" or "1:02:03-1:02:10".

    Returns None when the range is not known: an end written "None" (as in the published
    file) or an end before the start. Raises ValueError for anything else unreadable.
    """
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(f"time reference {text!r} is not of the form 'MM:SS-MM:SS'")
    if "None" in (start_text.strip(), end_text.strip()):
        return None
    start, end = _clock_seconds(start_text), _clock_seconds(end_text)
    return (start, end) if start <= end else None


def _clock_seconds(text: str) -> float:
    """'SS', 'MM:SS' or 'H:MM:SS' (minutes may exceed 59, seconds may be fractional) -> seconds."""
    if not re.fullmatch(r"\s*\d+(:\d+){0,2}(\.\d+)?\s*", text):
        raise ValueError(f"time {text!r} is not of the form MM:SS or H:MM:SS")
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def read_json_items(path: Path) -> list[dict]:
    """An annotation file holding a JSON list of per-question objects."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BenchmarkFormatError(path, f"line {err.lineno}", f"is not valid JSON ({err.msg})") from None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise BenchmarkFormatError(path, "line 1", "expected a JSON list of objects, one per question")
    return items


def no_time_refs(item: dict) -> dict[str, Any]:
    """Annotations without ground-truth time references attach nothing."""
    return {}


def file_order(items: Sequence[dict]) -> list[int]:
    """Most TSVs list the annotation items in file order."""
    return list(range(len(items)))


def no_doc_fields(item: dict) -> dict[str, Any]:
    """Annotations whose items add nothing to an evaluation document."""
    return {}


# Generation length where a benchmark (or a harness's unknown dataset) sets none: lmms-eval's MCQ tasks' value.
DEFAULT_MAX_NEW_TOKENS = 16


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything the package knows about one benchmark: its files, where its videos live, how
    it is prompted and scored, and its names and settings in the evaluation frameworks.

    Files:
        name: registry key, lowercase.
        tsv_file: file name of the published TSV.
        annotation_file: file name of the original annotation file that `row` converts.
        answer_kind: what the TSV `answer` column holds: the option "letter" or its "text".
        row: (annotation item, 1-based TSV row number) -> TSV row as a column -> value dict.
        order: annotation items -> item positions in published TSV order.
        read_items: annotation file -> per-question items (the input of `row` and `order`).
        time_refs: annotation item -> `Question` fields it provides
            (`time_reference`, `reference_frames`); empty when it has none.
        video_subdir: folder under the user's video root holding this benchmark's videos.
        frame_idx_file: file name of the published TSPO frame-index file, if any.

    Evaluation:
        doc_fields: annotation item -> evaluation-document fields beyond the Question's
            (the stem as the annotation writes it, the category fields its metrics group by).
        prompt: (document, pre_prompt, post_prompt) -> question text, as lmms-eval's built-in
            task writes it; None: the benchmark cannot be prompted (no task config).
        post_prompt: the built-in task's default post-prompt (the task YAML repeats it).
        max_new_tokens: generation length of the built-in task (the task YAML repeats it;
            VLMEvalKit runs use it too).
        parse_answer: (output, n_options, random_fallback, key) -> option letter or None
            (`protocol.parse_longvideobench`, `protocol.parse_mcq`).
        metrics: every number reported, in order (the task YAML's `metric_list`).
        scale: 1.0 (fractions) or 100.0 (percent), as the built-in task reports.
        lmms_task: the task name of the config shipped in `tspo_eval/tasks/<name>/`.
        vlmeval: the benchmark as VLMEvalKit holds it (`VLMEvalFormat`: its dataset name, TSV and
            prompt layout); None: not known to VLMEvalKit.
        selector_params: selector name -> its published parameters on this benchmark, filled in
            where a policy leaves them unset (TSPO's per-benchmark method, BOLT's power).
    """

    name: str
    tsv_file: str
    annotation_file: str
    answer_kind: AnswerKind
    row: Callable[[dict, int], dict[str, Any]]
    order: Callable[[Sequence[dict]], list[int]] = file_order
    read_items: Callable[[Path], list[dict]] = read_json_items
    time_refs: Callable[[dict], dict[str, Any]] = no_time_refs
    video_subdir: str = ""
    frame_idx_file: str | None = None
    doc_fields: Callable[[dict], dict[str, Any]] = no_doc_fields
    prompt: Callable[[dict, str, str], str] | None = None
    post_prompt: str = ""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    parse_answer: Callable[..., str | None] = parse_mcq
    metrics: tuple[Metric, ...] = ()
    scale: float = 1.0
    lmms_task: str | None = None
    vlmeval: VLMEvalFormat | None = None
    selector_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or not self.name:
            raise ValueError(f"benchmark name must be non-empty lowercase, got {self.name!r}")
        if self.answer_kind not in ("letter", "text"):
            raise ValueError(f"answer_kind must be 'letter' or 'text', got {self.answer_kind!r}")
        if self.video_subdir and (problem := unsafe_relative_path(self.video_subdir)):
            raise ValueError(f"video_subdir {self.video_subdir!r} of {self.name!r} {problem}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens of {self.name!r} must be >= 1, got {self.max_new_tokens}")
        if self.scale not in (1.0, 100.0):
            raise ValueError(f"scale of {self.name!r} must be 1.0 (fractions) or 100.0 (percent), got {self.scale}")
        names = [metric.name for metric in self.metrics]
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"metric names of {self.name!r} repeat: {', '.join(repeated)}")

    @property
    def has_time_references(self) -> bool:
        """Whether its annotation file holds ground-truth time references (a selector can be scored)."""
        return self.time_refs is not no_time_refs


BENCHMARKS: dict[str, BenchmarkSpec] = {}


def register_benchmark(spec: BenchmarkSpec, replace: bool = False) -> BenchmarkSpec:
    """Add a benchmark from outside the package; `replace=True` overrides one (e.g. its video_subdir)."""
    if spec.name in BENCHMARKS and not replace:
        raise ValueError(f"benchmark {spec.name!r} is already registered; pass replace=True to override it")
    BENCHMARKS[spec.name] = spec
    return spec


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered spec for `name` (case-insensitive)."""
    try:
        return BENCHMARKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; registered: {', '.join(sorted(BENCHMARKS))}") from None


def find_benchmark(name: str | None) -> BenchmarkSpec | None:
    """The registered spec for `name`, or None (a harness's question from an unknown dataset)."""
    return BENCHMARKS.get(name.lower()) if name else None


def vlmeval_benchmark(dataset: str | None) -> BenchmarkSpec | None:
    """The registered spec whose VLMEvalKit dataset is `dataset` (VLMEvalKit's spelling), or None."""
    return next((spec for spec in BENCHMARKS.values()
                 if dataset and spec.vlmeval is not None and spec.vlmeval.dataset == dataset), None)


def unsafe_relative_path(name: str) -> str | None:
    """Why `name` could leave the folder it is joined to (None when it cannot)."""
    if not name:
        return "is empty"
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"[A-Za-z]:", name):
        return "is an absolute path"
    if ".." in path.parts:
        return "contains '..'"
    return None


# where `<video_name>` is missing, the same name with these extensions is looked for (in this order):
# copies fetched with other tools (yt-dlp: .mkv / .webm), as lmms-eval's VideoMME task looks for .MP4 / .mkv
VIDEO_SUFFIXES = (".mp4", ".MP4", ".mkv", ".webm", ".mov", ".avi")


def resolve_video(root: str | Path, video_name: str, benchmark: str) -> Path:
    """Path of a benchmark video: `<root>/<spec.video_subdir>/<video_name>`, or, where that file is
    missing, the same name with another extension of `VIDEO_SUFFIXES` that exists there (else the
    named path, which then fails as missing).

    Raises ValueError when `video_name` would escape the root (absolute, or with '..').
    """
    spec = get_benchmark(benchmark)
    if problem := unsafe_relative_path(video_name):
        raise ValueError(f"video_name {video_name!r} of benchmark {spec.name!r} {problem}; "
                         f"it must be a path relative to the video root {root}")
    path = Path(root) / spec.video_subdir / video_name
    if path.exists():
        return path
    return next((other for suffix in VIDEO_SUFFIXES if (other := path.with_suffix(suffix)).exists()), path)
