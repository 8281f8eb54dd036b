"""Extraction over real generated videos: cache contents, resume, failures, batching."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tspo_eval.agent import random_agent
from tspo_eval.cache import FeatureCache
from tspo_eval.extract import extract_videos, load_features, video_features
from tspo_eval.policy import ExtractConfig, Sampling
from tspo_eval.synthetic import read_frame_number
from tspo_eval.video import FrameReader, VideoError, read_frames


class CountingEncoder:
    """Wraps a real encoder and records every batch it is given."""

    def __init__(self, inner):
        self.inner, self.identity, self.dim, self.image_size = inner, inner.identity, inner.dim, inner.image_size
        self.device = inner.device
        self.batches: list[int] = []

    def compile(self):
        self.inner.compile()
        return self

    def encode_frames(self, frames):
        self.batches.append(len(frames))
        return self.inner.encode_frames(frames)

    def encode_text(self, texts):
        return self.inner.encode_text(texts)


@pytest.fixture(scope="module")
def encoder():
    return random_agent("clip-tiny", seed=0).encoder


@pytest.fixture()
def videos(numbered_video_factory, tmp_path):
    good_a = numbered_video_factory(num_frames=300)  # 29.97 fps: candidates every 30th frame
    good_b = numbered_video_factory(num_frames=95, fps=25.0)  # every 25th: 0, 25, 50, 75
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(good_a.read_bytes()[:2000])
    return good_a, good_b, corrupt, tmp_path / "missing.mp4"


@pytest.mark.parametrize("readers, backend, processes", [
    (1, "decord", False), (3, "decord", False), (3, "pyav", False), (2, "pyav", True), (2, "decord", True)])
def test_extract_caches_the_candidates_features_and_records_failures(videos, encoder, tmp_path, readers, backend,
                                                                     processes):
    good_a, good_b, corrupt, missing = videos
    counting = CountingEncoder(encoder)
    cache = FeatureCache(tmp_path / "cache")
    cfg = ExtractConfig(encode_batch=4, prefetch_videos=2, readers=readers, backend=backend, decode_processes=processes)
    report = extract_videos([good_a, corrupt, missing, good_b], counting, cache, Sampling(), cfg, progress=False)

    assert sorted(report.encoded) == sorted([str(good_a), str(good_b)])
    assert set(report.failed) == {str(corrupt), str(missing)}
    for path, message in report.failed.items():
        assert path in message
    # memory bounded by the batch, never the whole video (good_a: 10 candidates, good_b: 4)
    assert max(counting.batches) <= 4 and sum(counting.batches) == 14

    a = load_features(good_a, encoder.identity, cache, Sampling())
    np.testing.assert_array_equal(a.frame_numbers, np.arange(0, 300, 30))
    np.testing.assert_allclose(a.timestamps, np.arange(0, 300, 30) * 1001 / 30000)
    assert a.num_frames == 300 and abs(a.fps - 30000 / 1001) < 1e-6
    direct = encoder.encode_frames(read_frames(good_a, a.frame_numbers))
    torch.testing.assert_close(a.features, direct, atol=1e-5, rtol=1e-5)
    b = load_features(good_b, encoder.identity, cache, Sampling())
    np.testing.assert_array_equal(b.frame_numbers, [0, 25, 50, 75])


@pytest.mark.parametrize("processes", [False, True])
def test_files_decord_misnumbers_are_extracted_from_the_right_frames(numbered_video_factory, encoder, tmp_path,
                                                                    processes):
    """MPEG-TS and open-GOP HEVC through the extraction loop (threads, and decoding processes whose probe
    picks the decoder): the cached features are those of the frames a plain front-to-back decode gives
    at the candidate numbers (no seek, no decoder choice of ours in the truth)."""
    import av

    paths = [numbered_video_factory(suffix=".ts", codec="libx264"),
             numbered_video_factory(suffix=".mp4", codec="libx265")]
    cache = FeatureCache(tmp_path / "cache")
    cfg = ExtractConfig(encode_batch=4, readers=2, decode_processes=processes)
    report = extract_videos(paths, encoder, cache, Sampling(), cfg, progress=False)
    assert sorted(report.encoded) == sorted(map(str, paths)) and not report.failed
    for path in paths:
        with av.open(str(path)) as container:
            every = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        cached = load_features(path, encoder.identity, cache, Sampling())
        np.testing.assert_array_equal(cached.frame_numbers, np.arange(0, 300, 30))
        torch.testing.assert_close(cached.features, encoder.encode_frames(every[cached.frame_numbers]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_runs_finishing_out_of_order_come_back_in_time_order(numbered_video, encoder, tmp_path, monkeypatch,
                                                             backend):
    """The first run of candidates is decoded last: the encoder gets it last, the cache
    still holds every candidate's features in time order."""
    real_read = FrameReader.read

    def slow_start(self, frame_numbers):
        if 0 in list(frame_numbers) and not threading.current_thread().name.startswith("probe:"):
            time.sleep(0.5)
        return real_read(self, frame_numbers)

    monkeypatch.setattr(FrameReader, "read", slow_start)
    counting = CountingEncoder(encoder)
    seen: list[int] = []
    counting.encode_frames = lambda frames: (seen.extend(map(read_frame_number, np.asarray(frames))),
                                             encoder.encode_frames(frames))[1]
    got = video_features(numbered_video, counting, FeatureCache(tmp_path), Sampling(),
                       ExtractConfig(encode_batch=4, readers=3, backend=backend))
    candidates = np.arange(0, 300, 30)
    assert seen[-1] == 0 and sorted(seen) == candidates.tolist()
    np.testing.assert_array_equal(got.frame_numbers, candidates)
    torch.testing.assert_close(got.features, encoder.encode_frames(read_frames(numbered_video, candidates)),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("processes", [False, True])
def test_the_encoder_gets_full_groups_however_slowly_frames_arrive(numbered_video, encoder, tmp_path, monkeypatch,
                                                                   processes):
    """Frames trickling in one by one are still encoded `encode_batch` at a time (the video's last group
    excepted): an encoder call costs the same launching whatever its size (issue 17)."""
    from tspo_eval import decode_workers

    owner, name = (decode_workers.DecodeWorker, "read") if processes else (FrameReader, "read")
    real_read = getattr(owner, name)

    def slow(self, *args):
        time.sleep(0.03)
        return real_read(self, *args)

    monkeypatch.setattr(owner, name, slow)
    counting = CountingEncoder(encoder)
    got = video_features(numbered_video, counting, FeatureCache(tmp_path), Sampling(),
                         ExtractConfig(encode_batch=4, readers=3, backend="pyav", decode_processes=processes))
    assert counting.batches == [4, 4, 2]
    np.testing.assert_array_equal(got.frame_numbers, np.arange(0, 300, 30))


def test_a_budget_smaller_than_a_group_never_stalls_the_encoder(numbered_video, encoder, tmp_path, monkeypatch):
    """Room for 5 frames, reads of 3, groups of 8: a group waiting to fill must leave room for a read
    (filling to 5 would hold 3, and the next read of 3 would wait for room forever)."""
    from tspo_eval import extract

    frame = 48 * 64 * 3
    monkeypatch.setattr(extract, "DECODE_BUDGET_BYTES", 5 * frame)
    monkeypatch.setattr(extract, "READ_BYTES", 3 * frame)
    counting = CountingEncoder(encoder)
    result: list = []
    run = threading.Thread(target=lambda: result.append(video_features(
        numbered_video, counting, FeatureCache(tmp_path), Sampling(), ExtractConfig(encode_batch=8, readers=1))),
        daemon=True)
    run.start()
    run.join(60)
    assert result, "the extraction stalled"
    assert sum(counting.batches) == 10 and max(counting.batches) <= 5


def test_second_run_resumes_from_the_cache(videos, encoder, tmp_path):
    good_a, good_b, *_ = videos
    cache = FeatureCache(tmp_path / "cache")
    cfg = ExtractConfig(encode_batch=8)
    extract_videos([good_a], encoder, cache, Sampling(), cfg, progress=False)  # an "interrupted" first run
    counting = CountingEncoder(encoder)
    report = extract_videos([good_a, good_b], counting, cache, Sampling(), cfg, progress=False)
    assert report.cached == [str(good_a)] and report.encoded == [str(good_b)]
    assert sum(counting.batches) == 4  # only good_b's 4 candidates were encoded

    # a truncated entry is detected and recomputed
    entry = next((tmp_path / "cache" / "videos").rglob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:100])
    report = extract_videos([good_a, good_b], encoder, cache, Sampling(), cfg, progress=False)
    assert len(report.encoded) == 1 and len(report.cached) == 1 and not report.failed


def test_changing_sampling_never_returns_stale_features(videos, encoder, tmp_path):
    good_a = videos[0]
    cache = FeatureCache(tmp_path / "cache")
    one = video_features(good_a, encoder, cache, Sampling(fps=1.0))
    two = video_features(good_a, encoder, cache, Sampling(fps=2.0))
    capped = video_features(good_a, encoder, cache, Sampling(fps=2.0, max_frames=5))
    assert len(one.frame_numbers) == 10 and len(two.frame_numbers) == 20
    np.testing.assert_array_equal(capped.frame_numbers, np.round(np.linspace(0, 299, 5)).astype(int))


def test_single_video_errors_name_the_file(videos, encoder, tmp_path):
    with pytest.raises(VideoError, match="missing.mp4"):
        video_features(videos[3], encoder, FeatureCache(tmp_path))


def test_decode_resize_is_cached_apart_and_close_to_the_reference(numbered_video_factory, encoder, tmp_path):
    """Scaling in the decoder changes features a little (tolerance: tests/test_video.py), so they
    get their own cache entry; they stay close to the reference-resize features."""
    path = numbered_video_factory(num_frames=90, height=180, width=320)
    cache = FeatureCache(tmp_path)
    exact = video_features(path, encoder, cache, Sampling(), ExtractConfig(encode_batch=2))
    resized = video_features(path, encoder, cache, Sampling(decode_resize=True), ExtractConfig(encode_batch=2))
    assert exact.encoder == encoder.identity and resized.encoder == encoder.identity + "+decode-resize"
    assert len(list((tmp_path / "videos").rglob("*.safetensors"))) == 2
    np.testing.assert_array_equal(exact.frame_numbers, resized.frame_numbers)
    rel = (resized.features - exact.features).norm(dim=-1) / exact.features.norm(dim=-1)
    assert 0 < rel.max() < 0.02


class CompileProbe:
    """Records whether the extraction compiled it; pretends to live on `device`."""

    def __init__(self, device: str):
        self.device, self.compiled = torch.device(device), False

    def compile(self):
        self.compiled = True
        return self


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("compile_", [False, True])
def test_compile_is_opt_in_and_cuda_batches_are_pinned(device, compile_):
    from tspo_eval.extract import _prepare

    probe = CompileProbe(device)
    assert _prepare(probe, ExtractConfig(compile=compile_)) == (device == "cuda")
    assert probe.compiled == compile_


def test_a_decoding_process_that_dies_costs_one_read_not_the_pool(numbered_video):
    """Killed mid-run (as a decoder crash would): the read names the file, and the pool starts
    a fresh worker for the next read. No more than `limit` workers ever exist."""
    from tspo_eval.decode_workers import POOL

    POOL.close()  # workers left idle by earlier tests would count too
    args = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}
    with POOL.lend(1) as worker:
        first = worker.read(str(numbered_video), args, np.array([0, 30]), (48, 64, 3))
        assert [read_frame_number(f) for f in first] == [0, 30]
        worker.process.kill()
        worker.process.wait()
        with pytest.raises(VideoError, match="decoding process died") as err:
            worker.read(str(numbered_video), args, np.array([60]), (48, 64, 3))
        assert str(numbered_video) in str(err.value)
    with POOL.lend(1) as fresh:
        assert fresh is not worker and POOL.count == 1
        assert read_frame_number(fresh.read(str(numbered_video), args, np.array([90]), (48, 64, 3))[0]) == 90


def test_decoding_errors_in_a_worker_come_back_as_video_errors(numbered_video, tmp_path):
    from tspo_eval.decode_workers import POOL

    args = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}
    with POOL.lend(1) as worker:
        with pytest.raises(ValueError, match=r"\[0, 299\]"):
            worker.read(str(numbered_video), args, np.array([5, 400]), (48, 64, 3))
        with pytest.raises(VideoError, match="no such file"):
            worker.read(str(tmp_path / "gone.mp4"), args, np.array([0]), (48, 64, 3))
        assert read_frame_number(worker.read(str(numbered_video), args, np.array([7]), (48, 64, 3))[0]) == 7


def test_a_probe_in_a_worker_finds_what_a_probe_here_finds(numbered_video_factory, tmp_path):
    """Candidates, keyframes, packet index and decoder from a worker equal this process's; the worker
    keeps the file open, so the next read needs no index; a bad file's error names it."""
    from tspo_eval.decode_workers import POOL
    from tspo_eval.video import Probe

    video = numbered_video_factory(num_frames=300, gop_size=45)
    with FrameReader(video, "pyav", 1) as reader:
        here = Probe.of(reader, 1.0, 7)
    args = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}
    with POOL.lend(1) as worker:
        there = worker.probe(str(video), args, 1.0, 7)
        assert there.backend == here.backend == "pyav"
        np.testing.assert_array_equal(there.candidates.frame_numbers, here.candidates.frame_numbers)
        np.testing.assert_array_equal(there.candidates.frame_numbers, np.round(np.linspace(0, 299, 7)))
        assert there.candidates.info == here.candidates.info
        np.testing.assert_array_equal(there.keyframes, here.keyframes)
        assert len(here.keyframes) >= 300 // 45 and here.keyframes[0] == 0
        for mine, theirs in zip(here.index, there.index):
            np.testing.assert_array_equal(mine, theirs)
        assert worker.opened == (str(video), "pyav", 1, None)  # a read of this file now sends no index
        assert read_frame_number(worker.read(str(video), {**args, "index": here.index}, np.array([90]),
                                             (48, 64, 3))[0]) == 90
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(video.read_bytes()[:1500])
        with pytest.raises(VideoError, match="broken.mp4"):
            worker.probe(str(broken), args, 1.0, None)


def test_a_probe_whose_decoder_dies_costs_that_video_only(videos, encoder, tmp_path, monkeypatch):
    """A file that crashes the decoder while it is probed (here: the worker is killed mid-probe) is
    counted failed, naming the file; the parent (which probed in its own threads before) lives on and
    the other videos are encoded."""
    import os
    import signal

    from tspo_eval import decode_workers

    good_a, good_b, _, _ = videos
    real_probe = decode_workers.DecodeWorker.probe

    def crashing(self, path, *args):
        if path == str(good_b):
            os.kill(self.process.pid, signal.SIGKILL)
        return real_probe(self, path, *args)

    monkeypatch.setattr(decode_workers.DecodeWorker, "probe", crashing)
    report = extract_videos([good_a, good_b], encoder, FeatureCache(tmp_path / "c"), Sampling(),
                            ExtractConfig(encode_batch=4, readers=2, decode_processes=True), progress=False)
    assert report.encoded == [str(good_a)]
    assert list(report.failed) == [str(good_b)]
    assert "decoding process died" in report.failed[str(good_b)] and str(good_b) in report.failed[str(good_b)]


def test_worker_decoding_never_opens_a_video_in_this_process(videos, encoder, tmp_path, monkeypatch):
    """With decode_processes the probe runs in a worker too: demuxing a file is a Python loop per packet
    that here would hold Python's lock against the thread launching the encoder (issue 17)."""
    from tspo_eval import extract

    def refused(*args, **kwargs):
        raise AssertionError("a video was opened in the parent")

    monkeypatch.setattr(extract, "FrameReader", refused)
    good_a, good_b, corrupt, _ = videos
    cfg = ExtractConfig(encode_batch=4, readers=2, decode_processes=True)
    report = extract_videos([good_a, corrupt, good_b], encoder, FeatureCache(tmp_path / "c"), Sampling(), cfg,
                            progress=False)
    assert sorted(report.encoded) == sorted([str(good_a), str(good_b)])
    assert list(report.failed) == [str(corrupt)] and str(corrupt) in report.failed[str(corrupt)]


def test_a_decoding_process_that_hangs_is_stopped(numbered_video):
    """A worker that stops answering (here: SIGSTOP) is killed after its timeout; the read
    names the file, and the next lend starts a fresh worker."""
    import os
    import signal

    from tspo_eval.decode_workers import POOL

    args = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}
    with POOL.lend(1) as worker:
        worker.read(str(numbered_video), args, np.array([0]), (48, 64, 3))  # started and answering
        os.kill(worker.process.pid, signal.SIGSTOP)
        worker.reply_timeout_s = 0.5
        with pytest.raises(VideoError, match="gave no answer in 0.5 s") as err:
            worker.read(str(numbered_video), args, np.array([30]), (48, 64, 3))
        assert str(numbered_video) in str(err.value) and worker.process.poll() is not None
    with POOL.lend(1) as fresh:
        assert fresh is not worker
        assert read_frame_number(fresh.read(str(numbered_video), args, np.array([60]), (48, 64, 3))[0]) == 60


@pytest.mark.parametrize("given, cores, want", [
    ({}, 1, ("auto", 2, 2, False)),
    ({}, 2, ("auto", 2, 2, False)),
    ({}, 7, ("auto", 2, 2, False)),
    ({}, 8, ("pyav", 8, 1, True)),
    ({}, 16, ("pyav", 16, 1, True)),
    ({}, 128, ("pyav", 32, 1, True)),
    ({"backend": "decord"}, 16, ("decord", 2, 2, False)),  # a chosen decoder runs in threads
    ({"backend": "pyav", "readers": 4}, 16, ("pyav", 4, 2, False)),
    ({"decode_processes": True}, 2, ("pyav", 2, 1, True)),
    ({"decode_processes": True, "backend": "decord", "decode_threads": 3}, 16, ("decord", 16, 3, True)),
    ({"readers": 5, "decode_threads": 3}, 16, ("pyav", 5, 3, True)),
])
def test_decoding_left_at_its_defaults_is_sized_from_the_cores(given, cores, want):
    from tspo_eval.extract import decode_plan

    cfg = ExtractConfig(encode_batch=16, **given)
    plan = decode_plan(cfg, cores)
    assert (plan.backend, plan.readers, plan.decode_threads, plan.decode_processes) == want
    assert (plan.encode_batch, plan.prefetch_videos, plan.compile) == (16, cfg.prefetch_videos, cfg.compile)


def test_available_cores_follows_the_affinity_mask_and_the_cgroup_quota(monkeypatch, tmp_path):
    from tspo_eval import extract

    monkeypatch.setattr(extract, "_CGROUP_CPU_MAX", tmp_path / "cpu.max")  # none: the mask alone
    monkeypatch.setattr(extract.os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    assert extract.available_cores() == 3
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert extract.available_cores() == 3
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs of time: 2 readers' worth
    assert extract.available_cores() == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks on this machine share its cores
    assert extract.available_cores() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.delattr(extract.os, "sched_getaffinity")  # not Linux
    monkeypatch.setattr(extract.os, "cpu_count", lambda: 12)
    (tmp_path / "cpu.max").unlink()
    assert extract.available_cores() == 12


def test_the_report_times_the_extraction_and_merged_ranks_take_the_longer(videos, encoder, tmp_path):
    from tspo_eval.extract import ExtractReport

    report = extract_videos(videos[:1], encoder, FeatureCache(tmp_path / "cache"), progress=False)
    assert 0 < report.seconds < 300
    report.save(tmp_path / "r.json")
    assert ExtractReport.load(tmp_path / "r.json") == report
    merged = ExtractReport(["a"], seconds=2.0).merge(ExtractReport(["b"], seconds=3.5))
    assert merged.encoded == ["a", "b"] and merged.seconds == 3.5


class LiveFrames:
    """Counts the decoded frame arrays the extraction hands over (`_Decoder._own`) as they are
    created and as they die (finalizers, not the budget's own books): each read's size, and the
    most alive at once since `reset`."""

    def __init__(self, monkeypatch) -> None:
        import weakref

        from tspo_eval import extract

        self.reads: list[int] = []
        self.alive = self.peak = 0
        lock, real_own = threading.Lock(), extract._Decoder._own

        def counted(decoder, batch, shared):
            out = real_own(decoder, batch, shared)
            n = len(out)
            with lock:
                self.reads.append(n)
                self.alive += n
                self.peak = max(self.peak, self.alive)

            def dead():
                with lock:
                    self.alive -= n

            weakref.finalize(out, dead)
            return out

        monkeypatch.setattr(extract._Decoder, "_own", counted)

    def reset(self) -> None:
        self.reads.clear()
        self.peak = 0


def slow_encoder(encoder, delay_s: float) -> CountingEncoder:
    """The encoder, `delay_s` slower a batch: every reader then decodes ahead as far as it may."""
    slow = CountingEncoder(encoder)
    slow.encode_frames = lambda frames: (time.sleep(delay_s), encoder.encode_frames(frames))[1]
    return slow


@pytest.mark.parametrize("backend, processes", [("decord", False), ("pyav", False), ("pyav", True)])
def test_decoded_frames_in_flight_are_bounded_whatever_the_length(numbered_video_factory, encoder, tmp_path,
                                                                   monkeypatch, backend, processes):
    """Memory flat in video length: with a slow encoder, every reader decodes ahead as far as it may;
    the decoded frames alive at once stay within DECODE_BUDGET_BYTES for a short and a 4x longer
    video alike."""
    from tspo_eval import extract

    monkeypatch.setattr(extract, "DECODE_BUDGET_BYTES", 6 * 48 * 64 * 3)  # 6 frames per video
    live, slow = LiveFrames(monkeypatch), slow_encoder(encoder, 0.02)
    cfg = ExtractConfig(encode_batch=4, readers=3, prefetch_videos=1, backend=backend, decode_processes=processes)
    for frames in (300, 1200):  # 10 and 40 candidates
        live.reset()
        video = numbered_video_factory(num_frames=frames)
        got = video_features(video, slow, FeatureCache(tmp_path / str(frames)), Sampling(), cfg)
        np.testing.assert_array_equal(got.frame_numbers, np.arange(0, frames, 30))
        # every candidate passed the counter once (so the peak below is of all the decoded frames), and
        # never more than the 6-frame budget was alive at once
        assert sum(live.reads) == frames // 30, (frames, live.reads)
        assert live.peak <= 6, (frames, live.peak)


@pytest.mark.parametrize("backend, processes", [("pyav", False), ("pyav", True)])
def test_reads_and_frames_held_do_not_grow_with_the_length(numbered_video_factory, encoder, tmp_path,
                                                           monkeypatch, backend, processes):
    """At the default budget (far above these videos), a read's size (a worker's shared block) and the
    frames alive at once are the same for a 40-candidate video as for a 10-candidate one: reads of
    READ_BYTES, a read per reader plus an encoder group held. (Reads used to be a run's length, and
    a long video filled a budget a short one never reached.)"""
    from tspo_eval import extract

    monkeypatch.setattr(extract, "READ_BYTES", 2 * 48 * 64 * 3)  # 2 frames per read
    live, slow = LiveFrames(monkeypatch), slow_encoder(encoder, 0.05)
    cfg = ExtractConfig(encode_batch=4, readers=2, prefetch_videos=1, backend=backend, decode_processes=processes)
    for frames in (300, 1200):  # 10 and 40 candidates
        live.reset()
        video = numbered_video_factory(num_frames=frames)
        got = video_features(video, slow, FeatureCache(tmp_path / str(frames)), Sampling(), cfg)
        np.testing.assert_array_equal(got.frame_numbers, np.arange(0, frames, 30))
        assert sum(live.reads) == frames // 30 and max(live.reads) == 2, (frames, live.reads)
        assert live.peak <= 2 * 2 + 4, (frames, live.peak)  # a read per reader + a group at the encoder


@pytest.mark.parametrize("processes", [False, True])
def test_decoding_started_before_the_encoder_is_taken_over(videos, encoder, tmp_path, monkeypatch, processes):
    """DecodeAhead decodes while the model loads; the extraction takes its decoders over (it starts
    none of its own for them) and gets the same features; a decoder nobody takes is stopped."""
    from tspo_eval import extract

    good_a, good_b, *_ = videos
    cfg = ExtractConfig(encode_batch=4, readers=2, backend="pyav", decode_processes=processes)
    cache = FeatureCache(tmp_path / "cache")
    extract_videos([good_b], encoder, cache, Sampling(), cfg, progress=False)  # good_b is cached already
    ahead = extract.DecodeAhead([good_a, good_b], Sampling(), cfg)
    assert set(ahead.decoders) == {str(good_a), str(good_b)}
    started = dict(ahead.decoders)
    deadline = time.monotonic() + 60
    while started[str(good_a)].room.held == 0:  # frames decoded before any encoder is given
        assert time.monotonic() < deadline
        time.sleep(0.02)

    def no_new_decoders(*args, **kwargs):
        raise AssertionError("the extraction started a decoder of its own")

    monkeypatch.setattr(extract, "_Decoder", no_new_decoders)
    report = extract_videos([good_a, good_b], encoder, cache, Sampling(), cfg, progress=False, ahead=ahead)
    assert report.encoded == [str(good_a)] and report.cached == [str(good_b)] and not report.failed
    assert started[str(good_b)].cancelled.is_set() and not ahead.decoders
    got = load_features(good_a, encoder.identity, cache, Sampling())
    torch.testing.assert_close(got.features, encoder.encode_frames(read_frames(good_a, np.arange(0, 300, 30))),
                               atol=1e-5, rtol=1e-5)


def test_decoding_ahead_is_not_used_for_other_settings(videos, encoder, tmp_path):
    """A decoder started for other sampling settings is not served: the extraction decodes anew."""
    from tspo_eval import extract

    good_a, *_ = videos
    ahead = extract.DecodeAhead([good_a], Sampling(fps=0.5), ExtractConfig(readers=1))
    first = ahead.decoders[str(good_a)]
    got = video_features(good_a, encoder, FeatureCache(tmp_path), Sampling(), ExtractConfig(readers=1))
    assert first.cancelled.is_set() is False  # not taken: video_features was not given it
    report = extract_videos([good_a], encoder, FeatureCache(tmp_path / "b"), Sampling(), ExtractConfig(readers=1),
                            progress=False, ahead=ahead)
    assert report.encoded == [str(good_a)] and first.cancelled.is_set()
    np.testing.assert_array_equal(got.frame_numbers, np.arange(0, 300, 30))
    np.testing.assert_array_equal(load_features(good_a, encoder.identity, FeatureCache(tmp_path / "b"),
                                                Sampling()).frame_numbers, np.arange(0, 300, 30))
