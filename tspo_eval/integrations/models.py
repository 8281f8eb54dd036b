"""The model names both framework adapters expose, their arguments, and how they are built.

A name fixes the backbone and the default frame method (`*_uniform` models differ from
`*_tspo` only in the frames); the frame policy keys (`policy.POLICY_KEYS`: method, k, params,
official, fps, ...) and the extraction knobs (`policy.EXTRACT_KEYS`) are parsed by the same
parser as on the command line; everything else is a validated `ModelArgs` field.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..config import existing_path, former_spellings, model_location, with_new_spellings

from ..policy import (
    EXTRACT_KEYS,
    POLICY_KEYS,
    ExtractConfig,
    FramePolicy,
    coerce_fields,
    parse_extract,
    parse_policy,
    split_settings,
)

BACKBONE_OPTIONS = {
    "llava_video": ("conv_template", "compile_vision"),
    "qwen2_5_vl": ("min_pixels", "max_pixels", "time_encoding", "resize"),
}
# The published evaluation scripts (evaluation/*llava_video.sh) run LLaVA-Video with
# conv_template=chatml_direct, for uniform and TSPO alike; the backbone's own default is qwen_1_5.
BACKBONE_DEFAULTS = {"llava_video": {"conv_template": "chatml_direct"}, "qwen2_5_vl": {}}
# Under `official` (what the published code does), backbone options not given take the published
# behaviour: the Qwen2.5-VL wrapper passes no fps, so frame pairs sit 2 fps apart (`time_encoding=none`).
OFFICIAL_DEFAULTS = {"llava_video": {}, "qwen2_5_vl": {"time_encoding": "none"}}


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


@former_spellings
@dataclass
class ModelArgs:
    """`--model_args` of every tspo-eval model (backbone options only where they apply)."""

    pretrained: str | None = field(default=None, metadata={"help": "backbone directory or hub id"})
    agent: str = field(default="hzf666/TSPO-0.4B", metadata={"help": "TSPO-0.4B directory / hub id / random:<config>"})
    cache_dir: str = field(default="feature_cache", metadata={"help": "feature cache root"})
    dtype: Literal["bfloat16", "float16", "float32"] = field(default="bfloat16", metadata={"help": "backbone dtype"})
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] | None = field(default=None, metadata={
        "help": "sdpa (default) / flash_attention_2"})
    record: str | None = field(default=None, metadata={"help": "JSONL of every answer with its frames"})
    answer_threads: int = field(default=4, metadata={
        "help": "threads planning and decoding the next questions' frames while the backbone answers",
        "renamed_from": "decode_workers"})
    prefetch_questions: int = field(default=8, metadata={
        "help": "questions planned and decoded ahead of the backbone", "renamed_from": "prefetch"})
    conv_template: Literal["qwen_1_5", "chatml_direct"] | None = field(default=None, metadata={
        "help": "LLaVA-Video: qwen_1_5 / chatml_direct"})
    compile_vision: bool | None = field(default=None, metadata={
        "help": "LLaVA-Video: torch.compile the vision tower (~20% faster vision on an H200 after a ~45 s first call)"})
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen2.5-VL min pixels per frame"})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen2.5-VL max pixels per frame"})
    time_encoding: Literal["real", "mean", "none"] | None = field(default=None, metadata={
        "help": "Qwen2.5-VL: real / mean / none"})
    resize: Literal["published", "processor"] | None = field(default=None, metadata={
        "help": "Qwen2.5-VL: published (the fork's torchvision resize before the processor; default) / processor"})
    policy: FramePolicy = field(default_factory=FramePolicy, metadata={
        "help": "the frame policy (from the policy keys; method defaults to the model name's)"})
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata={
        "help": "how fast missing features are extracted (from the extraction keys)"})


DERIVED_ARGS = ("policy", "extract")  # ModelArgs fields built from other keys, not given directly


def parse_model_args(model_name: str, raw: dict[str, Any]) -> ModelArgs:
    """Validated `ModelArgs`; an unknown or inapplicable key is an error naming the valid ones."""
    flavour = FLAVOURS[model_name]
    raw = with_new_spellings(ModelArgs, raw, model_name)
    foreign = {o for kind, opts in BACKBONE_OPTIONS.items() if kind != flavour.backbone for o in opts}
    own = sorted(f.name for f in fields(ModelArgs) if f.name not in foreign and f.name not in DERIVED_ARGS)
    policy_raw, extract_raw, rest = split_settings(raw)
    unknown = sorted(set(rest) - set(own))
    if unknown:
        valid = sorted([*own, *POLICY_KEYS, *EXTRACT_KEYS])
        raise ValueError(f"{model_name}: unknown model_args {', '.join(unknown)}; valid: {', '.join(valid)}")
    args = ModelArgs(**coerce_fields(ModelArgs, rest, where=model_name))
    args.policy = parse_policy(policy_raw, FramePolicy(method=flavour.method, loader=flavour.backbone), model_name)
    args.extract = parse_extract(extract_raw, where=model_name)
    args.pretrained = args.pretrained or flavour.pretrained
    defaults = {**BACKBONE_DEFAULTS[flavour.backbone],
                **(OFFICIAL_DEFAULTS[flavour.backbone] if args.policy.official else {})}
    for option, value in defaults.items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    _check_paths(model_name, args)
    return args


def _check_paths(model_name: str, args: ModelArgs) -> None:
    """Paths that do not exist say so before any weights load (the hub client would answer
    "Repo id must be in the form ..."); enumerated options are checked by their Literal hints."""
    model_location(args.pretrained, f"{model_name}: pretrained", "a backbone checkpoint directory or a hub id "
                   f"(default {FLAVOURS[model_name].pretrained})")
    if not args.agent.startswith("random:"):
        model_location(args.agent, f"{model_name}: agent", "a TSPO-0.4B directory, a hub id (hzf666/TSPO-0.4B) "
                       "or random:<config>")
    if args.policy.selections is not None:
        existing_path(args.policy.selections, f"{model_name}: selections", "a selections file, a published "
                      "frame_idx JSON, or a folder of <method>_<benchmark>.json")


def build_answering(model_name: str, args: ModelArgs, device, answer_batch: int = 1):
    """(backbone, frame planner, answer settings) for one model name: the whole answering pipeline."""
    from ..answering import AnswerConfig
    from ..backbones import load_backbone
    from ..cache import FeatureCache
    from ..selection.stage import FramePlanner

    kind = FLAVOURS[model_name].backbone
    options = {o: getattr(args, o) for o in BACKBONE_OPTIONS[kind] if getattr(args, o) is not None}
    backbone = load_backbone(kind, args.pretrained, dtype=args.dtype, device=device,
                             attn_implementation=args.attn_implementation, **options)
    planner = FramePlanner(args.policy, agent=args.agent, cache=FeatureCache(args.cache_dir), extract=args.extract,
                           device=device, dtype=backbone.dtype)
    answer_cfg = AnswerConfig(answer_batch=answer_batch, answer_threads=args.answer_threads,
                              prefetch_questions=args.prefetch_questions)
    return backbone, planner, answer_cfg
