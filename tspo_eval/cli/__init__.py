"""`tspo-eval` command line: extract, select, inspect, quality, compare, convert, evaluate, demo, training, VLMEvalKit.

The top floor of the package: it imports the stages, nothing in the library imports it.
`evaluation` holds the benchmark commands, `training` the training ones, `vlmeval` the
VLMEvalKit ones; this module puts them under one parser.

Options come from the stage config dataclasses (their field help is the flag's help), so a
typo or a bad value fails before any video is decoded.  Building a parser imports no torch
(the configs live in `tspo_eval.config` / `tspo_eval.training.config`), and `main` builds
only the subcommand it is given: every `--help` answers at once, heavy imports happen when a
command runs.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence

from ..integrations.lmms_runner import LmmsEvalError
from .evaluation import COMMANDS as EVALUATION
from .training import COMMANDS as TRAINING


def _build_vlmeval(p: argparse.ArgumentParser) -> None:
    from .vlmeval import build_commands  # the adapter's model arguments: imported when asked for

    build_commands(p)


def _commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]]:
    """name -> (one-line help, builder of its flags), in the order `--help` lists them."""
    return {**EVALUATION, **TRAINING,
            "vlmeval": ("run tspo-eval models in VLMEvalKit; convert its dataset TSVs", _build_vlmeval)}


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `tspo-eval` parser; with `commands`, only those subcommands get their flags (the others
    are listed with their one-line help), which is how `main` keeps `--help` instant."""
    parser = argparse.ArgumentParser(prog="tspo-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = None if commands is None else set(commands)
    for name, (help_, build) in _commands().items():
        p = sub.add_parser(name, help=help_.replace("%", "%%"), description=help_)  # argparse formats help with %
        if wanted is None or name in wanted:
            build(p)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler, `timeout`, `docker stop`) taken as Ctrl-C: the clean-up runs (decoding
    processes stopped, their shared blocks deleted) instead of Python dying on the spot."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    ns = build_parser([command] if command else []).parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        return ns.run(ns)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (LmmsEvalError, OSError) as err:  # OSError: a full disk, a folder it may not write, ...
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C: a line, not a traceback from wherever the main thread was
        how = "terminated (SIGTERM)" if isinstance(err, _Terminated) else "interrupted"
        print(f"{how}: what was finished is kept (the feature cache, training checkpoints); the same "
              "command picks up from it (train / train-llm: add --resume)", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(err, _Terminated) else signal.SIGINT)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
