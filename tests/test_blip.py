"""`scores=blip`: BLIP image-text matching scores (AKS's scorer) on a tiny random-weight BLIP
saved with save_pretrained (nothing downloaded), their cache, and selection with them."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from tspo_eval.cache import FeatureCache
from tspo_eval.policy import BLIP_DEFAULT_MODEL, FramePolicy, parse_policy
from tspo_eval.selection.blip import BlipScorer, blip_caption, blip_scores
from tspo_eval.selection.registry import select
from tspo_eval.selection.stage import FramePlanner, QuestionRef

def test_blip_caption_is_lavis_eval_processing():
    assert blip_caption('What is "the" MAN doing?  (Describe: it.)') == "what is the man doing? describe it"
    assert blip_caption(" ".join(["w"] * 60)) == " ".join(["w"] * 50)


def test_scores_are_the_itm_match_probability(tiny_blip):
    from transformers import BlipForImageTextRetrieval

    scorer = BlipScorer.from_pretrained(str(tiny_blip))
    n_words = len(scorer.tokenizer)  # the BERT vocabulary, no [DEC] / [ENC] in it
    assert scorer.first_token == n_words + 1  # [ENC], after [DEC]
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 20, 28, 3), dtype=np.uint8)
    got = scorer.score(frames, ["What is the man doing?", "which color car"])
    assert got.shape == (2, 3) and ((got > 0) & (got < 1)).all()
    # independently: transformers' own ITM forward, one pair at a time, first token set to [ENC]
    model = BlipForImageTextRetrieval.from_pretrained(tiny_blip).eval()
    pixels = scorer.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    for q, text in enumerate(["what is the man doing?", "which color car"]):
        ids = scorer.tokenizer([text], return_tensors="pt")["input_ids"]
        ids[:, 0] = n_words + 1
        for f in range(3):
            with torch.no_grad():
                logits = model(input_ids=ids, pixel_values=pixels[f:f + 1], use_itm_head=True).itm_score
            assert float(got[q, f]) == pytest.approx(float(logits.softmax(-1)[0, 1]), abs=1e-5)


def test_a_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="BLIP image-text matching model"):
        BlipScorer.from_pretrained(str(tmp_path))


def test_policy_scores_blip_records_its_model():
    policy = parse_policy({"method": "bolt", "scores": "blip"})
    assert policy.score_source == "blip" and policy.identity()["blip_model"] == BLIP_DEFAULT_MODEL
    assert parse_policy(policy.to_args()) == policy
    other = policy.replace(blip_model="/models/blip-base")
    assert other.fingerprint() != policy.fingerprint()
    # the BLIP model is no part of a policy that does not score with it
    assert "blip_model" not in FramePolicy(method="topk").identity()
    assert FramePolicy(method="topk", blip_model="x").fingerprint() == FramePolicy(method="topk").fingerprint()
    with pytest.raises(ValueError, match="scores"):
        parse_policy({"scores": "blop"})


def _agent():
    from tspo_eval.agent import random_agent

    return random_agent("clip-tiny", seed=0)


def test_planner_selects_from_blip_scores_cached_per_video_and_question(tiny_blip, numbered_video, tmp_path,
                                                                        monkeypatch, caplog):
    from tspo_eval.extract import video_features

    agent, cache = _agent(), FeatureCache(tmp_path / "cache")
    policy = FramePolicy(method="topk", k=3, scores="blip", blip_model=str(tiny_blip))
    planner = FramePlanner(policy, agent=agent, cache=cache)
    ref = QuestionRef("q1", "lvbench", str(numbered_video), "What is the man doing?")
    chosen = planner.plan(ref)
    # by hand: every candidate decoded and scored with the same model, then the top 3
    vf = video_features(numbered_video, agent.encoder, cache, policy.sampling)
    scorer = BlipScorer.from_pretrained(str(tiny_blip))
    from tspo_eval.video import read_frames

    expected = scorer.score(read_frames(numbered_video, vf.frame_numbers), [ref.question])[0]
    assert chosen.frame_numbers == vf.frame_numbers[select(expected.numpy(), 3, "topk")].tolist()
    entries = list((tmp_path / "cache" / "scores").rglob("*.safetensors"))
    assert len(entries) == 1

    # a second run reads the cache: no decoding, no scoring
    monkeypatch.setattr(BlipScorer, "score_video", lambda *a, **k: pytest.fail("scored again"))
    again = FramePlanner(policy, agent=agent, cache=cache).plan(ref)
    assert again.frame_numbers == chosen.frame_numbers
    # another question is another entry; so is another model (its weights' hash is in the key)
    monkeypatch.undo()
    cached = blip_scores(scorer, vf, numbered_video, [ref.question, "which color car"], cache, policy.sampling)
    assert torch.allclose(cached[0], expected, atol=1e-6)
    assert len(list((tmp_path / "cache" / "scores").rglob("*.safetensors"))) == 2

    # a damaged entry is recomputed with a warning, not fatal
    entries[0].write_bytes(entries[0].read_bytes()[:-7] + b"garbage")
    with caplog.at_level(logging.WARNING):
        fixed = FramePlanner(policy, agent=agent, cache=cache).plan(ref)
    assert fixed.frame_numbers == chosen.frame_numbers
    assert "damaged cache entry" in caplog.text


def test_focus_with_blip_decodes_and_scores_only_the_frames_it_asks_for(tiny_blip, numbered_video_factory,
                                                                         tmp_path, monkeypatch):
    video = numbered_video_factory(num_frames=240, fps=4.0)  # 60 s: 60 candidates at 1 fps
    agent, cache = _agent(), FeatureCache(tmp_path / "cache")
    asked: list[int] = []
    real = BlipScorer.score_video

    def counting(self, path, frame_numbers, texts):
        asked.extend(np.asarray(frame_numbers).tolist())
        return real(self, path, frame_numbers, texts)

    monkeypatch.setattr(BlipScorer, "score_video", counting)
    policy = FramePolicy(method="focus", k=4, scores="blip", blip_model=str(tiny_blip))
    ref = QuestionRef("q", "lvbench", str(video), "What is the man doing?")
    sel = FramePlanner(policy, agent=agent, cache=cache).plan(ref)
    assert len(asked) == len(set(asked)) and 0 < len(asked) < 60  # each scored once, not all
    assert sel.scored == pytest.approx(len(asked) / 60)
    assert set(sel.frame_numbers) <= set(range(240)) and len(sel.frame_numbers) == 4

    # what it scored is cached (NaN for the rest): a second run scores nothing and chooses the same
    monkeypatch.setattr(BlipScorer, "score_video", lambda *a, **k: pytest.fail("scored again"))
    again = FramePlanner(policy, agent=agent, cache=cache).plan(ref)
    assert again.frame_numbers == sel.frame_numbers and again.scored == sel.scored
    # every score of the question (scores=blip with topk) is not taken from that partial entry
    monkeypatch.setattr(BlipScorer, "score_video", counting)
    asked.clear()
    vf = FramePlanner(policy, agent=agent, cache=cache)._video_features(str(video))
    full = blip_scores(BlipScorer.from_pretrained(str(tiny_blip)), vf, video, [ref.question], cache, policy.sampling)
    assert len(asked) == 60 and not full.isnan().any()


def test_inspect_draws_the_blip_scores_of_the_frames_it_chose(tiny_blip, numbered_video, tmp_path, monkeypatch):
    from tspo_eval import inspection
    from tspo_eval.benchmarks import Question

    seen = {}
    monkeypatch.setattr(inspection, "score_timeline",
                        lambda t, scores, chosen, path, title, spans, ylabel: seen.update(scores=scores, ylabel=ylabel)
                        or path)
    q = Question(benchmark="lvbench", index="q1", task_name="t", video_name=numbered_video.name, question_id="q1",
                 question="What is the man doing?", candidates=("a", "b", "c", "d"), answer_number=0, answer="A")
    policy = FramePolicy(method="topk", k=3, scores="blip", blip_model=str(tiny_blip))
    agent, cache = _agent(), FeatureCache(tmp_path / "cache")
    sel, _, _ = inspection.inspect_question(q, numbered_video.parent, agent.encoder, cache, policy, tmp_path / "q1",
                                            agent=agent)
    from tspo_eval.extract import video_features

    vf = video_features(numbered_video, agent.encoder, cache, policy.sampling)
    planned = FramePlanner(policy, agent=agent, cache=cache).plan(
        QuestionRef("q1", "lvbench", str(numbered_video), q.question))
    assert sel.frame_numbers == planned.frame_numbers and seen["ylabel"] == "BLIP ITM P(match)"
    # the timeline shows the BLIP scores the frames were chosen by
    assert vf.frame_numbers[select(seen["scores"], 3, "topk")].tolist() == sel.frame_numbers
