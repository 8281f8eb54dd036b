"""Stage configurations and their command-line form (flags, `--config FILE`), importable without torch.

The command line derives one flag per field of these dataclasses (the field's help is the
flag's help), so building a parser, and every `--help`, imports no model code: the heavy
modules (`demo`, `compare`) import their config from here (the frame policy and extraction
settings live in the equally light `tspo_eval.policy`) and load torch
only when a command runs.  Values are checked when a config is built, before any video is
decoded or weights load.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .deprecation import deprecation_note
from .policy import (
    EXTRACT_KEYS,
    ExtractConfig,
    FramePolicy,
    add_bool_flag,
    add_extract_args,
    extract_from_args,
    parse_extract,
    parse_params,
)

# dtype names accepted by the command line and the training export; torch dtypes via torch_dtype()
DTYPE_NAMES = ("bf16", "fp16", "fp32")


def torch_dtype(name: str):
    """The torch dtype of a DTYPE_NAMES entry (imports torch)."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


# ----------------------------------------------------------------------------- paths given by users
def existing_path(path: str | Path, what: str, valid: str, directory: bool = False) -> Path:
    """`path` when it exists (a directory if `directory`); otherwise an error naming the flag and what it takes."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such {'directory' if directory else 'file'}; give {valid}")
    if directory and not path.is_dir():
        raise NotADirectoryError(f"{what} {path}: not a directory; give {valid}")
    return path


def output_folder(path: str | Path, what: str) -> Path:
    """`path` made (parents too) before any work is done, so that a place results cannot be written to
    is said at once, not after the work (which would be lost)."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotADirectoryError(f"{what} {path}: cannot be made a folder ({err.strerror}: {err.filename}); "
                                 "give a place that can be written") from err
    return path


def looks_like_path(value: str) -> bool:
    """Whether `value` can only mean a local path: hub ids are `org/name`, never absolute, relative
    (`./`, `../`, `~`) or of more than two parts."""
    return (value.startswith(("/", "./", "../", "~")) or value in (".", "..") or value.count("/") > 1
            or value.endswith("/"))


def model_location(value: str, what: str, valid: str) -> str:
    """A model directory or hub id, as given; a value that looks like a path and does not exist (or is
    a file) is an error saying so, instead of the hub client's "Repo id must be in the form ..."."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {value}: not a directory; give {valid}")
    if not path.exists() and looks_like_path(value):
        raise FileNotFoundError(f"{what} {value}: no such directory; give {valid}")
    return value


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose tensors do not match its config.json."""


@contextlib.contextmanager
def safetensors_file(path: str | Path, device: str = "cpu") -> Iterator[Any]:
    """`safetensors.safe_open(path)`; a damaged file (usually a download cut short) is a
    CheckpointError naming it and what to do, not safetensors' bare header message."""
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(path), framework="pt", device=device)
    except SafetensorError as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err}); it was probably cut short "
                              "while downloading or saving: fetch or save it again") from err
    with handle as fh:
        yield fh


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Every tensor of a safetensors file, {name: tensor} (see `safetensors_file`)."""
    with safetensors_file(path, device) as fh:
        return {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is no dict)


# ----------------------------------------------------------------------------- renamed settings
# A renamed field carries its former spelling in `metadata["renamed_from"]`; the old spelling
# is accepted at every door (flag, YAML key, lmms-eval model_args, VLMEvalKit kwargs) for one
# release, with a one-line note naming the new one (docs/renames.md lists them).
def renamed_from(cls: type) -> dict[str, str]:
    """{former spelling: field name} of the renamed fields of the config dataclass `cls`."""
    return {f.metadata["renamed_from"]: f.name for f in dataclasses.fields(cls) if "renamed_from" in f.metadata}


def with_new_spellings(cls: type, raw: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`raw` with the former spellings of `cls`'s settings replaced by the new ones (a note each);
    a setting given under both spellings is an error."""
    renamed = renamed_from(cls)
    values = dict(raw)
    for old in [key for key in values if key in renamed]:
        new = renamed[old]
        if new in values:
            raise ValueError(f"{where + ': ' if where else ''}{old} and {new} are the same setting: give {new} only")
        deprecation_note(old, new, where)
        values[new] = values.pop(old)
    return values


def former_spellings(cls: type) -> type:
    """Class decorator: the dataclass `cls` also takes its fields' former spellings as keyword arguments."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **with_new_spellings(cls, kwargs, cls.__name__))

    cls.__init__ = __init__
    return cls


class _FormerFlag(argparse.Action):
    """A renamed flag's former spelling (hidden from --help): sets the new one, with a note."""

    def __init__(self, option_strings: list[str], dest: str, new_flag: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        deprecation_note(option_string, self.new_flag)
        setattr(namespace, self.dest, values)


# ----------------------------------------------------------------------------- dataclass <-> argparse
def literal_choices(hint: Any) -> tuple:
    """The values of a `Literal[...]` or `Literal[...] | None` hint; () for any other hint."""
    if _is_union(hint):
        return tuple(v for a in typing.get_args(hint) if typing.get_origin(a) is typing.Literal
                     for v in typing.get_args(a))
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def add_config_args(parser: argparse.ArgumentParser, cls: type, exclude: Sequence[str] = ()) -> None:
    """One `--flag` per field of the config dataclass `cls` (but those in `exclude`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        if hints[f.name] is ExtractConfig:  # a contained ExtractConfig: its knobs' flags, spelled as everywhere
            add_extract_args(parser)
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        help_ = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if f.default is dataclasses.MISSING else f.default
        args = typing.get_args(hint)
        choices = literal_choices(hint)
        if required:
            base = str if choices else hint
            parser.add_argument(flag, required=True, type=base, choices=choices or None, help=help_)
        elif hint is bool:
            add_bool_flag(parser, flag, f"{help_} (default {default})", default)
        elif typing.get_origin(hint) is dict:
            parser.add_argument(flag, metavar="KEY=VALUE", action="append", default=[], help=help_)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, nargs="+", type=args[0], default=default, help=f"{help_} (default {default})")
        elif choices:
            parser.add_argument(flag, choices=choices, default=default, help=f"{help_} (default {default})")
        else:
            base = next((a for a in args if a is not type(None)), hint) if _is_union(hint) else hint
            if base is bool:  # Optional[bool]: None (unset) unless given
                add_bool_flag(parser, flag, f"{help_} (default {default})", default)
                continue
            parser.add_argument(flag, type=base, default=default, help=f"{help_} (default {default})")
            if "renamed_from" in f.metadata:
                parser.add_argument("--" + f.metadata["renamed_from"].replace("_", "-"), dest=f.name, type=base,
                                    action=_FormerFlag, new_flag=flag, default=argparse.SUPPRESS,
                                    help=argparse.SUPPRESS)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def config_from_args(cls: type, ns: argparse.Namespace) -> Any:
    """Build `cls` from parsed flags (dict fields from repeated KEY=VALUE)."""
    values = {}
    for f in dataclasses.fields(cls):
        if typing.get_type_hints(cls)[f.name] is ExtractConfig:  # the file's (or default) knobs <- the flags
            given = getattr(ns, f.name, None)
            base = given if isinstance(given, ExtractConfig) else parse_extract(given or {}, where=f.name)
            values[f.name] = extract_from_args(ns, base)
            continue
        value = getattr(ns, f.name)
        origin = typing.get_origin(typing.get_type_hints(cls)[f.name])
        if isinstance(value, list) and origin is dict:
            value = dict(_key_value(item) for item in value)
        elif isinstance(value, list) and origin is tuple:
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def _key_value(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise SystemExit(f"error: expected KEY=VALUE, got {item!r}")
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, raw



# ----------------------------------------------------------------------------- --config FILE
_UNSET = object()


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Field values from a YAML or JSON file (a saved run's config.json works too)."""
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise TypeError(f"{path}: expected a mapping of config fields")
    return values


def add_config_file_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """The dataclass's flags, plus --config; given flags are told apart from defaults."""
    parser.add_argument("--config", type=Path, help="YAML / JSON file of field values (flags override it)")
    add_config_args(parser, cls)
    hints = typing.get_type_hints(cls)
    parser.set_defaults(**{f.name: None if typing.get_origin(hints[f.name]) is dict else _UNSET
                           for f in dataclasses.fields(cls)})


def config_with_file(cls: type, ns: argparse.Namespace) -> Any:
    """Dataclass defaults <- the --config file <- flags given on the command line."""
    values = with_new_spellings(cls, load_config_file(ns.config), str(ns.config)) if ns.config else {}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{ns.config}: unknown field(s) {', '.join(unknown)}")
    merged = argparse.Namespace(**{k: getattr(ns, k) for k in EXTRACT_KEYS if hasattr(ns, k)})  # flags for `extract`
    for f in dataclasses.fields(cls):
        given = getattr(ns, f.name)
        if given is not _UNSET and given is not None:
            setattr(merged, f.name, given)
        elif f.name in values:
            setattr(merged, f.name, values[f.name])
        elif f.default is not dataclasses.MISSING:
            setattr(merged, f.name, f.default)
        else:
            setattr(merged, f.name, f.default_factory())
    return config_from_args(cls, merged)

# ----------------------------------------------------------------------------- stage configs
# K = 8 of 120 candidates (uniform then hits about a quarter of the segments); the policy flags
# (--k, --official, --fps, ...) apply to every method and to the training rollouts' K.
DEMO_POLICY = FramePolicy(k=8)


@dataclass
class DemoConfig:
    """The generated splits, the training run and the evaluation over the held-out split."""

    out: Path = field(default=Path("demo_out"), metadata={"help": "output folder (a rerun reuses what is valid)"})
    agent: str | None = field(default=None, metadata={
        "help": "evaluate this agent (TSPO-0.4B directory or hub id) instead of training one"})
    base_agent: str = field(default="random:clip-tiny", metadata={
        "help": "the agent whose head the demo trains (random:<config>: nothing downloaded)"})
    train_videos: int = field(default=64, metadata={"help": "generated training videos (one question each)"})
    heldout_videos: int = field(default=60, metadata={"help": "generated held-out videos (one question each)"})
    duration: float = field(default=120.0, metadata={"help": "seconds per generated video"})
    video_fps: float = field(default=4.0, metadata={"help": "frame rate of the generated videos"})
    needle: float = field(default=3.0, metadata={"help": "seconds of the answer-bearing segment"})
    steps: int = field(default=800, metadata={"help": "GRPO optimiser steps (2 questions each)"})
    rollouts: int = field(default=8, metadata={"help": "G: rollouts per question"})
    lr: float = field(default=5e-3, metadata={
        "help": "AdamW learning rate (above the paper's 5e-4: a tiny random CLIP separates frames weakly)"})
    examples: int = field(default=3, metadata={"help": "held-out questions drawn as timelines and frame rows"})
    seed: int = field(default=0, metadata={
        "help": "seed of the videos and of the head's training (the intervals' bootstrap: fixed seed 0)"})

    def __post_init__(self) -> None:
        if min(self.train_videos, self.heldout_videos, self.steps) < 1 or self.examples < 0:
            raise ValueError("train_videos, heldout_videos and steps must be >= 1, examples >= 0")
        if self.rollouts < 2:
            raise ValueError("GRPO needs at least 2 rollouts per question")


# `tspo-eval compare`: every selector by default; accuracy through lmms-eval on one of BACKBONES
DEFAULT_METHODS = ("uniform", "topk", "bin-max", "aks", "bolt", "dpp", "focus", "tspo")
BACKBONES = ("llava_video", "qwen2_5_vl")


@dataclass
class CompareConfig:
    """Which selectors are compared, at which budget, and where the results go."""

    methods: tuple[str, ...] = field(default=DEFAULT_METHODS, metadata={
        "help": "selectors, each NAME or NAME:KEY=VALUE[,KEY=VALUE] (e.g. aks:preset=tspo bolt:power=2); "
                "methods scored by the agent (tspo) are skipped when no --agent is given"})
    out: Path = field(default=Path("compare"), metadata={"help": "output folder"})
    tolerance: float = field(default=0.5, metadata={"help": "seconds a frame may lie outside a reference span"})
    backbone: str | None = field(default=None, metadata={
        "help": "llava_video | qwen2_5_vl: also score accuracy through lmms-eval (needs a GPU); none: quality only"})
    pretrained: str | None = field(default=None, metadata={"help": "backbone directory / hub id (default: 7B)"})
    limit: int | None = field(default=None, metadata={"help": "lmms-eval --limit (first N questions)"})
    model_args: str = field(default="", metadata={
        "help": "extra lmms-eval model_args for the backbone, e.g. dtype=float32,device=cpu"})

    def __post_init__(self) -> None:
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("give at least one method")
        specs = [method_spec(m) for m in self.methods]  # raises on an unknown method or parameter
        labels = [label for label, _ in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"methods repeat: {', '.join(labels)}")
        if self.backbone is not None and self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)} (or none), got {self.backbone!r}")
        if self.backbone is not None and any(label != cfg.method for label, cfg in specs):
            raise ValueError("accuracy runs each method by name through lmms-eval: drop the method parameters "
                             "(NAME:KEY=VALUE) or the --backbone")


# policy keys a method spec may set beside the selector's parameters ("aks:scores=blip")
SPEC_POLICY_KEYS = ("scores", "blip_model")


def method_spec(spec: str, base: FramePolicy | None = None) -> tuple[str, FramePolicy]:
    """("label", the policy `base` (K, official, sampling) with this method and parameters) of
    "NAME" or "NAME:KEY=VALUE[,KEY=VALUE]"; the label is the spec itself. `scores` and
    `blip_model` among the KEYs set the policy's score source ("aks:scores=blip"), the others
    are the selector's parameters."""
    name, _, raw = spec.partition(":")
    try:
        params = parse_params(raw.replace(",", ";"))
    except ValueError:
        raise ValueError(f"method {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]") from None
    from .selection.registry import method_names

    if name not in method_names():
        raise ValueError(f"unknown method {name!r} in {spec!r}; known: {', '.join(method_names())}")
    scoring = {key: params.pop(key) for key in SPEC_POLICY_KEYS if key in params}
    return spec, (base or FramePolicy()).replace(method=name, params=params, **scoring)
