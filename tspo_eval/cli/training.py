"""The training commands `tspo-eval train | train-llm | toy | select-data | export`, flags from the configs.

`train` and `train-llm` also take `--config FILE` (YAML or JSON, e.g. a run's saved
config.json): the file's values replace the defaults and flags given on the command line
replace the file's.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..config import add_config_args, add_config_file_args, config_from_args, config_with_file
from ..training.config import ExportConfig, LLMTrainConfig, ToyConfig, TrainConfig, VarianceConfig


def cmd_train(ns: argparse.Namespace) -> int:
    from .. import distributed
    from ..training.trainer import run_training

    history = run_training(config_with_file(TrainConfig, ns))
    if history and distributed.rank() == 0:
        last = history[-1]
        print(f"step {int(last['step'])}: reward {last['reward']:.3f}, accuracy {last['accuracy']:.3f}")
    return 0


def cmd_train_llm(ns: argparse.Namespace) -> int:
    from .. import distributed
    from ..training.llm_grpo import run_llm_training

    history = run_llm_training(config_with_file(LLMTrainConfig, ns))
    if history and distributed.rank() == 0:
        print(f"step {history[-1]['step']}: reward {history[-1]['reward']:.3f}, loss {history[-1]['loss']:.4f}")
    return 0


def cmd_toy(ns: argparse.Namespace) -> int:
    from ..training.toy import run_toy

    run_toy(config_from_args(ToyConfig, ns))
    return 0


def cmd_select_data(ns: argparse.Namespace) -> int:
    from ..training.variance import select_data

    report = select_data(config_with_file(VarianceConfig, ns))
    if report is not None:
        print(json.dumps(report["total"], indent=1))
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from ..training.export import export_checkpoint

    out = export_checkpoint(config_from_args(ExportConfig, ns))
    print(f"exported a TSPO-0.4B-layout agent to {out}")
    return 0


def _with_config_file(cls: type, run) -> Callable[[argparse.ArgumentParser], None]:
    def build(p: argparse.ArgumentParser) -> None:
        add_config_file_args(p, cls)
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
