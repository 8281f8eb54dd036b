"""`tspo-eval` command line: extract, select, inspect, quality, compare, evaluate, demo, training and VLMEvalKit.

Options come from the stage config dataclasses (their field help is the flag's help), so a
typo or a bad value fails before any video is decoded.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- dataclass <-> argparse
def add_config_args(parser: argparse.ArgumentParser, cls: type, exclude: Sequence[str] = ()) -> None:
    """One `--flag` per field of the config dataclass `cls` (but those in `exclude`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        help_ = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if f.default is dataclasses.MISSING else f.default
        args = typing.get_args(hint)
        if required:
            base = str if typing.get_origin(hint) is typing.Literal else hint
            parser.add_argument(flag, required=True, type=base, choices=args or None, help=help_)
        elif hint is bool:
            parser.add_argument(flag, action="store_true", help=help_)
        elif typing.get_origin(hint) is dict:
            parser.add_argument(flag, metavar="KEY=VALUE", action="append", default=[], help=help_)
        elif typing.get_origin(hint) is tuple:
            parser.add_argument(flag, nargs="+", type=args[0], default=default, help=f"{help_} (default {default})")
        elif typing.get_origin(hint) is typing.Literal:
            parser.add_argument(flag, choices=args, default=default, help=f"{help_} (default {default})")
        else:
            base = next((a for a in args if a is not type(None)), hint) if _is_union(hint) else hint
            if base is bool:  # bool(str) is True for "false": accept true/false/1/0 only
                from .policy import parse_bool as base
            parser.add_argument(flag, type=base, default=default, help=f"{help_} (default {default})")


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def config_from_args(cls: type, ns: argparse.Namespace) -> Any:
    """Build `cls` from parsed flags (dict fields from repeated KEY=VALUE)."""
    values = {}
    for f in dataclasses.fields(cls):
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


# ----------------------------------------------------------------------------- shared options
def _add_benchmark_args(p: argparse.ArgumentParser, annotations: bool = False, videos: bool = True) -> None:
    p.add_argument("--benchmark", required=True, help="longvideobench | mlvu | videomme | lvbench (or registered)")
    p.add_argument("--tsv", required=True, type=Path, help="the benchmark's question TSV (published format)")
    if videos:
        p.add_argument("--video-root", type=Path, required=True, help="folder holding the benchmark's videos")
    if annotations:
        p.add_argument("--annotations", type=Path, help="original annotation file (for time references / export)")
    p.add_argument("--strict", action="store_true", help="refuse the whole file when a row is bad (default: refuse "
                                                         "that question alone, recorded as failed)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None, help="TSPO-0.4B directory or hub id (or random:<config>); "
                                                 "its CLIP is the encoder")
    p.add_argument("--encoder", default=None, help="open_clip:<model>[:<weights file>] instead of the agent's CLIP")
    p.add_argument("--cache", type=Path, default=Path("feature_cache"), help="feature cache root")
    p.add_argument("--dtype", choices=DTYPES, default=None, help="bf16 on CUDA, fp32 on CPU by default")
    p.add_argument("--device", default=None, help="cuda:N / cpu (default: this rank's GPU, else CPU)")


def _models(ns: argparse.Namespace):
    from .agent import load_agent
    from .distributed import local_device
    from .encoders import OpenClipEncoder

    device = torch.device(ns.device) if ns.device else local_device()
    dtype = DTYPES[ns.dtype] if ns.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    agent = load_agent(ns.agent, torch_dtype=dtype, device=device) if ns.agent else None
    if ns.encoder:
        _, name, *weights = ns.encoder.split(":", 2)
        encoder = OpenClipEncoder(name, weights[0] if weights else None, device=device, dtype=dtype)
    elif agent is not None:
        encoder = agent.encoder
    else:
        raise SystemExit("error: give --agent (TSPO-0.4B directory / hub id) or --encoder open_clip:<model>")
    return agent, encoder


def _questions(ns: argparse.Namespace, refused: list | None = None) -> list:
    """The benchmark's questions; bad rows are refused alone (printed, and appended to `refused`)
    unless --strict. A file without any question is an error: there is nothing to do."""
    from .benchmarks import load_benchmark

    rows: list | None = None if ns.strict else []
    questions = load_benchmark(ns.benchmark, ns.tsv, getattr(ns, "annotations", None), refused=rows)
    if rows:
        print(f"{len(rows)} row(s) refused, counted as failed questions (--strict refuses the file):", file=sys.stderr)
        print("\n".join(f"  REFUSED {row}" for row in rows[:_SHOWN]), file=sys.stderr)
        if len(rows) > _SHOWN:
            print(f"  ... and {len(rows) - _SHOWN} more", file=sys.stderr)
        if refused is not None:
            refused.extend(rows)
    if not questions and not rows:
        raise ValueError(f"{ns.tsv} holds no questions (a header and no rows?): nothing to do")
    return questions


_SHOWN = 5  # failures listed by name; the rest are counted


def _print_failures(failed: dict[str, str], names: dict[str, str]) -> None:
    """Failed questions grouped by reason (the question's video name and row numbers masked), largest first."""
    groups: dict[str, list[str]] = {}
    for index, why in failed.items():
        name = names.get(index)
        key = re.sub(r"\b(line|item) \d+", r"\1 N", why.replace(name, "<video>") if name else why)
        groups.setdefault(key, []).append(index)
    ordered = sorted(groups.items(), key=lambda group: -len(group[1]))
    for why, indices in ordered[:_SHOWN]:
        shown = ", ".join(indices[:3]) + (", ..." if len(indices) > 3 else "")
        print(f"  {len(indices)} failed ({shown}): {why}")
    if len(ordered) > _SHOWN:
        print(f"  ... {len(ordered) - _SHOWN} more reasons, {sum(len(i) for _, i in ordered[_SHOWN:])} questions")


# ----------------------------------------------------------------------------- commands
def cmd_extract(ns: argparse.Namespace) -> int:
    from . import distributed
    from .benchmarks import resolve_video
    from .cache import FeatureCache
    from .extract import ExtractReport, extract_videos
    from .policy import extract_from_args, policy_from_args

    sampling, cfg = policy_from_args(ns).sampling, extract_from_args(ns)
    refused: list = []
    questions = _questions(ns, refused)
    videos = sorted({str(resolve_video(ns.video_root, q.video_name, ns.benchmark)) for q in questions})
    if not videos:
        print(f"error: no video to extract: all {len(refused)} rows of {ns.tsv} were refused", file=sys.stderr)
        return 1
    _, encoder = _models(ns)
    mine = distributed.shard(videos)
    reports = ns.cache / "reports" / ns.benchmark
    report = extract_videos(mine, encoder, FeatureCache(ns.cache), sampling, cfg, progress=distributed.rank() == 0)
    report.save(reports / f"extract.rank{distributed.rank()}.json")
    distributed.barrier()
    if distributed.rank() != 0:
        return 0
    merged = ExtractReport()
    for r in range(distributed.world_size()):
        merged = merged.merge(ExtractReport.load(reports / f"extract.rank{r}.json"))
    merged.save(reports / "extract.json")
    print(f"{len(videos)} videos: {len(merged.encoded)} encoded, {len(merged.cached)} already cached, "
          f"{len(merged.failed)} failed (report: {reports / 'extract.json'})"
          + (f"; {len(refused)} refused row(s) (never read)" if refused else ""))
    for why in sorted(merged.failed.values()):
        print(f"  FAILED {why}")
    return 1 if merged.failed and not (merged.encoded or merged.cached) else 0


def cmd_select(ns: argparse.Namespace) -> int:
    from .benchmarks import get_benchmark
    from .cache import FeatureCache
    from .policy import extract_from_args, policy_from_args
    from .selections import SelectionSet, select_benchmark

    policy, extract = policy_from_args(ns), extract_from_args(ns)
    refused: list = []
    questions = _questions(ns, refused)
    agent, encoder = _models(ns)
    if questions:
        result = select_benchmark(questions, ns.video_root, encoder, FeatureCache(ns.cache), policy, extract, agent)
    else:
        result = SelectionSet({"benchmark": ns.benchmark, "method": policy.method, "k": policy.k,
                               "policy": policy.identity(), "fingerprint": policy.fingerprint()})
    result.failed.update({row.index: str(row) for row in refused})
    out = ns.out or Path(f"selections/{policy.method}_{ns.benchmark}.json")
    result.save(out)
    print(f"{len(result.selections)} questions selected, {len(result.failed)} failed -> {out}")
    _print_failures(result.failed, {q.index: q.video_name for q in questions})
    if not result.selections:
        print("error: no question got frames; the reasons are above", file=sys.stderr)
        return 1
    if ns.frame_idx_out:
        if not ns.annotations:
            raise SystemExit("error: --frame-idx-out needs --annotations (the benchmark's original JSON)")
        items = get_benchmark(ns.benchmark).read_items(ns.annotations)
        print(f"published frame_idx layout -> {result.to_frame_idx(items, ns.frame_idx_out)}")
    return 0


def cmd_inspect(ns: argparse.Namespace) -> int:
    from .cache import FeatureCache
    from .inspection import inspect_question
    from .policy import extract_from_args, policy_from_args

    policy, extract = policy_from_args(ns), extract_from_args(ns)
    questions = {q.index: q for q in _questions(ns)}
    if ns.question not in questions:
        raise SystemExit(f"error: no question {ns.question!r} in {ns.tsv}")
    agent, encoder = _models(ns)
    sel, timeline, grid = inspect_question(
        questions[ns.question], ns.video_root, encoder, FeatureCache(ns.cache), policy, ns.out / ns.question,
        extract, agent)
    print(f"{len(sel.frame_numbers)} of {sel.num_candidates} candidates chosen -> {timeline}, {grid}")
    return 0


def _time_ref_hint(ns: argparse.Namespace) -> str:
    """Why no question has a time reference: the annotations were not passed, or this benchmark has none."""
    from .benchmarks import BENCHMARKS, get_benchmark
    from .benchmarks.core import no_time_refs

    having = [f"{s.name} ({s.annotation_file})" for s in BENCHMARKS.values() if s.time_refs is not no_time_refs]
    spec = get_benchmark(ns.benchmark)
    if spec.time_refs is no_time_refs:
        return f"{spec.name} annotations hold no time references (those of {', '.join(having)} do)"
    if ns.annotations is None:
        return f"pass --annotations {spec.annotation_file} (the original annotation file holds them)"
    return f"{ns.annotations} gives none of these questions a known time reference"


def cmd_quality(ns: argparse.Namespace) -> int:
    from .quality import quality_table
    from .selections import SelectionSet

    runs = {}
    for path in ns.selections:
        run = SelectionSet.load(path)
        runs[f"{run.meta['method']} ({Path(path).stem})"] = run
    questions = _questions(ns)
    table = quality_table(runs, questions, ns.tolerance)
    if table["questions"].max() == 0:
        raise SystemExit(f"error: none of the {len(questions)} questions has a time reference; {_time_ref_hint(ns)}")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    return 0


def cmd_compare(ns: argparse.Namespace) -> int:
    from .cache import FeatureCache
    from .compare import CompareConfig, add_accuracy, compare_selectors, write_comparison
    from .policy import extract_from_args, policy_from_args

    cfg = config_from_args(CompareConfig, ns)
    policy, extract = policy_from_args(ns), extract_from_args(ns)
    questions = _questions(ns)
    agent, encoder = _models(ns)
    result = compare_selectors(questions, ns.video_root, encoder, FeatureCache(ns.cache), cfg, policy, extract, agent)
    paths = write_comparison(result, cfg.out, ns.benchmark)
    if cfg.backbone:
        add_accuracy(result, cfg, ns.benchmark, ns.annotations or ns.tsv, ns.video_root, ns.cache, ns.agent, policy,
                     extract)
        paths = write_comparison(result, cfg.out, ns.benchmark)
    print(result.table.to_markdown(floatfmt=".3f"))
    if not (result.table["questions"] > 0).any():
        print(f"NOTE: none of the {len(questions)} questions has a time reference: hit rate and coverage are n/a "
              f"({_time_ref_hint(ns)})")
    print(f"wrote {', '.join(str(p) for p in paths[:3])} and {len(paths) - 3} selections files")
    return 1 if not any(run.selections for run in result.runs.values()) else 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from .demo import DEMO_POLICY, DemoConfig, run_demo
    from .policy import extract_from_args, policy_from_args

    table = run_demo(config_from_args(DemoConfig, ns), policy_from_args(ns, DEMO_POLICY), extract_from_args(ns))
    return 0 if (table["questions"] > 0).all() else 1  # a method with nothing scored: the demo did not work


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from .evaluation import EvaluateConfig, evaluate
    from .policy import FramePolicy, extract_from_args, policy_from_args

    cfg = config_from_args(EvaluateConfig, ns)
    # the policy flags hold for every method (parameters are checked against the first)
    table = evaluate(cfg, policy_from_args(ns, FramePolicy(method=cfg.methods[0])), extract_from_args(ns))
    print(table.to_markdown(floatfmt=".2f"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .demo import DEMO_POLICY, DemoConfig
    from .evaluation import EvaluateConfig
    from .policy import add_extract_args, add_policy_args

    parser = argparse.ArgumentParser(prog="tspo-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="decode every benchmark video and cache its frame features")
    _add_benchmark_args(p)
    _add_model_args(p)
    add_policy_args(p, include=("fps", "max_frames", "decode_resize"))  # the sampling that keys the cache
    add_extract_args(p)
    p.set_defaults(run=cmd_extract)

    for name, func, help_ in (("select", cmd_select, "choose K frames for every question"),
                              ("inspect", cmd_inspect, "plot one question's scores and chosen frames")):
        p = sub.add_parser(name, help=help_)
        _add_benchmark_args(p, annotations=True)
        _add_model_args(p)
        add_policy_args(p, exclude=("selections",))  # its sampling: what the cache was filled with (its key)
        add_extract_args(p)
        p.set_defaults(run=func)
        if name == "select":
            p.add_argument("--out", type=Path, help="selections file (default selections/<method>_<benchmark>.json)")
            p.add_argument("--frame-idx-out", type=Path, help="also write the published frame_idx JSON layout")
        else:
            p.add_argument("--question", required=True, help="the question's TSV index")
            p.add_argument("--out", type=Path, default=Path("inspect"), help="folder for the PNGs")

    p = sub.add_parser("quality", help="time-reference hit rate of selection files (no LLM)")
    _add_benchmark_args(p, annotations=True, videos=False)
    p.add_argument("selections", nargs="+", type=Path, help="selections files to compare")
    p.add_argument("--tolerance", type=float, default=0.5, help="seconds a frame may lie outside a span")
    p.set_defaults(run=cmd_quality)

    from .compare import CompareConfig

    p = sub.add_parser("compare", help="every selector on one benchmark's cache -> one table and one chart")
    _add_benchmark_args(p, annotations=True)
    _add_model_args(p)
    add_config_args(p, CompareConfig)
    add_policy_args(p, include=("k", "official", "loader", "fps", "max_frames", "decode_resize"))  # every method
    add_extract_args(p)
    p.set_defaults(run=cmd_compare)

    p = sub.add_parser("evaluate", help="select frames, run lmms-eval per method, one table (uniform vs tspo)")
    add_config_args(p, EvaluateConfig)
    add_policy_args(p, exclude=("method", "loader"))  # every method runs under these; uniform under the backbone's loader
    add_extract_args(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("demo", help="offline, synthetic: train the agent on generated videos, compare it with uniform, "
                                    "topk and aks on held-out ones (quality table with 95%% intervals + pictures)")
    add_config_args(p, DemoConfig)
    add_policy_args(p, DEMO_POLICY, exclude=("method", "params", "scores", "selections"))
    add_extract_args(p)
    p.set_defaults(run=cmd_demo)

    from .integrations.vlmeval import add_commands as add_vlmeval_commands
    from .training.cli import add_commands as add_training_commands

    add_training_commands(sub)
    add_vlmeval_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    try:
        return ns.run(ns)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
