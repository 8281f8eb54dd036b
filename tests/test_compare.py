"""`compare`: every selector over one cache, on the generated demo benchmark (real videos), with an
encoder whose scores are known, so the table has truths to meet; and the console command."""
from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tspo_eval import compare as compare_mod
from tspo_eval.benchmarks import load_benchmark
from tspo_eval.cache import FeatureCache
from tspo_eval.compare import CompareConfig, add_accuracy, compare_selectors, method_spec, write_comparison
from tspo_eval.synthetic import NeedleBenchmark, make_benchmark
from tspo_eval.encoders import as_uint8_batch
from tspo_eval.policy import FramePolicy
from tspo_eval.selection.stage import SelectionSet

AGENT = ["--agent", "random:clip-tiny"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class NeedleEncoder:
    """Sees only whether a frame shows the demo's needle (the striped background): feature
    (1, 0, 0, 0) there, (0, r, g, b) of the plain scene colour elsewhere; every question's text
    is (1, 0, 0, 0). So the CLIP cosine is 1 on the needle and 0 elsewhere."""

    identity, dim, image_size, device = "needle-oracle", 4, 32, torch.device("cpu")

    def compile(self):
        return self

    def encode_frames(self, frames) -> torch.Tensor:
        x = as_uint8_batch(frames).float()  # (N, H, W, 3)
        striped = (x.mean(-1).flatten(1).std(1) > 10).float()[:, None]  # plain scenes: compression noise only
        colour = x.mean((1, 2)) / 255
        return torch.cat([striped, (1 - striped) * colour], dim=1)

    def encode_text(self, texts) -> torch.Tensor:
        return torch.tensor([[1.0, 0, 0, 0]]).repeat(len(texts), 1)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    videos, jsonl, tsv = make_benchmark(root, NeedleBenchmark(videos=3, duration=40.0, video_fps=8.0))
    return root, videos, jsonl, tsv


def test_selector_quality_table_on_the_generated_benchmark(bench, tmp_path, capsys):
    root, videos, jsonl, tsv = bench
    questions = load_benchmark("lvbench", tsv, jsonl)
    cfg = CompareConfig(methods=("uniform", "topk", "bolt", "dpp", "aks", "aks:preset=tspo,depth=1", "tspo"),
                        out=tmp_path / "out")
    result = compare_selectors(questions, videos, NeedleEncoder(), FeatureCache(tmp_path / "cache"), cfg,
                               FramePolicy(k=4), progress=False)
    assert "skipping tspo" in capsys.readouterr().out  # scored by the agent, and none was given
    table = result.table
    assert list(table.index) == ["uniform", "topk", "bolt", "dpp", "aks", "aks:preset=tspo,depth=1"]
    # The needle lasts 3 s (24 frames at 8 fps): exactly 3 of the 1-fps candidates show it, and
    # only they score 1. topk takes those 3 and the earliest zero (t = 0 s, before any needle,
    # which starts >= 5 s in): coverage 3/4 on every question.
    assert table.loc["topk", "hit_rate"] == 1.0 and table.loc["topk", "coverage"] == pytest.approx(0.75)
    # bolt puts all its mass on the 3 needle candidates and spreads its repeats next to them
    assert table.loc["bolt", "hit_rate"] == 1.0 and table.loc["bolt", "coverage"] >= 0.75
    # dpp takes one needle frame (the others duplicate it), then diverse scenes
    assert table.loc["dpp", "hit_rate"] == 1.0 and table.loc["dpp", "coverage"] < table.loc["topk", "coverage"]
    # uniform frames are 13 s apart: at most one of four lies in a 3-s span (+-0.5 s)
    assert table.loc["uniform", "coverage"] <= 0.25
    # aks at its published depth 5 keeps floor(4 / 32) = 0 frames: every question fails, and is counted
    assert table.loc["aks", "failed"] == 3 and table.loc["aks", "questions"] == 0
    assert "chose no frames" in next(iter(result.runs["aks"].failed.values()))
    ok = table.drop(index="aks")
    assert (ok["failed"] == 0).all() and (ok["questions"] == 3).all() and (ok["frames"] == 4).all()
    assert (ok["ms_per_question"] > 0).all() and (ok["ms_per_question"] < 1000).all()
    assert all(len(result.seconds[m]) == 3 for m in ok.index)

    paths = write_comparison(result, cfg.out, "lvbench")
    csv = pd.read_csv(cfg.out / "compare_lvbench.csv", index_col="method")
    assert list(csv.index) == list(table.index)
    np.testing.assert_allclose(csv["coverage"], table["coverage"])
    assert "| topk" in (cfg.out / "compare_lvbench.md").read_text()
    with Image.open(cfg.out / "compare_lvbench.png") as im:
        assert im.size[0] > 600
    saved = SelectionSet.load(cfg.out / "selections" / "aks-preset-tspo-depth-1_lvbench.json")
    assert saved.meta["label"] == "aks:preset=tspo,depth=1" and saved.meta["params"] == {"preset": "tspo", "depth": 1}
    assert {s.frame_numbers[0] for s in result.runs["topk"].selections.values()} == {0}
    assert len(paths) == 3 + 6


def test_method_specs_are_checked_when_the_config_is_built():
    label, cfg = method_spec("bolt:power=2.5,repeats=drop", FramePolicy(k=8))
    assert label == "bolt:power=2.5,repeats=drop" and cfg.method == "bolt"
    assert cfg.params == {"power": 2.5, "repeats": "drop"}
    with pytest.raises(ValueError, match="unknown method 'bolts'"):
        CompareConfig(methods=("bolts",))
    with pytest.raises(ValueError, match="NAME:KEY=VALUE"):
        CompareConfig(methods=("bolt:power",))
    with pytest.raises(ValueError, match="repeat"):
        CompareConfig(methods=("topk", "topk"))
    with pytest.raises(ValueError, match="backbone must be one of"):
        CompareConfig(backbone="gpt")
    with pytest.raises(ValueError, match="drop the method parameters"):
        CompareConfig(methods=("aks:preset=tspo",), backbone="llava_video")


def test_accuracy_joins_the_table_in_fractions(bench, tmp_path, monkeypatch):
    root, videos, jsonl, tsv = bench
    questions = load_benchmark("lvbench", tsv, jsonl)
    cfg = CompareConfig(methods=("uniform", "bolt"), out=tmp_path / "out", backbone="qwen2_5_vl")
    result = compare_selectors(questions, videos, NeedleEncoder(), FeatureCache(tmp_path / "cache"), cfg,
                               FramePolicy(k=4), progress=False)
    write_comparison(result, cfg.out, "lvbench")
    seen = {}

    def fake_evaluate(eval_cfg, policy, extract):  # lmms-eval's per-method table: rows metrics, columns methods
        seen["cfg"], seen["policy"] = eval_cfg, policy
        assert all((eval_cfg.out / "selections" / f"{m}_lvbench.json").is_file() for m in eval_cfg.methods)
        return pd.DataFrame({"uniform": {"lvbench_acc": 0.25, "lvbench_acc_reasoning": 0.0},
                             "bolt": {"lvbench_acc": 0.75, "lvbench_acc_reasoning": 1.0}})

    monkeypatch.setattr("tspo_eval.integrations.lmms_runner.evaluate", fake_evaluate)
    add_accuracy(result, cfg, "lvbench", jsonl, videos, tmp_path / "cache", agent="random:clip-tiny",
                 policy=FramePolicy(k=4))
    assert result.table["accuracy"].to_dict() == {"uniform": 0.25, "bolt": 0.75}
    assert seen["cfg"].methods == ("uniform", "bolt") and seen["cfg"].backbone == "qwen2_5_vl"
    assert seen["policy"].k == 4 and seen["cfg"].agent == "random:clip-tiny"
    assert compare_mod.BACKBONES == ("llava_video", "qwen2_5_vl")


def test_compare_command(bench, tmp_path):
    root, videos, jsonl, tsv = bench
    out = tmp_path / "cmp"
    args = ["tspo-eval", "compare", "--benchmark", "lvbench", "--annotations", str(jsonl),
            "--videos", str(videos), *AGENT, "--cache", str(tmp_path / "cache"), "--k", "4", "--out", str(out)]
    proc = run(*args)
    table = pd.read_csv(out / "compare_lvbench.csv", index_col="method")
    assert list(table.index) == ["uniform", "topk", "bin-max", "aks", "bolt", "dpp", "focus", "tspo"]
    assert table.loc["aks", "failed"] == 3 and (table.drop(index="aks")["questions"] == 3).all()
    assert "| tspo" in proc.stdout and (out / "compare_lvbench.png").stat().st_size > 1000
    proc = run(*args, "--methods", "topk", "nope", check=False)
    assert proc.returncode == 2 and "unknown method 'nope'" in proc.stderr


def test_a_method_scored_by_blip_compares_beside_its_clip_version(bench, tiny_blip, tmp_path, monkeypatch):
    from tspo_eval.selection.blip import BlipScorer

    root, videos, jsonl, tsv = bench
    questions = load_benchmark("lvbench", tsv, jsonl)
    blip = f"topk:scores=blip,blip_model={tiny_blip}"
    label, policy = method_spec(blip, FramePolicy(k=4))
    assert policy.method == "topk" and policy.score_source == "blip" and not policy.params
    cfg = CompareConfig(methods=("uniform", "topk", blip, "focus"), out=tmp_path / "out")
    cache = FeatureCache(tmp_path / "cache")
    result = compare_selectors(questions, videos, NeedleEncoder(), cache, cfg, FramePolicy(k=4), progress=False)
    assert list(result.table.index) == ["uniform", "topk", blip, "focus"] and result.table.loc[blip, "failed"] == 0
    # share of candidates scored: focus on 40 s videos (8 arms of 5 candidates) scores the 4 top arms
    # whole and 3 coarse samples in each of the other 4: 32 of 40, whatever the scores
    assert result.table["scored"].to_dict() == pytest.approx({"uniform": 0.0, "topk": 1.0, blip: 1.0, "focus": 0.8})
    assert all(sel.scored == 0.8 for sel in result.runs["focus"].selections.values())
    assert result.runs[blip].meta["scores"] == "blip"
    # one cached entry per question; each selection is topk of the BLIP scores of its video's candidates
    assert len(list((tmp_path / "cache" / "scores").rglob("*.safetensors"))) == len(questions)
    from tspo_eval.extract import video_features
    from tspo_eval.selection.blip import blip_scores
    from tspo_eval.selection.registry import select

    scorer = BlipScorer.from_pretrained(str(tiny_blip))
    monkeypatch.setattr(BlipScorer, "score_video", lambda *a, **k: pytest.fail("scored again"))
    for q in questions:
        path = videos / q.video_name
        vf = video_features(path, NeedleEncoder(), cache, policy.sampling)
        scores = blip_scores(scorer, vf, path, [q.question], cache, policy.sampling)[0]
        assert result.runs[blip].selections[q.index].frame_numbers == \
            vf.frame_numbers[select(scores.numpy(), 4, "topk")].tolist()


def test_a_refused_annotation_row_counts_as_failed_for_every_method(bench, tmp_path):
    """One bad row (its video path leaves the video root): compare runs the other questions and
    counts the refused one in every method's `failed` column, and in its selections file."""
    root, videos, jsonl, tsv = bench
    lines = tsv.read_text().split("\n")
    fields = lines[2].split("\t")
    fields[2] = "../escape.mp4"
    lines[2] = "\t".join(fields)
    bad = tmp_path / "bad.tsv"
    bad.write_text("\n".join(lines))
    out = tmp_path / "cmp"
    proc = run("tspo-eval", "compare", "--benchmark", "lvbench", "--annotations", str(bad), "--videos", str(videos),
               *AGENT, "--cache", str(tmp_path / "cache"), "--k", "4", "--methods", "topk", "dpp", "--out", str(out))
    table = pd.read_csv(out / "compare_lvbench.csv", index_col="method")
    assert table["failed"].tolist() == [1, 1]  # (no time references in a TSV alone: `questions` is 0)
    assert "1 row(s) refused" in proc.stderr
    for method in ("topk", "dpp"):
        saved = SelectionSet.load(out / "selections" / f"{method}_lvbench.json")
        assert list(saved.failed) == [fields[0]] and len(saved.selections) == 2
    proc = run("tspo-eval", "inspect", "--benchmark", "lvbench", "--annotations", str(bad), "--videos", str(videos),
               *AGENT, "--question", fields[0], "--out", str(tmp_path / "inspect"), check=False)
    assert proc.returncode != 0 and f"no question '{fields[0]}'" in proc.stderr and "its row was refused" in proc.stderr
