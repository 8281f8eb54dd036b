"""The real lmms-eval CLI (installed from the registry, unmodified) runs our four tasks end to
end with our models found through the entry point: generated mini benchmarks of real mp4
files, the real task YAMLs, tiny random backbones and agent.  Accuracy is not asserted; the
plumbing is: every question was answered from exactly the frames its selection file names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tspo_eval.benchmarks import get_benchmark
from tspo_eval.integrations.lmms_runner import first_error
from tspo_eval.integrations.lmms_tasks import tasks_path

TASKS = {name: get_benchmark(name).lmms_task for name in ("longvideobench", "mlvu", "videomme", "lvbench")}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random LLaVA-Video and Qwen2.5-VL saved in their original layouts."""
    from tspo_eval.backbones.llava_video import random_llava_video
    from tspo_eval.backbones.qwen_vl import random_qwen_vl

    root = tmp_path_factory.mktemp("checkpoints")
    random_llava_video("tiny", dtype="float32", device="cpu").save_pretrained(root / "llava")
    random_qwen_vl("tiny", dtype="float32", device="cpu").save_pretrained(root / "qwen")
    return {"llava_vid_tspo": root / "llava", "qwen_2_5_vl_tspo": root / "qwen"}


@pytest.fixture(scope="module")
def selections(mini_benchmarks, tmp_path_factory) -> Path:
    """`tspo_<benchmark>.json` for every mini benchmark, chosen by a random agent (k=4)."""
    from tspo_eval.agent import random_agent
    from tspo_eval.benchmarks import load_benchmark
    from tspo_eval.cache import FeatureCache
    from tspo_eval.policy import FramePolicy
    from tspo_eval.selection.stage import select_benchmark

    folder = tmp_path_factory.mktemp("selections")
    agent = random_agent("clip-tiny")
    for benchmark, (annotation_file, videos) in mini_benchmarks.items():
        questions = (load_benchmark(benchmark, annotation_file) if annotation_file.suffix == ".tsv"
                     else load_benchmark(benchmark, annotation_path=annotation_file))
        result = select_benchmark(questions, videos, agent.encoder, FeatureCache(folder / "cache"),
                                  FramePolicy(method="tspo", k=4), agent=agent, progress=False)
        assert not result.failed
        result.save(folder / f"tspo_{benchmark}.json")
    return folder


def run_lmms_eval(model: str, model_args: str, tasks: list[str], out: Path, env_extra: dict[str, str]
                  ) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           **env_extra}
    cmd = [sys.executable, "-m", "lmms_eval", "--model", model, "--model_args", model_args,
           "--tasks", ",".join(tasks), "--include_path", str(tasks_path()), "--batch_size", "2",
           "--output_path", str(out), "--device", "cpu"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


def _env(mini_benchmarks) -> dict[str, str]:
    env = {}
    for benchmark, (annotation_file, videos) in mini_benchmarks.items():
        env[f"TSPO_{benchmark.upper()}_ANNOTATIONS"] = str(annotation_file)
        env[f"TSPO_{benchmark.upper()}_VIDEOS"] = str(videos)
    return env


@pytest.mark.parametrize("model", ["llava_vid_tspo", "qwen_2_5_vl_tspo"])
def test_lmms_eval_cli_runs_all_four_tasks_from_the_selected_frames(model, checkpoints, selections,
                                                                    mini_benchmarks, tmp_path):
    from tspo_eval.selection.stage import SelectionSet

    record = tmp_path / "answers.jsonl"
    args = (f"pretrained={checkpoints[model]},agent=random:clip-tiny,k=4,selections={selections},"
            f"record={record},dtype=float32,cache_dir={tmp_path / 'cache'}")
    done = run_lmms_eval(model, args, list(TASKS.values()), tmp_path / "out", _env(mini_benchmarks))
    assert done.returncode == 0, done.stderr[-4000:]

    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*_results.json")]
    assert len(results) == 1, first_error(done.stderr.splitlines())  # lmms-eval exits 0 when it fails
    assert set(results[0]["results"]) >= set(TASKS.values())

    answered = {}
    for line in record.read_text().splitlines():
        row = json.loads(line)
        answered[row["index"]] = row
    for benchmark in mini_benchmarks:
        chosen = SelectionSet.load(selections / f"tspo_{benchmark}.json").selections
        for index, selection in chosen.items():
            assert answered[index]["error"] is None
            assert answered[index]["frame_numbers"] == selection.frame_numbers, (benchmark, index)
    assert len(answered) == sum(len(SelectionSet.load(p).selections) for p in selections.glob("tspo_*.json"))


def test_missing_video_is_recorded_and_the_run_finishes(checkpoints, mini_benchmarks, tmp_path):
    import shutil

    annotations, videos = mini_benchmarks["lvbench"]
    partial = tmp_path / "videos"
    shutil.copytree(videos, partial)
    gone = min(partial.glob("*.mp4"))
    gone.unlink()
    record = tmp_path / "answers.jsonl"
    env = {"TSPO_LVBENCH_ANNOTATIONS": str(annotations), "TSPO_LVBENCH_VIDEOS": str(partial)}
    done = run_lmms_eval("llava_vid_uniform", f"pretrained={checkpoints['llava_vid_tspo']},k=4,record={record},"
                         "dtype=float32", [TASKS["lvbench"]], tmp_path / "out", env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert list((tmp_path / "out").rglob("*_results.json")), first_error(done.stderr.splitlines())
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    failed = [r for r in rows if r["error"]]
    assert failed and all(gone.name in r["error"] for r in failed)
    assert any(r["error"] is None and len(r["frame_numbers"]) == 4 for r in rows)


def test_a_bad_row_costs_its_question_only_and_results_count_it(checkpoints, mini_benchmarks, tmp_path):
    """A `../` video path in one task's file: that question is refused (never read) and counted
    failed; both tasks still run and report answered / failed beside their accuracies."""
    env = _env(mini_benchmarks)
    header, *rows = mini_benchmarks["mlvu"][0].read_text().splitlines()
    fields = rows[0].split("\t")
    fields[2] = "../escape.mp4"
    bad = tmp_path / "MLVU.tsv"
    bad.write_text("\n".join([header, "\t".join(fields), *rows[1:]]))
    env["TSPO_MLVU_ANNOTATIONS"] = str(bad)
    record = tmp_path / "answers.jsonl"
    done = run_lmms_eval("llava_vid_uniform", f"pretrained={checkpoints['llava_vid_tspo']},k=4,record={record},"
                         "dtype=float32", [TASKS["mlvu"], TASKS["lvbench"]], tmp_path / "out", env)
    assert done.returncode == 0, done.stderr[-4000:]
    (results_file,) = (tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    lvbench_questions = sum(len(json.loads(line)["qa"]) for line in
                            mini_benchmarks["lvbench"][0].read_text().splitlines())
    assert (results[TASKS["mlvu"]]["answered,none"], results[TASKS["mlvu"]]["failed,none"]) == (len(rows) - 1, 1)
    assert (results[TASKS["lvbench"]]["answered,none"], results[TASKS["lvbench"]]["failed,none"]) == (
        lvbench_questions, 0)
    answered = [json.loads(line)["index"] for line in record.read_text().splitlines()]
    assert fields[0] not in answered and len(answered) == len(rows) - 1 + lvbench_questions  # never read
    assert f"{bad}, line 2" in done.stderr


def test_unknown_model_arg_names_the_valid_ones(checkpoints, mini_benchmarks, tmp_path):
    done = run_lmms_eval("qwen_2_5_vl_tspo", f"pretrained={checkpoints['qwen_2_5_vl_tspo']},frames=8",
                         [TASKS["lvbench"]], tmp_path / "out", _env(mini_benchmarks))
    # lmms-eval's CLI logs a failed model construction and exits 0; the run must still stop there
    assert "unknown model_args frames" in done.stderr and "max_pixels" in done.stderr
    assert not list((tmp_path / "out").rglob("*_results.json"))
    # our wrapper's one line comes first and names the cause
    assert first_error(done.stderr.splitlines()).startswith("qwen_2_5_vl_tspo cannot be built: ValueError: "
                                                            "qwen_2_5_vl_tspo: unknown model_args frames")


def test_model_args_are_validated_per_backbone():
    from tspo_eval.integrations.models import parse_model_args

    args = parse_model_args("qwen_2_5_vl_uniform", {"k": "32", "max_pixels": 1000, "official": "true"})
    assert (args.policy.k, args.max_pixels, args.policy.official, args.policy.method) == (32, 1000, True, "uniform")
    assert args.pretrained == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(ValueError, match="unknown model_args max_pixels"):
        parse_model_args("llava_vid_tspo", {"max_pixels": 1000})


def test_entry_point_import_is_cheap_and_lists_all_models():
    code = ("import sys, time; t = time.perf_counter(); "
            "from importlib.metadata import entry_points; "
            "ep = [e for e in entry_points(group='lmms_eval.models') if e.name == 'tspo_eval'][0]; "
            "fn = ep.load(); heavy = [m for m in ('torch', 'transformers', 'tspo_eval.agent') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"  # loading the entry point pulls in no heavy module
    from lmms_eval.models import get_model_manifest

    for name in ("llava_vid_tspo", "llava_vid_uniform", "qwen_2_5_vl_tspo", "qwen_2_5_vl_uniform"):
        assert get_model_manifest(name).simple_class_path.startswith("tspo_eval.integrations.lmms_eval.")


def test_two_process_launch_shares_the_questions(checkpoints, mini_benchmarks, tmp_path):
    """Two processes on CPU: each rank answers its share, together every question once, and one
    results file is written.  `accelerate launch --num_processes N` starts GPU ranks through
    torchrun's launcher with the same RANK / WORLD_SIZE / LOCAL_RANK variables; on CPU
    accelerate only launches several processes through MPI, so the test uses torchrun."""
    annotations, videos = mini_benchmarks["videomme"]
    record = tmp_path / "records" / "answers.jsonl"  # its folder does not exist yet
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TSPO_VIDEOMME_ANNOTATIONS": str(annotations), "TSPO_VIDEOMME_VIDEOS": str(videos)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lmms_eval",
           "--model", "llava_vid_uniform",
           "--model_args", f"pretrained={checkpoints['llava_vid_tspo']},k=4,record={record},dtype=float32",
           "--tasks", TASKS["videomme"], "--include_path", str(tasks_path()), "--batch_size", "1",
           "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert len(list((tmp_path / "out").rglob("*_results.json"))) == 1, first_error(done.stderr.splitlines())
    shares = [[json.loads(line)["index"] for line in (tmp_path / "records" / f"answers.jsonl.rank{r}").read_text().splitlines()]
              for r in (0, 1)]
    assert shares[0] and shares[1] and not set(shares[0]) & set(shares[1])
    assert len(shares[0]) + len(shares[1]) == 4  # the mini VideoMME holds 4 questions


def test_evaluate_command_selects_then_runs_lmms_eval_per_method(checkpoints, mini_benchmarks, tmp_path):
    annotations, videos = mini_benchmarks["lvbench"]
    out = tmp_path / "runs"
    cmd = ["tspo-eval", "evaluate", "--benchmark", "lvbench", "--annotations", str(annotations), "--videos",
           str(videos), "--pretrained", str(checkpoints["llava_vid_tspo"]), "--agent", "random:clip-tiny",
           "--k", "4", "--out", str(out), "--cache", str(tmp_path / "cache"), "--model-args", "dtype=float32"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary_lvbench.json").read_text())
    assert set(summary) == {"uniform", "tspo"} and "lvbench_acc" in summary["tspo"]
    from tspo_eval.selection.stage import SelectionSet

    chosen = SelectionSet.load(out / "selections" / "tspo_lvbench.json").selections  # selected first
    records = [json.loads(line) for line in (out / "answers" / "llava_vid_tspo_tspo_lvbench.jsonl").read_text()
               .splitlines()]
    assert {r["index"]: r["frame_numbers"] for r in records} == {k: v.frame_numbers for k, v in chosen.items()}
    uniform = [json.loads(line) for line in (out / "answers" / "llava_vid_uniform_uniform_lvbench.jsonl")
               .read_text().splitlines()]
    assert len(uniform) == len(records) and all(len(r["frame_numbers"]) == 4 for r in uniform)
    header = next(line for line in done.stdout.splitlines() if line.startswith("|") and "uniform" in line)
    assert "tspo" in header  # the side-by-side table


def test_evaluate_fails_loudly_with_the_first_real_error(checkpoints, mini_benchmarks, tmp_path):
    """lmms-eval exits 0 and writes nothing when our model cannot be built; `evaluate` exits 1 and
    its last line names the cause (our wrapper's one-line report), not "see the log above"."""
    annotations, videos = mini_benchmarks["lvbench"]
    cmd = ["tspo-eval", "evaluate", "--benchmark", "lvbench", "--annotations", str(annotations), "--videos",
           str(videos), "--pretrained", str(checkpoints["llava_vid_tspo"]), "--methods", "uniform", "--k", "4",
           "--out", str(tmp_path / "runs"), "--model-args", "dtype=float32,frames=8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: lmms-eval wrote no results under ")
    assert "llava_vid_uniform cannot be built: ValueError: llava_vid_uniform: unknown model_args frames" in last


def test_evaluate_checks_paths_and_options_before_running(mini_benchmarks, tmp_path):
    """A missing agent directory or video folder, or a bad enumerated model arg, stops the command
    before any selection or lmms-eval run, with what a valid value is."""
    from tspo_eval.cli import main

    annotations, videos = mini_benchmarks["lvbench"]
    base = ["evaluate", "--benchmark", "lvbench", "--annotations", str(annotations), "--out", str(tmp_path / "runs")]
    cases = {
        ("--videos", str(videos), "--agent", "/nonexistent/TSPO-0.4B"):
            "--agent /nonexistent/TSPO-0.4B: no such directory; give a TSPO-0.4B directory",
        ("--videos", str(tmp_path / "novideos")): f"--videos {tmp_path / 'novideos'}: no such directory",
        ("--videos", str(annotations)): f"--videos {annotations}: not a directory",
    }
    for extra, message in cases.items():
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(base + list(extra)) == 2
        assert message in err.getvalue(), err.getvalue()
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("raw, message", [
    ({"time_encoding": "reel"}, "time_encoding='reel' is not one of real, mean, none"),
    ({"dtype": "bf16"}, "dtype='bf16' is not one of bfloat16, float16, float32"),
    ({"method": "topK"}, "method='topK' is not one of aks, bin-max, .*topk, tspo, uniform"),
    ({"pretrained": "/nonexistent/Qwen2.5-VL-7B"}, "pretrained /nonexistent/Qwen2.5-VL-7B: no such directory"),
    ({"agent": "./missing/TSPO-0.4B"}, "agent ./missing/TSPO-0.4B: no such directory"),
])
def test_model_args_values_fail_before_weights_load(raw, message):
    """parse_model_args runs before build_answering loads anything: a typo costs no weights."""
    from tspo_eval.integrations.models import parse_model_args

    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse_model_args("qwen_2_5_vl_tspo", raw)
    assert parse_model_args("qwen_2_5_vl_tspo", {"pretrained": "Qwen/Qwen2.5-VL-7B-Instruct"}).pretrained


def test_conv_template_choices_are_the_backbones():
    """The enumerated model args list exactly what the backbones accept."""
    import typing

    from tspo_eval.backbones.llava_video import CONV_TEMPLATES
    from tspo_eval.backbones.qwen_vl import TimeEncoding
    from tspo_eval.config import literal_choices
    from tspo_eval.integrations.models import ModelArgs, parse_model_args

    hints = typing.get_type_hints(ModelArgs)
    assert set(literal_choices(hints["conv_template"])) == set(CONV_TEMPLATES)
    assert set(literal_choices(hints["time_encoding"])) == set(typing.get_args(TimeEncoding))
    with pytest.raises(ValueError, match="conv_template='qwen15' is not one of qwen_1_5, chatml_direct"):
        parse_model_args("llava_vid_uniform", {"conv_template": "qwen15"})


def test_compare_with_a_backbone_scores_accuracy_through_lmms_eval(checkpoints, mini_benchmarks, tmp_path):
    """`tspo-eval compare --backbone`: each selector's saved frames answered by the real lmms-eval
    (tiny random LLaVA-Video), its accuracy recomputed here from the answers it recorded. (Random
    weights name no option, so both accuracies are 0 here; `test_compare`'s accuracy test checks
    the column's mapping and scale with distinct values.)"""
    import pandas as pd

    from tspo_eval.benchmarks import get_benchmark, load_benchmark
    from tspo_eval.selection.stage import SelectionSet

    annotations, videos = mini_benchmarks["lvbench"]
    out = tmp_path / "cmp"
    cmd = ["tspo-eval", "compare", "--benchmark", "lvbench", "--annotations", str(annotations), "--videos",
           str(videos), "--agent", "random:clip-tiny", "--cache", str(tmp_path / "cache"), "--k", "4",
           "--methods", "uniform", "bolt", "--backbone", "llava_video", "--pretrained",
           str(checkpoints["llava_vid_tspo"]), "--model-args", "dtype=float32", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(out / "compare_lvbench.csv", index_col="method")
    questions = {q.index: q for q in load_benchmark("lvbench", annotation_path=annotations)}
    spec = get_benchmark("lvbench")
    for method, model in (("uniform", "llava_vid_uniform"), ("bolt", "llava_vid_tspo")):
        answers = [json.loads(line) for line in
                   (out / "answers" / f"{model}_{method}_lvbench.jsonl").read_text().splitlines()]
        assert sorted(a["index"] for a in answers) == sorted(questions)
        right = [spec.parse_answer(a["text"], len(questions[a["index"]].candidates), None, a["index"])
                 == questions[a["index"]].answer_letter for a in answers]
        assert table.loc[method, "accuracy"] == pytest.approx(sum(right) / len(right))
    # bolt was answered from exactly the frames compare selected and saved
    chosen = SelectionSet.load(out / "selections" / "bolt_lvbench.json").selections
    answers = [json.loads(line) for line in (out / "answers" / "llava_vid_tspo_bolt_lvbench.jsonl").read_text()
               .splitlines()]
    assert {a["index"]: a["frame_numbers"] for a in answers} == {k: v.frame_numbers for k, v in chosen.items()}
    assert "accuracy" in done.stdout
