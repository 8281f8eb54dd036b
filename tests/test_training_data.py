"""Training rows, candidate rules and needle-in-a-haystack episodes built from cached features."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tspo_eval.agent import random_agent
from tspo_eval.cache import FeatureCache
from tspo_eval.synthetic import read_frame_number
from tspo_eval.training.data import EpisodeBuilder, Sample, parse_row, read_samples

# The published toy example's row (TSPO-10K format), as released in toy_example/example1.jsonl.
TSPO_ROW = {"video": "demo/208.mp4", "original_question": "<image>\nWhat is the scene at the beginning of the video?"
            "\nA. Windswept sandy shore.\nB. enchanted, mist-shrouded forest.\nC. Boundless grassland.\n"
            "D. trumpeting elephants.", "original_answer": "A. Windswept sandy shore.",
            "problem": "<image>\nWhat is the scene at the beginning of the video?", "solution": "<answer>a</answer>",
            "complete_answer": "A. Working with a drill press.", "type": "general"}


def test_tspo10k_row():
    s = parse_row(TSPO_ROW)
    assert s.question == "What is the scene at the beginning of the video?"
    assert s.options == ("Windswept sandy shore.", "enchanted, mist-shrouded forest.", "Boundless grassland.",
                         "trumpeting elephants.")
    assert s.answer == "A" and s.kind == "multiple_choice" and not s.needle and s.video == "demo/208.mp4"
    assert s.prompt.startswith("What is the scene") and "\nD. trumpeting elephants." in s.prompt
    assert s.prompt.endswith("\nPlease answer with the option's letter from the given choices directly.")
    assert parse_row({**TSPO_ROW, "type": "specific"}).needle


def test_temporal_rlt_rows():
    g = parse_row({"video": "a.mp4", "problem": "When does the man sit?", "problem_type": "grounding",
                   "timestamps": [12.0, 4.0], "dataset": "charades"})
    assert g.kind == "grounding" and g.span == (4.0, 12.0) and g.source == "charades" and "start_time" in g.prompt
    n = parse_row({"video": "a.mp4", "problem": "When?", "problem_type": "tvg", "solution": [0.25, 0.5],
                   "video_length": 40})
    assert n.kind == "grounding" and n.span == (10.0, 20.0)
    q = parse_row({"video": "a.mp4", "problem": "What is held?", "problem_type": "grounded_qa",
                   "options": ["cup", "book"], "solution": "<answer>B</answer>", "timestamps": [1, 2]})
    assert q.answer == "B" and q.options == ("cup", "book") and q.span == (1.0, 2.0) and "B. book" in q.prompt
    with pytest.raises(ValueError, match="problem_type"):
        parse_row({"video": "a", "problem": "x", "problem_type": "caption"})
    with pytest.raises(ValueError, match="timestamps"):
        parse_row({"video": "a", "problem": "x", "problem_type": "grounding"})


def test_read_samples_names_a_bad_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(TSPO_ROW) + "\n" + json.dumps({"video": "x", "problem_type": "grounding"}) + "\n")
    with pytest.raises(ValueError, match="row 1"):
        read_samples(path)
    path.write_text(json.dumps(TSPO_ROW) + "\n\n{cut short\n")  # was json's "Expecting ..." with no file
    with pytest.raises(ValueError, match=rf"{path}, line 3: not JSON \(Expecting property name"):
        read_samples(path)
    path.write_text("[\n" + json.dumps(TSPO_ROW) + ",\n{cut short\n]")
    with pytest.raises(ValueError, match=rf"{path}, line 3: not JSON"):
        read_samples(path)
    with pytest.raises(FileNotFoundError, match=r"--data .*missing.jsonl: no such file; give the training questions"):
        read_samples(tmp_path / "missing.jsonl")


class CountingEncoder:
    """The agent's encoder, counting the frames it encodes."""

    def __init__(self, inner) -> None:
        self.inner, self.identity, self.dim, self.frames = inner, inner.identity, inner.dim, 0

    def encode_frames(self, frames):
        self.frames += len(frames)
        return self.inner.encode_frames(frames)

    def encode_text(self, texts):
        return self.inner.encode_text(texts)

    def __getattr__(self, name):  # device, dtype, model ...: the wrapped encoder's
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def videos(numbered_video_factory):
    """A 60 s target, three distractors (one of another size), a 30 s short video; all 2 fps."""
    target = numbered_video_factory(num_frames=120, fps=2.0)
    others = [numbered_video_factory(num_frames=n, fps=2.0) for n in (100, 110)]
    others.append(numbered_video_factory(num_frames=104, fps=2.0, height=64, width=96))
    short = numbered_video_factory(num_frames=60, fps=2.0)
    return target, others, short


@pytest.fixture()
def builder(tmp_path):
    encoder = CountingEncoder(random_agent("clip-tiny").encoder)
    return EpisodeBuilder(None, encoder, FeatureCache(tmp_path / "cache"), max_candidates=40, min_candidates=35,
                          distractors=4, clip_len=5, max_repeats=2)


def sample(video, **kw) -> Sample:
    return Sample(id="s", video=str(video), kind="multiple_choice", question="which number?", prompt="p",
                  options=("a", "b"), answer="A", **kw)


def test_features_once_per_video_and_span_target(builder, videos):
    target, _, _ = videos
    s = sample(target, span=(10.0, 14.0))
    ep = builder.build(s, np.random.default_rng(0))
    encoded = builder.encoder.frames
    assert encoded == 40 and len(ep.timestamps) == 40  # 60 one-fps candidates capped at 40
    for seed in range(3):
        builder.build(s, np.random.default_rng(seed))
    assert builder.encoder.frames == encoded  # cached per video: never per question or rollout
    np.testing.assert_array_equal(ep.target, (ep.timestamps >= 9.5) & (ep.timestamps <= 14.5))
    np.testing.assert_array_equal([read_frame_number(f) for f in ep.frames([0, 5, 39])], ep.frame_numbers[[0, 5, 39]])


def test_too_few_one_fps_candidates_take_max_candidates_over_all_frames(builder, videos):
    _, _, short = videos  # 30 one-fps candidates < min_candidates 35 -> 40 of the 60 frames
    ep = builder.build(sample(short), np.random.default_rng(0))
    np.testing.assert_array_equal(ep.frame_numbers, np.round(np.linspace(0, 59, 40)).astype(int))
    assert ep.target is None and ep.duration == pytest.approx(30.0)


def test_needle_haystack_from_cached_distractor_features(builder, videos):
    target, others, _ = videos
    builder.pool = [str(target), *map(str, others)]
    s = sample(target, needle=True)
    ep = builder.build(s, np.random.default_rng(3))
    t = len(ep.timestamps)
    assert t % 5 == 0 and 5 * (1 + 4) <= t <= 5 * (2 + 4)  # 1-2 target clips + 4 distractor clips of 5
    assert ep.target.sum() in (5, 10) and ep.videos[0] == str(target)
    assert (ep.source[ep.target] == 0).all() and (ep.source[~ep.target] != 0).all()  # never the target itself
    for v, path in enumerate(ep.videos):
        rows = np.flatnonzero(ep.source == v)
        vf = builder.features(path)
        positions = np.searchsorted(vf.frame_numbers, ep.frame_numbers[rows])
        torch.testing.assert_close(ep.features[rows], vf.features[positions])
    pixels = ep.frames(np.arange(t))
    assert pixels.shape[1:3] == (48, 64)  # distractors of another size resized to the target's
    same_size = [i for i in range(t) if ep.videos[ep.source[i]] != str(others[2])]
    assert [read_frame_number(pixels[i]) for i in same_size] == ep.frame_numbers[same_size].tolist()
    odd = [i for i in range(t) if i not in same_size]
    assert odd  # a request of only the other-size distractor's frames still gets the target's size
    np.testing.assert_array_equal(ep.frames(odd), pixels[odd])
    assert ep.preload()
    np.testing.assert_array_equal(ep.frames(odd), pixels[odd])
    again = builder.build(s, np.random.default_rng(3))
    np.testing.assert_array_equal(again.frame_numbers, ep.frame_numbers)  # reproducible from the step's seed


def test_needle_without_other_videos_is_refused(builder, videos):
    target, _, _ = videos
    builder.pool = [str(target)]
    with pytest.raises(ValueError, match="distractor"):
        builder.build(sample(target, needle=True), np.random.default_rng(0))
