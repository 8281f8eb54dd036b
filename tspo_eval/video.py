"""Video stage: probe a file, choose 1-fps candidate frames, stream decoded frames.

Two decoders give the same frame numbers and (within colour-conversion tolerance) the
same pixels:

- "decord": `decord.VideoReader`, as the published TSPO code uses.
- "pyav": PyAV, sequential threaded decoding with keyframe seeks over long gaps.
- "nvdec": the GPU's hardware decoders through PyNvVideoCodec (the `nvdec` extra), frames
  returned on the GPU; frame count, rate and keyframes come from a CPU reader, so the frame
  numbers are the CPU decoders' (`NvdecReader`, `nvdec_unavailable`; docs/nvdec.md).

Frame numbering is decord's: frame n is the n-th video packet in presentation-time
order (decord indexes every packet when it opens a file, `len(vr)`); PyAV builds the
same packet index, so both report the same `num_frames` even where the container
stores no frame count (mkv/webm: PyAV `stream.frames == 0`). `fps` is the stream's
average frame rate (decord `get_avg_fps()` == PyAV `stream.average_rate`).

Every function call opens its own reader, so the functions are safe to call from several
threads or processes at once; a `FrameReader` keeps one file open for several reads (one
per thread). One file's decoding is parallelised by the decoder's own threads
(`num_threads`, 0 = let FFmpeg choose) or, for extraction, by several readers on
`decode_runs` that start at keyframes.

`iter_frames(..., size=(h, w))` scales frames inside the decoder (FFmpeg's swscale,
bilinear, fused with the YUV -> RGB conversion; both backends give identical pixels), so
a 1080p source never exists as full-size RGB: the CLIP stage then only crops.
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

import numpy as np

try:
    import av
except ImportError:  # a decord-only install (e.g. wheels carried to a GPU machine): no PyAV readers
    av = None

if TYPE_CHECKING:
    import decord
    import torch

log = logging.getLogger(__name__)

Backend = Literal["auto", "decord", "pyav", "nvdec"]
_BACKENDS = ("auto", "decord", "pyav", "nvdec")
_MAX_FPS = 1000.0  # above this the container's rate is garbage, not a real video
# Seeking flushes the threaded decoder; decoding straight through is cheaper when the
# next wanted frame's keyframe is at most this many frames ahead.
_SEEK_GAP = 32


class VideoError(RuntimeError):
    """A video file cannot be used; the message names the file, the fault and a fix."""


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video file found (frame count and fps as decord reports them)."""

    path: str
    num_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        """Length in seconds: num_frames / fps."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class Candidates:
    """The candidate frames of one video: absolute frame numbers and their times."""

    frame_numbers: np.ndarray  # (T,) int64, ascending
    timestamps: np.ndarray  # (T,) float64 seconds = frame_numbers / info.fps
    info: VideoInfo


@dataclass(frozen=True)
class Probe:
    """What readers of one video need before they decode: its candidates, its keyframes (where runs
    may start) and the decoder's packet index (`FrameReader.index`, None for decord), found once."""

    candidates: Candidates
    keyframes: np.ndarray
    index: tuple[np.ndarray, np.ndarray] | None
    backend: str

    @classmethod
    def of(cls, reader: FrameReader, fps: float = 1.0, max_frames: int | None = None) -> Probe:
        return cls(reader.candidates(fps, max_frames), reader.keyframes, reader.index, reader.backend)


def candidate_frame_numbers(num_frames: int, avg_fps: float, fps: float = 1.0,
                            max_frames: int | None = None) -> np.ndarray:
    """Frame numbers sampled at `fps`: every round(avg_fps / fps)-th frame from frame 0.

    This is the published TSPO rule (every round(avg_fps)-th frame at 1 fps; Python's
    round, half to even), with the step at least 1. If that gives more than
    `max_frames` frames, `max_frames` frames spread over the whole video are taken
    instead: np.round(np.linspace(0, num_frames - 1, max_frames)) (half to even).
    Returns (T,) int64, ascending.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not (math.isfinite(avg_fps) and avg_fps > 0 and math.isfinite(fps) and fps > 0):
        raise ValueError(f"avg_fps and fps must be positive and finite, got {avg_fps} and {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    step = max(1, round(avg_fps / fps))
    frames = np.arange(0, num_frames, step, dtype=np.int64)
    if max_frames is not None and len(frames) > max_frames:
        frames = np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)
    return frames


def probe(path: str | os.PathLike, backend: Backend = "auto") -> VideoInfo:
    """Open `path`, index its frames and decode the first one; raise VideoError if unusable."""
    with FrameReader(path, backend, num_threads=1) as reader:
        return reader.info()


def sample_candidates(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None,
                      backend: Backend = "auto") -> Candidates:
    """Probe `path` and choose its candidate frames (see `candidate_frame_numbers`)."""
    with FrameReader(path, backend, num_threads=1) as reader:
        return reader.candidates(fps, max_frames)


def iter_frames(path: str | os.PathLike, frame_numbers: Sequence[int] | np.ndarray,
                batch_size: int = 32, backend: Backend = "auto", num_threads: int = 0,
                size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Stream the requested frames as RGB uint8 batches (B, H, W, 3), B <= batch_size.

    Frames come in the order of `frame_numbers`, which must be ascending (repeats
    allowed) integers in [0, num_frames). Only one batch is held at a time, never
    the whole video. The file is opened and the frame numbers are checked at call
    time, so a bad file or bad numbers raise here rather than at the first batch.
    `size` = (H, W) scales every frame while decoding (bilinear); None keeps the
    stored size.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    reader = FrameReader(path, backend, num_threads, size)
    try:
        wanted = _checked_frame_numbers(frame_numbers, reader.num_frames, reader.path)
    except ValueError:
        reader.close()
        raise
    return _batches(reader, wanted, batch_size)


def _batches(reader: FrameReader, wanted: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """`wanted` read in batches, decoding straight on from batch to batch; closes the file at the end."""
    with reader:
        for start in range(0, len(wanted), batch_size):
            yield reader.read(wanted[start:start + batch_size])


def decode_runs(frame_numbers: np.ndarray, keyframes: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """Cut ascending `frame_numbers` into (start, stop) slices for separate readers.

    Every slice but the first begins at the first wanted frame after a keyframe and holds at
    least `min_length` frames (the last may hold fewer): a reader seeks to that keyframe and
    decodes on, so no frame is decoded by two readers. `keyframes` are frame numbers.
    """
    if len(frame_numbers) == 0:
        return []
    group = np.searchsorted(np.asarray(keyframes), frame_numbers, side="right")
    bounds = [0]
    for start in (np.flatnonzero(np.diff(group)) + 1).tolist():
        if start - bounds[-1] >= min_length:
            bounds.append(start)
    bounds.append(len(frame_numbers))
    return list(itertools.pairwise(bounds))


def read_frames(path: str | os.PathLike, frame_numbers: Sequence[int] | np.ndarray,
                backend: Backend = "auto") -> np.ndarray:
    """All requested frames at once, (K, H, W, 3) uint8: for small K (e.g. 64 selected)."""
    with FrameReader(path, backend) as reader:
        return reader.read(frame_numbers)


class FrameReader:
    """One open video for several reads: frame count, rate, keyframes, and `read`.

    Consecutive reads continue decoding where the previous one stopped instead of seeking,
    so a file read run after run costs what one pass costs. Not thread-safe: open one per
    thread. "auto" uses decord, and PyAV for a file decord cannot open or would return other
    frames than asked for (MPEG-TS / MPEG-PS, HEVC, frames sharing a time: `_decord_for`).
    `size` = (H, W) scales frames while decoding (see `iter_frames`); `index` is another
    PyAV reader's `index` of the same file.
    """

    def __init__(self, path: str | os.PathLike, backend: Backend = "auto", num_threads: int = 0,
                 size: tuple[int, int] | None = None, index: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if size is not None and min(size) < 1:
            raise ValueError(f"size must be a positive (height, width), got {size}")
        self.path = _existing(path, backend)
        if backend == "nvdec" and size is not None:
            raise ValueError(f"{self.path}: the nvdec backend decodes at the stored size; size must be None")
        cpu = "auto" if backend == "nvdec" else backend  # nvdec: the CPU reader gives the frame numbers
        header = _Header() if backend == "pyav" else _header(self.path)
        self._decord = _decord_for(self.path, cpu, num_threads, size, header)
        self._pyav = None if self._decord is not None else _PyAVReader(self.path, num_threads, size, index)
        self._nvdec = None
        if backend == "nvdec" and not header.decord_misnumbers:  # see nvdec_numbering_unchecked
            try:
                self._nvdec = NvdecReader(self.path, num_frames=self.num_frames)
            except BaseException:
                self.close()
                raise

    @property
    def backend(self) -> str:
        """The decoder in use: "decord", "pyav" ("auto" resolved) or "nvdec"."""
        return "nvdec" if self._nvdec is not None else "decord" if self._decord is not None else "pyav"

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray] | None:
        """PyAV's packet index of this file, to give another PyAV reader of it (`index=`) so it
        does not demux the whole file again; None for decord, which indexes in C on its own."""
        return None if self._pyav is None else self._pyav.index

    @property
    def num_frames(self) -> int:
        return len(self._decord) if self._decord is not None else self._pyav.num_frames

    @property
    def fps(self) -> float:
        return self._decord.get_avg_fps() if self._decord is not None else self._pyav.fps

    @property
    def keyframes(self) -> np.ndarray:
        """(K,) int64 frame numbers of the keyframes, frame 0 included."""
        keys = self._decord.get_key_indices() if self._decord is not None else self._pyav.keyframes
        return np.union1d([0], np.asarray(keys, np.int64))

    def info(self) -> VideoInfo:
        """Frame count, rate and frame size (decodes frame 0); VideoError when unusable."""
        return _checked_info(self.path, self.num_frames, self.fps, self.read([0])[0].shape)

    def candidates(self, fps: float = 1.0, max_frames: int | None = None) -> Candidates:
        """This video's candidate frames (see `candidate_frame_numbers`)."""
        info = self.info()
        frames = candidate_frame_numbers(info.num_frames, info.fps, fps, max_frames)
        return Candidates(frame_numbers=frames, timestamps=frames / info.fps, info=info)

    def read(self, frame_numbers: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The requested frames (ascending, repeats allowed) as RGB uint8 (K, H, W, 3), written into
        `out` (and `out` returned) when given: a decoding process then puts PyAV's frames straight into
        its shared block, with no stacked copy between. VideoError when a frame's size is not `out`'s."""
        wanted = _checked_frame_numbers(frame_numbers, self.num_frames, self.path)
        if len(wanted) == 0:
            raise ValueError(f"{self.path}: no frame numbers given; pass at least one")
        if out is not None and out.shape[0] != len(wanted):
            raise ValueError(f"{self.path}: out holds {out.shape[0]} frames, {len(wanted)} asked")
        if self._nvdec is not None:
            frames = self._nvdec.read(wanted).cpu().numpy()
        elif self._decord is not None:
            frames = _decord_batch(self._decord, wanted.tolist(), self.path)
        else:  # PyAV decodes frame by frame
            frames = self._pyav.frames(wanted)
            if out is None:
                return np.stack(list(frames))
        if out is None:
            return frames
        for i, frame in enumerate(frames):
            if frame.shape != out.shape[1:]:
                raise VideoError(f"{self.path}: decoded frames are {frame.shape}, not the {out.shape[1:]} of its "
                                 "first frame (the size changes mid-stream); re-encode the file at one size")
            out[i] = frame
        return out

    def close(self) -> None:
        if self._pyav is not None:
            self._pyav.close()
        self._decord = self._nvdec = None

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- checks


def _existing(path: str | os.PathLike, backend: str) -> str:
    """The path as a string, after checking the backend name and that the file exists."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VideoError(f"{path}: no such file; check the video directory and the file name")
    if os.path.getsize(path) == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes); re-download or re-encode it")
    return path


def _checked_info(path: str, num_frames: int, fps: float, shape: tuple[int, ...]) -> VideoInfo:
    """VideoInfo, or VideoError when the frame count or rate cannot be sampled from."""
    if num_frames < 1:
        raise VideoError(f"{path}: the video stream holds no frames; re-download or re-encode it")
    if not (math.isfinite(fps) and 0 < fps <= _MAX_FPS):
        raise VideoError(f"{path}: unusable average frame rate {fps}; re-encode it at a constant "
                         "rate (e.g. ffmpeg -i IN -r 30 OUT.mp4)")
    return VideoInfo(path=path, num_frames=int(num_frames), fps=float(fps),
                     width=int(shape[1]), height=int(shape[0]))


def _check_complete(path: str, header_frames: int, num_frames: int) -> None:
    """VideoError for a file cut short: fewer frame packets than its header lists.

    Both backends would otherwise quietly report the shorter length (decord does).
    """
    if header_frames > num_frames:
        raise VideoError(f"{path}: the header lists {header_frames} frames but only {num_frames} "
                         "are present (the file is truncated); re-download it")


def _checked_frame_numbers(frame_numbers: Sequence[int] | np.ndarray, num_frames: int,
                           path: str) -> np.ndarray:
    """(K,) int64 frame numbers, or ValueError naming the file and the valid range.

    Integral floats are accepted: the published frame-index files store floats.
    """
    numbers = np.asarray(frame_numbers)
    if numbers.size == 0:
        return np.zeros(0, np.int64)
    integral = numbers.dtype.kind in "iu" or (
        numbers.dtype.kind == "f" and bool(np.all(np.isfinite(numbers) & (numbers == np.round(numbers)))))
    if numbers.ndim != 1 or not integral:
        raise ValueError(f"{path}: frame numbers must be a 1-D sequence of integers, "
                         f"got dtype {numbers.dtype} shape {numbers.shape}")
    numbers = numbers.astype(np.int64)
    bad = numbers[(numbers < 0) | (numbers >= num_frames)]
    if bad.size:
        raise ValueError(f"{path}: frame numbers must lie in [0, {num_frames - 1}] (the video has "
                         f"{num_frames} frames); got {bad[:5].tolist()}")
    if np.any(np.diff(numbers) < 0):
        raise ValueError(f"{path}: frame numbers must be in ascending (time) order; sort them first")
    return numbers


# --------------------------------------------------------------------------- decord


def _decord_for(path: str, backend: str, num_threads: int, size: tuple[int, int] | None,
                header: _Header) -> decord.VideoReader | None:
    """The decord reader to use, or None to use PyAV ("pyav"; for "auto", a file decord fails to
    open or would misnumber; "decord" asked for on such a file reads it, with a warning). `header`
    is `_header(path)`."""
    if backend == "pyav":
        return None
    if backend == "auto" and header.decord_misnumbers:
        return None
    try:
        reader = _open_decord(path, num_threads, size, header.frames)
    except VideoError:
        if backend == "decord":
            raise
        return None
    if header.decord_misnumbers or _repeats_times(reader):
        if backend == "auto":
            return None
        say_once(f"{path}: decord returns other frames than asked for of MPEG-TS / MPEG-PS, HEVC and files whose "
                 "frames share a time (said for the first such file only); --backend auto reads them with PyAV",
                 log, key="decord misnumbers")
    return reader


_said: set[str] = set()


def say_once(message: str, logger: logging.Logger, key: str | None = None) -> None:
    """A fallback or a caveat is worth one line per process (per `key`, default the message), not one
    per video."""
    if (key or message) not in _said:
        _said.add(key or message)
        logger.warning(message)


def _repeats_times(reader: decord.VideoReader) -> bool:
    """Whether frames share a presentation time (some muxers write such files): decord then numbers
    every later frame one off (measured, tests/test_video.py). A C call over decord's own index."""
    starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    return len(np.unique(starts)) < len(starts)


def import_decord():
    """decord, with PyNvVideoCodec loaded first where it is installed. decord loads its bundled
    FFmpeg with global symbols, and PyNvVideoCodec's decoder then binds to them and crashes
    (measured on the H200: `SimpleDecoder` segfaults in any process that imported decord first,
    and works when PyNvVideoCodec came first). Every decord import in the package goes here."""
    if ("decord" not in sys.modules and "PyNvVideoCodec" not in sys.modules
            and importlib.util.find_spec("PyNvVideoCodec") is not None):
        try:
            import PyNvVideoCodec  # noqa: F401
        except Exception:  # noqa: BLE001 - a broken NVDEC install only means no GPU decoding
            pass
    import decord

    return decord


def _open_decord(path: str, num_threads: int, size: tuple[int, int] | None,
                 header_frames: int) -> decord.VideoReader:
    """A decord reader on the CPU (scaling to `size` = (H, W) when given), or VideoError when
    decord is missing, fails, or finds fewer frames than the header's `header_frames`."""
    try:
        decord = import_decord()
    except ImportError as err:
        raise VideoError(f"{path}: the decord backend is not installed ({err}); "
                         "pip install decord, or use backend='pyav'") from err
    try:
        height, width = size or (-1, -1)
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads, width=width, height=height)
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoError(f"{path}: decord cannot open it ({str(err).strip()[:200]}); the file is "
                         "corrupt, truncated or not a video: re-download or re-encode it") from err
    _check_complete(path, header_frames, len(vr))
    return vr


@dataclass(frozen=True)
class _Header:
    frames: int = 0  # frames the container header promises (0 where it keeps no count, e.g. mkv)
    decord_misnumbers: bool = False  # decord returns other frames than the numbers asked for


# Measured (tests/test_video.py, numbered frames): decord seeks MPEG-TS / MPEG-PS files and
# open-GOP HEVC (x265's default) to the wrong frames, off by up to a GOP; PyAV numbers every
# decoded frame by its presentation time, so it is exact on them.
_DECORD_MISNUMBERED_FORMATS = {"mpegts", "mpeg"}
_DECORD_MISNUMBERED_CODECS = {"hevc"}


def _header(path: str) -> _Header:
    """What PyAV reads from the header (nothing without PyAV: decord's own count stands); VideoError
    when the header's time scale is unusable (`_check_time_scale`)."""
    if av is None:
        return _Header()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return _Header()
            stream = container.streams.video[0]
            _check_time_scale(path, stream.time_base)
            formats = set(container.format.name.split(","))
            return _Header(stream.frames, bool(formats & _DECORD_MISNUMBERED_FORMATS)
                           or stream.codec_context.name in _DECORD_MISNUMBERED_CODECS)
    except av.FFmpegError:
        return _Header()


def nvdec_numbering_unchecked(path: str) -> bool:
    """Whether GPU decoding leaves this file to the CPU: whether NVDEC numbers frames right on the files
    decord misnumbers (MPEG-TS / -PS, HEVC) is not yet measured (`scripts/bench_cli.py`'s NVDEC check
    does: docs/nvdec.md), and a wrong frame would go unseen into the features."""
    return _header(path).decord_misnumbers


def _check_time_scale(path: str, time_base: Fraction | None) -> None:
    """VideoError for a stream whose header time scale is 0: FFmpeg then counts time in whole
    seconds, so frames share timestamps and some are dropped (it would read as truncated)."""
    if time_base is None or time_base == 1:
        raise VideoError(f"{path}: the video stream's time scale is 0 in its header (FFmpeg falls back to whole "
                         "seconds, so frames collide); re-encode it (e.g. ffmpeg -i IN -r 30 OUT.mp4)")


def _decord_batch(vr: decord.VideoReader, frame_numbers: list[int], path: str) -> np.ndarray:
    """decord's get_batch as a numpy array, whatever decord bridge is set globally."""
    decord = import_decord()

    try:
        batch = vr.get_batch(frame_numbers)
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoError(f"{path}: decord failed to decode frames {frame_numbers[:3]}... "
                         f"({str(err).strip()[:200]}); the file is corrupt: re-encode it, "
                         "or try backend='pyav'") from err
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)


# --------------------------------------------------------------------------- PyAV


class _PyAVReader:
    """One open file for PyAV: a packet index for exact frame numbers, and a decoder.

    Frames no read asks for are decoded with FFmpeg's `skip_frame = NONREF`: a frame that
    no other frame references is dropped unread, which is exact for the frames that are
    decoded (nothing depends on the dropped ones) and about halves the work on x264's
    default B-frames. `index` reuses another reader's packet index for the same file, so
    several readers of one video do not each demux all of it.
    """

    def __init__(self, path: str, num_threads: int, size: tuple[int, int] | None = None,
                 index: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.path = path
        # decord scales with swscale's bilinear filter: the same here gives identical pixels
        self._rgb = {"format": "rgb24"} if size is None else {
            "format": "rgb24", "height": size[0], "width": size[1], "interpolation": "BILINEAR"}
        if av is None:
            raise VideoError(f"{path}: PyAV is not installed (pip install av); use backend='decord'")
        self._num_threads = num_threads
        self._open()
        try:
            _check_time_scale(path, self._stream.time_base)
            self._pts, self.keyframes = index or self._index()
        except BaseException:
            self._container.close()
            raise
        # decoding state carried from one `frames` call to the next
        self._decoded: Iterator[av.VideoFrame] | None = None
        self._current, self._image = -1, None  # number and pixels of the last decoded frame
        self._wanted_pts: set[int] = set()  # presentation times of this read's frames
        self._last_pts = -1  # and of its last frame

    def _open(self) -> None:
        """Open the file at its start (again: the last resort of `_seek`)."""
        try:
            self._container = av.open(self.path)
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: PyAV cannot open it ({err}); the file is corrupt, "
                             "truncated or not a video: re-download or re-encode it") from err
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{self.path}: the file has no video stream; check that it is a video")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._stream.codec_context.thread_count = self._num_threads

    @property
    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """(presentation times in frame order, keyframe numbers): pass to another reader."""
        return self._pts, self.keyframes

    @property
    def num_frames(self) -> int:
        return len(self._pts)

    def _number_of(self, pts: int | None, previous: int) -> int:
        """The frame number of presentation time `pts`, decoded after frame `previous` (its next
        frame when no packet has that time). A binary search of the sorted index, not a dict: a
        worker keeps no per-frame Python objects, so its memory does not grow with the video's
        length. A time several frames share (some muxers write them) numbers them in turn."""
        if pts is None:
            return previous + 1
        n = int(np.searchsorted(self._pts, pts))
        if n >= len(self._pts) or self._pts[n] != pts:
            return previous + 1
        if n <= previous < len(self._pts) - 1 and self._pts[previous + 1] == pts:
            return previous + 1
        return n

    @property
    def fps(self) -> float:
        rate = self._stream.average_rate
        return float(rate) if rate else math.nan

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> _PyAVReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _decode_packets(self) -> Iterator[av.VideoFrame]:
        """Decoded frames from the demuxer's position on, dropping unasked-for unreferenced ones.

        A frame past this read's last wanted one is never dropped: the decoder may take its
        packet early (B-frame reordering) and the next read may want it.
        """
        codec, mode = self._stream.codec_context, None
        for packet in self._container.demux(self._stream):
            if packet.size == 0 and packet.dts is None:  # end of stream: flush the decoder
                yield from codec.decode(None)
                return
            # times, not frame numbers: no search of the index per packet
            pts = packet.pts
            skip = "NONREF" if pts is not None and pts < self._last_pts and pts not in self._wanted_pts else "DEFAULT"
            if skip != mode:
                codec.skip_frame = mode = skip
            yield from codec.decode(packet)

    def _index(self) -> tuple[np.ndarray, np.ndarray]:
        """Demux (no decoding) all packets: presentation times sorted, keyframe numbers."""
        stamps, is_key = [], []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 and packet.dts is None:
                    continue  # PyAV's end-of-stream flush packet, not a frame
                if packet.is_corrupt:
                    raise VideoError(f"{self.path}: packet {len(stamps)} is corrupt (the file is "
                                     "probably truncated); re-download or re-encode it")
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None:
                    raise VideoError(f"{self.path}: packets carry no timestamps; remux it into mp4 "
                                     "(ffmpeg -i IN -c copy OUT.mp4)")
                stamps.append(stamp)
                is_key.append(packet.is_keyframe)
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: reading packets failed ({err}); the file is corrupt "
                             "or truncated: re-download or re-encode it") from err
        _check_complete(self.path, self._stream.frames, len(stamps))
        order = np.argsort(stamps, kind="stable")
        keyframes = np.union1d([0], np.flatnonzero(np.asarray(is_key, bool)[order]))
        return np.asarray(stamps, np.int64)[order], keyframes

    def frames(self, wanted: np.ndarray) -> Iterator[np.ndarray]:
        """RGB (H, W, 3) uint8 per ascending frame number in `wanted`.

        Decodes straight on from the last decoded frame (of this call or an earlier one),
        seeking to the keyframe before a wanted frame only when that frame lies behind or
        the seek skips more than _SEEK_GAP frames. A decoded frame's number is looked up
        from its timestamp, so seeking never shifts the numbering.
        """
        self._wanted_pts, self._last_pts = set(self._pts[wanted].tolist()), int(self._pts[wanted[-1]])
        try:
            for target in wanted.tolist():
                if target == self._current:
                    yield self._image
                    continue
                key = int(np.searchsorted(self.keyframes, target, "right")) - 1
                if (self._decoded is None or target < self._current
                        or self.keyframes[key] - self._current > _SEEK_GAP):
                    self._seek(key, target)
                for frame in self._decoded:
                    self._current = self._number_of(frame.pts, self._current)
                    if self._current >= target:
                        break
                if self._current != target:
                    self._decoded = None
                    raise VideoError(f"{self.path}: frame {target} of {self.num_frames} was not "
                                     f"decoded (got frame {self._current}); the file is corrupt: "
                                     "re-encode it, or decode it with decord (--backend decord)")
                self._image = frame.to_ndarray(**self._rgb)
                yield self._image
        except av.FFmpegError as err:
            self._decoded = None
            raise VideoError(f"{self.path}: decoding failed ({err}); the file is corrupt or "
                             "truncated: re-download or re-encode it") from err

    def _seek(self, key: int, target: int) -> None:
        """Decode from keyframe `self.keyframes[key]` on, so that frame `target` comes.

        Some demuxers land past the keyframe asked for (MPEG-TS / -PS seek by other timestamps
        than the presentation times: to the next keyframe, beyond `target`): then earlier keyframes
        are asked for (1, 2, 4, ... back), and in the end the file is opened again at its start.
        """
        for k in [key, *(key - 2 ** i for i in range(key.bit_length()) if key - 2 ** i >= 0), -1]:
            if k >= 0:
                self._container.seek(int(self._pts[self.keyframes[k]]), stream=self._stream, backward=True)
            else:
                self._container.close()
                self._open()
            self._current = -1  # nothing decoded since the seek
            self._decoded = self._decode_packets()
            first = next(self._decoded, None)
            if first is not None and self._number_of(first.pts, -1) <= target:
                self._decoded = itertools.chain([first], self._decoded)
                return
        self._decoded = None
        raise VideoError(f"{self.path}: no seek reaches frame {target} of {self.num_frames}; the file is "
                         "corrupt: re-encode it, or decode it with decord (--backend decord)")


# --------------------------------------------------------------------------- NVDEC


def nvdec_unavailable(device: str | torch.device | None) -> str | None:
    """Why GPU decoding cannot run for an encoder on `device` (None: it can): a CUDA device and
    PyNvVideoCodec importable (`pip install tspo-eval[nvdec]`). Whether the codec is supported is
    known per video, when `NvdecReader` opens it."""
    import torch

    if device is None or torch.device(device).type != "cuda":
        return "the encoder is not on a CUDA device"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    if "decord" in sys.modules and "PyNvVideoCodec" not in sys.modules:
        return ("decord was imported before PyNvVideoCodec, whose decoder then crashes on decord's FFmpeg; "
                "import decord through tspo_eval.video.import_decord")
    try:
        import PyNvVideoCodec  # noqa: F401
    except Exception as err:  # noqa: BLE001 - a broken install (missing libnvcuvid, ...) is "unavailable" too
        return f"PyNvVideoCodec cannot be imported ({type(err).__name__}: {err}); pip install tspo-eval[nvdec]"
    return None


class NvdecReader:
    """One video on a GPU's hardware decoder (PyNvVideoCodec's SimpleDecoder, RGB output): `read`
    returns (K, H, W, 3) uint8 on that GPU. Frame numbers are presentation-order indices, as the
    CPU decoders count them; `num_frames` (the CPU reader's count) is checked against the
    decoder's, and a mismatch or a codec the hardware cannot decode is a VideoError (callers then
    decode on the CPU). Not thread-safe: one per thread."""

    def __init__(self, path: str, gpu: int = 0, num_frames: int | None = None) -> None:
        import PyNvVideoCodec as nvc

        self.path, self.gpu, self._stream = path, gpu, None
        try:
            self._decoder = nvc.SimpleDecoder(path, gpu_id=gpu, use_device_memory=True,
                                              output_color_type=nvc.OutputColorType.RGB)
            count = len(self._decoder)
        except Exception as err:  # noqa: BLE001 - PyNvVideoCodec raises plain Exceptions / RuntimeErrors
            raise VideoError(f"{path}: NVDEC cannot decode it ({type(err).__name__}: {str(err)[:200]}); "
                             "decode it on the CPU (--backend auto/pyav/decord)") from err
        if num_frames is not None and count != num_frames:
            raise VideoError(f"{path}: NVDEC counts {count} frames, the CPU decoder {num_frames}: frame numbers "
                             "would not match; decode it on the CPU (--backend auto/pyav/decord)")

    def read(self, frame_numbers: np.ndarray) -> torch.Tensor:
        """The frames (ascending, repeats allowed) as RGB uint8 (K, H, W, 3) on the GPU."""
        import torch

        unique, back = np.unique(np.asarray(frame_numbers, np.int64), return_inverse=True)
        try:
            decoded = self._decoder.get_batch_frames_by_index(unique.tolist())
            if len(decoded) != len(unique):
                raise RuntimeError(f"{len(decoded)} frames returned for {len(unique)} asked")
            batch = self._copy(decoded)
        except Exception as err:  # noqa: BLE001
            raise VideoError(f"{self.path}: NVDEC failed on frames {unique[:3].tolist()}... ({str(err)[:200]}); "
                             "decode it on the CPU (--backend auto/pyav/decord)") from err
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != torch.uint8:
            raise VideoError(f"{self.path}: NVDEC returned {tuple(batch.shape)} {batch.dtype}, not RGB uint8 frames")
        return batch if len(unique) == len(back) else batch[torch.from_numpy(back).to(batch.device)]

    def _copy(self, decoded: list) -> torch.Tensor:
        """The frames copied out at once (the decoder reuses its surfaces on the next call), on a
        stream of this reader's own: the copy waits for the decoder only, not for the encoder work
        other threads queued. The caller's stream is recorded, so the memory is not handed to a later
        copy while the encoder still reads it."""
        import torch

        on_gpu = getattr(decoded[0], "__dlpack_device__", lambda: (2, 0))()[0] == 2  # kDLCUDA
        if not on_gpu:  # a decoder returning host memory (the tests' stand-in)
            return torch.stack([torch.from_dlpack(frame) for frame in decoded])
        consumer = torch.cuda.current_stream(self.gpu)
        self._stream = self._stream or torch.cuda.Stream(self.gpu)
        with torch.cuda.stream(self._stream):
            batch = torch.stack([torch.from_dlpack(frame) for frame in decoded])
        self._stream.synchronize()
        batch.record_stream(consumer)
        return batch

    def close(self) -> None:
        self._decoder = None

    def __enter__(self) -> NvdecReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
