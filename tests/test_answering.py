"""The answering stage on real generated videos: each answer is produced from exactly the
frames its selection names (read back from the pixels), in any batch size, with failures
recorded and the run finished."""
from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_eval.answering import (
    AnswerConfig,
    FramePlanner,
    QuestionRef,
    answer_questions,
)
from tspo_eval.backbones import Backbone, VideoQuery
from tspo_eval.policy import FramePolicy
from tspo_eval.selection.stage import Selection, SelectionSet
from tspo_eval.synthetic import read_frame_number


class PixelReadingBackbone(Backbone):
    """Answers with the frame numbers drawn in the pixels it received, and records each call."""

    name = "pixel-reader"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[VideoQuery]] = []

    def generate(self, queries, max_new_tokens: int = 16) -> list[str]:
        self.calls.append(list(queries))
        return [" ".join(str(read_frame_number(f)) for f in q.frames) for q in queries]

    def next_token_logits(self, queries) -> torch.Tensor:
        return torch.zeros(len(queries), 1)


@pytest.fixture()
def videos(numbered_video_factory, tmp_path) -> dict[str, Path]:
    """Two distinct real mp4 files (300 and 150 frames at 29.97 fps), copied under one root."""
    long_ = shutil.copy(numbered_video_factory(num_frames=300), tmp_path / "a.mp4")
    short = shutil.copy(numbered_video_factory(num_frames=150), tmp_path / "b.mp4")
    return {"a": Path(long_), "b": Path(short)}


def _refs(videos: dict[str, Path]) -> list[QuestionRef]:
    order = ["a", "b", "a", "a", "b"]
    return [QuestionRef(index=f"q{i}", benchmark="lvbench", video_path=str(videos[v]), question=f"stem {i}",
                        prompt=f"prompt {i}") for i, v in enumerate(order)]


def _selections(tmp_path: Path, refs: list[QuestionRef]) -> Path:
    rng = np.random.default_rng(0)
    chosen = {}
    for ref in refs:
        n = 300 if ref.video_path.endswith("a.mp4") else 150
        frames = sorted(rng.choice(n, size=6, replace=False).tolist())
        chosen[ref.index] = Selection(video=Path(ref.video_path).name, frame_numbers=frames,
                                      timestamps=[f * 1001 / 30000 for f in frames], num_candidates=n, fps=29.97)
    return SelectionSet({"benchmark": "lvbench", "method": "tspo", "k": 6}, chosen).save(tmp_path / "sel.json")


@pytest.mark.parametrize("batch_size", [1, 3])
def test_answers_come_from_exactly_the_selected_frames(videos, tmp_path, batch_size):
    refs = _refs(videos)
    sel_path = _selections(tmp_path, refs)
    expected = {k: v.frame_numbers for k, v in SelectionSet.load(sel_path).selections.items()}
    backbone = PixelReadingBackbone()
    planner = FramePlanner(FramePolicy(method="tspo", k=6, selections=str(sel_path)))
    record = tmp_path / "answers.jsonl"
    answers = answer_questions(refs, planner, backbone, AnswerConfig(answer_batch=batch_size), record=record,
                               progress=False)

    assert [a.index for a in answers] == [r.index for r in refs]  # caller's order kept
    for answer in answers:
        assert [int(x) for x in answer.text.split()] == expected[answer.index]  # pixels agree
        assert answer.frame_numbers == expected[answer.index]
        assert answer.error is None
    assert max(len(call) for call in backbone.calls) == min(batch_size, len(refs))
    # the prompt and the real timestamps (frame / 29.97 fps) travel with the frames
    for call in backbone.calls:
        for q in call:
            idx = q.prompt.split()[-1]
            assert np.allclose(q.timestamps, np.array(expected[f"q{idx}"]) * 1001 / 30000, atol=1e-6)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(line["index"] for line in lines) == sorted(expected)


def test_published_frame_idx_file_is_accepted(videos, tmp_path, official_dir):
    """Two real items of the published LongVideoBench file, with their frame_idx replaced."""
    items = json.loads((official_dir / "TSPO_LongVideoBench_frameIdx.json").read_text())[:2]
    items[0]["frame_idx"], items[1]["frame_idx"] = [0.0, 10.0, 299.0], [5.0, 149.0]
    idx_path = tmp_path / "TSPO_LongVideoBench_frameIdx.json"
    idx_path.write_text(json.dumps(items))
    refs = [QuestionRef(index=item["id"], benchmark="longvideobench", video_path=str(videos[v]), question="q",
                        prompt="p") for item, v in zip(items, "ab")]
    answers = answer_questions(refs, FramePlanner(FramePolicy(selections=str(idx_path))), PixelReadingBackbone(),
                               progress=False)
    assert [a.text for a in answers] == ["0 10 299", "5 149"]


def test_uniform_is_lmms_eval_sampling_over_all_frames(videos):
    ref = _refs(videos)[0]
    (answer,) = answer_questions([ref], FramePlanner(FramePolicy(method="uniform", k=8)), PixelReadingBackbone(),
                                 progress=False)
    # lmms-eval: np.linspace(0, total_frames - 1, k, dtype=int) over all 300 frames
    assert answer.frame_numbers == [0, 42, 85, 128, 170, 213, 256, 299]
    assert [int(x) for x in answer.text.split()] == answer.frame_numbers


def test_missing_and_corrupt_videos_are_recorded_and_the_run_finishes(videos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    refs = _refs(videos)[:2] + [
        QuestionRef("gone", "lvbench", str(tmp_path / "missing.mp4"), "q", "p"),
        QuestionRef("bad", "lvbench", str(corrupt), "q", "p"),
    ]
    record = tmp_path / "answers.jsonl"
    answers = answer_questions(refs, FramePlanner(FramePolicy(method="uniform", k=4)), PixelReadingBackbone(),
                               record=record, progress=False)
    by_index = {a.index: a for a in answers}
    assert by_index["q0"].error is None and by_index["q1"].error is None
    assert "missing.mp4" in by_index["gone"].error and by_index["gone"].text == ""
    assert "corrupt.mp4" in by_index["bad"].error and by_index["bad"].frame_numbers == []
    assert len(record.read_text().splitlines()) == 4


class Rendezvous:
    """Holds a decode until `parties - 1` other threads wait for the frames it claimed.

    The memo's claims are `answering.Future`s; a thread waiting for another's decode calls
    `result()` on one, so a Future whose first `result()` per thread meets the decoder at a
    barrier proves the waiting happens *while* the decode is under way.  Threads that never
    overlap, or a memo that lets each thread decode for itself, never meet: the barrier times
    out (BrokenBarrierError) or the decode count is wrong.
    """

    def __init__(self, parties: int, monkeypatch) -> None:
        from tspo_eval import answering

        self.barrier = threading.Barrier(parties, timeout=30)
        self.waiting: set[int] = set()
        self.lock = threading.Lock()
        meet = self.meet

        class MeetingFuture(Future):
            def result(self, timeout=None):
                meet()
                return super().result(timeout)

        monkeypatch.setattr(answering, "Future", MeetingFuture)

    def meet(self) -> None:
        """The barrier, once per thread (a waiter calls `result()` once per frame)."""
        with self.lock:
            first = threading.get_ident() not in self.waiting
            self.waiting.add(threading.get_ident())
        if first:
            self.barrier.wait()


@pytest.mark.parametrize("workers", [1, 4])
def test_questions_on_one_video_decode_each_frame_once(videos, monkeypatch, workers):
    """Also while three threads prepare the three questions of one video at once: the first to
    claim the frames decodes them only once the other two wait for its claim."""
    from tspo_eval import answering

    decoded: list[int] = []
    real = answering.read_frames
    together = Rendezvous(3, monkeypatch) if workers > 1 else None

    def counting(path, frame_numbers, *a, **k):
        decoded.extend(frame_numbers)
        if together is not None:
            together.meet()  # the decode starts once the two other threads wait for these frames
        return real(path, frame_numbers, *a, **k)

    monkeypatch.setattr(answering, "read_frames", counting)
    refs = [r for r in _refs(videos) if r.video_path.endswith("a.mp4")]
    backbone = PixelReadingBackbone()
    answers = answer_questions(refs, FramePlanner(FramePolicy(method="uniform", k=8)), backbone,
                               AnswerConfig(answer_threads=workers), progress=False)
    assert [a.error for a in answers] == [None] * 3
    assert sorted(decoded) == [0, 42, 85, 128, 170, 213, 256, 299]  # three questions, one decode
    assert [a.text for a in answers] == ["0 42 85 128 170 213 256 299"] * 3


def test_a_decoding_error_reaches_every_question_waiting_for_those_frames(videos, monkeypatch):
    from tspo_eval import answering

    together = Rendezvous(3, monkeypatch)
    calls: list[list[int]] = []

    def failing(path, frame_numbers, *a, **k):
        calls.append(list(frame_numbers))
        together.meet()  # fails only once the two other threads wait for these frames
        raise answering.VideoError(f"{path}: corrupt at frame {frame_numbers[0]}")

    monkeypatch.setattr(answering, "read_frames", failing)
    refs = [r for r in _refs(videos) if r.video_path.endswith("a.mp4")]
    answers = answer_questions(refs, FramePlanner(FramePolicy(method="uniform", k=8)), PixelReadingBackbone(),
                               AnswerConfig(answer_threads=4), progress=False)
    assert len(calls) == 1  # one decode; its error reached the two questions waiting for it
    assert [a.error for a in answers] == [f"{refs[0].video_path}: {refs[0].video_path}: corrupt at frame 0"] * 3
    # The memo itself, shared by three threads: all see the error, none keeps a stale claim.
    together, calls[:] = Rendezvous(3, monkeypatch), []
    memo = answering._FrameMemo()
    with ThreadPoolExecutor(3) as pool:
        outcomes = [f.exception() for f in [pool.submit(memo.read, "v.mp4", [0, 42]) for _ in range(3)]]
    assert len(calls) == 1 and all(isinstance(e, answering.VideoError) for e in outcomes), outcomes
    monkeypatch.setattr(answering, "read_frames", lambda path, numbers: np.zeros((len(numbers), 2, 2, 3), np.uint8))
    assert memo.read("v.mp4", [42, 0, 42]).shape == (3, 2, 2, 3)


def test_frame_policy_rejects_unknown_methods():
    with pytest.raises(ValueError, match="method='best' is not one of"):
        FramePolicy(method="best")
    with pytest.raises(ValueError, match="needs an agent"):
        FramePlanner(FramePolicy(method="tspo"))


def test_questions_missing_from_the_file_are_selected_now_with_the_agent(videos, tmp_path):
    from tspo_eval.cache import FeatureCache

    refs = _refs(videos)[:2]
    sel_path = SelectionSet({"benchmark": "lvbench"}, {"q0": Selection("a.mp4", [3, 4], [0.1, 0.13], 300, 29.97)}
                            ).save(tmp_path / "sel.json")
    planner = FramePlanner(FramePolicy(method="topk", k=3, selections=str(sel_path)), agent="random:clip-tiny",
                           cache=FeatureCache(tmp_path / "cache"))
    first, second = answer_questions(refs, planner, PixelReadingBackbone(), progress=False)
    assert first.frame_numbers == [3, 4]
    # b.mp4: 150 frames at 29.97 fps -> candidates every round(29.97) = 30th frame: 0, 30, ..., 120
    assert len(second.frame_numbers) == 3 and set(second.frame_numbers) <= {0, 30, 60, 90, 120}
    assert [int(x) for x in second.text.split()] == second.frame_numbers


def test_frames_selected_on_the_fly_equal_the_select_stage(mini_benchmarks, tmp_path):
    """Answering without a selections file picks, per question, exactly what `select` writes."""
    from tspo_eval.agent import random_agent
    from tspo_eval.benchmarks import load_benchmark, resolve_video
    from tspo_eval.cache import FeatureCache
    from tspo_eval.selection.stage import select_benchmark

    annotations, videos = mini_benchmarks["lvbench"]
    questions = load_benchmark("lvbench", annotation_path=annotations)
    agent, cache = random_agent("clip-tiny"), FeatureCache(tmp_path / "cache")
    selected = select_benchmark(questions, videos, agent.encoder, cache, FramePolicy(method="tspo", k=4),
                                agent=agent, progress=False).selections
    planner = FramePlanner(FramePolicy(method="tspo", k=4), agent=agent, cache=cache)
    for q in questions:
        ref = QuestionRef(q.index, "lvbench", str(resolve_video(videos, q.video_name, "lvbench")), q.question, "p")
        assert planner.plan(ref).frame_numbers == selected[q.index].frame_numbers
