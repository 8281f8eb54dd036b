"""Answerers: the synthetic environment's rule, and a real (tiny, random) LLaVA-Video asked per rollout."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tspo_eval.backbones.llava_video import random_llava_video
from tspo_eval.synthetic import read_frame_number
from tspo_eval.training.data import Episode, Sample
from tspo_eval.training.environment import (
    BackboneEnvironment,
    SyntheticEnvironment,
    build_environment,
)
from tspo_eval.training.rewards import parse_span


def episode(kind="multiple_choice", answer="D", target=True, video="v.mp4", t=10) -> Episode:
    mask = np.zeros(t, dtype=bool)
    mask[[3, 4, 5]] = True
    s = Sample(id="e", video=video, kind=kind, question="q", prompt="Which?\nA. w\nB. x\nC. y\nD. z",
               options=("w", "x", "y", "z") if kind != "grounding" else (), answer=answer, span=(3.0, 5.0))
    return Episode(s, torch.zeros(t, 4), torch.zeros(4), np.arange(t) * 2.0, 2.0 * t, mask if target else None,
                   [video], np.zeros(t, dtype=np.int64), np.arange(t) * 15, key="e")


def test_synthetic_answers_right_exactly_when_a_chosen_frame_shows_the_target():
    ep = episode(answer="D")
    hit, miss = np.array([0, 4, 9]), np.array([0, 1, 9])
    assert SyntheticEnvironment().complete(ep, [hit, miss]) == ["D", "A"]  # a miss gives another letter
    grounding = episode(kind="grounding")
    texts = SyntheticEnvironment().complete(grounding, [np.array([1, 3, 5, 8]), miss])
    assert parse_span(texts[0]) == (6.0, 10.0)  # the seen target frames' extent (timestamps 2 s apart)
    assert parse_span(texts[1]) is None
    with pytest.raises(ValueError, match="no target"):
        SyntheticEnvironment().complete(episode(target=False), [hit])


@pytest.fixture(scope="module")
def backbone():
    return random_llava_video("tiny", seed=0)


@pytest.fixture(scope="module")
def video_episode(numbered_video_factory) -> Episode:
    video = str(numbered_video_factory(num_frames=300, fps=10.0))
    return episode(video=video, t=20)


def test_one_query_per_rollout_with_the_right_frames_and_vision_computed_once(backbone, video_episode, monkeypatch):
    encoded = []
    original = backbone.encode_pixels
    monkeypatch.setattr(backbone, "encode_pixels", lambda pixels: encoded.append(len(pixels)) or original(pixels))
    backbone.clear_vision_cache()
    selections = [np.array([1, 4, 7]), np.array([4, 7, 12]), np.array([0, 7, 19])]
    env = BackboneEnvironment(backbone, "logits")
    queries = env.queries(video_episode, selections)
    for q, sel in zip(queries, selections):
        assert [read_frame_number(f) for f in q.frames] == (sel * 15).tolist()  # the chosen candidates' pixels
        assert q.timestamps == (sel * 2.0).tolist() and q.prompt == video_episode.sample.prompt
    env.complete(video_episode, selections)
    assert sum(encoded) == 6  # the union of the three rollouts' frames, each encoded once


def test_preloaded_candidates_are_the_pixels_decoding_on_demand_gives(video_episode):
    fresh = dataclasses.replace(video_episode, pixels=None)
    assert not fresh.preload(max_bytes=20 * 48 * 64 * 3 - 1)  # over the budget: stays on demand
    assert fresh.pixels is None
    chosen = np.array([0, 3, 3, 19])
    on_demand = fresh.frames(chosen)
    assert fresh.preload()
    assert fresh.pixels.shape[0] == 20
    np.testing.assert_array_equal(fresh.frames(chosen), on_demand)
    assert [read_frame_number(f) for f in fresh.pixels] == list(range(0, 300, 15))


def test_letter_from_first_token_logits_equals_greedy_decoding_of_one_token(backbone, video_episode):
    selections = [np.array([1, 4, 7]), np.array([2, 9, 13]), np.array([0, 7, 19]), np.array([5, 6, 8])]
    from_logits = BackboneEnvironment(backbone, "logits").complete(video_episode, selections)
    greedy = BackboneEnvironment(backbone, "generate", max_new_tokens=1).complete(video_episode, selections)
    assert [a.strip() for a in from_logits] == greedy
    one_by_one = BackboneEnvironment(backbone, "logits", answer_batch=1).complete(video_episode, selections)
    assert one_by_one == from_logits


def test_a_saved_backbone_is_one_flag_away(backbone, video_episode, tmp_path):
    backbone.save_pretrained(tmp_path / "llava")
    env = build_environment("backbone", "llava_video", str(tmp_path / "llava"), answer_from="logits", device="cpu")
    selections = [np.array([1, 4, 7]), np.array([2, 9, 13])]
    assert isinstance(env, BackboneEnvironment) and env.name == "backbone llava_video (logits)"
    assert env.complete(video_episode, selections) == BackboneEnvironment(backbone).complete(video_episode, selections)
    assert isinstance(build_environment("synthetic"), SyntheticEnvironment)
