"""What a fresh install must give: an environment in which lmms-eval's evaluator runs, a command
line whose `--help` loads no model code, task configs that ship inside the package, and (in CI,
where `.ci/run` builds it) the installed wheel running lmms-eval from outside the checkout."""
from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tspo_eval.integrations.lmms_tasks import tasks_path

REPO = Path(__file__).resolve().parents[1]


def test_lmms_eval_evaluator_runs_in_this_environment():
    """lmms-eval 0.7.3's `simple_evaluate` first patches filelock through `filelock._api`; with a
    filelock that lacks it (4.3.1+) lmms-eval logs the ImportError, writes no results and exits 0.
    pyproject.toml caps filelock for that reason; this fails when the installed pair disagrees."""
    code = ("import filelock, lmms_eval.evaluator as e; e._enable_reentrant_filelocks(); "
            "print(filelock.__version__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, ("lmms-eval's evaluator cannot run in this environment: "
                                  + (done.stderr.strip().splitlines() or ["?"])[-1]
                                  + " (see the filelock cap in pyproject.toml)")


def test_every_help_answers_without_loading_torch():
    """`tspo-eval --help` and every subcommand's `--help` build their parser from the config
    dataclasses alone: neither torch nor transformers is imported (the old cli imported torch at
    its top: 6-13 s per --help)."""
    script = """
import contextlib, io, sys
from tspo_eval.cli import _commands, main
offenders = []
for argv in [[], *[[name] for name in _commands()], ["vlmeval", "run"], ["vlmeval", "convert"]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main(argv + ["--help"])
        except SystemExit as exit:
            assert exit.code == 0, (argv, exit.code)
    assert "usage: tspo-eval" in out.getvalue(), argv
    offenders += [(argv, m) for m in ("torch", "transformers") if m in sys.modules]
print(len(_commands()), offenders)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    count, offenders = done.stdout.split(" ", 1)
    assert int(count) >= 14 and offenders.strip() == "[]", offenders


def test_vlmeval_run_help_with_a_percent_in_a_field_help():
    """argparse formats help strings with %; a field help holding '%' (compile_vision's "~20%")
    crashed `tspo-eval vlmeval run --help` with TypeError."""
    done = subprocess.run([sys.executable, "-m", "tspo_eval.cli", "vlmeval", "run", "--help"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "~20%" in done.stdout


def test_task_configs_are_package_data():
    """Every file of the shipped task folder matches a package-data pattern, so a built wheel has it."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["tspo_eval"]
    package = REPO / "tspo_eval"
    files = [p.relative_to(package).as_posix() for p in tasks_path().rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert tasks_path() == package / "tasks" and len(files) >= 14
    assert {f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)} == set()
    assert {p.parent.name for p in tasks_path().glob("*/*.yaml")} == {"longvideobench", "lvbench", "mlvu", "videomme"}


# ----------------------------------------------------------------------------- the installed wheel
WHEEL_VENV = os.environ.get("TSPO_WHEEL_VENV")


@pytest.mark.skipif(not WHEEL_VENV, reason="needs TSPO_WHEEL_VENV: a venv with the built wheel installed "
                                           "(non-editable); .ci/run makes one")
def test_installed_wheel_runs_lmms_eval_outside_the_checkout(mini_benchmarks, tmp_path):
    """`pip install <wheel>` (not editable) in its own venv; from a folder outside the checkout,
    lmms-eval finds our model (entry point) and task (`tspo-eval tasks-path`), and `tspo-eval
    evaluate` selects frames and runs lmms-eval per method, with nothing from the checkout."""
    from tspo_eval.backbones.llava_video import random_llava_video

    venv = Path(WHEEL_VENV)
    python, tspo_eval_cmd = venv / "bin" / "python", venv / "bin" / "tspo-eval"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    def run(*cmd: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(c) for c in cmd], cwd=elsewhere, env={**env, **(extra or {})},
                              capture_output=True, text=True, timeout=900, check=False)

    where = run(python, "-c", "import tspo_eval, lmms_eval; print(tspo_eval.__file__)")
    assert where.returncode == 0, where.stderr[-2000:]
    installed = Path(where.stdout.strip()).resolve()
    assert venv.resolve() in installed.parents and REPO not in installed.parents
    tasks = Path(run(tspo_eval_cmd, "tasks-path").stdout.strip())
    assert tasks == installed.parent / "tasks" and (tasks / "lvbench" / "tspo_lvbench.yaml").is_file()

    ckpt = tmp_path / "llava"
    random_llava_video("tiny", dtype="float32", device="cpu").save_pretrained(ckpt)
    annotations, videos = mini_benchmarks["lvbench"]
    data = {"TSPO_LVBENCH_ANNOTATIONS": str(annotations), "TSPO_LVBENCH_VIDEOS": str(videos)}
    record = tmp_path / "answers.jsonl"
    done = run(python, "-m", "lmms_eval", "--model", "llava_vid_uniform", "--model_args",
               f"pretrained={ckpt},k=4,dtype=float32,record={record}", "--tasks", "tspo_lvbench",
               "--include_path", tasks, "--batch_size", "1", "--output_path", "out", "--device", "cpu", extra=data)
    assert done.returncode == 0, done.stderr[-4000:]
    results = list((elsewhere / "out").rglob("*_results.json"))
    assert len(results) == 1, done.stderr[-4000:]
    assert "lvbench_acc,none" in json.loads(results[0].read_text())["results"]["tspo_lvbench"]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(rows) == 4 and all(r["error"] is None and len(r["frame_numbers"]) == 4 for r in rows)

    # a folder named like our package where the user stands must not be what lmms-eval's child imports
    (elsewhere / "tspo_eval").mkdir()
    (elsewhere / "tspo_eval" / "__init__.py").write_text("raise ImportError('the decoy in the working folder')\n")
    done = run(tspo_eval_cmd, "evaluate", "--benchmark", "lvbench", "--annotations", annotations, "--videos", videos,
               "--pretrained", ckpt, "--agent", "random:clip-tiny", "--k", "4", "--out", "runs",
               "--model-args", "dtype=float32")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    summary = json.loads((elsewhere / "runs" / "summary_lvbench.json").read_text())
    assert set(summary) == {"uniform", "tspo"} and "lvbench_acc" in summary["tspo"]
