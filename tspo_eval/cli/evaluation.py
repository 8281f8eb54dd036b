"""The evaluation commands: extract, select, inspect, quality, compare, convert, evaluate, tasks-path, demo.

Every command that reads a benchmark takes `--benchmark NAME --annotations FILE [--videos DIR]`:
FILE is the published TSV (`LVBench.tsv`, ...) or the benchmark's original annotation file
(`video_info.meta.jsonl`, `lvb_val.json`, `mlvu.json`, `videomme.json`), told apart by its
`.tsv` suffix; the original file also gives the time references `quality` scores against.
The former spellings `--tsv` and `--video-root` are accepted as the same flags.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from ..config import (
    DEMO_POLICY,
    DTYPE_NAMES,
    CompareConfig,
    DemoConfig,
    add_config_args,
    config_from_args,
    existing_path,
    output_folder,
    torch_dtype,
)
from ..integrations.lmms_runner import EvaluateConfig
from ..policy import FramePolicy, add_bool_flag, add_extract_args, add_policy_args, extract_from_args, policy_from_args

BENCHMARK_NAMES = "longvideobench | mlvu | videomme | lvbench (or registered)"


# ----------------------------------------------------------------------------- shared options
class _Once(argparse.Action):
    """A flag with an old spelling: giving both spellings is an error, not a silent override."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            parser.error(f"{'/'.join(self.option_strings)} given twice")
        setattr(namespace, self.dest, values)


def _add_benchmark_args(p: argparse.ArgumentParser, videos: bool = True) -> None:
    p.add_argument("--benchmark", required=True, help=BENCHMARK_NAMES)
    p.add_argument("--annotations", "--tsv", required=True, type=Path, action=_Once, metavar="FILE",
                   help="the benchmark's questions: the published TSV (*.tsv) or its original annotation file "
                        "(video_info.meta.jsonl, lvb_val.json, mlvu.json, videomme.json; gives time references)")
    if videos:
        p.add_argument("--videos", "--video-root", type=Path, required=True, action=_Once, metavar="DIR",
                       help="folder holding the benchmark's videos (<DIR>/<video_name>, or the same name as "
                            ".MP4 / .mkv / .webm / .mov / .avi)")
    add_bool_flag(p, "--strict", "refuse the whole file when a row is bad (default: refuse that question alone, "
                                 "recorded as failed)", default=False)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None, help="TSPO-0.4B directory or hub id (or random:<config>); "
                                                 "its CLIP is the encoder")
    p.add_argument("--encoder", default=None, help="open_clip:<model>[:<weights file>] instead of the agent's CLIP")
    p.add_argument("--cache", type=Path, default=Path("feature_cache"), help="feature cache root")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="bf16 on CUDA, fp32 on CPU by default")
    p.add_argument("--device", default=None, help="cuda:N / cpu (default: this rank's GPU, else CPU)")


def _models(ns: argparse.Namespace):
    if ns.agent is None and not ns.encoder:
        raise SystemExit("error: give --agent (TSPO-0.4B directory / hub id) or --encoder open_clip:<model>")
    import torch

    from ..agent import load_agent
    from ..distributed import device_for
    from ..encoders import OpenClipEncoder

    device = device_for(ns.device)
    dtype = torch_dtype(ns.dtype) if ns.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    agent = load_agent(ns.agent, torch_dtype=dtype, device=device) if ns.agent else None
    if ns.encoder:
        _, name, *weights = ns.encoder.split(":", 2)
        encoder = OpenClipEncoder(name, weights[0] if weights else None, device=device, dtype=dtype)
    else:
        encoder = agent.encoder
    return agent, encoder


def _questions(ns: argparse.Namespace, refused: list | None = None) -> list:
    """The benchmark's questions from --annotations (TSV, or original file with time references);
    bad rows are refused alone (printed, and appended to `refused`) unless --strict. A file
    without any question is an error: there is nothing to do."""
    from ..benchmarks import get_benchmark, load_benchmark

    get_benchmark(ns.benchmark)  # an unknown name lists the known ones
    path = existing_path(ns.annotations, "--annotations", "the published TSV or the original annotation file")
    rows: list | None = None if ns.strict else []
    if path.suffix.lower() == ".tsv":
        questions = load_benchmark(ns.benchmark, path, refused=rows)
    else:
        questions = load_benchmark(ns.benchmark, annotation_path=path, refused=rows)
    if rows:
        print(f"{len(rows)} row(s) refused, counted as failed questions (--strict refuses the file):", file=sys.stderr)
        print("\n".join(f"  REFUSED {row}" for row in rows[:_SHOWN]), file=sys.stderr)
        if len(rows) > _SHOWN:
            print(f"  ... and {len(rows) - _SHOWN} more", file=sys.stderr)
        if refused is not None:
            refused.extend(rows)
    if not questions and not rows:
        raise ValueError(f"{path} holds no questions (a header and no rows?): nothing to do")
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


def _time_ref_hint(ns: argparse.Namespace) -> str:
    """Why no question has a time reference: a TSV was given, or this benchmark has none."""
    from ..benchmarks import BENCHMARKS, get_benchmark

    having = [f"{s.name} ({s.annotation_file})" for s in BENCHMARKS.values() if s.has_time_references]
    spec = get_benchmark(ns.benchmark)
    if not spec.has_time_references:
        return f"{spec.name} annotations hold no time references (those of {', '.join(having)} do)"
    if ns.annotations.suffix.lower() == ".tsv":
        return f"pass --annotations {spec.annotation_file} (the original annotation file holds them; a TSV does not)"
    return f"{ns.annotations} gives none of these questions a known time reference"


def _videos(ns: argparse.Namespace) -> Path:
    return existing_path(ns.videos, "--videos", "the folder holding the benchmark's videos", directory=True)


# ----------------------------------------------------------------------------- commands
def cmd_extract(ns: argparse.Namespace) -> int:
    from .. import distributed
    from ..benchmarks import resolve_video
    from ..cache import FeatureCache
    from ..extract import DecodeAhead, ExtractReport, extract_videos

    sampling, cfg = policy_from_args(ns).sampling, extract_from_args(ns)
    refused: list = []
    questions = _questions(ns, refused)
    root = _videos(ns)
    videos = sorted({str(resolve_video(root, q.video_name, ns.benchmark)) for q in questions})
    if not videos:
        print(f"error: no video to extract: all {len(refused)} rows of {ns.annotations} were refused", file=sys.stderr)
        return 1
    mine, cache = distributed.shard(videos), FeatureCache(ns.cache)
    # the first videos decode while the model is imported and loaded (seconds)
    ahead = DecodeAhead(mine, sampling, cfg, ns.device or distributed.local_device())
    try:
        _, encoder = _models(ns)
    except BaseException:
        ahead.cancel()
        raise
    reports = ns.cache / "reports" / ns.benchmark
    report = extract_videos(mine, encoder, cache, sampling, cfg, progress=distributed.rank() == 0, ahead=ahead)
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
    from ..benchmarks import get_benchmark
    from ..cache import FeatureCache
    from ..selection.stage import SelectionSet, select_benchmark

    policy, extract = policy_from_args(ns), extract_from_args(ns)
    if ns.frame_idx_out and ns.annotations.suffix.lower() == ".tsv":
        raise SystemExit("error: --frame-idx-out writes the original annotation items: give --annotations "
                         "the original file (lvb_val.json, mlvu.json, videomme.json, video_info.meta.jsonl)")
    refused: list = []
    questions, root = _questions(ns, refused), _videos(ns)
    out, cache = ns.out or Path(f"selections/{policy.method}_{ns.benchmark}.json"), FeatureCache(ns.cache)
    for path in filter(None, (out, ns.frame_idx_out)):
        output_folder(Path(path).parent, "--out" if path is out else "--frame-idx-out")
    agent, encoder = _models(ns)
    if questions:
        result = select_benchmark(questions, root, encoder, cache, policy, extract, agent)
    else:
        result = SelectionSet({"benchmark": ns.benchmark, "method": policy.method, "k": policy.k,
                               "policy": policy.identity(), "fingerprint": policy.fingerprint()})
    result.failed.update({row.index: str(row) for row in refused})
    result.save(out)
    print(f"{len(result.selections)} questions selected, {len(result.failed)} failed -> {out}")
    _print_failures(result.failed, {q.index: q.video_name for q in questions})
    if not result.selections:
        print("error: no question got frames; the reasons are above", file=sys.stderr)
        return 1
    if ns.frame_idx_out:
        items = get_benchmark(ns.benchmark).read_items(ns.annotations)
        print(f"published frame_idx layout -> {result.to_frame_idx(items, ns.frame_idx_out)}")
    return 0


def cmd_inspect(ns: argparse.Namespace) -> int:
    from ..cache import FeatureCache
    from ..inspection import inspect_question

    policy, extract = policy_from_args(ns), extract_from_args(ns)
    refused: list = []
    questions = {q.index: q for q in _questions(ns, refused)}
    if ns.question not in questions:
        why = next((f": its row was refused ({row})" for row in refused if row.index == ns.question), "")
        raise SystemExit(f"error: no question {ns.question!r} in {ns.annotations}{why}")
    root = _videos(ns)
    output_folder(ns.out / ns.question, "--out")
    agent, encoder = _models(ns)
    sel, timeline, grid = inspect_question(questions[ns.question], root, encoder, FeatureCache(ns.cache), policy,
                                           ns.out / ns.question, extract, agent)
    print(f"{len(sel.frame_numbers)} of {sel.num_candidates} candidates chosen -> {timeline}, {grid}")
    return 0


def cmd_quality(ns: argparse.Namespace) -> int:
    from ..quality import quality_table
    from ..selection.stage import SelectionSet

    runs = {}
    for path in ns.selections:
        run = SelectionSet.load(existing_path(path, "selections file", "a file written by `tspo-eval select`"))
        runs[f"{run.meta['method']} ({Path(path).stem})"] = run
    questions = _questions(ns)
    table = quality_table(runs, questions, ns.tolerance)
    if table["questions"].max() == 0:
        raise SystemExit(f"error: none of the {len(questions)} questions has a time reference; {_time_ref_hint(ns)}")
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    return 0


def cmd_compare(ns: argparse.Namespace) -> int:
    from ..cache import FeatureCache
    from ..compare import add_accuracy, compare_selectors, write_comparison

    cfg = config_from_args(CompareConfig, ns)
    policy, extract = policy_from_args(ns), extract_from_args(ns)
    refused: list = []
    questions, root = _questions(ns, refused), _videos(ns)
    output_folder(cfg.out, "--out")
    agent, encoder = _models(ns)
    result = compare_selectors(questions, root, encoder, FeatureCache(ns.cache), cfg, policy, extract, agent,
                               refused=refused)
    paths = write_comparison(result, cfg.out, ns.benchmark)
    if cfg.backbone:
        add_accuracy(result, cfg, ns.benchmark, ns.annotations, root, ns.cache, ns.agent, policy, extract)
        paths = write_comparison(result, cfg.out, ns.benchmark)
    print(result.table.to_markdown(floatfmt=".3f"))
    if not (result.table["questions"] > 0).any():
        print(f"NOTE: none of the {len(questions)} questions has a time reference: hit rate and coverage are n/a "
              f"({_time_ref_hint(ns)})")
    print(f"wrote {', '.join(str(p) for p in paths[:3])} and {len(paths) - 3} selections files")
    return 1 if not any(run.selections for run in result.runs.values()) else 0


def cmd_convert(ns: argparse.Namespace) -> int:
    from ..benchmarks import convert, get_benchmark, write_tsv

    spec = get_benchmark(ns.benchmark)
    source = existing_path(ns.annotations, "--annotations", f"the original annotation file ({spec.annotation_file})")
    if source.suffix.lower() == ".tsv":
        raise SystemExit(f"error: {source} is already a TSV; convert takes the original {spec.annotation_file}")
    out = ns.out or Path(spec.tsv_file)
    output_folder(out.parent, "--out")
    frame = convert(spec.name, source)
    write_tsv(frame, out)
    print(f"{len(frame)} questions of {source} -> {out} (the published {spec.tsv_file} layout)")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from ..demo import run_demo

    table = run_demo(config_from_args(DemoConfig, ns), policy_from_args(ns, DEMO_POLICY), extract_from_args(ns))
    return 0 if (table["questions"] > 0).all() else 1  # a method with nothing scored: the demo did not work


def cmd_evaluate(ns: argparse.Namespace) -> int:
    from ..integrations.lmms_runner import evaluate

    cfg = config_from_args(EvaluateConfig, ns)
    output_folder(cfg.out, "--out")
    # the policy flags hold for every method (parameters are checked against the first)
    table = evaluate(cfg, policy_from_args(ns, FramePolicy(method=cfg.methods[0])), extract_from_args(ns))
    print(table.to_markdown(floatfmt=".2f"))
    return 0


def cmd_tasks_path(ns: argparse.Namespace) -> int:
    from ..integrations.lmms_tasks import tasks_path

    print(tasks_path())
    return 0


# ----------------------------------------------------------------------------- parsers
def _build_extract(p: argparse.ArgumentParser) -> None:
    _add_benchmark_args(p)
    _add_model_args(p)
    add_policy_args(p, include=("fps", "max_frames", "decode_resize"))  # the sampling that keys the cache
    add_extract_args(p)
    p.set_defaults(run=cmd_extract)


def _build_select(p: argparse.ArgumentParser) -> None:
    _add_benchmark_args(p)
    _add_model_args(p)
    add_policy_args(p, exclude=("selections",))  # its sampling: what the cache was filled with (its key)
    add_extract_args(p)
    p.add_argument("--out", type=Path, help="selections file (default selections/<method>_<benchmark>.json)")
    p.add_argument("--frame-idx-out", type=Path, help="also write the published frame_idx JSON layout "
                                                      "(needs the original annotation file as --annotations)")
    p.set_defaults(run=cmd_select)


def _build_inspect(p: argparse.ArgumentParser) -> None:
    _add_benchmark_args(p)
    _add_model_args(p)
    add_policy_args(p, exclude=("selections",))
    add_extract_args(p)
    p.add_argument("--question", required=True, help="the question's TSV index")
    p.add_argument("--out", type=Path, default=Path("inspect"), help="folder for the PNGs")
    p.set_defaults(run=cmd_inspect)


def _build_quality(p: argparse.ArgumentParser) -> None:
    _add_benchmark_args(p, videos=False)
    p.add_argument("selections", nargs="+", type=Path, help="selections files to compare")
    p.add_argument("--tolerance", type=float, default=0.5, help="seconds a frame may lie outside a span")
    p.set_defaults(run=cmd_quality)


def _build_compare(p: argparse.ArgumentParser) -> None:
    _add_benchmark_args(p)
    _add_model_args(p)
    add_config_args(p, CompareConfig)
    add_policy_args(p, include=("k", "official", "loader", "fps", "max_frames", "decode_resize"))  # every method
    add_extract_args(p)
    p.set_defaults(run=cmd_compare)


def _build_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", required=True, help=BENCHMARK_NAMES)
    p.add_argument("--annotations", required=True, type=Path, metavar="FILE",
                   help="the original annotation file (video_info.meta.jsonl, lvb_val.json, mlvu.json, videomme.json)")
    p.add_argument("--out", type=Path, help="TSV to write (default: the published name, e.g. LVBench.tsv)")
    p.set_defaults(run=cmd_convert)


def _build_evaluate(p: argparse.ArgumentParser) -> None:
    add_config_args(p, EvaluateConfig)
    add_policy_args(p, exclude=("method", "loader"))  # for every method; uniform by the backbone's published loader
    add_extract_args(p)
    p.set_defaults(run=cmd_evaluate)


def _build_demo(p: argparse.ArgumentParser) -> None:
    add_config_args(p, DemoConfig)
    add_policy_args(p, DEMO_POLICY, exclude=("method", "params", "scores", "blip_model", "selections"))
    add_extract_args(p)
    p.set_defaults(run=cmd_demo)


def _build_tasks_path(p: argparse.ArgumentParser) -> None:
    p.set_defaults(run=cmd_tasks_path)


# name -> (one-line help, builder of its flags): `tspo_eval.cli` lists them and builds the one asked for
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "extract": ("decode every benchmark video and cache its frame features", _build_extract),
    "select": ("choose K frames for every question", _build_select),
    "inspect": ("plot one question's scores and chosen frames", _build_inspect),
    "quality": ("time-reference hit rate of selection files (no LLM)", _build_quality),
    "compare": ("every selector on one benchmark's cache -> one table and one chart", _build_compare),
    "convert": ("write a benchmark's published TSV from its original annotation file", _build_convert),
    "evaluate": ("select frames, run lmms-eval per method, one table (uniform vs tspo)", _build_evaluate),
    "tasks-path": ("print the folder of the lmms-eval task configs (for --include_path)", _build_tasks_path),
    "demo": ("offline, synthetic: train the agent on generated videos, compare it with uniform, topk and aks "
             "on held-out ones (quality table with 95% intervals + pictures)", _build_demo),
}
