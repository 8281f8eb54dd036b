"""The frame policy: everything that decides which frames a question gets, in one typed object.

`FramePolicy` holds the selection method, its parameters, the score source, K, `official`,
the published loader `official` reproduces for uniform frames, an optional precomputed
selections file, and the candidate sampling that keys the feature cache (`Sampling`).
Stage configs contain a policy instead of re-declaring these fields, and every entry point
(CLI commands, lmms-eval and VLMEvalKit model arguments, training, data selection) builds it
with `parse_policy`, from the same flat keys spelled the same way everywhere:

    method, k, params, scores, blip_model, official, loader, selections, fps, max_frames, decode_resize

(`params` is `KEY=VALUE[;KEY=VALUE...]`, e.g. `params=preset=tspo;t1=0.5`.)  Options are
checked when the policy is built, so a typo fails before any weights load.

`ExtractConfig` holds the extraction performance knobs (decoder backend, readers, threads,
worker processes, ...): they change how fast features are made, never which, so they are not
part of the policy's identity or the cache key, but every entry point that may extract
features takes them through `parse_extract`, with the same spelling.

This module imports nothing heavy: the lmms-eval entry point and `--help` stay cheap.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ScoreSource = Literal["auto", "agent", "clip", "blip"]
Loader = Literal["llava_video", "qwen2_5_vl"]
POLICY_FORMAT = "tspo-eval/frame-policy@1"
# AKS's scorer: LAVIS blip_image_text_matching "large" = BLIP ViT-L fine-tuned for COCO retrieval
BLIP_DEFAULT_MODEL = "Salesforce/blip-itm-large-coco"


@dataclass(frozen=True)
class Sampling:
    """How candidate frames are sampled from a video: these settings key the feature cache."""

    fps: float = field(default=1.0, metadata={"help": "candidate frames per second (TSPO: 1)"})
    max_frames: int | None = field(default=None, metadata={
        "help": "cap on candidates per video, spread uniformly when exceeded (TSPO evaluation: none)"})
    decode_resize: bool = field(default=False, metadata={
        "help": "scale frames to the encoder's input size while decoding (faster for large videos; "
                "features within tolerance of the reference resize, cached under their own key)"})

    def __post_init__(self) -> None:
        _check_types(self)
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 (or none), got {self.max_frames}")


@dataclass(frozen=True)
class FramePolicy:
    """Which frames each question gets (see the module docstring)."""

    method: str = field(default="tspo", metadata={
        "help": "uniform (K frames over all decoded frames) | evenly-spaced (K spread over the candidates) | topk | "
                "bin-max | aks | tspo (agent scores + the benchmark's published method) | a registered selector"})
    k: int = field(default=64, metadata={"help": "frames per question"})
    params: Mapping[str, Any] = field(default_factory=dict, metadata={
        "help": "the method's parameters, KEY=VALUE[;KEY=VALUE], e.g. preset=tspo;t1=0.5 (aks)"})
    scores: ScoreSource = field(default="auto", metadata={
        "help": "auto: agent for tspo, CLIP cosine for the others; or force agent / clip / blip (BLIP "
                "image-text matching probability, as AKS scores; cached per video and question)"})
    official: bool = field(default=False, metadata={
        "help": "feed what the published code feeds: sorted(frames[:k]), K uniform frames over the whole video "
                "when fewer than K were chosen, the published uniform loaders (docs/frame_policy.md)"})
    loader: Loader = field(default="llava_video", metadata={
        "help": "whose published uniform loader `official` reproduces (set from the backbone where one is known)"})
    selections: str | None = field(default=None, metadata={
        "help": "precomputed frames: a tspo-eval selections file, a published frame_idx JSON, or a folder of "
                "<method>_<benchmark>.json files (as `tspo-eval select` writes them)"})
    sampling: Sampling = field(default_factory=Sampling)
    blip_model: str | None = field(default=None, metadata={
        "help": f"scores=blip: BLIP ITM checkpoint, a directory or hub id (default {BLIP_DEFAULT_MODEL})"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", parse_params(self.params))
        _check_types(self)
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        _check_method(self.method, self.k, self.params)

    @property
    def score_source(self) -> Literal["agent", "clip", "blip"]:
        """The scores a computed selection uses."""
        if self.scores != "auto":
            return self.scores
        return "agent" if self.method == "tspo" else "clip"

    def identity(self) -> dict[str, Any]:
        """Every setting that can change a frame, as plain JSON values (what a selections file
        records as its policy); `loader` only where it matters (official uniform frames)."""
        flat = _flat(self)
        if not (self.official and self.method == "uniform"):
            del flat["loader"]
        if self.score_source == "blip":
            flat["blip_model"] = self.blip_model or BLIP_DEFAULT_MODEL
        else:
            del flat["blip_model"]
        return {"format": POLICY_FORMAT, **flat}

    def fingerprint(self) -> str:
        """A stable 16-hex-digit id of this policy: equal policies, equal ids, in any process."""
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_args(self) -> dict[str, str]:
        """The flat `key -> value` strings `parse_policy` reads back into an equal policy
        (model arguments, command lines), settings at their default left out."""
        default = _flat(FramePolicy())
        return {key: _render(value) for key, value in _flat(self).items() if value != default[key]}

    def replace(self, **changes: Any) -> FramePolicy:
        """A copy with some flat keys changed (parsed and checked like any other input)."""
        return parse_policy(changes, base=self)


@dataclass(frozen=True)
class ExtractConfig:
    """How candidates are decoded and encoded: speed only, so not part of the cache key."""

    encode_batch: int = field(default=64, metadata={"help": "frames per encoder batch"})
    backend: Literal["auto", "decord", "pyav", "nvdec"] = field(default="auto", metadata={
        "help": "video decoder (auto: PyAV worker processes or decord threads, sized from the cores, see "
                "extract.decode_plan, and PyAV for files decord misnumbers: MPEG-TS/PS, HEVC, repeated times; "
                "nvdec: the GPU's decoders also take whole videos, docs/nvdec.md)"})
    decode_threads: int = field(default=0, metadata={"help": "decoder threads per reader (0: sized from the cores)"})
    readers: int = field(default=0, metadata={
        "help": "decoding readers per video, each taking runs of candidates that start at a keyframe "
                "(0: sized from the cores)"})
    prefetch_videos: int = field(default=2, metadata={"help": "videos decoded concurrently ahead of the encoder"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the encoder's image path: faster encoding when decoding keeps up, "
                "10-30 s start-up per process"})
    decode_processes: bool = field(default=False, metadata={
        "help": "decode in `readers` worker processes instead of threads, frames returned through shared "
                "memory: PyAV's threads contend for Python's lock, its processes do not (with --backend "
                "auto on a machine of 8+ cores this is chosen anyway)"})

    def to_args(self) -> dict[str, str]:
        """The flat `key -> value` strings `parse_extract` reads back (non-default settings only)."""
        default = dataclasses.asdict(ExtractConfig())
        return {k: _render(v) for k, v in dataclasses.asdict(self).items() if v != default[k]}

    def __post_init__(self) -> None:
        _check_types(self)
        if min(self.encode_batch, self.prefetch_videos) < 1 or min(self.readers, self.decode_threads) < 0:
            raise ValueError("encode_batch and prefetch_videos must be >= 1; readers and decode_threads >= 0 "
                             "(0: sized from the cores)")


# ----------------------------------------------------------------------------- the one parser
POLICY_KEYS = tuple(f.name for f in dataclasses.fields(FramePolicy) if f.name != "sampling") + tuple(
    f.name for f in dataclasses.fields(Sampling))
EXTRACT_KEYS = tuple(f.name for f in dataclasses.fields(ExtractConfig))


def _check_keys(raw: Mapping[str, Any], valid: Sequence[str], what: str, where: str) -> str:
    """The error prefix for `where`; ValueError naming any key of `raw` not in `valid`."""
    prefix = f"{where}: " if where else ""
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ValueError(f"{prefix}unknown {what} setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return prefix


def parse_policy(raw: Mapping[str, Any], base: FramePolicy | None = None, where: str = "") -> FramePolicy:
    """A checked `FramePolicy` from flat keys (POLICY_KEYS); values may be typed or strings
    ("32", "true", "none", "preset=tspo;t1=0.5").  Keys not given keep `base`'s values.

    An unknown key or a bad value raises ValueError naming it (and `where`, e.g. the model name).
    """
    prefix = _check_keys(raw, POLICY_KEYS, "frame policy", where)
    base = base or FramePolicy()
    try:
        cand = _coerce_into(Sampling, {k: v for k, v in raw.items() if k in _SAMPLING_KEYS})
        values = _coerce_into(FramePolicy, {k: v for k, v in raw.items() if k not in _SAMPLING_KEYS})
        return dataclasses.replace(base, **values, sampling=dataclasses.replace(base.sampling, **cand))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{prefix}{err}") from None


def parse_extract(raw: Mapping[str, Any], base: ExtractConfig | None = None, where: str = "") -> ExtractConfig:
    """A checked `ExtractConfig` from flat keys (EXTRACT_KEYS), as `parse_policy` does."""
    prefix = _check_keys(raw, EXTRACT_KEYS, "extraction", where)
    base = base or ExtractConfig()
    try:
        return dataclasses.replace(base, **_coerce_into(ExtractConfig, raw))
    except (ValueError, TypeError) as err:
        raise ValueError(f"{prefix}{err}") from None


def split_settings(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(policy keys, extraction keys, the rest) of a flat mapping of settings."""
    policy = {k: v for k, v in raw.items() if k in POLICY_KEYS}
    extract = {k: v for k, v in raw.items() if k in EXTRACT_KEYS}
    rest = {k: v for k, v in raw.items() if k not in POLICY_KEYS and k not in EXTRACT_KEYS}
    return policy, extract, rest


def parse_params(value: Any) -> dict[str, Any]:
    """Method parameters from a mapping, "KEY=VALUE[;KEY=VALUE]" or a list of such strings;
    numbers are cast (int, then float), everything else stays a string."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): _number(v) for k, v in value.items()}
    items = [value] if isinstance(value, str) else list(value)
    params: dict[str, Any] = {}
    for item in items:
        for part in str(item).split(";"):
            if not part.strip():
                continue
            key, sep, text = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"params: expected KEY=VALUE, got {part!r}")
            params[key.strip()] = _number(text.strip())
    return params


# ----------------------------------------------------------------------------- command-line flags
def add_policy_args(parser: argparse.ArgumentParser, defaults: FramePolicy | None = None,
                    include: tuple[str, ...] = POLICY_KEYS, exclude: tuple[str, ...] = ()) -> None:
    """One `--flag` per policy key (of `include`, not in `exclude`); values are read by
    `parse_policy` (`policy_from_args`), so flags are spelled as the keys with '-' for '_'."""
    defaults = defaults or FramePolicy()
    _add_flags(parser, [(FramePolicy, f) for f in dataclasses.fields(FramePolicy) if f.name in include]
               + [(Sampling, f) for f in dataclasses.fields(Sampling) if f.name in include], _flat(defaults),
               exclude)


def add_extract_args(parser: argparse.ArgumentParser, defaults: ExtractConfig | None = None) -> None:
    """One `--flag` per extraction knob; values are read by `parse_extract` (`extract_from_args`)."""
    _add_flags(parser, [(ExtractConfig, f) for f in dataclasses.fields(ExtractConfig)],
               dataclasses.asdict(defaults or ExtractConfig()), ())


def policy_from_args(ns: argparse.Namespace, base: FramePolicy | None = None) -> FramePolicy:
    """The policy of the flags given (others keep `base`'s values)."""
    return parse_policy(_given(ns, POLICY_KEYS), base)


def extract_from_args(ns: argparse.Namespace, base: ExtractConfig | None = None) -> ExtractConfig:
    """The extraction knobs of the flags given (others keep `base`'s values)."""
    return parse_extract(_given(ns, EXTRACT_KEYS), base)


# ----------------------------------------------------------------------------- helpers
_SAMPLING_KEYS = frozenset(f.name for f in dataclasses.fields(Sampling))
_UNSET = None  # argparse default of every policy / extraction flag: "not given"


def _flat(policy: FramePolicy) -> dict[str, Any]:
    out = {f.name: getattr(policy, f.name) for f in dataclasses.fields(FramePolicy) if f.name != "sampling"}
    out["params"] = dict(sorted(policy.params.items()))
    out.update(dataclasses.asdict(policy.sampling))
    return out


def _render(value: Any) -> str:
    if isinstance(value, Mapping):
        return ";".join(f"{k}={v}" for k, v in value.items())
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """`value` (typed, or a string from a command line / model arguments) as `hint` requires."""
    if _is_union(hint):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return _coerce(name, inner[0], value)
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return parse_params(value)
    if hint is bool:
        try:
            return parse_bool(value)
        except ValueError as err:
            raise ValueError(f"{name}={err}") from None
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not an integer")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r} is not an integer") from None
        if not number.is_integer():
            raise ValueError(f"{name}={value!r} is not an integer")
        return int(number)
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={value!r} is not a number") from None
    if hint is str:
        return str(value)
    return value


def parse_bool(value: Any) -> bool:
    """A boolean setting: true / false / 1 / 0 (any case) or a bool; anything else is an error
    (a loose reading takes "false", "no" or a typo as True)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{value!r} is not a boolean: use true, false, 1 or 0")


def add_bool_flag(parser: argparse.ArgumentParser, flag: str, help_: str, default: Any = None) -> None:
    """A boolean flag, the same at every command: `--flag` alone is true, `--flag true|false|1|0` says it."""
    parser.add_argument(flag, nargs="?", const=True, type=_bool_argument, default=default, metavar="BOOL",
                        help=help_)


def _bool_argument(value: str) -> bool:
    """`parse_bool` as an argparse type: its message, not "invalid parse_bool value"."""
    try:
        return parse_bool(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def coerce_fields(cls: type, raw: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`raw`'s values as the field hints of the dataclass `cls` require (typed, or strings from a
    command line / model arguments); ValueError naming the key (and `where`)."""
    try:
        return _coerce_into(cls, raw)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {err}" if where else str(err)) from None


def _coerce_into(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {k: _coerce(k, hints[k], v) for k, v in raw.items()}


def _check_types(obj: Any) -> None:
    """Literal and scalar fields hold what their hints say, also when the dataclass is built
    directly (values are normalised: k=32.0 -> 32, fps=1 -> 1.0; k=2.5 or backend="pyv" raise)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not dataclasses.is_dataclass(hints[f.name]):
            object.__setattr__(obj, f.name, _coerce(f.name, hints[f.name], getattr(obj, f.name)))


def _check_method(method: str, k: int, params: Mapping[str, Any]) -> None:
    """The method exists, takes these parameters and accepts their values (a dry run on k + 1 scores)."""
    import numpy as np

    from .selection.registry import method_names, select, selector_of, takes

    if method not in method_names():
        raise ValueError(f"method={method!r} is not one of {', '.join(method_names())}")
    method = selector_of(method)
    scores = np.arange(k + 1, dtype=np.float64) % 7
    features = np.random.default_rng(0).standard_normal((k + 1, 8)) if takes(method, "features") else None
    select(scores, k, method, features, **params)


def _add_flags(parser: argparse.ArgumentParser, fields: list, defaults: dict[str, Any],
               exclude: tuple[str, ...]) -> None:
    for cls, f in fields:
        if f.name in exclude:
            continue
        hint = typing.get_type_hints(cls)[f.name]
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        help_ = f"{f.metadata.get('help', '')} (default {_render(defaults[f.name])})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if hint is bool:
            add_bool_flag(parser, flag, help_, _UNSET)
        elif f.name == "params":
            parser.add_argument(flag, action="append", default=_UNSET, metavar="KEY=VALUE", help=help_)
        else:
            parser.add_argument(flag, default=_UNSET, choices=choices, help=help_)


def _given(ns: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: getattr(ns, k) for k in keys if getattr(ns, k, _UNSET) is not _UNSET}
