"""One command for a whole benchmark: select frames (if not done), run lmms-eval per frame
method on the same backbone, and put the scores side by side.

lmms-eval runs as its own process (`python -m lmms_eval`, or `accelerate launch` for
several GPUs), exactly as a user would start it, with the task folder of this repository
on `--include_path` and the benchmark's annotation file and video root in the
`TSPO_<NAME>_ANNOTATIONS` / `TSPO_<NAME>_VIDEOS` variables the task configs read.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from .policy import ExtractConfig, FramePolicy

TASKS = {"longvideobench": "tspo_longvideobench_val", "mlvu": "tspo_mlvu_dev", "videomme": "tspo_videomme",
         "lvbench": "tspo_lvbench"}
MODEL_PREFIX = {"llava_video": "llava_vid", "qwen2_5_vl": "qwen_2_5_vl"}
REPO_TASKS = Path(__file__).resolve().parents[1] / "tasks"


@dataclass
class EvaluateConfig:
    """A uniform-vs-TSPO comparison on one benchmark and one backbone."""

    benchmark: Literal["longvideobench", "mlvu", "videomme", "lvbench"] = field(metadata={"help": "benchmark name"})
    annotations: Path = field(metadata={"help": "the benchmark's annotation file (original JSON/JSONL) or published TSV"})
    videos: Path = field(metadata={"help": "folder holding the benchmark's videos"})
    backbone: Literal["llava_video", "qwen2_5_vl"] = field(default="llava_video", metadata={"help": "video LLM"})
    pretrained: str | None = field(default=None, metadata={"help": "backbone directory / hub id (default: 7B)"})
    agent: str = field(default="hzf666/TSPO-0.4B", metadata={"help": "TSPO-0.4B directory / hub id / random:<cfg>"})
    methods: tuple[str, ...] = field(default=("uniform", "tspo"), metadata={
        "help": "frame methods to compare, each under the frame policy given by the policy flags"})
    out: Path = field(default=Path("runs"), metadata={"help": "output folder (selections, lmms-eval logs, table)"})
    cache: Path = field(default=Path("feature_cache"), metadata={"help": "feature cache root"})
    tasks_dir: Path = field(default=REPO_TASKS, metadata={"help": "folder of the tspo task configs"})
    batch_size: int = field(default=1, metadata={"help": "lmms-eval --batch_size"})
    num_processes: int = field(default=1, metadata={"help": "> 1: accelerate launch --num_processes N"})
    limit: int | None = field(default=None, metadata={"help": "lmms-eval --limit (first N questions)"})
    model_args: str = field(default="", metadata={"help": "extra model_args, e.g. dtype=float32,device=cpu"})
    strict: bool = field(default=False, metadata={
        "help": "refuse the whole annotation file when a row is bad (default: that question alone, counted failed)"})

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("give at least one method")
        if not (Path(self.tasks_dir) / "README.md").exists() and not any(Path(self.tasks_dir).glob("*/*.yaml")):
            raise ValueError(f"{self.tasks_dir} holds no task configs; pass --tasks-dir <repo>/tasks")


def model_name(backbone: str, method: str) -> str:
    """The lmms-eval model name: `*_uniform` for uniform, `*_tspo` (+ method arg) otherwise."""
    return f"{MODEL_PREFIX[backbone]}_{'uniform' if method == 'uniform' else 'tspo'}"


def method_policy(cfg: EvaluateConfig, policy: FramePolicy, method: str) -> FramePolicy:
    """The policy one method runs under: `policy` with that method, uniform frames by this backbone's
    published loader (what `official` reproduces)."""
    return policy.replace(method=method, loader=cfg.backbone)


def ensure_selections(cfg: EvaluateConfig, policy: FramePolicy, extract: ExtractConfig | None = None) -> Path:
    """`<out>/selections/<method>_<benchmark>.json` under `policy`, computed with the agent unless a
    file selected under this very policy exists."""
    path = cfg.out / "selections" / f"{policy.method}_{cfg.benchmark}.json"
    if path.is_file() and json.loads(path.read_text()).get("meta", {}).get("fingerprint") == policy.fingerprint():
        return path
    import torch

    from .agent import load_agent
    from .benchmarks import load_benchmark
    from .cache import FeatureCache
    from .distributed import local_device
    from .selections import select_benchmark

    refused = None if cfg.strict else []
    questions = (load_benchmark(cfg.benchmark, cfg.annotations, refused=refused) if cfg.annotations.suffix == ".tsv"
                 else load_benchmark(cfg.benchmark, annotation_path=cfg.annotations, refused=refused))
    device = local_device()
    agent = load_agent(cfg.agent, torch_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
                       device=device)
    result = select_benchmark(questions, cfg.videos, agent.encoder, FeatureCache(cfg.cache), policy, extract,
                              agent=agent)
    result.failed.update({row.index: str(row) for row in refused or ()})
    return result.save(path)


def lmms_eval_command(cfg: EvaluateConfig, policy: FramePolicy, extract: ExtractConfig | None = None) -> list[str]:
    """The lmms-eval command line for one method's policy: the policy and extraction settings go
    into `--model_args` spelled as everywhere (`FramePolicy.to_args`), read back by the same parser."""
    method = policy.method
    name = model_name(cfg.backbone, method)
    args = [f"agent={cfg.agent}", f"cache_dir={cfg.cache}",
            f"record={cfg.out / 'answers' / f'{name}_{method}_{cfg.benchmark}.jsonl'}"]
    args += [f"{k}={v}" for k, v in {**policy.to_args(), "method": method,
                                    **(extract.to_args() if extract else {})}.items()]
    if cfg.pretrained:
        args.append(f"pretrained={cfg.pretrained}")
    if cfg.model_args:
        args.append(cfg.model_args)
    launcher = ([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
                 "-m", "lmms_eval"] if cfg.num_processes > 1 else [sys.executable, "-m", "lmms_eval"])
    cmd = launcher + ["--model", name, "--model_args", ",".join(args), "--tasks", TASKS[cfg.benchmark],
                      "--include_path", str(cfg.tasks_dir), "--batch_size", str(cfg.batch_size),
                      "--output_path", str(cfg.out / "lmms_eval" / method)]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    return cmd


def task_environment(cfg: EvaluateConfig) -> dict[str, str]:
    """The variables the task configs read: where the annotations and videos are."""
    from .benchmarks.docs import STRICT_VAR

    name = cfg.benchmark.upper()
    return {**os.environ, f"TSPO_{name}_ANNOTATIONS": str(Path(cfg.annotations).resolve()),
            f"TSPO_{name}_VIDEOS": str(Path(cfg.videos).resolve()), STRICT_VAR: "1" if cfg.strict else "0"}


def read_results(output_path: Path, task: str) -> dict[str, float]:
    """Numeric metrics of `task` from the newest lmms-eval results JSON under `output_path`."""
    found = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"lmms-eval wrote no *_results.json under {output_path}; see its log above")
    results = json.loads(found[-1].read_text())["results"][task]
    return {k.split(",")[0]: float(v) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "_stderr" not in k}


def evaluate(cfg: EvaluateConfig, policy: FramePolicy | None = None, extract: ExtractConfig | None = None
             ) -> pd.DataFrame:
    """Run every method under `policy` (its method replaced); the table has one row per metric and
    one column per method."""
    policies = [method_policy(cfg, policy or FramePolicy(), method) for method in cfg.methods]  # checked first
    cfg.out.mkdir(parents=True, exist_ok=True)
    columns = {}
    for method, mp in zip(cfg.methods, policies):
        if method != "uniform" and mp.selections is None:
            mp = mp.replace(selections=str(ensure_selections(cfg, mp, extract)))
        cmd = lmms_eval_command(cfg, mp, extract)
        print("$", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, env=task_environment(cfg), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"lmms-eval failed for method {method} (exit {done.returncode}); see its log above")
        columns[method] = read_results(cfg.out / "lmms_eval" / method, TASKS[cfg.benchmark])
    table = pd.DataFrame(columns)
    # the overall accuracies, over the answered questions, and the answered / failed counts first
    from .scoring import METRICS

    first = [m.name for m in METRICS[cfg.benchmark] if (m.field is None or m.macro) and m.name in table.index]
    table = table.loc[first + [name for name in table.index if name not in first]]
    (cfg.out / f"summary_{cfg.benchmark}.md").write_text(table.to_markdown(floatfmt=".2f") + "\n")
    table.to_json(cfg.out / f"summary_{cfg.benchmark}.json", indent=1)
    return table
