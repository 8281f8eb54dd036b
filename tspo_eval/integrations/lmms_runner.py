"""One command for a whole benchmark: select frames (if not done), run lmms-eval per frame
method on the same backbone, and put the scores side by side.

lmms-eval runs as its own process (`python -m lmms_eval`, or `accelerate launch` for
several GPUs), exactly as a user would start it, with the task configs shipped in this
package on `--include_path` (`tspo-eval tasks-path`) and the benchmark's annotation file and
video root in the `TSPO_<NAME>_ANNOTATIONS` / `TSPO_<NAME>_VIDEOS` variables the task configs read.

lmms-eval exits 0 when a task cannot load or a model cannot be built; its output is streamed
and kept, and a run that wrote no results fails here with the first real error in that output.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ..config import existing_path, former_spellings, model_location
from ..policy import ExtractConfig, FramePolicy
from .lmms_tasks import tasks_path

if TYPE_CHECKING:
    import pandas as pd

    from ..benchmarks import BenchmarkSpec

MODEL_PREFIX = {"llava_video": "llava_vid", "qwen2_5_vl": "qwen_2_5_vl"}


@former_spellings
@dataclass
class EvaluateConfig:
    """A uniform-vs-TSPO comparison on one benchmark and one backbone."""

    benchmark: str = field(metadata={
        "help": "longvideobench | mlvu | videomme | lvbench, or a registered benchmark with an lmms-eval task"})
    annotations: Path = field(metadata={"help": "the benchmark's annotation file (original JSON/JSONL) or published TSV"})
    videos: Path = field(metadata={"help": "folder holding the benchmark's videos"})
    backbone: Literal["llava_video", "qwen2_5_vl"] = field(default="llava_video", metadata={"help": "video LLM"})
    pretrained: str | None = field(default=None, metadata={"help": "backbone directory / hub id (default: 7B)"})
    agent: str = field(default="hzf666/TSPO-0.4B", metadata={"help": "TSPO-0.4B directory / hub id / random:<cfg>"})
    methods: tuple[str, ...] = field(default=("uniform", "tspo"), metadata={
        "help": "frame methods to compare, each under the frame policy given by the policy flags"})
    out: Path = field(default=Path("runs"), metadata={"help": "output folder (selections, lmms-eval logs, table)"})
    cache: Path = field(default=Path("feature_cache"), metadata={"help": "feature cache root"})
    tasks_dir: Path | None = field(default=None, metadata={
        "help": "folder of the task configs (default: the ones shipped in the package, `tspo-eval tasks-path`)"})
    answer_batch: int = field(default=1, metadata={
        "help": "questions per backbone call (lmms-eval's --batch_size)", "renamed_from": "batch_size"})
    answer_threads: int | None = field(default=None, metadata={
        "help": "threads planning and decoding the next questions' frames while the backbone answers "
                "(the lmms-eval model's answer_threads; default: the model's, 4)"})
    prefetch_questions: int | None = field(default=None, metadata={
        "help": "questions planned and decoded ahead of the backbone (the model's prefetch_questions; default 8)"})
    num_processes: int = field(default=1, metadata={"help": "> 1: accelerate launch --num_processes N"})
    limit: int | None = field(default=None, metadata={"help": "lmms-eval --limit (first N questions)"})
    model_args: str = field(default="", metadata={"help": "extra model_args, e.g. dtype=float32,device=cpu"})
    strict: bool = field(default=False, metadata={
        "help": "refuse the whole annotation file when a row is bad (default: that question alone, counted failed)"})

    def __post_init__(self) -> None:
        """Everything a run needs is checked here, before frames are selected or lmms-eval starts."""
        if not self.methods:
            raise ValueError("give at least one method")
        self.benchmark = self.spec.name  # an unknown name lists the registered ones
        if self.spec.lmms_task is None:
            raise ValueError(f"benchmark {self.benchmark!r} has no lmms-eval task (its BenchmarkSpec's lmms_task)")
        self.tasks_dir = Path(self.tasks_dir) if self.tasks_dir is not None else tasks_path()
        if not any(self.tasks_dir.glob("*/*.yaml")):
            raise ValueError(f"--tasks-dir {self.tasks_dir} holds no task configs (<benchmark>/*.yaml); leave it "
                             "unset for the configs shipped in the package")
        self.annotations = existing_path(self.annotations, "--annotations",
                                         "the published TSV or the benchmark's original annotation file")
        self.videos = existing_path(self.videos, "--videos", "the folder holding the benchmark's videos",
                                    directory=True)
        if not self.agent.startswith("random:"):
            model_location(self.agent, "--agent", "a TSPO-0.4B directory, a hub id (hzf666/TSPO-0.4B) "
                           "or random:<config>")
        if self.pretrained is not None:
            model_location(self.pretrained, "--pretrained", "a backbone checkpoint directory or a hub id")

    @property
    def spec(self) -> BenchmarkSpec:
        """The benchmark's registered spec: its lmms-eval task and metrics."""
        from ..benchmarks import get_benchmark

        return get_benchmark(self.benchmark)


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

    from ..agent import load_agent
    from ..benchmarks import load_benchmark
    from ..cache import FeatureCache
    from ..distributed import local_device
    from ..selection.stage import select_benchmark

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
    args += [f"{name}={value}" for name, value in (("answer_threads", cfg.answer_threads),
                                                    ("prefetch_questions", cfg.prefetch_questions)) if value is not None]
    if cfg.model_args:
        args.append(cfg.model_args)
    launcher = ([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(cfg.num_processes),
                 "-m", "lmms_eval"] if cfg.num_processes > 1 else [sys.executable, "-m", "lmms_eval"])
    cmd = launcher + ["--model", name, "--model_args", ",".join(args), "--tasks", cfg.spec.lmms_task,
                      "--include_path", str(cfg.tasks_dir), "--batch_size", str(cfg.answer_batch),
                      "--output_path", str(cfg.out / "lmms_eval" / method)]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    return cmd


def task_environment(cfg: EvaluateConfig) -> dict[str, str]:
    """The variables the task configs read: where the annotations and videos are. PYTHONSAFEPATH
    keeps `python -m lmms_eval` (and accelerate's children) from putting the working folder first
    on sys.path, where a checkout or a folder named like a package would be imported instead of
    the installed one (Python 3.11+)."""
    from ..benchmarks.docs import STRICT_VAR, env_names

    annotations_var, videos_var = env_names(cfg.benchmark)
    return {**os.environ, annotations_var: str(Path(cfg.annotations).resolve()),
            videos_var: str(Path(cfg.videos).resolve()), STRICT_VAR: "1" if cfg.strict else "0",
            "PYTHONSAFEPATH": "1"}


class LmmsEvalError(RuntimeError):
    """An lmms-eval run that failed or wrote no results, with the first real error of its output."""


# Lines that name a cause, most specific first: our adapters' one-line reports, then the last
# line of a Python traceback, then lmms-eval's own summary line.
_ERROR_PATTERNS = (re.compile(r"(cannot be built|cannot load its documents): "),
                   re.compile(r"^(\w+\.)*\w*(Error|Exception)\b.*: "),
                   re.compile(r"Error during evaluation: "))


def first_error(lines: list[str]) -> str:
    """The line of lmms-eval's output that names why it failed (the last lines when none does)."""
    for pattern in _ERROR_PATTERNS:
        found = next((line.strip() for line in lines if pattern.search(line)), None)
        if found:
            return found
    return " | ".join(line.strip() for line in lines[-5:])


def run_logged(cmd: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run `cmd`, echoing its output as it comes; (exit code, output lines)."""
    lines = []
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                lines.append(line)
        except BaseException:  # SIGTERM / Ctrl-C here: never leave lmms-eval running on its own
            proc.terminate()
            raise
    return proc.returncode, lines


def read_results(output_path: Path, task: str, log: list[str] | None = None) -> dict[str, float]:
    """Numeric metrics of `task` from the newest lmms-eval results JSON under `output_path`."""
    found = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise LmmsEvalError(f"lmms-eval wrote no results under {output_path}"
                            + (f": {first_error(log)}" if log else ""))
    results = json.loads(found[-1].read_text())["results"][task]
    return {k.split(",")[0]: float(v) for k, v in results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and "_stderr" not in k}


def evaluate(cfg: EvaluateConfig, policy: FramePolicy | None = None, extract: ExtractConfig | None = None
             ) -> pd.DataFrame:
    """Run every method under `policy` (its method replaced); the table has one row per metric and
    one column per method."""
    import pandas as pd

    policies = [method_policy(cfg, policy or FramePolicy(), method) for method in cfg.methods]  # checked first
    cfg.out.mkdir(parents=True, exist_ok=True)
    columns = {}
    for method, mp in zip(cfg.methods, policies):
        if method != "uniform" and mp.selections is None:
            mp = mp.replace(selections=str(ensure_selections(cfg, mp, extract)))
        cmd = lmms_eval_command(cfg, mp, extract)
        print("$", " ".join(cmd), flush=True)
        code, log = run_logged(cmd, task_environment(cfg))
        if code != 0:
            raise LmmsEvalError(f"lmms-eval failed for method {method} (exit {code}): {first_error(log)}")
        columns[method] = read_results(cfg.out / "lmms_eval" / method, cfg.spec.lmms_task, log)
    table = pd.DataFrame(columns)
    # the overall accuracies, over the answered questions, and the answered / failed counts first
    first = [m.name for m in cfg.spec.metrics if (m.field is None or m.macro) and m.name in table.index]
    table = table.loc[first + [name for name in table.index if name not in first]]
    (cfg.out / f"summary_{cfg.benchmark}.md").write_text(table.to_markdown(floatfmt=".2f") + "\n")
    table.to_json(cfg.out / f"summary_{cfg.benchmark}.json", indent=1)
    return table
