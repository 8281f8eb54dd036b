"""VLMEvalKit adapter: `llava_vid_tspo`, `qwen_2_5_vl_tspo` and their uniform baselines as VLMEvalKit models.

The same four names and model arguments as the lmms-eval adapter, on the same code path
(`answering.answer_questions`). A VLMEvalKit model receives a message list (a video path and
text items) and the dataset name; the adapter reads the question stem and options back from
the dataset's prompt layout (its benchmark spec's `vlmeval.layout`), finds the registry question with the
same video, stem and options (from `questions`: the registry TSVs or annotation files), and
so uses the registry `index`, the key of selections files: a question gets the same frames
as in lmms-eval. Unmatched questions get frames computed now (or uniform ones).

    from tspo_eval.integrations import vlmeval as tv
    # VLMEvalKit's inference + evaluation of one model on one dataset, in this process
    tv.run("llava_vid_tspo", "LVBench", "runs/vlmeval", model_args={"selections": "runs/selections", "k": 64})
    # or: register the models (arguments baked in), then drive VLMEvalKit yourself (its run.py, torchrun)
    tv.register(["llava_vid_tspo"], selections="runs/selections", questions="data/official", k=64)

VLMEvalKit is not on the package registry and is imported only when a model, dataset or run
is built; without it those raise an ImportError saying how to install it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..benchmarks import Question, find_benchmark, get_benchmark
from ..benchmarks.core import DEFAULT_MAX_NEW_TOKENS, vlmeval_benchmark
from ..scoring import NO_ANSWER
from .models import DERIVED_ARGS, FLAVOURS, ModelArgs, build_answering, parse_model_args
from .vlmeval_tsv import QuestionIndex, load_registry

if TYPE_CHECKING:

    from ..answering import AnswerConfig, FramePlanner, QuestionRef
    from ..backbones import Backbone

log = logging.getLogger(__name__)

INSTALL_HINT = ("VLMEvalKit is not installed. It is not on the package registry; install it from its repository:\n"
                "    git clone https://github.com/open-compass/VLMEvalKit && pip install -e VLMEvalKit\n"
                "(see docs/vlmevalkit.md for a light install that keeps your torch/transformers)")


def require_vlmeval() -> Any:
    """The `vlmeval` package (with the modules the adapter uses), or an ImportError telling how to install it."""
    try:
        import vlmeval
        import vlmeval.config
        import vlmeval.dataset
        import vlmeval.inference_video
    except ImportError as err:
        if err.name is not None and err.name.split(".")[0] == "vlmeval":
            raise ImportError(INSTALL_HINT) from err
        raise ImportError(f"VLMEvalKit is installed but does not import: {err}. Install the package it names "
                          "(docs/vlmevalkit.md lists the light set VLMEvalKit needs)") from err
    return vlmeval


@dataclass
class VLMEvalArgs:
    """Model arguments of the VLMEvalKit models beyond the lmms-eval adapter's `ModelArgs`."""

    questions: str | None = field(default=None, metadata={
        "help": "registry questions to match VLMEvalKit's against (needed to reuse selections): the dataset's "
                "registry TSV or annotation file, or a folder holding them under their published names "
                "(VideoMME.tsv, lvb_val.json, ...)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "generation length (default: the lmms-eval task's, 16 for other datasets)"})


def parse_args(model_name: str, raw: Mapping[str, Any]) -> tuple[ModelArgs, VLMEvalArgs]:
    """Validated arguments; unknown or inapplicable keys are errors naming the valid ones."""
    if model_name not in FLAVOURS:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(FLAVOURS)}")
    ours = {f.name for f in dataclasses.fields(VLMEvalArgs)}
    extra = VLMEvalArgs(**{k: v for k, v in raw.items() if k in ours})
    if extra.max_new_tokens is not None:
        extra.max_new_tokens = int(extra.max_new_tokens)
    try:
        args = parse_model_args(model_name, {k: v for k, v in raw.items() if k not in ours})
    except ValueError as err:
        raise ValueError(f"{err}, {', '.join(sorted(ours))}") from None
    if args.policy.selections is not None and extra.questions is None:
        raise ValueError(f"{model_name}: selections are keyed by registry question index; pass questions=<folder or "
                         "file of the registry TSVs / annotation files> so VLMEvalKit's questions can be matched")
    return args, extra


def _fallback_index(dataset: str | None, video: str, text: str) -> str:
    """A stable id for a question the registry does not hold (record lines, logs)."""
    return f"{dataset}:{Path(video).name}:{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def question_ref(message: Sequence[Mapping[str, Any]], dataset: str | None,
                 index: QuestionIndex | None = None) -> QuestionRef:
    """A `QuestionRef` from a VLMEvalKit message.

    prompt: the non-empty text items, stripped, one per line. For a known dataset the stem is
    read from its prompt layout and, when `index` holds the question, the registry's index and
    stem (as the TSV holds it: what the selector encodes) are used; otherwise the index is a
    hash and the stem the parsed one (or the whole prompt for unknown layouts).
    """
    from ..answering import QuestionRef

    videos = [str(item["value"]) for item in message if item["type"] == "video"]
    if not videos:
        raise ValueError(f"{dataset}: the message holds no video; tspo-eval models answer from a video (VIDEO_LLM)")
    texts = [str(item["value"]) for item in message if item["type"] == "text"]
    prompt = "\n".join(text.strip() for text in texts if text.strip())
    known = vlmeval_benchmark(dataset)
    parsed = next((p for text in reversed(texts) if (p := known.vlmeval.layout.parse(text)) is not None), None) \
        if known else None
    if parsed is None:
        return QuestionRef(_fallback_index(dataset, videos[0], prompt), known.name if known else "",
                           videos[0], prompt, prompt)
    stem, options = parsed
    question: Question | None = index.find(videos[0], stem, options) if index is not None else None
    if question is None:
        return QuestionRef(_fallback_index(dataset, videos[0], "\n".join([stem, *options])), known.name,
                           videos[0], stem.replace("\n", " "), prompt)
    return QuestionRef(question.index, question.benchmark, videos[0], question.question, prompt)


class MessageAnswerer:
    """What a VLMEvalKit model does with one message: find the question and its frames, then answer.

    Holds no VLMEvalKit object, so it runs (and is tested) without VLMEvalKit.
    """

    def __init__(self, backbone: Backbone, planner: FramePlanner, answer_cfg: AnswerConfig,
                 questions: str | Path | None = None, record: str | Path | None = None,
                 max_new_tokens: int | None = None) -> None:
        self.backbone, self.planner, self.answer_cfg = backbone, planner, answer_cfg
        self.questions = Path(questions) if questions is not None else None
        self.record, self.max_new_tokens = record, max_new_tokens
        self._indices: dict[str, QuestionIndex | None] = {}

    @classmethod
    def from_args(cls, model_name: str, raw: Mapping[str, Any]) -> MessageAnswerer:
        """Backbone, frame planner and settings from model arguments (as the lmms-eval adapter builds them)."""
        args, extra = parse_args(model_name, raw)
        from ..distributed import local_device

        backbone, planner, answer_cfg = build_answering(model_name, args, local_device())
        return cls(backbone, planner, answer_cfg, extra.questions, args.record, extra.max_new_tokens)

    def index(self, benchmark: str) -> QuestionIndex | None:
        """The registry questions of `benchmark` from `questions` (None without any)."""
        if benchmark not in self._indices:
            source = self._source(benchmark)
            self._indices[benchmark] = QuestionIndex(load_registry(source, benchmark)) if source else None
        return self._indices[benchmark]

    def _source(self, benchmark: str) -> Path | None:
        """`questions` itself when it is a file; in a folder, the benchmark's TSV or annotation file."""
        if self.questions is None or not benchmark or not self.questions.is_dir():
            return self.questions if benchmark else None
        names = (get_benchmark(benchmark).tsv_file, get_benchmark(benchmark).annotation_file)
        found = next((self.questions / n for n in names if (self.questions / n).is_file()), None)
        if found is None:
            log.warning("no %s questions (%s) in %s: its questions get frames computed now, not from selections",
                        benchmark, " or ".join(names), self.questions)
        return found

    def ref(self, message: Sequence[Mapping[str, Any]], dataset: str | None) -> QuestionRef:
        known = vlmeval_benchmark(dataset)
        ref = question_ref(message, dataset, self.index(known.name) if known else None)
        if known is not None and self.questions is not None and ref.index.startswith(f"{dataset}:"):
            log.warning("%s question on %s is not among the registry questions: frames computed now", dataset,
                        Path(ref.video_path).name)
        return ref

    def answer(self, message: Sequence[Mapping[str, Any]], dataset: str | None) -> str:
        """The backbone's answer (`NO_ANSWER` when the question's video failed; the record says why)."""
        from ..answering import answer_questions

        ref = self.ref(message, dataset)
        spec = find_benchmark(ref.benchmark)
        budget = self.max_new_tokens or (spec.max_new_tokens if spec else DEFAULT_MAX_NEW_TOKENS)
        (answer,) = answer_questions([ref], self.planner, self.backbone,
                                     dataclasses.replace(self.answer_cfg, max_new_tokens=budget),
                                     record=self.record, progress=False)
        return NO_ANSWER if answer.error is not None else answer.text


@functools.cache
def model_class(model_name: str) -> type:
    """The VLMEvalKit model class of one of FLAVOURS (built on first use: VLMEvalKit is imported here)."""
    if model_name not in FLAVOURS:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(FLAVOURS)}")
    require_vlmeval()
    from vlmeval.vlm.base import BaseModel

    class TSPOVideoModel(BaseModel):
        INTERLEAVE = False
        VIDEO_LLM = True

        def __init__(self, **model_args: Any) -> None:
            super().__init__()
            self.answerer = MessageAnswerer.from_args(model_name, model_args)

        def generate_inner(self, message: list[dict[str, str]], dataset: str | None = None) -> str:
            return self.answerer.answer(message, dataset)

    TSPOVideoModel.__name__ = TSPOVideoModel.__qualname__ = "".join(p.title() for p in model_name.split("_"))
    return TSPOVideoModel


def register(names: Sequence[str] | Mapping[str, str] | None = None, **model_args: Any) -> dict[str, Any]:
    """Add models to VLMEvalKit's `supported_VLM` and LVBench to its datasets, without editing VLMEvalKit.

    Args:
        names: model names (FLAVOURS; default all four), or {registered name: model name} to
            register variants, e.g. {"llava_vid_tspo_k32": "llava_vid_tspo"}.
        model_args: baked into every registered `functools.partial` (VLMEvalKit builds models
            without arguments); validated now, so a typo fails before any model loads.

    Returns: {registered name: the partial}.
    """
    require_vlmeval()
    import vlmeval.config

    from .vlmeval_lvbench import register_datasets

    mapping = dict(names) if isinstance(names, Mapping) else {n: n for n in (names or FLAVOURS)}
    for model_name in mapping.values():
        parse_args(model_name, model_args)
    partials = {alias: functools.partial(model_class(model_name), **model_args) for alias, model_name in mapping.items()}
    vlmeval.config.supported_VLM.update(partials)
    register_datasets()
    return partials


def build_dataset(dataset: str, data_file: str | Path | None = None, data_root: str | Path | None = None,
                  nframe: int = 8) -> Any:
    """A VLMEvalKit dataset: LVBench (data_file: its annotation file, data_root: its videos; default from
    $TSPO_LVBENCH_*), a local copy of Video-MME / LongVideoBench / MLVU_MCQ (data_file: VLMEvalKit's TSV,
    data_root: its folder), or any VLMEvalKit dataset name (VLMEvalKit fetches the data itself)."""
    require_vlmeval()
    from .vlmeval_lvbench import (
        LVBENCH_NAMES,
        local_dataset,
        lvbench_class,
        register_datasets,
    )

    register_datasets()
    if dataset in LVBENCH_NAMES:
        return lvbench_class()(dataset="LVBench", nframe=LVBENCH_NAMES[dataset], annotations=data_file,
                               videos=data_root)
    if data_file is not None or data_root is not None:
        if data_file is None or data_root is None:
            raise ValueError("a local copy needs both data_file (VLMEvalKit's TSV) and data_root (its folder)")
        return local_dataset(dataset, data_file, data_root, nframe=nframe)
    from vlmeval.dataset import build_dataset as vlmeval_build

    built = vlmeval_build(dataset)
    if built is None:
        raise ValueError(f"VLMEvalKit could not build dataset {dataset!r}")
    return built


# model arguments that change no answer: where features are cached and answers recorded, decoding threads
# (and the extraction knobs, `DERIVED_ARGS`'s "extract": speed only)
_OPERATIONAL = ("record", "cache_dir", "answer_threads", "prefetch_questions")


def frame_policy(model: str, model_args: Mapping[str, Any], nframe: int) -> dict[str, Any]:
    """Everything a model's predictions depend on besides the dataset: its validated arguments
    (operational ones aside) and a digest of the selections / questions files' contents (a file
    rewritten in place is another policy)."""
    args, extra = parse_args(model, model_args)
    rest = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
            if f.name not in (*_OPERATIONAL, *DERIVED_ARGS)}
    policy = {"model": model, "frames": args.policy.identity(), **rest, **dataclasses.asdict(extra), "nframe": nframe}
    for name, path in (("selections", args.policy.selections), ("questions", extra.questions)):
        if path is not None:
            policy[f"{name}_digest"] = _content_digest(Path(path))
    return policy


def _content_digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative names and bytes); "missing" when absent."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path] if path.is_file() else []
    if not files:
        return "missing"
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(path) if file != path else file.name}\0".encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def predictions_dir(work_dir: str | Path, model: str, policy: Mapping[str, Any]) -> Path:
    """`<work_dir>/<model>/<method>_k<k>_<policy hash>`: one folder per frame policy, so a run with other
    selections or settings never reuses another policy's predictions (VLMEvalKit reuses a complete file)."""
    key = hashlib.sha256(json.dumps(policy, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(work_dir) / model / f"{policy['frames']['method']}_k{policy['frames']['k']}_{key}"


def run(model: str, dataset: str, work_dir: str | Path = "vlmeval_outputs", *, data_file: str | Path | None = None,
        data_root: str | Path | None = None, nframe: int = 8, judge: str = "exact_matching",
        model_args: Mapping[str, Any] | None = None) -> Any:
    """VLMEvalKit's own inference (`infer_data_job_video`) and evaluation (`dataset.evaluate`) of one
    model on one dataset, in this process.

    Predictions go to `predictions_dir(work_dir, model, policy)/<model>_<dataset>.<xlsx|PRED_FORMAT>`
    beside a `policy.json` naming the frame policy; VLMEvalKit reuses a complete file there,
    which then holds this policy's answers. `judge` is VLMEvalKit's answer-matching judge
    ("exact_matching": no API calls). On LVBench, `questions` defaults to its annotation file.
    Returns the evaluation result; RuntimeError when VLMEvalKit wrote no predictions or every
    question failed (nothing ran).
    """
    built = build_dataset(dataset, data_file, data_root, nframe)
    model_args = dict(model_args or {})
    if hasattr(built, "annotation_file"):
        model_args.setdefault("questions", str(built.annotation_file))
    policy = frame_policy(model, model_args, nframe)
    register([model], **model_args)
    from vlmeval.inference_video import infer_data_job_video
    from vlmeval.smp import get_pred_file_path, load

    out = predictions_dir(work_dir, model, policy)
    out.mkdir(parents=True, exist_ok=True)
    (out / "policy.json").write_text(json.dumps(policy, indent=1, sort_keys=True, default=str))
    result_file = get_pred_file_path(str(out), model, dataset, use_env_format=True)
    log.warning("%s %s: %s predictions of this frame policy in %s", model, dataset,
                "reusing the complete" if Path(result_file).is_file() else "writing the", out)
    infer_data_job_video(model, work_dir=str(out), model_name=model, dataset=built, result_file=result_file)
    if not Path(result_file).is_file():
        raise RuntimeError(f"VLMEvalKit wrote no predictions ({result_file}): nothing ran; see its log above")
    predictions = [str(p) for p in load(result_file)["prediction"]]
    failed = sum(p == NO_ANSWER for p in predictions)
    log.warning("%s %s: %d answered, %d failed (scored wrong)", model, dataset, len(predictions) - failed, failed)
    if failed == len(predictions):
        raise RuntimeError(f"every one of the {len(predictions)} questions failed (no video or frames could be read; "
                           f"the record / log above says why); predictions: {result_file}")
    return built.evaluate(result_file, model=judge, nproc=1)
