"""Feature extraction: videos -> candidate frames -> encoder -> per-video cache.

Decoding runs on background threads, `prefetch_videos` videos ahead of the encoder and
`readers` readers per video, which hand frame batches to the encoder as they finish (decoding
and encoding overlap within a video, not only across videos). The decoded frames a video holds
before the encoder takes them are bounded in bytes (`DECODE_BUDGET_BYTES`), so memory stays flat
in video length; a broken video is recorded as failed while the run goes on. Finished videos are
in the cache, so an interrupted run resumes where it stopped. A command that knows its videos
before its model is loaded starts decoding them at once (`DecodeAhead`).

With `decode_processes` each reader thread drives worker processes instead (`decode_workers`), and
each video is probed in one: PyAV's per-packet Python work then runs without contention for Python's
lock (nor holds it against the thread launching the encoder's kernels), and its
skipping of unreferenced frames pays (the fastest CPU set-up on the H200, see benchmarks/HISTORY.md).
Left at their defaults, the decoder, readers and threads are sized from the machine
(`decode_plan`): PyAV processes on machines of 8+ cores; 2 x 2 decord threads below. With
`backend="nvdec"` the GPU's decoders (PyNvVideoCodec, docs/nvdec.md) take whole videos, straight
into the encoder, while the CPU readers decode the others.

For a CUDA encoder the CPU readers hand over pinned batches and the encoder's batches
are queued without waiting for the GPU (one copy back per video).  `compile` runs the
image path through `torch.compile` (+23% encoder throughput on the H200, 10-30 s to compile
once per process; off by default because extraction there is bound by decoding, see
benchmarks/HISTORY.md).  `Sampling.decode_resize` scales frames to the encoder's input scale inside the
decoder: less to convert, copy and resize, with pixels within a few grey levels of the
reference resize (so it is part of the cache key).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import CacheWriteError, FeatureCache, VideoFeatures, features_identity, video_fingerprint, video_key
from .decode_workers import POOL, return_freed_buffers
from .encoders import Encoder, Frames, clip_resize_shape, upload
from .policy import ExtractConfig, Sampling
from .video import (Candidates, FrameReader, NvdecReader, Probe, VideoError, decode_runs,
                    nvdec_numbering_unchecked, nvdec_unavailable, say_once)

log = logging.getLogger(__name__)


PROCESS_CORES = 8  # from this many cores up, "auto" decodes with PyAV in one worker process per core
MAX_AUTO_READERS = 32  # beyond this decoding outruns the encoder (~2,900 frames/s on an H200) anyway
# decoded frames one video may hold before the encoder takes them (in bytes, so 720p holds fewer
# frames than 270p): memory flat in video length; 16 readers at 480x270 keep ~1,000 frames in flight
DECODE_BUDGET_BYTES = 384 << 20
NVDEC_VIDEOS = 6  # videos decoded on the GPU at once, one decoder each: the H200 has 7 NVDEC engines
# the last videos of a run are left to the CPU: a GPU decoder decodes every frame (~3,400 frames/s, ~5 s
# a 10-min video on the H200) where PyAV skips the unreferenced ones, so a GPU video started near the
# end would finish long after the CPU's (benchmarks/HISTORY.md, 2026-12-04 session 8)
NVDEC_TAIL = 24
NVDEC_READ_BYTES = 256 << 20  # GPU frames one decoder hands over per call (then encoded in `encode_batch`es)
# one CPU read's frames at most: a worker's shared block and its decoded copy stay this size whatever
# the video's length (reads sized from the runs grew with it); the worker decodes on where it stopped
READ_BYTES = 8 << 20
AHEAD_BYTES = 2 << 30  # what `DecodeAhead` may hold while the model loads: this many bytes' worth of videos
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores() -> int:
    """The CPUs this process may use: its affinity mask (taskset, cpusets), capped by a cgroup CPU
    quota (containers), which os.cpu_count() ignores, and shared with the other ranks on this
    machine under torchrun / accelerate (LOCAL_WORLD_SIZE)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def decode_plan(cfg: ExtractConfig, cores: int | None = None, device: str | torch.device | None = None) -> ExtractConfig:
    """`cfg` with its decoding sized to the machine: what was left at 0 / "auto" filled in, what was
    given kept (the cache key depends on none of it).

    - `backend` "nvdec" (asked for; "auto" never picks it): `NVDEC_VIDEOS` GPU decoders take whole
      videos beside the CPU readers sized below, which decode the rest and any video the GPU cannot
      (docs/nvdec.md); where it cannot run at all, the CPU plan, said once.
    - CPU readers, on `PROCESS_CORES`+ cores (PyAV installed), or `decode_processes`: PyAV (for
      "auto") in one worker process per core (at most `MAX_AUTO_READERS`), one decoder thread each. PyAV drops the frames
      nothing references undecoded, and its per-packet Python work needs Python's lock, so it
      scales in processes, not threads (benchmarks/HISTORY.md: 16 PyAV processes decoded 8.2-8.6x the
      published loader on the H200, 16 decord threads 6.3-7.9x).
    - otherwise threads in this process: 2 readers x 2 decoder threads, which through the CLI on
      the H200 beat 16 x 1 (issue 17) and is what laptops were measured with.
    """
    cores = cores or available_cores()
    gpu = False
    if cfg.backend == "nvdec":
        why = nvdec_unavailable(device)
        gpu = why is None
        if not gpu:
            say_once(f"--backend nvdec: GPU decoding is unavailable ({why}); decoding on the CPU", log)
    cpu = "auto" if cfg.backend == "nvdec" else cfg.backend
    processes = cfg.decode_processes or (cpu == "auto" and cores >= PROCESS_CORES and _has_pyav())
    backend = "nvdec" if gpu else "pyav" if processes and cpu == "auto" else cpu
    readers = cfg.readers or (min(cores, MAX_AUTO_READERS) if processes else 2)
    threads = cfg.decode_threads or (1 if processes else 2)
    return replace(cfg, backend=backend, readers=readers, decode_threads=threads, decode_processes=processes)


def _has_pyav() -> bool:
    return importlib.util.find_spec("av") is not None


def _cpu_backend(cfg: ExtractConfig) -> str:
    """The CPU decoder of a plan: under "nvdec", the one the CPU readers beside the GPU use."""
    if cfg.backend != "nvdec":
        return cfg.backend
    return "pyav" if cfg.decode_processes and _has_pyav() else "auto"


@dataclass
class ExtractReport:
    """What a run did to each video: encoded now, found in the cache, or failed (with why)."""

    encoded: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0  # wall-clock of the extraction itself (no imports or model loading)

    def merge(self, other: "ExtractReport") -> "ExtractReport":
        """Both ranks' videos; they ran at once, so the longer time."""
        return ExtractReport(self.encoded + other.encoded, self.cached + other.cached,
                             {**self.failed, **other.failed}, max(self.seconds, other.seconds))

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ExtractReport":
        return cls(**json.loads(Path(path).read_text()))


class _FrameBudget:
    """Decoded frames of one video not yet encoded, at most `limit`: a reader takes room for a read
    before it decodes (never holding a worker process while it waits), the encoder gives it back once
    it has the batch. `peak` is the most ever held at once (what tests check)."""

    def __init__(self, limit: int, cancelled: threading.Event) -> None:
        self.limit, self.held, self.peak, self.waiting = limit, 0, 0, 0
        self.cancelled = cancelled
        self.changed = threading.Condition()

    def take(self, frames: int) -> bool:
        """Wait for room for `frames` (a read larger than the limit waits for an empty budget);
        False when the video is cancelled meanwhile."""
        with self.changed:
            self.waiting += 1
            try:
                while self.held and self.held + frames > self.limit:
                    if self.cancelled.is_set():
                        return False
                    self.changed.wait(0.1)
            finally:
                self.waiting -= 1
            self.held += frames
            self.peak = max(self.peak, self.held)
            return not self.cancelled.is_set()

    def give(self, frames: int) -> None:
        with self.changed:
            self.held -= frames
            self.changed.notify_all()


def _probe(path: str, sampling: Sampling, cfg: ExtractConfig) -> tuple[Probe, FrameReader | None]:
    """`path` probed, in a decoding worker under `decode_processes` (demuxing a file is a Python loop
    per packet, which here holds Python's lock against the thread launching the encoder: on the H200
    the loop waited for probes half its time), else here, the reader left open for the caller."""
    if cfg.decode_processes:
        args = {"backend": _cpu_backend(cfg), "num_threads": cfg.decode_threads, "size": None, "index": None}
        with POOL.lend(cfg.readers) as worker:
            return worker.probe(path, args, sampling.fps, sampling.max_frames), None
    reader = FrameReader(path, _cpu_backend(cfg), cfg.decode_threads)
    try:
        return Probe.of(reader, sampling.fps, sampling.max_frames), reader
    except BaseException:
        reader.close()
        raise


class _Decoder:
    """Decodes one video's candidates on `readers` threads, handing batches over as they are done.

    The candidates are cut into runs that start at a keyframe (`decode_runs`), about four per
    reader, which the readers claim in time order as they become free: no frame is decoded
    twice, a slow stretch of video holds up one reader only, and the encoder starts on the
    first runs while later ones are still decoding. Batches come with their position, so
    their features are put back in time order at the end. Decoded frames not yet encoded are
    bounded by `DECODE_BUDGET_BYTES` (`_FrameBudget`), whatever the video's length. `image_size` set: frames are scaled
    in the decoder to the encoder's input scale; `pin`: batches are pinned tensors, which the
    encoder's device copy does not wait for.
    """

    def __init__(self, path: str, sampling: Sampling, cfg: ExtractConfig, image_size: int | None = None,
                 pin: bool = False) -> None:
        self.path, self.sampling, self.cfg, self.image_size, self.pin = path, sampling, cfg, image_size, pin
        return_freed_buffers()  # frame arrays come and go by the thousand: freed ones must not stay
        self.cancelled = threading.Event()
        self.head: queue.Queue = queue.Queue(maxsize=1)  # the Candidates, or the error probing raised
        self.done: queue.Queue = queue.Queue()  # decoded batches: bounded by `room`, not by the queue
        self.room = _FrameBudget(1, self.cancelled)  # sized once the frame size is known
        self.runs: list[tuple[int, int]] = []
        self.frame_numbers = np.zeros(0, np.int64)
        self.reader_args: dict = {}  # how each reader opens the file: the probe's backend and index
        self.frame_shape = (0, 0, 3)  # (H, W, 3) of a decoded frame
        self._claims = itertools.count()  # next(...) is atomic: each run goes to one reader
        self.read_frames = cfg.encode_batch  # frames per CPU read: sized from READ_BYTES once probed
        threading.Thread(target=self._start, name=f"probe:{Path(path).name}", daemon=True).start()

    def _put(self, q: queue.Queue, item: object) -> None:
        while not self.cancelled.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _start(self) -> None:
        cfg, reader = self.cfg, None
        try:
            probe, reader = _probe(self.path, self.sampling, cfg)
            cands = probe.candidates
            size = None if self.image_size is None else clip_resize_shape(
                cands.info.height, cands.info.width, self.image_size)
            self.frame_shape = (*(size or (cands.info.height, cands.info.width)), 3)
            frame_bytes = math.prod(self.frame_shape)
            self.read_frames = max(1, min(cfg.encode_batch, READ_BYTES // frame_bytes))
            # a read in flight per reader and a group at the encoder: more only stores a long video's
            # frames ahead of a faster encoder (a budget a short video never filled: memory grew with length)
            self.room.limit = max(1, min(DECODE_BUDGET_BYTES // frame_bytes,
                                         cfg.readers * self.read_frames + cfg.encode_batch))
            # about four runs per reader, each short enough that every reader holds one within the budget
            run = max(1, min(cfg.encode_batch, self.room.limit // cfg.readers,
                             math.ceil(len(cands.frame_numbers) / (4 * cfg.readers))))
            self.runs = decode_runs(cands.frame_numbers, probe.keyframes, run)
        except Exception as err:  # handed to the consumer, which records it against the video
            if reader is not None:
                reader.close()
            self._put(self.head, err)
            return
        self.frame_numbers = cands.frame_numbers
        self.reader_args = {"backend": probe.backend, "num_threads": cfg.decode_threads, "size": size,
                            "index": probe.index}
        if reader is not None and size is not None:  # the probing reader decodes at the stored size
            reader.close()
            reader = None
        for i in range(min(cfg.readers, len(self.runs))):
            threading.Thread(target=self._decode, args=(reader if i == 0 else None,), daemon=True).start()
        self._put(self.head, cands)

    def _decode(self, opened: FrameReader | None) -> None:
        try:
            if self.cfg.decode_processes:
                self._read_runs(self._read_in_worker(), self.read_frames)
            else:
                with opened or FrameReader(self.path, **self.reader_args) as reader:
                    self._read_runs(lambda frames: self._own(reader.read(frames), shared=False), self.read_frames)
        except Exception as err:
            self._put(self.done, err)

    def _read_in_worker(self) -> Callable[[np.ndarray], Frames]:
        """A read that borrows a worker for one batch only (the same one again when it is free):
        the worker is back in the pool before the batch waits for room in the queue, so readers
        of a video decoded ahead never hold the workers the current video needs."""
        last = None

        def read(frames: np.ndarray) -> Frames:
            nonlocal last
            with POOL.lend(self.cfg.readers, prefer=last) as worker:
                last = worker
                return self._own(worker.read(self.path, self.reader_args, frames, self.frame_shape), shared=True)

        return read

    def _own(self, batch: np.ndarray, shared: bool) -> Frames:
        """The batch as the encoder takes it: pinned for a CUDA encoder; `shared` (a view of a
        worker's block, which its next read overwrites) copied."""
        if self.pin:
            return torch.from_numpy(batch).pin_memory()
        return np.array(batch) if shared else batch

    def _read_runs(self, read: Callable[[np.ndarray], Frames], size: int) -> None:
        """Claim runs until none is left and queue their batches of at most `size` frames, each once
        there is room for it."""
        while not self.cancelled.is_set() and (claim := next(self._claims)) < len(self.runs):
            start, stop = self.runs[claim]
            for first in range(start, stop, size):
                wanted = self.frame_numbers[first:min(stop, first + size)]
                if not self.room.take(len(wanted)):
                    return
                try:
                    self.done.put((first, read(wanted)))
                except BaseException:
                    self.room.give(len(wanted))
                    raise

    def candidates(self) -> Candidates:
        """The video's candidates once probed; re-raises the error probing met."""
        head = self.head.get()
        if isinstance(head, Exception):
            raise head
        return head

    def batches(self, limit: int) -> Iterator[list[tuple[int, Frames]]]:
        """Decoded batches in the order they finish, gathered into groups of `limit` frames (fewer at
        the video's end, or where the budget could not hold more), as (position of the first frame,
        batch) pairs; ends when every candidate is in. Re-raises a reader's error. A group's frames
        count against the budget until the caller gives them back (`room.give`) once it holds none.

        A group waits to be full rather than going with what is waiting: each encoder call costs the
        same launching on the CPU whatever its size (~20 ms for ViT-L/14 on the H200, beside 16
        decoding processes), and with small groups those calls, not the GPU, bound the run (720p,
        measured: groups of 12 frames, GPU 22% busy; benchmarks/HISTORY.md)."""
        left, held = len(self.frame_numbers), None
        # a reader holding room for a read of `read_frames` is never kept waiting by a group's frames
        fill = max(1, min(limit, self.room.limit - self.read_frames + 1))
        while left:
            group, size = [], 0
            while size < min(fill, left):
                item = held if held is not None else self.done.get()
                held = None
                if isinstance(item, Exception):
                    raise item
                if group and size + len(item[1]) > limit:
                    held = item
                    break
                group.append(item)
                size += len(item[1])
            left -= size
            yield group

    def cancel(self) -> None:
        self.cancelled.set()


class DecodeAhead:
    """Decoding started before the encoder exists. A command knows its videos seconds before the
    model is imported and loaded, so the first videos (`AHEAD_BYTES` of decoding budgets, at least
    `prefetch_videos`) decode meanwhile; `extract_videos(..., ahead=)` takes them over. Not with
    `decode_resize` (the scale comes from the encoder). `device`: where the encoder will run (CUDA:
    batches are pinned)."""

    def __init__(self, paths: Sequence[str | Path], sampling: Sampling | None = None,
                 cfg: ExtractConfig | None = None, device: str | torch.device = "cpu") -> None:
        device = torch.device(device)
        self.sampling, self.cfg = sampling or Sampling(), decode_plan(cfg or ExtractConfig(), device=device)
        self.decoders: dict[str, _Decoder] = {}
        if self.sampling.decode_resize:
            return
        count = max(self.cfg.prefetch_videos, AHEAD_BYTES // DECODE_BUDGET_BYTES)
        for path in list(dict.fromkeys(str(p) for p in paths))[:count]:
            if os.path.isfile(path):  # a missing file is reported by the extraction itself
                self.decoders[path] = _Decoder(path, self.sampling, self.cfg, None, device.type == "cuda")

    def take(self, path: str, sampling: Sampling, cfg: ExtractConfig, image_size: int | None) -> _Decoder | None:
        """The decoder started for `path`, if it decodes what the extraction wants."""
        decoder = self.decoders.pop(path, None)
        if decoder is not None and (sampling, cfg, image_size) != (self.sampling, self.cfg, None):
            decoder.cancel()
            return None
        return decoder

    def cancel(self) -> None:
        """Stop the decoders nobody took (their videos were cached, or the command failed)."""
        for decoder in self.decoders.values():
            decoder.cancel()
        self.decoders.clear()


Job = tuple[str, str, str]  # (path, fingerprint, cache key)


def _encode(decoder: _Decoder, encoder: Encoder, encoding: threading.Lock, fingerprint: str,
            identity: str) -> VideoFeatures:
    cands = decoder.candidates()
    parts: list[tuple[int, torch.Tensor]] = []
    # features stay on the encoder's device until the video is done: one wait for the GPU per video
    for group in decoder.batches(decoder.cfg.encode_batch):
        sizes = [len(b) for _, b in group]
        frames = torch.cat([upload(b, encoder.device) for _, b in group]) if len(group) > 1 else group[0][1]
        with encoding:
            features = encoder.encode_frames(frames)
        parts += zip((first for first, _ in group), features.split(sizes))
        del group, frames  # the decoded frames die here: only then may readers decode more
        decoder.room.give(sum(sizes))
    features = torch.cat([f for _, f in sorted(parts, key=lambda part: part[0])]).cpu()
    return _video_features(cands, features, decoder.path, identity, fingerprint)


def _video_features(cands: Candidates, features: torch.Tensor, path: str, identity: str,
                    fingerprint: str) -> VideoFeatures:
    return VideoFeatures(features=features, frame_numbers=cands.frame_numbers, timestamps=cands.timestamps,
                         fps=cands.info.fps, num_frames=cands.info.num_frames, encoder=identity,
                         fingerprint=fingerprint, video=str(path))


class _NvdecRefused(Exception):
    """The GPU decoder cannot take this video (codec, frame count, a failed read): the CPU decodes it."""


def _encode_on_gpu(path: str, sampling: Sampling, cfg: ExtractConfig, encoder: Encoder, encoding: threading.Lock,
                   fingerprint: str, identity: str, stop: threading.Event) -> VideoFeatures | None:
    """One whole video through one GPU decoder straight into the encoder: its frames never leave the
    GPU, and at most `NVDEC_READ_BYTES` of them wait. The frame numbers come from a CPU reader's probe,
    as on the CPU path. None when stopped."""
    if nvdec_numbering_unchecked(path):  # before probing: the CPU loop probes it again when it takes it
        raise _NvdecRefused(f"{path}: an MPEG-TS / -PS or HEVC file, whose frame numbering on NVDEC is not yet "
                            "checked (docs/nvdec.md)")
    probe, opened = _probe(path, sampling, cfg)
    if opened is not None:
        opened.close()
    cands = probe.candidates
    try:
        reader = NvdecReader(path, encoder.device.index or 0, cands.info.num_frames)
    except VideoError as err:
        raise _NvdecRefused(str(err)) from err
    step = max(cfg.encode_batch, NVDEC_READ_BYTES // (cands.info.height * cands.info.width * 3))
    parts: list[torch.Tensor] = []
    with reader:
        for first in range(0, len(cands.frame_numbers), step):
            if stop.is_set():
                return None
            try:
                frames = reader.read(cands.frame_numbers[first:first + step])
            except VideoError as err:
                raise _NvdecRefused(str(err)) from err
            for batch in frames.split(cfg.encode_batch):
                with encoding:
                    parts.append(encoder.encode_frames(batch))
            del frames
    return _video_features(cands, torch.cat(parts).cpu(), path, identity, fingerprint)


class _Videos:
    """The videos left to extract. The CPU loop takes them from the front, in order; the GPU decoders
    from the back while more than `NVDEC_TAIL` are left, never one the CPU must decode (its decoding
    started ahead on the CPU, or the GPU handed it back, to the front, as one it cannot decode)."""

    def __init__(self, jobs: Sequence[Job], started: set[str]) -> None:
        self.jobs = deque(sorted(jobs, key=lambda job: job[0] not in started))  # the started ones first
        self.cpu_only, self.held = set(started), 0
        self.changed = threading.Condition()

    def front(self) -> Job | None:
        with self.changed:
            return self.jobs.popleft() if self.jobs else None

    def back(self) -> Job | None:
        """A video for a GPU decoder, which must `release` it; None when none is left for the GPU."""
        with self.changed:
            if len(self.jobs) <= NVDEC_TAIL or self.jobs[-1][0] in self.cpu_only:
                return None
            self.held += 1
            return self.jobs.pop()

    def release(self, handed_back: Job | None) -> None:
        with self.changed:
            self.held -= 1
            if handed_back is not None:
                self.cpu_only.add(handed_back[0])
                self.jobs.appendleft(handed_back)
            self.changed.notify_all()

    def wait(self) -> bool:
        """True once a video is waiting at the front; False when none is and no GPU decoder holds
        one (none can come back: the run is over)."""
        with self.changed:
            while not self.jobs and self.held:
                self.changed.wait()
            return bool(self.jobs)


def _prepare(encoder: Encoder, cfg: ExtractConfig) -> bool:
    """Compile the encoder if `cfg.compile`; True when it runs on CUDA (then batches are pinned)."""
    if cfg.compile:
        encoder.compile()
    return encoder.device.type == "cuda"


def extract_videos(paths: Sequence[str | Path], encoder: Encoder, cache: FeatureCache,
                   sampling: Sampling | None = None, cfg: ExtractConfig | None = None,
                   progress: bool = True, ahead: DecodeAhead | None = None) -> ExtractReport:
    """Cache features of `sampling`'s candidates for every video in `paths` (skipping cached
    ones; `cfg`: how fast, never which features); never raises per video. `ahead`: decoding
    started before the encoder was loaded, taken over here. With the "nvdec" plan, `NVDEC_VIDEOS`
    GPU decoders take whole videos beside this loop's CPU readers (`_Videos`)."""
    start = time.perf_counter()
    sampling, cfg = sampling or Sampling(), decode_plan(cfg or ExtractConfig(), device=encoder.device)
    identity = features_identity(encoder.identity, sampling)
    report = ExtractReport()
    todo: list[Job] = []
    for path in dict.fromkeys(str(p) for p in paths):
        try:
            fingerprint = video_fingerprint(path)
        except OSError as err:
            report.failed[path] = f"{path}: cannot read the file ({err.strerror or err}); check the video root"
            continue
        key = video_key(fingerprint, encoder.identity, sampling)
        if cache.get_video(key) is not None:
            report.cached.append(path)
        else:
            todo.append((path, fingerprint, key))

    pin = _prepare(encoder, cfg) if todo else False
    image_size = encoder.image_size if sampling.decode_resize else None
    bar = tqdm(total=len(todo), desc="extract", unit="video", disable=not progress)
    videos = _Videos(todo, set(ahead.decoders) if ahead is not None else set())
    window: deque[tuple[Job, _Decoder]] = deque()  # videos decoding ahead of the encoder
    encoding, recording, stop = threading.Lock(), threading.Lock(), threading.Event()
    unwritable: list[CacheWriteError] = []  # a GPU decoder's video could not be cached: the run stops

    def record(path: str, key: str, features: VideoFeatures | None, error: Exception | None = None) -> None:
        """Cache one video's features (CacheWriteError stops the run), or count its failure (from this
        loop and the GPU decoders)."""
        if error is None:
            cache.put_video(key, features)
        with recording:
            if error is None:
                report.encoded.append(path)
            else:
                report.failed[path] = str(error)
                bar.write(f"failed: {error}")
            bar.update(1)

    def refill() -> None:
        while len(window) < cfg.prefetch_videos and (job := videos.front()) is not None:
            started = ahead.take(job[0], sampling, cfg, image_size) if ahead is not None else None
            window.append((job, started or _Decoder(job[0], sampling, cfg, image_size, pin)))

    def on_gpu(job: Job | None) -> None:
        """One GPU decoder: `job` (claimed before the CPU loop runs on), then videos from the back."""
        while job is not None and not stop.is_set():
            path, fingerprint, key = job
            handed_back = None
            try:
                features = _encode_on_gpu(path, sampling, cfg, encoder, encoding, fingerprint, identity, stop)
                if features is not None:
                    record(path, key, features)
            except CacheWriteError as err:  # the cache, not the video: the run stops
                unwritable.append(err)
                stop.set()
                return
            except (VideoError, ValueError, OSError) as err:  # the CPU probe: the video itself is bad
                record(path, key, None, err)
            except Exception as err:  # noqa: BLE001 - NVDEC refused or failed it: the CPU decodes it
                say_once(f"GPU decoding skipped a video, the CPU decodes it: {err}", log)
                handed_back = job
            finally:
                videos.release(handed_back)
            job = videos.back()

    gpu = cfg.backend == "nvdec" and image_size is None
    refill()
    firsts = [job for _ in range(NVDEC_VIDEOS * gpu) if (job := videos.back()) is not None]
    decoders = [threading.Thread(target=on_gpu, args=(job,), name=f"nvdec:{i}", daemon=True)
                for i, job in enumerate(firsts)]
    for thread in decoders:
        thread.start()
    try:
        while (window or videos.wait()) and not unwritable:
            if not window:
                refill()
                continue
            (path, fingerprint, key), decoder = window.popleft()
            refill()
            try:
                features = _encode(decoder, encoder, encoding, fingerprint, identity)
            except (VideoError, ValueError, OSError) as err:
                decoder.cancel()
                record(path, key, None, err)
            else:
                record(path, key, features)
    finally:
        stop.set()
        for _, decoder in window:
            decoder.cancel()
        if ahead is not None:
            ahead.cancel()
        for thread in decoders:
            thread.join()
        bar.close()
    if unwritable:
        raise unwritable[0]
    report.seconds = time.perf_counter() - start
    return report


def load_features(path: str | Path, encoder_identity: str, cache: FeatureCache,
                  sampling: Sampling) -> VideoFeatures | None:
    """The cached features of one video under this encoder and sampling, or None."""
    return cache.get_video(video_key(video_fingerprint(path), encoder_identity, sampling))


def video_features(path: str | Path, encoder: Encoder, cache: FeatureCache, sampling: Sampling | None = None,
                   cfg: ExtractConfig | None = None) -> VideoFeatures:
    """Features of one video, from the cache or extracted now; raises VideoError if it fails."""
    sampling = sampling or Sampling()
    found = load_features(path, encoder.identity, cache, sampling) if Path(path).is_file() else None
    if found is not None:
        return found
    report = extract_videos([path], encoder, cache, sampling, cfg, progress=False)
    if report.failed:
        raise VideoError(next(iter(report.failed.values())))
    return load_features(path, encoder.identity, cache, sampling)
