"""lmms-eval adapter: `llava_vid_tspo`, `qwen_2_5_vl_tspo` and their uniform baselines.

Registered through the `lmms_eval.models` entry-point group (see pyproject.toml), which
calls `manifests()`; this module imports nothing heavy at import time, so a broken GPU
stack can never hide lmms-eval's other entry-point models.

    lmms-eval --model llava_vid_tspo \
        --model_args pretrained=lmms-lab/LLaVA-Video-7B-Qwen2,agent=hzf666/TSPO-0.4B,k=64 \
        --tasks tspo_lvbench --include_path tasks --batch_size 4

All four names run one code path (`answering.answer_questions`); a `*_uniform` model only
changes the frame method, so a comparison differs in nothing but frame choice.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

BACKBONE_OPTIONS = {
    "llava_video": ("conv_template",),
    "qwen2_5_vl": ("min_pixels", "max_pixels", "time_encoding"),
}
# The published evaluation scripts (evaluation/*llava_video.sh) run LLaVA-Video with
# conv_template=chatml_direct, for uniform and TSPO alike; the backbone's own default is qwen_1_5.
BACKBONE_DEFAULTS = {"llava_video": {"conv_template": "chatml_direct"}, "qwen2_5_vl": {}}


@dataclass(frozen=True)
class Flavour:
    """What distinguishes one registered model name: its backbone and default frame method."""

    backbone: str
    pretrained: str
    method: str


FLAVOURS = {
    "llava_vid_tspo": Flavour("llava_video", "lmms-lab/LLaVA-Video-7B-Qwen2", "tspo"),
    "llava_vid_uniform": Flavour("llava_video", "lmms-lab/LLaVA-Video-7B-Qwen2", "uniform"),
    "qwen_2_5_vl_tspo": Flavour("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct", "tspo"),
    "qwen_2_5_vl_uniform": Flavour("qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct", "uniform"),
}


@dataclass
class ModelArgs:
    """`--model_args` of every tspo-eval model (backbone options only where they apply)."""

    pretrained: str | None = field(default=None, metadata={"help": "backbone directory or hub id"})
    agent: str = field(default="hzf666/TSPO-0.4B", metadata={"help": "TSPO-0.4B directory / hub id / random:<config>"})
    method: str | None = field(default=None, metadata={"help": "frame method (default: the model name's)"})
    k: int = field(default=64, metadata={"help": "frames per question"})
    fps: float = field(default=1.0, metadata={"help": "candidate fps for computed selections"})
    max_frames: int | None = field(default=None, metadata={"help": "candidate cap"})
    selections: str | None = field(default=None, metadata={"help": "selections file or published frame_idx JSON"})
    official: bool = field(default=False, metadata={"help": "published short-video fallback"})
    cache_dir: str = field(default="feature_cache", metadata={"help": "feature cache root"})
    dtype: str = field(default="bfloat16", metadata={"help": "backbone dtype"})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa (default) / flash_attention_2"})
    record: str | None = field(default=None, metadata={"help": "JSONL of every answer with its frames"})
    decode_workers: int = field(default=4, metadata={"help": "frame decoding threads"})
    prefetch: int = field(default=8, metadata={"help": "questions decoded ahead"})
    conv_template: str | None = field(default=None, metadata={"help": "LLaVA-Video: qwen_1_5 / chatml_direct"})
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen2.5-VL min pixels per frame"})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen2.5-VL max pixels per frame"})
    time_encoding: str | None = field(default=None, metadata={"help": "Qwen2.5-VL: real / mean / none"})


def _coerce(value: Any, default: Any) -> Any:
    """lmms-eval passes `--model_args` values as parsed scalars; None-defaulted ones stay as given."""
    if isinstance(default, bool) and isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    if isinstance(default, int) and not isinstance(default, bool) and value is not None:
        return int(value)
    if isinstance(default, float) and value is not None:
        return float(value)
    return value


def parse_model_args(model_name: str, raw: dict[str, Any]) -> ModelArgs:
    """Validated `ModelArgs`; an unknown or inapplicable key is an error naming the valid ones."""
    flavour = FLAVOURS[model_name]
    foreign = {o for kind, opts in BACKBONE_OPTIONS.items() if kind != flavour.backbone for o in opts}
    valid = sorted(f.name for f in fields(ModelArgs) if f.name not in foreign)
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"{model_name}: unknown model_args {', '.join(unknown)}; valid: {', '.join(valid)}")
    defaults = ModelArgs()
    args = ModelArgs(**{k: _coerce(v, getattr(defaults, k)) for k, v in raw.items()})
    args.pretrained = args.pretrained or flavour.pretrained
    args.method = args.method or flavour.method
    for option, value in BACKBONE_DEFAULTS[flavour.backbone].items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    return args


def question_ref(doc: dict, context: str, doc_to_visual, fallback_index: str):
    """A `QuestionRef` from an lmms-eval document.

    Documents of the tspo tasks carry `index`, `benchmark`, `video_path` and the stem in
    `question`; for other video tasks the video comes from `doc_to_visual`, the id is
    task/split/doc_id and the whole prompt stands in for the stem.
    """
    from ..answering import QuestionRef

    video = doc.get("video_path") or doc_to_visual(doc)[0]
    return QuestionRef(index=str(doc.get("index", fallback_index)), benchmark=str(doc.get("benchmark", "")),
                       video_path=str(video), question=str(doc.get("question") or context), prompt=context)


def model_class(model_name: str) -> type:
    """The lmms-eval model class for one of FLAVOURS (built lazily: lmms-eval is imported here)."""
    if model_name in _CLASSES:
        return _CLASSES[model_name]
    from lmms_eval.api.model import lmms

    class TSPOVideoModel(lmms):
        is_simple = True

        def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None,
                     device: str | None = None, **model_args: Any) -> None:
            super().__init__()
            import torch

            from ..answering import AnswerConfig, FrameConfig, FramePlanner
            from ..backbones import load_backbone
            from ..cache import FeatureCache
            from ..distributed import local_device

            self.args = parse_model_args(model_name, model_args)
            # lmms-eval passes cuda:0 by default; each rank takes its own GPU (CPU when there is none)
            self._device = torch.device(device) if device == "cpu" else local_device()
            self.batch_size_per_gpu = int(batch_size) if str(batch_size) != "auto" else 1
            options = {o: getattr(self.args, o) for o in BACKBONE_OPTIONS[FLAVOURS[model_name].backbone]
                       if getattr(self.args, o) is not None}
            self.backbone = load_backbone(FLAVOURS[model_name].backbone, self.args.pretrained,
                                          dtype=self.args.dtype, device=self._device,
                                          attn_implementation=self.args.attn_implementation, **options)
            frames = FrameConfig(method=self.args.method, k=self.args.k, fps=self.args.fps,
                                 max_frames=self.args.max_frames, selections=self.args.selections,
                                 official=self.args.official)
            self.planner = FramePlanner(frames, agent=self.args.agent, cache=FeatureCache(self.args.cache_dir),
                                        device=self._device, dtype=self.backbone.dtype)
            self.answer_cfg = AnswerConfig(batch_size=self.batch_size_per_gpu, decode_workers=self.args.decode_workers,
                                           prefetch=self.args.prefetch)

        @property
        def device(self):
            return self._device

        @property
        def batch_size(self) -> int:
            return self.batch_size_per_gpu

        def _record_path(self) -> str | None:
            if self.args.record is None:
                return None
            return self.args.record if self.world_size == 1 else f"{self.args.record}.rank{self.rank}"

        def generate_until(self, requests) -> list[str]:
            from dataclasses import replace

            from ..answering import answer_questions

            refs, budgets = [], []
            for context, gen_kwargs, doc_to_visual, doc_id, task, split in (r.args for r in requests):
                doc = self.task_dict[task][split][doc_id]
                refs.append(question_ref(doc, context, doc_to_visual, f"{task}/{split}/{doc_id}"))
                budgets.append(int(gen_kwargs.get("max_new_tokens", 16)))
            texts: list[str] = [""] * len(refs)
            for budget in sorted(set(budgets)):
                members = [i for i, b in enumerate(budgets) if b == budget]
                answers = answer_questions([refs[i] for i in members], self.planner, self.backbone,
                                           replace(self.answer_cfg, max_new_tokens=budget),
                                           record=self._record_path(), progress=self.rank == 0)
                for i, answer in zip(members, answers):
                    texts[i] = answer.text
            return texts

        def loglikelihood(self, requests):
            raise NotImplementedError(f"{model_name} answers multiple-choice video questions by generation only")

        def generate_until_multi_round(self, requests):
            raise NotImplementedError(f"{model_name} does not support multi-round generation")

    TSPOVideoModel.__name__ = TSPOVideoModel.__qualname__ = _class_name(model_name)
    _CLASSES[model_name] = TSPOVideoModel
    return TSPOVideoModel


_CLASSES: dict[str, type] = {}


def _class_name(model_name: str) -> str:
    return "".join(part.title() for part in model_name.split("_"))


def __getattr__(name: str) -> type:
    """`tspo_eval.integrations.lmms_eval.LlavaVidTspo` etc.: the class paths the manifests name."""
    for model_name in FLAVOURS:
        if _class_name(model_name) == name:
            return model_class(model_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def manifests() -> list:
    """Entry point of the `lmms_eval.models` group: one manifest per model name."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=f"{__name__}.{_class_name(name)}") for name in FLAVOURS]
