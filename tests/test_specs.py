"""The benchmark specs (tspo_eval/benchmarks/specs.py): every registered spec is complete and agrees
with the task configs shipped in the package, lmms-eval's own built-in tasks, the published files
and the published code's per-benchmark settings; a spec registered from outside reaches every
consumer (prompt, scoring, selection, VLMEvalKit lookup, lmms-eval runner)."""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tspo_eval import scoring
from tspo_eval.benchmarks import BENCHMARKS, get_benchmark, load_benchmark, register_benchmark
from tspo_eval.benchmarks.core import PromptLayout, VLMEvalFormat, vlmeval_benchmark
from tspo_eval.benchmarks.docs import prompt
from tspo_eval.benchmarks.protocol import Metric, parse_longvideobench, parse_mcq, with_failures
from tspo_eval.integrations.lmms_tasks import tasks_path
from tspo_eval.integrations.vlmeval_tsv import dataset_names, get_dataset
from tspo_eval.policy import FramePolicy
from tspo_eval.selection.registry import SELECTORS, select
from tspo_eval.selection.stage import method_params

PUBLISHED = ("longvideobench", "mlvu", "videomme", "lvbench")
LMMS_TASKS = Path(importlib.util.find_spec("lmms_eval").origin).parent / "tasks"
# lmms-eval's built-in task of each benchmark (SPEC section 5) and VLMEvalKit's dataset names.
BUILTIN_YAML = {"longvideobench": "longvideobench/longvideobench_val_v.yaml", "mlvu": "mlvu/mlvu_dev.yaml",
                "videomme": "videomme/videomme.yaml", "lvbench": "lvbench/lvbench.yaml"}
VLMEVAL_NAMES = {"longvideobench": "LongVideoBench", "mlvu": "MLVU_MCQ", "videomme": "Video-MME",
                 "lvbench": "LVBench"}


class _Loader(yaml.SafeLoader):
    """Reads task YAMLs without importing their functions (any tag is kept as "<tag> <value>")."""


_Loader.add_multi_constructor("!", lambda loader, tag, node: f"{tag} {loader.construct_scalar(node)}")


def _yaml(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=_Loader)


def shipped_task(task: str) -> tuple[Path, dict]:
    """The shipped YAML whose `task` is `task`, found by reading them all (not by folder name)."""
    found = [(path, config) for path in sorted(tasks_path().glob("*/*.yaml"))
             if (config := _yaml(path)).get("task") == task]
    assert len(found) == 1, f"{len(found)} shipped task configs named {task!r}"
    return found[0]


def _base_config(path: Path, config: dict) -> dict:
    """A config with its `include:` resolved (one level, as the shipped variants use it)."""
    if "include" not in config:
        return config
    return {**_yaml(path.parent / config["include"]), **{k: v for k, v in config.items() if k != "include"}}


# ---------------------------------------------------------------- completeness

@pytest.mark.parametrize("name", PUBLISHED)
def test_published_spec_is_complete(name, official_dir):
    spec = get_benchmark(name)
    for file in (spec.tsv_file, spec.annotation_file, *([spec.frame_idx_file] if spec.frame_idx_file else [])):
        assert (official_dir / file).is_file(), file
    assert spec.prompt is not None and spec.post_prompt and spec.lmms_task and spec.vlmeval is not None
    assert spec.metrics and (spec.metrics[0].field is None or spec.metrics[0].macro)  # the headline comes first
    assert [m.name for m in spec.metrics[-2:]] == ["answered", "failed"]
    assert {m.name for m in spec.metrics} >= {f"{spec.metrics[0].name}_answered"}
    # every published selector setting names a registered selector and parameters it takes
    assert spec.selector_params
    for method, params in spec.selector_params.items():
        assert method in SELECTORS, method
        assert len(select(np.random.default_rng(0).random(50), 8, method, **params)) == 8


def test_published_settings_are_the_builtin_tasks_and_published_codes():
    """Hand-copied from SPEC section 5, VLMEvalKit's dataset names, gen_id_tspo.py and BOLT's script."""
    got = {name: (spec.max_new_tokens, spec.scale, spec.lmms_task, spec.vlmeval.dataset,
                  spec.parse_answer, dict(spec.selector_params))
           for name in PUBLISHED for spec in [get_benchmark(name)]}
    assert got == {
        "longvideobench": (32, 1.0, "tspo_longvideobench_val", "LongVideoBench", parse_longvideobench,
                           {"tspo": {"rule": "topk"}, "bolt": {"power": 2.5}}),
        "mlvu": (16, 100.0, "tspo_mlvu_dev", "MLVU_MCQ", parse_mcq,
                 {"tspo": {"rule": "topk"}, "bolt": {"power": 3.0}}),
        "videomme": (16, 100.0, "tspo_videomme", "Video-MME", parse_mcq,
                     {"tspo": {"rule": "bin-max"}, "bolt": {"power": 3.0}}),
        "lvbench": (16, 1.0, "tspo_lvbench", "LVBench", parse_mcq, {"tspo": {"rule": "topk"}}),
    }


@pytest.mark.parametrize("name", PUBLISHED)
def test_spec_agrees_with_lmms_evals_builtin_task(name):
    """Generation length and default post-prompt as the installed lmms-eval's own task YAML sets them."""
    builtin = _yaml(LMMS_TASKS / BUILTIN_YAML[name])
    spec = get_benchmark(name)
    assert spec.max_new_tokens == builtin["generation_kwargs"]["max_new_tokens"]
    assert spec.post_prompt == builtin["lmms_eval_specific_kwargs"]["default"]["post_prompt"]


# ---------------------------------------------------------------- the shipped task configs

@pytest.mark.parametrize("name", PUBLISHED)
def test_spec_agrees_with_its_shipped_task_config(name):
    spec = get_benchmark(name)
    path, config = shipped_task(spec.lmms_task)
    assert config["generation_kwargs"]["max_new_tokens"] == spec.max_new_tokens
    assert config["lmms_eval_specific_kwargs"]["default"] == {"pre_prompt": "", "post_prompt": spec.post_prompt}
    assert [entry["metric"] for entry in config["metric_list"]] == [m.name for m in spec.metrics]
    macro = {entry["metric"] for entry in config["metric_list"] if entry["aggregation"].endswith("macro_accuracy")}
    assert macro == {m.name for m in spec.metrics if m.macro}
    for other in path.parent.glob("*.yaml"):
        assert _base_config(other, _yaml(other))["generation_kwargs"]["max_new_tokens"] == spec.max_new_tokens


def test_every_shipped_task_belongs_to_a_registered_spec():
    tasks = {_yaml(path)["task"] for path in tasks_path().glob("*/*.yaml") if "include" not in _yaml(path)}
    assert tasks == {spec.lmms_task for spec in BENCHMARKS.values() if spec.lmms_task}


@pytest.mark.parametrize("folder", sorted(p.name for p in tasks_path().iterdir() if p.is_dir()))
def test_utils_names_every_function_its_yamls_reference(folder):
    """Searchable: each `!function utils.X` is written out in utils.py (a def, an assignment or an import)."""
    utils = tasks_path() / folder / "utils.py"
    text = utils.read_text()
    assert "globals()" not in text
    named = {name for path in utils.parent.glob("*.yaml")
             for name in re.findall(r"!function utils\.(\w+)", path.read_text())}
    assert named >= {"process_docs", "doc_to_visual", "doc_to_text", "process_results", "accuracy"}
    tree = ast.parse(text)
    written = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    written |= {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                if isinstance(target, ast.Name)}
    written |= {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert named <= written, sorted(named - written)
    # and they resolve: the module the YAMLs load, read for its hooks' benchmark
    module_spec = importlib.util.spec_from_file_location(f"tspo_task_{folder}_utils", utils)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    assert all(callable(getattr(module, name)) for name in named)
    base_tasks = {config["task"] for path in utils.parent.glob("*.yaml") if "include" not in (config := _yaml(path))}
    assert base_tasks == {get_benchmark(module.hooks.benchmark).lmms_task}


# ---------------------------------------------------------------- the published files

@pytest.mark.parametrize("name", PUBLISHED)
def test_time_reference_availability_matches_the_published_annotations(name, official_dir):
    spec = get_benchmark(name)
    questions = load_benchmark(name, annotation_path=official_dir / spec.annotation_file)
    has_refs = any(q.time_reference is not None or q.reference_frames is not None for q in questions)
    assert spec.has_time_references == has_refs == (name in ("longvideobench", "lvbench"))


@pytest.mark.parametrize("name", PUBLISHED)
def test_vlmeval_dataset_finds_its_spec_and_converts_the_published_annotations(name, official_dir):
    spec = get_benchmark(name)
    assert VLMEVAL_NAMES[name] in dataset_names()
    assert get_dataset(VLMEVAL_NAMES[name]) is spec is vlmeval_benchmark(VLMEVAL_NAMES[name])
    rows = spec.vlmeval.item_rows(official_dir / spec.annotation_file)
    published = load_benchmark(name, official_dir / spec.tsv_file)
    assert len(rows) == len(published)
    assert sorted(spec.vlmeval.row_question(row).answer_letter for row in rows.astype(str).to_dict("records")) == \
        sorted(q.answer_letter for q in published)
    assert vlmeval_benchmark("NoSuchDataset") is None
    with pytest.raises(ValueError, match="unknown VLMEvalKit dataset 'NoSuchDataset'; known: .*LVBench"):
        get_dataset("NoSuchDataset")


# ---------------------------------------------------------------- a benchmark from outside

def test_a_spec_registered_from_outside_reaches_every_consumer(restore_registry):
    base = get_benchmark("lvbench")
    spec = register_benchmark(dataclasses.replace(
        base, name="tinybench", post_prompt="\nPick one.", max_new_tokens=7, lmms_task=None,
        metrics=with_failures(Metric("tiny_acc"), Metric("tiny_acc_red", "colour", "red")), scale=100.0,
        selector_params={"tspo": {"rule": "bin-max"}, "bolt": {"power": 1.5}},
        vlmeval=VLMEvalFormat("TinyBench", PromptLayout("Q: ", "\n", "{}) ", ""), base.vlmeval.row_question,
                              base.vlmeval.item_rows)))
    doc = {"benchmark": "tinybench", "index": "t1", "video_name": "t1.mp4", "question_original": "Which?",
           "candidates": ["x", "y"], "answer": "B", "colour": "red"}
    assert prompt(doc) == "Which?\n(A) x\n(B) y\nPick one."  # LVBench's builder, this spec's post-prompt
    assert scoring.breakdown("tinybench", [scoring.score(doc, "(B)")]) == {
        "tiny_acc": 100.0, "tiny_acc_red": 100.0, "tiny_acc_answered": 100.0, "answered": 1, "failed": 0}
    assert method_params(FramePolicy(method="tspo"), "tinybench") == {"rule": "bin-max"}
    assert method_params(FramePolicy(method="bolt", params={"power": 2}), "tinybench") == {"power": 2}
    assert method_params(FramePolicy(method="topk"), "tinybench") == {}
    assert vlmeval_benchmark("TinyBench") is spec and "TinyBench" in dataset_names()


def test_evaluate_needs_a_spec_with_an_lmms_eval_task(restore_registry, official_dir, tmp_path):
    from tspo_eval.integrations.lmms_runner import EvaluateConfig

    register_benchmark(dataclasses.replace(get_benchmark("lvbench"), name="tinybench", lmms_task=None))
    common = {"annotations": official_dir / "LVBench.tsv", "videos": tmp_path, "agent": "random:clip-tiny"}
    with pytest.raises(ValueError, match="'tinybench' has no lmms-eval task"):
        EvaluateConfig(benchmark="tinybench", **common)
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*lvbench"):
        EvaluateConfig(benchmark="nope", **common)
    assert EvaluateConfig(benchmark="LVBench", **common).benchmark == "lvbench"


@pytest.mark.parametrize("change, message", [
    ({"max_new_tokens": 0}, "max_new_tokens of 'videomme' must be >= 1"),
    ({"scale": 50.0}, "scale of 'videomme' must be 1.0"),
    ({"metrics": (Metric("acc"), Metric("acc", "domain", "x"))}, "metric names of 'videomme' repeat: acc"),
])
def test_spec_rejects_inconsistent_evaluation_fields(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(get_benchmark("videomme"), **change)
