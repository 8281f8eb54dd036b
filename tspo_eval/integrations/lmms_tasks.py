"""The lmms-eval task configs shipped inside the package (their functions: `lmms_hooks`).

The configs are package data (`tspo_eval/tasks/<benchmark>/`), so an installed wheel has them:
`tspo-eval tasks-path` prints the folder for lmms-eval's `--include_path`.  lmms-eval 0.7.3's
own plugin route (`LMMS_EVAL_PLUGINS=<pkg>` adds `<pkg>.tasks`) does not work there: the path
is appended after the task index is built, and the same variable makes lmms-eval import
`<pkg>.models.AVAILABLE_MODELS`, a legacy model registry this package replaces with entry points.
"""
from __future__ import annotations

from pathlib import Path


def tasks_path() -> Path:
    """The folder of the tspo task configs inside the installed package (lmms-eval `--include_path`)."""
    return Path(__file__).resolve().parents[1] / "tasks"
