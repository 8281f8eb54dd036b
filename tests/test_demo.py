"""The offline demo end to end, and the generated benchmarks it stands on.

The demo runs once per module at its defaults (seed 0): the trained agent's hit rate must
lie above the intervals of uniform and of the untrained agent, the table must agree with
the selection files scored by hand, and a rerun into the same folder must give the same
table.  The benchmark tests pin issue 18 item 7: a rerun of the generator into the same
folder used to rewrite the annotations without rewriting the videos.
"""
from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tspo_eval import plots
from tspo_eval.selection.stage import SelectionSet
from tspo_eval.synthetic import NEEDLE_COLORS, NeedleBenchmark, make_benchmark
from tspo_eval.video import probe, read_frames

UNTRAINED, TRAINED = "tspo, untrained head", "tspo, trained head"
CHANCE = "chance (8 random frames)"


def run_demo(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(["tspo-eval", "demo", *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"demo {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo at its defaults: 64 training and 60 held-out videos, K = 8, seed 0."""
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    return out, run_demo("--out", str(out), "--seed", "0")


def span_seconds(reference: str) -> tuple[int, int]:
    """LVBench's "MM:SS-MM:SS" in seconds."""
    start, end = (int(m) * 60 + int(s) for m, s in (t.split(":") for t in reference.split("-")))
    return start, end


def read_table(out) -> pd.DataFrame:
    return pd.read_csv(out / "quality.csv", index_col="method")


def test_trained_agent_beats_uniform_and_untrained_outside_their_intervals(demo):
    out, _ = demo
    table = read_table(out)
    assert list(table.index) == ["uniform", "topk", "aks", UNTRAINED, TRAINED, CHANCE]
    assert (table["questions"] == 60).all() and (table["frames"] == 8).all()
    trained = table.loc[TRAINED]
    for other in ("uniform", UNTRAINED):
        assert trained["hit_rate"] > table.loc[other, "hit_rate_hi"], table
        assert trained["hit_rate_lo"] > table.loc[other, "hit_rate_hi"], table  # the intervals do not even touch
    for name in table.index.drop(CHANCE):
        row = table.loc[name]
        assert row["hit_rate_lo"] <= row["hit_rate"] <= row["hit_rate_hi"]
        assert row["coverage_lo"] <= row["coverage"] <= row["coverage_hi"]
    # Chance, by hand: every video has 120 one-second candidates, 4 of them inside a 3 s segment
    # widened by 0.5 s on each side; K = 8 drawn at random.
    assert table.loc[CHANCE, "hit_rate"] == pytest.approx(1 - math.comb(116, 8) / math.comb(120, 8))
    assert table.loc[CHANCE, "coverage"] == pytest.approx(4 / 120)
    assert table.loc[CHANCE, ["hit_rate_lo", "hit_rate_hi", "coverage_lo", "coverage_hi"]].isna().all()


def test_table_agrees_with_the_selection_files_scored_by_hand(demo):
    out, _ = demo
    table = read_table(out)
    spans = {}
    for line in (out / "benchmark" / "heldout" / "video_info.meta.jsonl").read_text().splitlines():
        item = json.loads(line)
        spans[item["key"] + ".mp4"] = span_seconds(item["qa"][0]["time_reference"])
    for name, file in (("uniform", "uniform"), (UNTRAINED, "tspo-untrained-head"), (TRAINED, "tspo-trained-head")):
        run = SelectionSet.load(out / "selections" / f"{file}.json")
        hits = [any(spans[s.video.split("/")[-1]][0] - 0.5 <= t <= spans[s.video.split("/")[-1]][1] + 0.5
                    for t in s.timestamps) for s in run.selections.values()]
        assert len(hits) == 60 and table.loc[name, "hit_rate"] == pytest.approx(np.mean(hits)), name
    uniform = SelectionSet.load(out / "selections" / "uniform.json")
    for s in uniform.selections.values():  # lmms-eval's linspace over all 480 frames of a 4-fps video
        assert s.frame_numbers == np.linspace(0, 479, 8, dtype=int).tolist()


def test_the_head_really_trained(demo):
    out, proc = demo
    metrics = [json.loads(x) for x in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 800
    first, last = np.mean([m["reward"] for m in metrics[:50]]), np.mean([m["reward"] for m in metrics[-50:]])
    assert last > first + 0.1 and last > 0.9, (first, last)
    untrained = SelectionSet.load(out / "selections" / "tspo-untrained-head.json").selections
    trained = SelectionSet.load(out / "selections" / "tspo-trained-head.json").selections
    assert sum(untrained[q].frame_numbers != trained[q].frame_numbers for q in trained) > 40


def test_progress_legend_and_pictures(demo):
    out, proc = demo
    stages = ("generate", "extract", "train", "select", "quality", "compare", "pictures")
    for n, stage in enumerate(stages, start=1):
        assert f"[{n}/7] {stage}:" in proc.stdout and f"{stage} done in" in proc.stdout
    assert "demo finished in" in proc.stdout and "synthetic answerer" in proc.stdout
    seconds = json.loads((out / "demo.json").read_text())["seconds"]
    assert set(seconds) == {*stages, "total"}
    text = (out / "quality.txt").read_text()
    assert "Wilson" in text and "bootstrap" in text and "chance" in text and "[95% CI]" in text
    questions = ["heldout0000", "heldout0010", "heldout0020"]  # the first three, not picked by outcome
    expected = {"summary.png", "training_reward.png"} | {f"{q}_{kind}.png" for q in questions
                                                         for kind in ("timelines", "frames")}
    assert {p.name for p in (out / "plots").glob("*.png")} == expected
    for name in expected:
        with Image.open(out / "plots" / name) as im:
            assert im.size[0] > 600 and im.size[1] > 250, name


def test_selector_comparison_on_the_held_out_split(demo):
    """compare/: every CLIP-scored selector and the trained agent on the same cache; where a
    selector also ran in the select stage (its own selection path), both give the same numbers."""
    out, proc = demo
    table = pd.read_csv(out / "compare" / "compare_lvbench.csv", index_col="method")
    assert list(table.index) == ["uniform", "topk", "bin-max", "aks:preset=tspo", "bolt", "dpp", "focus", "tspo"]
    assert (table["questions"] == 60).all() and (table["frames"] == 8).all() and (table["failed"] == 0).all()
    quality = read_table(out)
    for mine, theirs in (("uniform", "uniform"), ("topk", "topk"), ("aks:preset=tspo", "aks"), ("tspo", TRAINED)):
        assert table.loc[mine, ["hit_rate", "coverage"]].tolist() == \
            pytest.approx(quality.loc[theirs, ["hit_rate", "coverage"]].tolist()), mine
    # share of the candidates scored: none for uniform, all for the score readers, part for focus
    assert table.loc["uniform", "scored"] == 0 and (table.drop(index=["uniform", "focus"])["scored"] == 1).all()
    assert 0 < table.loc["focus", "scored"] < 1
    assert (table["ms_per_question"] > 0).all()
    focus = SelectionSet.load(out / "compare" / "selections" / "focus_lvbench.json").selections
    assert np.mean([s.scored for s in focus.values()]) == pytest.approx(table.loc["focus", "scored"])
    assert (out / "compare" / "compare_lvbench.png").stat().st_size > 10_000
    assert "Selectors side by side" in proc.stdout and "| focus" in proc.stdout


def test_rerun_into_the_same_folder_gives_the_same_table(demo):
    out, _ = demo
    table = (out / "quality.csv").read_bytes()
    selections = {p.name: p.read_bytes() for p in (out / "selections").glob("*.json")}
    videos = {p: p.stat().st_mtime_ns for p in (out / "benchmark").rglob("*.mp4")}
    run_demo("--out", str(out), "--seed", "0")
    assert (out / "quality.csv").read_bytes() == table
    assert {p.name: p.read_bytes() for p in (out / "selections").glob("*.json")} == selections
    assert {p: p.stat().st_mtime_ns for p in (out / "benchmark").rglob("*.mp4")} == videos  # reused, not rewritten
    assert len((out / "training" / "metrics.jsonl").read_text().splitlines()) == 800  # trained afresh, not appended


def test_agent_flag_skips_training_and_reproduces_the_trained_selections(demo, tmp_path):
    out, _ = demo
    proc = run_demo("--out", str(tmp_path / "eval"), "--agent", str(out / "agent"), "--heldout-videos", "6",
                    "--examples", "1")
    assert "[3/6] select:" in proc.stdout and "train:" not in proc.stdout
    table = read_table(tmp_path / "eval")
    assert list(table.index) == ["uniform", "topk", "aks", "tspo (agent)", "chance (8 random frames)"]
    # the first 6 held-out videos are those of the 60-video split (seeded per video), and the
    # exported agent scores them as the trained head did
    mine = SelectionSet.load(tmp_path / "eval" / "selections" / "tspo-agent.json").selections
    trained = SelectionSet.load(out / "selections" / "tspo-trained-head.json").selections
    assert len(mine) == 6 and all(mine[q].frame_numbers == trained[q].frame_numbers for q in mine)


# ----------------------------------------------------------------------------- generated benchmarks
def square_color(video, fps: float, seconds: float) -> np.ndarray:
    frame = read_frames(video, [int(seconds * fps)])[0]
    h, w = frame.shape[:2]
    return frame[h // 2 - 4: h // 2 + 4, w // 2 - 4: w // 2 + 4].reshape(-1, 3).mean(0)


def check_videos_match_annotations(root, spec: NeedleBenchmark) -> None:
    """Every video has the spec's length and shows the answer's colour in its segment, not before."""
    for line in (root / "video_info.meta.jsonl").read_text().splitlines():
        item = json.loads(line)
        qa = item["qa"][0]
        options = dict(o[1:].split(") ") for o in qa["question"].splitlines()[1:])
        start, end = span_seconds(qa["time_reference"])
        video = root / "videos" / f"{item['key']}.mp4"
        assert probe(video).num_frames == int(spec.duration * spec.video_fps)
        inside = square_color(video, spec.video_fps, (start + end) / 2)
        assert np.abs(inside - NEEDLE_COLORS[options[qa["answer"]]]).max() < 25, (item["key"], inside)
        outside = square_color(video, spec.video_fps, start - 3)
        assert np.abs(outside - NEEDLE_COLORS[options[qa["answer"]]]).max() > 40, (item["key"], outside)


def test_rerun_of_the_generator_reuses_videos_and_keeps_annotations_matching(tmp_path):
    spec = NeedleBenchmark(videos=4, duration=30.0, video_fps=4.0, seed=5)
    make_benchmark(tmp_path, spec)
    annotations = (tmp_path / "video_info.meta.jsonl").read_text()
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "videos").glob("*.mp4")}
    make_benchmark(tmp_path, spec)
    assert (tmp_path / "video_info.meta.jsonl").read_text() == annotations
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "videos").glob("*.mp4")} == written
    check_videos_match_annotations(tmp_path, spec)


def test_generation_is_deterministic_per_video(tmp_path):
    small, large = NeedleBenchmark(videos=2, duration=30.0, video_fps=4.0, seed=5), \
        NeedleBenchmark(videos=3, duration=30.0, video_fps=4.0, seed=5)
    make_benchmark(tmp_path / "small", small)
    make_benchmark(tmp_path / "large", large)
    lines = {name: (tmp_path / name / "video_info.meta.jsonl").read_text().splitlines() for name in ("small", "large")}
    assert lines["small"] == lines["large"][:2]
    for name in ("demo000.mp4", "demo001.mp4"):
        small_video, large_video = (tmp_path / size / "videos" / name for size in ("small", "large"))
        assert small_video.read_bytes() == large_video.read_bytes()
    other = NeedleBenchmark(videos=2, duration=30.0, video_fps=4.0, seed=5, prefix="heldout")
    make_benchmark(tmp_path / "other", other)
    assert (tmp_path / "other" / "videos" / "heldout000.mp4").read_bytes() != \
        (tmp_path / "small" / "videos" / "demo000.mp4").read_bytes()  # splits never share a video


def test_a_folder_of_another_spec_or_with_a_damaged_video_is_regenerated(tmp_path):
    make_benchmark(tmp_path, NeedleBenchmark(videos=3, duration=40.0, video_fps=4.0, seed=1))
    spec = NeedleBenchmark(videos=2, duration=30.0, video_fps=4.0, seed=2)
    make_benchmark(tmp_path, spec)
    assert sorted(p.name for p in (tmp_path / "videos").glob("*.mp4")) == ["demo000.mp4", "demo001.mp4"]
    check_videos_match_annotations(tmp_path, spec)
    damaged = tmp_path / "videos" / "demo001.mp4"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # as a kill mid-copy leaves it
    make_benchmark(tmp_path, spec)
    check_videos_match_annotations(tmp_path, spec)
    (tmp_path / "benchmark.json").unlink()  # a folder with no record of its spec (older versions wrote none)
    (tmp_path / "videos" / "demo000.mp4").write_bytes((tmp_path / "videos" / "demo001.mp4").read_bytes())
    make_benchmark(tmp_path, spec)
    check_videos_match_annotations(tmp_path, spec)


def test_benchmark_spec_rejects_impossible_layouts():
    with pytest.raises(ValueError, match="no room"):
        NeedleBenchmark(duration=12.0, needle=3.0)
    with pytest.raises(ValueError, match="even"):
        NeedleBenchmark(size=(95, 128))


# ----------------------------------------------------------------------------- pictures
def test_legends_sit_outside_every_axes(tmp_path, monkeypatch):
    """A legend inside the axes can hide the very frame that hits: none may overlap an axes."""
    layouts = []  # per figure: (legend boxes, axes boxes), measured as drawn
    save = plots._save

    def measure(fig, path):
        renderer = fig.canvas.get_renderer()
        fig.draw(renderer)
        legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        layouts.append(([lg.get_window_extent(renderer) for lg in legends],
                        [ax.get_window_extent(renderer) for ax in fig.axes]))
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", measure)
    ts = np.arange(120.0)
    scores = np.sin(ts / 10)
    panels = [plots.Panel("uniform", ts, None, "(uses no score)", [0.0, 60.0, 119.0]),
              plots.Panel("topk", ts, scores, "CLIP cosine", [14.0, 15.0, 16.0])]
    plots.method_timelines(panels, [(100.0, 103.0)], tmp_path / "t.png", "title")
    plots.score_timeline(ts, scores, [14.0, 119.0], tmp_path / "s.png", "title", [(118.0, 119.0)], "agent score S")
    plots.reward_curve([{"step": i + 1, "reward": float(i % 2)} for i in range(40)], tmp_path / "r.png", 0.25)
    table = pd.DataFrame({"hit_rate": [0.5, 0.9, 0.2], "coverage": [0.1, 0.3, 0.05], "hit_rate_lo": [0.4, 0.8, np.nan],
                          "hit_rate_hi": [0.6, 0.95, np.nan], "coverage_lo": [0.05, 0.2, np.nan],
                          "coverage_hi": [0.15, 0.4, np.nan]}, index=["a", "b", "chance"])
    plots.comparison_chart(table, tmp_path / "q.png", chance="chance")
    assert len(layouts) == 4
    for legends, axes in layouts:
        assert len(legends) == 1
        assert not any(legends[0].overlaps(box) for box in axes)
