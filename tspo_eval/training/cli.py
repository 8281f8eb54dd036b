"""`tspo-eval train | train-llm | toy | select-data | export`: flags derived from the config dataclasses.

`train` and `train-llm` also take `--config FILE` (YAML or JSON, e.g. a run's saved
config.json): the file's values replace the defaults and flags given on the command line
replace the file's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import add_config_args, config_from_args
from ..policy import EXTRACT_KEYS
from .config import ExportConfig, LLMTrainConfig, ToyConfig, TrainConfig, VarianceConfig

_UNSET = object()


def _add_with_config_file(p: argparse.ArgumentParser, cls: type) -> None:
    """The dataclass's flags, plus --config; given flags are told apart from defaults."""
    p.add_argument("--config", type=Path, help="YAML / JSON file of field values (flags override it)")
    add_config_args(p, cls)
    hints = typing.get_type_hints(cls)
    p.set_defaults(**{f.name: None if typing.get_origin(hints[f.name]) is dict else _UNSET
                      for f in dataclasses.fields(cls)})


def config_with_file(cls: type, ns: argparse.Namespace) -> Any:
    """Dataclass defaults <- the --config file <- flags given on the command line."""
    from .config import load_config_file

    values = load_config_file(ns.config) if ns.config else {}
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


def cmd_train(ns: argparse.Namespace) -> int:
    from .. import distributed
    from .trainer import run_training

    history = run_training(config_with_file(TrainConfig, ns))
    if history and distributed.rank() == 0:
        last = history[-1]
        print(f"step {int(last['step'])}: reward {last['reward']:.3f}, accuracy {last['accuracy']:.3f}")
    return 0


def cmd_train_llm(ns: argparse.Namespace) -> int:
    from .. import distributed
    from .llm_grpo import run_llm_training

    history = run_llm_training(config_with_file(LLMTrainConfig, ns))
    if history and distributed.rank() == 0:
        print(f"step {history[-1]['step']}: reward {history[-1]['reward']:.3f}, loss {history[-1]['loss']:.4f}")
    return 0


def cmd_toy(ns: argparse.Namespace) -> int:
    from .toy import run_toy

    run_toy(config_from_args(ToyConfig, ns))
    return 0


def cmd_select_data(ns: argparse.Namespace) -> int:
    from .variance import select_data

    report = select_data(config_with_file(VarianceConfig, ns))
    if report is not None:
        print(json.dumps(report["total"], indent=1))
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from .export import export_checkpoint

    out = export_checkpoint(config_from_args(ExportConfig, ns))
    print(f"exported a TSPO-0.4B-layout agent to {out}")
    return 0


def _with_config_file(cls: type, run) -> Callable[[argparse.ArgumentParser], None]:
    def build(p: argparse.ArgumentParser) -> None:
        _add_with_config_file(p, cls)
        p.set_defaults(run=run)
    return build


def _plain(cls: type, run) -> Callable[[argparse.ArgumentParser], None]:
    def build(p: argparse.ArgumentParser) -> None:
        add_config_args(p, cls)
        p.set_defaults(run=run)
    return build


# name -> (one-line help, builder of its flags): `tspo_eval.cli` lists them and builds the one asked for
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "train": ("TSPO: train the agent head with GRPO against a frozen answerer",
              _with_config_file(TrainConfig, cmd_train)),
    "train-llm": ("Temporal-RLT: GRPO of the video LLM itself (LoRA or full)",
                  _with_config_file(LLMTrainConfig, cmd_train_llm)),
    "toy": ("offline toy training on generated videos (reward curve, score timelines)", _plain(ToyConfig, cmd_toy)),
    "select-data": ("variance-aware data selection: keep samples whose rewards disagree",
                    _with_config_file(VarianceConfig, cmd_select_data)),
    "export": ("write a trained head + its CLIP as a released-layout TSPO-0.4B directory",
               _plain(ExportConfig, cmd_export)),
}
