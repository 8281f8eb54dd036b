"""Decoding in worker processes: no deadlock between prefetched videos, prompt notice of a
worker that dies, and shared-memory blocks left by killed processes cleaned up safely."""
from __future__ import annotations

import faulthandler
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tspo_eval import decode_workers, extract
from tspo_eval.agent import random_agent
from tspo_eval.cache import FeatureCache
from tspo_eval.decode_workers import DecodeWorker, _Block, _Pool, sweep_stale_blocks
from tspo_eval.extract import _Decoder, extract_videos, load_features
from tspo_eval.policy import ExtractConfig, Sampling
from tspo_eval.synthetic import read_frame_number
from tspo_eval.video import VideoError, read_frames

ARGS = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}


@pytest.fixture()
def pool(monkeypatch):
    """A pool of its own, so workers other tests left idle cannot hide a missing worker."""
    own = _Pool()
    monkeypatch.setattr(extract, "POOL", own)
    yield own
    own.close()


def finishes(fn, seconds: float, on_timeout) -> object:
    """fn() on a thread; on a hang, dump every thread's stack, call `on_timeout` (which unblocks
    the threads) and fail."""
    out: dict = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        on_timeout()
        pytest.fail(f"hung for {seconds} s (stacks above)")
    return out.get("value")


def test_a_prefetched_video_never_starves_the_current_one_of_workers(numbered_video_factory, pool, monkeypatch):
    """Issue 18: the video decoded ahead fills its queue while the encoder still waits for the
    current one. Its readers must not hold the (fewer) workers while they wait for room, or the
    current video's readers never get one. Deterministic: the video ahead is started first and
    its queue is full before the current video starts."""
    current = numbered_video_factory(num_frames=300)  # 10 candidates, a keyframe before each
    later = numbered_video_factory(num_frames=600)  # 20 candidates: more than its budget holds
    cfg = ExtractConfig(encode_batch=1, readers=2, prefetch_videos=2, backend="pyav", decode_processes=True)
    monkeypatch.setattr(extract, "DECODE_BUDGET_BYTES", 4 * 48 * 64 * 3)  # 4 frames in flight per video
    ahead = _Decoder(str(later), Sampling(), cfg)
    ahead.candidates()
    deadline = time.monotonic() + 120
    while not (ahead.room.waiting and ahead.room.held == ahead.room.limit):
        assert time.monotonic() < deadline, "the video ahead never filled its budget"
        time.sleep(0.05)
    now = _Decoder(str(current), Sampling(), cfg)

    def drain(decoder: _Decoder) -> list[int]:
        got = []
        for group in decoder.batches(cfg.encode_batch):
            for _, batch in group:
                got += [read_frame_number(frame) for frame in batch]
                decoder.room.give(len(batch))  # as the encoder does once it holds the frames no more
        return sorted(got)

    def encode_now() -> list[int]:
        now.candidates()
        return drain(now)

    def unblock() -> None:
        ahead.cancel()
        now.cancel()

    assert finishes(encode_now, 120, unblock) == list(range(0, 300, 30))
    assert finishes(lambda: drain(ahead), 120, unblock) == list(range(0, 600, 30))
    assert pool.count <= cfg.readers


def test_many_videos_prefetched_with_fewer_workers_than_readers(numbered_video_factory, pool, tmp_path):
    """The whole extraction, many videos decoded three ahead by two readers each over two workers."""
    encoder = random_agent("clip-tiny", seed=0).encoder
    sources = [numbered_video_factory(num_frames=300), numbered_video_factory(num_frames=600)]
    paths = []
    for i in range(6):  # distinct files (their own cache entries), alternating lengths
        path = tmp_path / f"v{i}.mp4"
        path.write_bytes(sources[i % 2].read_bytes() + bytes([i]))  # a trailing byte mp4 ignores
        paths.append(path)
    cfg = ExtractConfig(encode_batch=1, readers=2, prefetch_videos=3, backend="pyav", decode_processes=True)
    cache = FeatureCache(tmp_path / "cache")
    report = finishes(lambda: extract_videos(paths, encoder, cache, Sampling(), cfg, progress=False), 300, pool.close)
    assert sorted(report.encoded) == sorted(map(str, paths)) and not report.failed
    for i, path in enumerate(paths):
        got = load_features(path, encoder.identity, cache, Sampling())
        frames = np.arange(0, 300 * (1 + i % 2), 30)
        np.testing.assert_array_equal(got.frame_numbers, frames)
        np.testing.assert_allclose(got.features, encoder.encode_frames(read_frames(path, frames)), atol=1e-5,
                                   rtol=1e-5)
    assert pool.count <= cfg.readers


def test_a_worker_that_dies_while_starting_is_noticed_at_once(numbered_video, tmp_path, monkeypatch):
    """The interpreter the worker starts in exits after a moment (as one killed while importing
    would): the read fails at once with the file named, not after the reply timeout."""
    dying = tmp_path / "python"
    dying.write_text("#!/bin/sh\nsleep 0.5\nexit 3\n")
    dying.chmod(0o755)
    monkeypatch.setattr(decode_workers, "_python", str(dying))
    worker = DecodeWorker()
    worker.reply_timeout_s = 300
    start = time.monotonic()
    with pytest.raises(VideoError, match="decoding process died") as err:
        worker.read(str(numbered_video), ARGS, np.array([0]), (48, 64, 3))
    assert time.monotonic() - start < 20 and str(numbered_video) in str(err.value)
    assert not worker.alive


# ----------------------------------------------------------------------------- blocks left by kill -9
OWNER = """
import sys, time
sys.path.insert(0, {root!r})
from tspo_eval import decode_workers
decode_workers._SHM = {folder!r}
block = decode_workers._Block(1 << 16)
print(block.path, flush=True)
time.sleep(600)
"""


def _owner(folder: Path) -> tuple[subprocess.Popen, Path]:
    """A process that made a block and stays alive (until killed)."""
    root = str(Path(decode_workers.__file__).parents[1])
    proc = subprocess.Popen([sys.executable, "-c", OWNER.format(root=root, folder=str(folder))],
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_blocks_of_killed_processes_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(decode_workers, "_SHM", str(tmp_path))
    monkeypatch.setattr(decode_workers, "_swept", True)  # this process's first block swept already
    live, live_block = _owner(tmp_path)
    killed, killed_block = _owner(tmp_path)
    try:
        killed.kill()  # kill -9: no atexit, the block stays
        killed.wait()
        mine = _Block(1 << 16)  # this process's own block, in use
        other = tmp_path / "unrelated-file"
        other.write_bytes(b"x")
        assert live_block.exists() and killed_block.exists()
        assert str(killed.pid) in killed_block.name  # the owner is in the name

        removed = sweep_stale_blocks(str(tmp_path))

        assert removed == [str(killed_block)]
        assert not killed_block.exists()
        assert live_block.exists() and Path(mine.path).exists() and other.exists()
        mine.close()
        assert not Path(mine.path).exists()
    finally:
        live.kill()
        live.wait()
    monkeypatch.setattr(decode_workers, "_swept", False)
    fresh = _Block(1 << 16)  # a process's first block sweeps: the owner is gone now
    assert not live_block.exists() and Path(fresh.path).exists()
    fresh.close()


def test_a_block_whose_pid_was_reused_is_kept_while_locked(tmp_path, monkeypatch):
    """A dead owner's pid may belong to another process by now (or to one in another pid
    namespace): the lock the owner holds on its block, not the pid alone, says it is in use."""
    monkeypatch.setattr(decode_workers, "_SHM", str(tmp_path))
    monkeypatch.setattr(decode_workers, "_swept", True)
    mine = _Block(1 << 16)
    claimed = tmp_path / Path(mine.path).name.replace(f"-{os.getpid()}-", "-999999999-")
    os.link(mine.path, claimed)  # the same file under a name whose pid is dead: still locked by us
    assert sweep_stale_blocks(str(tmp_path)) == []
    assert claimed.exists()
    mine.close()
    assert sweep_stale_blocks(str(tmp_path)) == [str(claimed)]


def test_blocks_go_to_the_temp_folder_when_shared_memory_is_too_small(tmp_path, monkeypatch):
    """A container's /dev/shm is often 64 MB: blocks that would not all fit go to the temp folder."""
    small, spill = tmp_path / "shm", tmp_path / "tmp"
    small.mkdir()
    spill.mkdir()
    monkeypatch.setattr(decode_workers, "_SHM", str(small))
    monkeypatch.setattr(decode_workers.tempfile, "tempdir", str(spill))
    monkeypatch.setattr(decode_workers, "_swept", True)
    free = os.statvfs(small)
    room = free.f_bavail * free.f_frsize
    fits = _Block(1 << 16)
    too_big = room // decode_workers._ROOM_FOR_BLOCKS + 1  # sparse: nothing is written
    spilled = _Block(too_big)
    assert Path(fits.path).parent == small and Path(spilled.path).parent == spill
    fits.close()
    spilled.close()


def test_a_worker_is_watched_through_its_pipe_where_the_system_has_no_pidfd(numbered_video, monkeypatch):
    """Without pidfd_open (a sandbox refusing it), a dead worker is still noticed at once: by its pipe."""
    def refused(pid):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(decode_workers.os, "pidfd_open", refused, raising=False)
    worker = DecodeWorker()
    worker.reply_timeout_s = 300
    assert worker.sentinel is None
    assert read_frame_number(worker.read(str(numbered_video), ARGS, np.array([30]), (48, 64, 3))[0]) == 30
    worker.process.kill()
    worker.process.wait()
    start = time.monotonic()
    with pytest.raises(VideoError, match="decoding process died"):
        worker.read(str(numbered_video), ARGS, np.array([60]), (48, 64, 3))
    assert time.monotonic() - start < 20


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_frame_arrays_go_back_to_the_system():
    """After `return_freed_buffers` (the parent's decoders and every worker call it), an 8 MiB frame
    array freed behind live objects leaves the process's resident memory. glibc's default (its
    threshold raised by earlier frees of that size) kept it on its heap: memory grew with reads."""
    code = textwrap.dedent("""
        import numpy as np
        from tspo_eval.decode_workers import return_freed_buffers
        return_freed_buffers()
        def resident():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        for _ in range(3):
            frames = np.ones(8 << 20, np.uint8)
            del frames
        frames = np.ones(8 << 20, np.uint8)
        later = [bytes(100) for _ in range(1000)]  # allocated after it: the array is not the heap's top
        before = resident()
        del frames
        print(before - resident())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(out) >= 8 << 20


def test_a_worker_runs_the_parents_code_whatever_the_working_directory_holds(numbered_video, tmp_path,
                                                                              monkeypatch):
    """`python -c` puts the working directory first on the path: a clone of another version of the
    package there (here: a decoy that cannot be imported) must not become the worker's code."""
    decoy = tmp_path / "tspo_eval"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    (decoy / "decode_workers.py").write_text("raise ImportError('the decoy in the working directory was imported')\n")
    monkeypatch.chdir(tmp_path)
    worker = DecodeWorker()
    try:
        args = {"backend": "pyav", "num_threads": 1, "size": None, "index": None}
        frames = worker.read(str(numbered_video), args, np.array([30, 60]), (48, 64, 3))
        assert [read_frame_number(f) for f in frames] == [30, 60]
    finally:
        worker.close()
