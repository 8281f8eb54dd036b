"""`tspo-eval vlmeval run | convert`: VLMEvalKit inference + evaluation in this process, and its TSVs.

The flags are the adapter's model arguments (`ModelArgs`, `VLMEvalArgs`) and the frame
policy's, spelled as everywhere; VLMEvalKit is imported only when `run` runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import add_config_args
from ..integrations.models import DERIVED_ARGS, FLAVOURS, ModelArgs
from ..integrations.vlmeval import VLMEvalArgs
from ..integrations.vlmeval_tsv import dataset_names
from ..policy import EXTRACT_KEYS, POLICY_KEYS, add_extract_args, add_policy_args


def build_commands(parser: argparse.ArgumentParser) -> None:
    """`tspo-eval vlmeval run` and `tspo-eval vlmeval convert` (VLMEvalKit is imported only when run)."""
    sub = parser.add_subparsers(dest="vlmeval_command", required=True)

    p = sub.add_parser("run", help="VLMEvalKit inference + evaluation of one model on one dataset, in this process")
    p.add_argument("--model", required=True, choices=list(FLAVOURS), help="model name")
    p.add_argument("--data", required=True, help="VLMEvalKit dataset: LVBench, or Video-MME / LongVideoBench / "
                                                 "MLVU_MCQ with --annotations, or any VLMEvalKit name")
    p.add_argument("--annotations", "--data-file", dest="data_file", type=Path, metavar="FILE",
                   help="LVBench: its annotation file (video_info.meta.jsonl); others: VLMEvalKit's TSV on disk")
    p.add_argument("--videos", "--data-root", dest="data_root", type=Path, metavar="DIR",
                   help="LVBench: its video folder; others: the folder VLMEvalKit's TSV paths are relative to")
    p.add_argument("--nframe", type=int, default=8, help="frames VLMEvalKit decodes for a local copy's prompts "
                                                         "(LongVideoBench needs > 0; our models pick their own k)")
    p.add_argument("--work-dir", type=Path, default=Path("vlmeval_outputs"), help="VLMEvalKit output folder")
    p.add_argument("--judge", default="exact_matching", help="VLMEvalKit answer judge (exact_matching: no API)")
    add_config_args(p, ModelArgs, exclude=DERIVED_ARGS)
    add_policy_args(p, defaults=None)
    add_extract_args(p)
    add_config_args(p, VLMEvalArgs)
    p.set_defaults(run=cmd_run)

    p = sub.add_parser("convert", help="VLMEvalKit dataset TSV <-> registry TSV (same question, same index)")
    p.add_argument("--dataset", required=True, choices=dataset_names(), help="VLMEvalKit dataset")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotations", type=Path, help="registry annotation file -> VLMEvalKit's TSV")
    source.add_argument("--from-vlmeval", type=Path, help="VLMEvalKit's TSV -> registry TSV (published layout)")
    p.add_argument("--registry", type=Path, help="with --from-vlmeval: registry TSV or annotation file whose indices "
                                                 "matched questions take")
    p.add_argument("--out", type=Path, required=True, help="output TSV")
    p.set_defaults(run=cmd_convert)


def _model_args(ns: argparse.Namespace) -> dict[str, Any]:
    """Flags given a non-default value (backbone options of the other backbone stay unset); frame
    policy and extraction flags that were given, for `parse_model_args` to parse as everywhere."""
    raw = {}
    for cls in (ModelArgs, VLMEvalArgs):
        for f in dataclasses.fields(cls):
            if f.name in DERIVED_ARGS:
                continue
            value = getattr(ns, f.name)
            if value != f.default:
                raw[f.name] = value
    raw.update({k: getattr(ns, k) for k in (*POLICY_KEYS, *EXTRACT_KEYS) if getattr(ns, k, None) is not None})
    return raw


def _flat(result: Any, prefix: str = "") -> list[str]:
    """`key/subkey: value` lines of a (nested) VLMEvalKit result, empty categories (NaN) left out."""
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    if not isinstance(result, Mapping):
        return [] if str(result).lower() == "nan" else [f"{prefix}: {result}"]
    return [line for key, value in result.items() for line in _flat(value, f"{prefix}/{key}" if prefix else str(key))]


def cmd_run(ns: argparse.Namespace) -> int:
    from ..integrations.vlmeval import run

    try:
        result = run(ns.model, ns.data, ns.work_dir, data_file=ns.data_file, data_root=ns.data_root,
                     nframe=ns.nframe, judge=ns.judge, model_args=_model_args(ns))
    except (RuntimeError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    lines = _flat(result) if result is not None else []
    if not lines:
        print(f"error: VLMEvalKit's evaluation of {ns.model} on {ns.data} returned no scores; see its log above",
              file=sys.stderr)
        return 1
    print(f"{ns.model} x {ns.data}:")
    print("\n".join(f"  {line}" for line in lines))
    return 0


def cmd_convert(ns: argparse.Namespace) -> int:
    from ..benchmarks import write_tsv
    from ..integrations.vlmeval_tsv import (
        from_vlmeval,
        get_dataset,
        load_registry,
        questions_frame,
        to_vlmeval,
        write_vlmeval_tsv,
    )

    spec = get_dataset(ns.dataset)
    if ns.annotations is not None:
        frame = to_vlmeval(ns.annotations, ns.dataset)
        print(f"{len(frame)} rows in VLMEvalKit's {ns.dataset} layout -> {write_vlmeval_tsv(frame, ns.out)}")
        return 0
    registry = load_registry(ns.registry, spec.name) if ns.registry is not None else None
    questions = from_vlmeval(ns.from_vlmeval, ns.dataset, registry)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(questions_frame(questions), ns.out)
    if registry is not None:
        known = {q.index for q in registry}
        print(f"{len(questions)} questions, {sum(q.index in known for q in questions)} matched to --registry "
              f"({len(registry)} questions) -> {ns.out}")
    else:
        own = sum(not q.index.startswith("vlmeval-") for q in questions)
        print(f"{len(questions)} questions, {own} with the registry index their row holds -> {ns.out}"
              + ("" if own == len(questions) else " (pass --registry to give the others theirs)"))
    return 0
