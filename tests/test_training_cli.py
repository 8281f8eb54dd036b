"""`tspo-eval train | export | select-data` end to end on generated videos, and early config errors."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tspo_eval.agent import TemporalAgent
from tspo_eval.benchmarks import load_benchmark, resolve_video
from tspo_eval.cli import build_parser, main
from tspo_eval.synthetic import NeedleBenchmark, make_benchmark


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["tspo-eval", *args], check=False, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    if check:
        assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Temporal-RLT multiple-choice rows on generated videos: their real spans, a span covering the
    whole video (every rollout sees it) and one outside it (none does)."""
    root = tmp_path_factory.mktemp("cli_bench")
    videos, jsonl, tsv = make_benchmark(root, NeedleBenchmark(videos=3, duration=40.0, video_fps=4.0, seed=7))
    out = []
    for q in load_benchmark("lvbench", tsv, jsonl):
        base = {"video": str(resolve_video(videos, q.video_name, "lvbench")), "problem": q.question,
                "problem_type": "multiple_choice", "options": list(q.candidates), "solution": q.answer_letter}
        out += [{**base, "id": f"{q.index}-needle", "timestamps": list(q.time_reference), "dataset": "needle"},
                {**base, "id": f"{q.index}-full", "timestamps": [0, 40], "dataset": "full"},
                {**base, "id": f"{q.index}-never", "timestamps": [100, 101], "dataset": "never"}]
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return root, path, out


def test_train_with_a_config_file_then_export(rows, tmp_path):
    root, data, _ = rows
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {data}\nenvironment: synthetic\nrollouts: 4\nk: 4\ngrad_accum: 3\nmax_steps: 5\n"
                      f"cache: {root / 'cache'}\noutput_dir: {tmp_path / 'run'}\nrewards:\n  accuracy: 1.0\n")
    proc = run("train", "--config", str(config), "--max-steps", "2", "--lr", "0.002")
    assert "step 2: reward" in proc.stdout
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["max_steps"] == 2 and saved["lr"] == 0.002 and saved["grad_accum"] == 3  # flags over the file
    assert saved["rewards"] == {"accuracy": 1.0} and saved["k"] == 4
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "run" / "checkpoints" / "step-000002" / "trainer.pt").is_file()
    proc = run("export", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "agent"))
    agent = TemporalAgent.from_pretrained(tmp_path / "agent")
    assert agent.selector.mlp[0].weight.shape == (64, 64)  # the run's clip-tiny, with the trained head


def test_select_data_keeps_exactly_the_samples_whose_rewards_disagree(rows, tmp_path):
    root, data, source_rows = rows
    out = tmp_path / "sel"
    run("select-data", "--data", str(data), "--out", str(out), "--environment", "synthetic", "--runs", "8",
        "--k", "4", "--tau", "1.0", "--rewards", "accuracy=1.0", "--cache", str(root / "cache"))
    scores = [json.loads(x) for x in (out / "scores.jsonl").read_text().splitlines()]
    assert [s["id"] for s in scores] == [r["id"] for r in source_rows]
    for s in scores:
        assert len(s["rewards"]) == 8 and s["kept"] == (max(s["rewards"]) > min(s["rewards"]))
        if s["source"] == "full":
            assert s["rewards"] == [1.0] * 8
        if s["source"] == "never":
            assert s["rewards"] == [0.0] * 8
    kept_rows = [json.loads(x) for x in (out / "kept.jsonl").read_text().splitlines()]
    assert [r["id"] for r in kept_rows] == [s["id"] for s in scores if s["kept"]]
    assert kept_rows == [r for r in source_rows if r["id"] in {k["id"] for k in kept_rows}]  # rows as given
    report = json.loads((out / "report.json").read_text())
    assert report["sources"]["full"]["kept"] == 0 and report["sources"]["never"]["kept"] == 0
    needle = [s for s in scores if s["source"] == "needle"]
    assert report["sources"]["needle"]["kept_fraction"] == pytest.approx(np.mean([s["kept"] for s in needle]))
    assert report["total"]["total"] == 9


def test_bad_configs_fail_before_any_model_is_loaded(tmp_path, capsys):
    def fails(*args: str) -> str:
        assert main(list(args)) == 2
        return capsys.readouterr().err

    assert "official" in fails("train", "--data", "x.jsonl", "--environment", "synthetic", "--objective", "official",
                               "--clip-eps", "0.2")
    assert "--backbone-path" in fails("train", "--data", "x.jsonl")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x.jsonl\nrolouts: 4\n")
    assert "rolouts" in fails("train", "--config", str(bad))
    assert "acuracy" in fails("train", "--environment", "synthetic", "--rewards", "acuracy=1")
    with pytest.raises(SystemExit):  # a Literal field: argparse's choices
        main(["select-data", "--data", "x.jsonl", "--statistic", "variance"])
    assert "invalid choice: 'variance'" in capsys.readouterr().err


SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize(("preset", "command", "cls"), [
    ("tspo_paper.yaml", "train", "TrainConfig"), ("tspo_official.yaml", "train", "TrainConfig"),
    ("temporal_rlt_lora.yaml", "train-llm", "LLMTrainConfig"), ("temporal_rlt_qwen_lora.yaml", "train-llm", "LLMTrainConfig"),
    ("select_data.yaml", "select-data", "VarianceConfig")])
def test_presets_are_valid_configs(preset, command, cls):
    from tspo_eval.training import config, llm_grpo, variance
    from tspo_eval.config import config_with_file

    ns = build_parser().parse_args([command, "--config", str(SCRIPTS / "train_configs" / preset)])
    cfg = config_with_file(getattr({"TrainConfig": config, "LLMTrainConfig": llm_grpo,
                                    "VarianceConfig": variance}[cls], cls), ns)
    assert cfg.rewards and (getattr(cfg, "rollouts", None) or cfg.runs) == 8


def test_launch_configs():
    from accelerate.commands.config.config_args import load_config_from_file

    assert load_config_from_file(str(SCRIPTS / "accelerate" / "multi_gpu.yaml")).distributed_type == "MULTI_GPU"
    assert load_config_from_file(str(SCRIPTS / "accelerate" / "deepspeed.yaml")).distributed_type == "DEEPSPEED"
    for stage in (2, 3):
        ds = json.loads((SCRIPTS / "deepspeed" / f"zero{stage}.json").read_text())
        assert ds["zero_optimization"]["stage"] == stage and ds["train_micro_batch_size_per_gpu"] == 1
    for script in ("train_agent.sh", "train_agent_accelerate.sh", "train_llm.sh"):
        assert subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=False).returncode == 0


def test_every_config_field_has_help():
    import dataclasses

    from tspo_eval.training.config import TrainConfig
    from tspo_eval.training.export import ExportConfig
    from tspo_eval.training.llm_grpo import LLMTrainConfig
    from tspo_eval.training.toy import ToyConfig
    from tspo_eval.training.variance import VarianceConfig

    for cls in (TrainConfig, LLMTrainConfig, VarianceConfig, ExportConfig, ToyConfig):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls.__name__
