"""Renamed settings (docs/renames.md): the new spelling at every door (flag, YAML key, lmms-eval
model_args, VLMEvalKit kwargs, Python), the old one still accepted for one release with a
one-line note naming the new one, and the same value either way."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tspo_eval.answering import AnswerConfig
from tspo_eval.cli import build_parser
from tspo_eval.cli.vlmeval import _model_args
from tspo_eval.config import config_from_args, config_with_file, renamed_from
from tspo_eval.integrations import vlmeval as tv
from tspo_eval.integrations.lmms_runner import EvaluateConfig, lmms_eval_command
from tspo_eval.integrations.models import ModelArgs, parse_model_args
from tspo_eval.policy import FramePolicy, parse_policy
from tspo_eval.selection.methods import frames_for_question, uniform_frames
from tspo_eval.selection.registry import select
from tspo_eval.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
RENAMES = {  # class -> {old: new}: the table of docs/renames.md, written out by hand
    AnswerConfig: {"batch_size": "answer_batch", "decode_workers": "answer_threads", "prefetch": "prefetch_questions"},
    ModelArgs: {"decode_workers": "answer_threads", "prefetch": "prefetch_questions"},
    EvaluateConfig: {"batch_size": "answer_batch"},
    TrainConfig: {"prefetch": "prefetch_episodes"},
}


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "deprecated" in line]


def test_the_renames_are_the_documented_ones():
    assert {cls: renamed_from(cls) for cls in RENAMES} == RENAMES
    doc = (REPO / "docs" / "renames.md").read_text()
    rows = set(re.findall(r"^\|[^|]*\|\s*`([\w-]+)`\s*\|\s*`([\w-]+)`\s*\|", doc, flags=re.M))
    assert {(old, new) for table in RENAMES.values() for old, new in table.items()} <= rows


def test_lmms_eval_model_args_take_the_old_spellings_with_a_note(capsys):
    new = parse_model_args("llava_vid_tspo", {"answer_threads": "2", "prefetch_questions": "3"})
    assert notes(capsys.readouterr().err) == []
    old = parse_model_args("llava_vid_tspo", {"decode_workers": "2", "prefetch": "3"})
    assert old == new and (old.answer_threads, old.prefetch_questions) == (2, 3)
    lines = notes(capsys.readouterr().err)
    assert len(lines) == 2 and "write answer_threads" in lines[0] and "write prefetch_questions" in lines[1]
    assert all("llava_vid_tspo" in line for line in lines)
    with pytest.raises(ValueError, match="decode_workers and answer_threads are the same setting"):
        parse_model_args("llava_vid_tspo", {"decode_workers": "2", "answer_threads": "2"})


def test_vlmevalkit_kwargs_take_the_old_spellings_and_keep_the_predictions_folder(capsys):
    old, _ = tv.parse_args("qwen_2_5_vl_tspo", {"decode_workers": 5})
    assert old.answer_threads == 5 and "write answer_threads" in capsys.readouterr().err
    # answering threads change no answer: every spelling and value shares one predictions folder
    folders = {tv.predictions_dir("w", "qwen_2_5_vl_tspo", tv.frame_policy("qwen_2_5_vl_tspo", args, 8))
               for args in ({}, {"decode_workers": 5}, {"answer_threads": 2, "prefetch_questions": 1})}
    assert len(folders) == 1


def test_vlmeval_run_flags_take_the_old_spellings_hidden_from_help(capsys):
    argv = ["vlmeval", "run", "--model", "llava_vid_tspo", "--data", "LVBench"]
    new = build_parser(["vlmeval"]).parse_args([*argv, "--answer-threads", "2", "--prefetch-questions", "3"])
    old = build_parser(["vlmeval"]).parse_args([*argv, "--decode-workers", "2", "--prefetch", "3"])
    assert _model_args(old) == _model_args(new) == {"answer_threads": 2, "prefetch_questions": 3}
    lines = notes(capsys.readouterr().err)
    assert len(lines) == 2 and "write --answer-threads" in lines[0] and "write --prefetch-questions" in lines[1]
    assert _model_args(build_parser(["vlmeval"]).parse_args(argv)) == {}  # an old flag sets no default
    with pytest.raises(SystemExit):
        build_parser(["vlmeval"]).parse_args([*argv, "--help"])
    shown = capsys.readouterr().out
    assert "--answer-threads" in shown and "--decode-workers" not in shown and "--prefetch " not in shown


def test_evaluate_batch_size_is_answer_batch_and_reaches_lmms_eval(tmp_path, capsys):
    (tmp_path / "LVBench.tsv").write_text("index\n")
    argv = ["evaluate", "--benchmark", "lvbench", "--annotations", str(tmp_path / "LVBench.tsv"),
            "--videos", str(tmp_path)]
    for flag in ("--answer-batch", "--batch-size"):
        cfg = config_from_args(EvaluateConfig, build_parser(["evaluate"]).parse_args([*argv, flag, "4"]))
        cmd = lmms_eval_command(cfg, FramePolicy(method="uniform"))
        assert cfg.answer_batch == 4 and cmd[cmd.index("--batch_size") + 1] == "4"
    assert len(notes(capsys.readouterr().err)) == 1


def test_evaluate_has_the_answering_settings_of_every_other_door(tmp_path):
    """`--answer-threads` / `--prefetch-questions` (and their old spellings) reach lmms-eval's
    model_args, where the model reads them (`parse_model_args`), as in VLMEvalKit and `vlmeval run`."""
    from tspo_eval.integrations.models import parse_model_args

    (tmp_path / "LVBench.tsv").write_text("index\n")
    argv = ["evaluate", "--benchmark", "lvbench", "--annotations", str(tmp_path / "LVBench.tsv"),
            "--videos", str(tmp_path)]
    cfg = config_from_args(EvaluateConfig, build_parser(["evaluate"]).parse_args(
        [*argv, "--answer-threads", "2", "--prefetch-questions", "3"]))
    cmd = lmms_eval_command(cfg, FramePolicy(method="uniform"))
    model_args = dict(kv.split("=", 1) for kv in cmd[cmd.index("--model_args") + 1].split(","))
    assert (model_args["answer_threads"], model_args["prefetch_questions"]) == ("2", "3")
    parsed = parse_model_args(cmd[cmd.index("--model") + 1], {"answer_threads": "2", "prefetch_questions": "3"})
    assert (parsed.answer_threads, parsed.prefetch_questions) == (2, 3)
    plain = lmms_eval_command(config_from_args(EvaluateConfig, build_parser(["evaluate"]).parse_args(argv)),
                              FramePolicy(method="uniform"))
    assert "answer_threads" not in plain[plain.index("--model_args") + 1]  # unset: the model's defaults


def test_train_prefetch_as_flag_yaml_key_and_keyword(tmp_path, capsys):
    def parse(argv: list[str]):
        return build_parser(["train"]).parse_args(["train", "--environment", "synthetic", *argv])

    assert config_with_file(TrainConfig, parse(["--prefetch-episodes", "0"])).prefetch_episodes == 0
    assert notes(capsys.readouterr().err) == []
    assert config_with_file(TrainConfig, parse(["--prefetch", "0"])).prefetch_episodes == 0
    assert "write --prefetch-episodes" in capsys.readouterr().err
    (tmp_path / "old.yaml").write_text("prefetch: 0\nk: 8\n")
    cfg = config_with_file(TrainConfig, parse(["--config", str(tmp_path / "old.yaml")]))
    assert (cfg.prefetch_episodes, cfg.k) == (0, 8)
    assert notes(capsys.readouterr().err) == [f"note: {tmp_path / 'old.yaml'}: prefetch is deprecated, write "
                                              "prefetch_episodes (the old spelling goes in the next release)"]
    (tmp_path / "both.yaml").write_text("prefetch: 0\nprefetch_episodes: 1\n")
    with pytest.raises(ValueError, match="give prefetch_episodes only"):
        config_with_file(TrainConfig, parse(["--config", str(tmp_path / "both.yaml")]))


def test_python_keywords_take_the_old_spellings(capsys):
    assert AnswerConfig(batch_size=3, decode_workers=2, prefetch=5) == AnswerConfig(3, 16, 2, 5)
    assert len(notes(capsys.readouterr().err)) == 3
    assert TrainConfig(environment="synthetic", prefetch=0) == TrainConfig(environment="synthetic",
                                                                           prefetch_episodes=0)
    with pytest.raises(ValueError, match="AnswerConfig: batch_size and answer_batch"):
        AnswerConfig(batch_size=3, answer_batch=3)


def test_uniform_is_over_all_frames_and_evenly_spaced_over_the_candidates(capsys):
    candidates = np.arange(0, 300, 30)  # 10 candidates at 1 fps of a 30 fps, 300-frame video
    scores = np.linspace(0.0, 1.0, 10)
    assert uniform_frames(300, 30.0, 3).tolist() == [0, 149, 299]  # linspace(0, 299, 3) over every frame
    assert frames_for_question(candidates, scores, 3, "evenly-spaced", 300).tolist() == [0, 120, 270]
    with pytest.raises(ValueError, match="over all decoded frames"):
        frames_for_question(candidates, scores, 3, "uniform", 300)
    assert {parse_policy({"method": m}).method for m in ("uniform", "evenly-spaced")} == {"uniform", "evenly-spaced"}
    assert notes(capsys.readouterr().err) == []
    assert select(scores, 3, "uniform").tolist() == select(scores, 3, "evenly-spaced").tolist() == [0, 4, 9]
    (line,) = notes(capsys.readouterr().err)
    assert "select(method='uniform') is deprecated, write 'evenly-spaced'" in line
