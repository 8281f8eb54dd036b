"""Video stage: probe a file, choose 1-fps candidate frames, stream decoded frames.

Two decoders give the same frame numbers and (within colour-conversion tolerance) the
same pixels:

- "decord": `decord.VideoReader`, as the published TSPO code uses.
- "pyav": PyAV, sequential threaded decoding with keyframe seeks over long gaps.

Frame numbering is decord's: frame n is the n-th video packet in presentation-time
order (decord indexes every packet when it opens a file, `len(vr)`); PyAV builds the
same packet index, so both report the same `num_frames` even where the container
stores no frame count (mkv/webm: PyAV `stream.frames == 0`). `fps` is the stream's
average frame rate (decord `get_avg_fps()` == PyAV `stream.average_rate`).

Every call opens its own reader, so the functions are safe to call from several
threads or processes at once; one file's decoding is parallelised by the decoder's
own threads (`num_threads`, 0 = let FFmpeg choose).

`iter_frames(..., size=(h, w))` scales frames inside the decoder (FFmpeg's swscale,
bilinear, fused with the YUV -> RGB conversion; both backends give identical pixels), so
a 1080p source never exists as full-size RGB: the CLIP stage then only crops.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import av
import numpy as np

if TYPE_CHECKING:
    import decord

Backend = Literal["auto", "decord", "pyav"]
_BACKENDS = ("auto", "decord", "pyav")
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
    path = _existing(path, backend)
    vr = _decord_for(path, backend, num_threads=1)
    if vr is not None:
        first = _decord_batch(vr, [0], path)[0]
        return _checked_info(path, len(vr), vr.get_avg_fps(), first.shape)
    with _PyAVReader(path, num_threads=1) as reader:
        first = next(reader.frames(np.zeros(1, np.int64)))
        return _checked_info(path, reader.num_frames, reader.fps, first.shape)


def sample_candidates(path: str | os.PathLike, fps: float = 1.0, max_frames: int | None = None,
                      backend: Backend = "auto") -> Candidates:
    """Probe `path` and choose its candidate frames (see `candidate_frame_numbers`)."""
    info = probe(path, backend)
    frames = candidate_frame_numbers(info.num_frames, info.fps, fps, max_frames)
    return Candidates(frame_numbers=frames, timestamps=frames / info.fps, info=info)


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
    if size is not None and min(size) < 1:
        raise ValueError(f"size must be a positive (height, width), got {size}")
    path = _existing(path, backend)
    vr = _decord_for(path, backend, num_threads, size)
    if vr is not None:
        wanted = _checked_frame_numbers(frame_numbers, len(vr), path)
        return (_decord_batch(vr, wanted[i:i + batch_size].tolist(), path)
                for i in range(0, len(wanted), batch_size))
    reader = _PyAVReader(path, num_threads, size)
    try:
        wanted = _checked_frame_numbers(frame_numbers, reader.num_frames, path)
    except ValueError:
        reader.close()
        raise
    return _pyav_batches(reader, wanted, batch_size)


def read_frames(path: str | os.PathLike, frame_numbers: Sequence[int] | np.ndarray,
                backend: Backend = "auto") -> np.ndarray:
    """All requested frames at once, (K, H, W, 3) uint8: for small K (e.g. 64 selected)."""
    batches = list(iter_frames(path, frame_numbers, batch_size=max(1, len(frame_numbers)),
                               backend=backend))
    if not batches:
        raise ValueError(f"{path}: no frame numbers given; pass at least one")
    return np.concatenate(batches)


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


def _decord_for(path: str, backend: str, num_threads: int,
                size: tuple[int, int] | None = None) -> decord.VideoReader | None:
    """The decord reader to use, or None to use PyAV ("pyav", or "auto" when decord fails)."""
    if backend == "pyav":
        return None
    try:
        return _open_decord(path, num_threads, size)
    except VideoError:
        if backend == "decord":
            raise
        return None


def _open_decord(path: str, num_threads: int, size: tuple[int, int] | None = None) -> decord.VideoReader:
    """A decord reader on the CPU (scaling to `size` = (H, W) when given), or VideoError when
    decord is missing or fails."""
    try:
        import decord
    except ImportError as err:
        raise VideoError(f"{path}: the decord backend is not installed ({err}); "
                         "pip install decord, or use backend='pyav'") from err
    try:
        height, width = size or (-1, -1)
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads, width=width, height=height)
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoError(f"{path}: decord cannot open it ({str(err).strip()[:200]}); the file is "
                         "corrupt, truncated or not a video: re-download or re-encode it") from err
    _check_complete(path, _header_frame_count(path), len(vr))
    return vr


def _header_frame_count(path: str) -> int:
    """Frames the container header promises (0 where it keeps no count, e.g. mkv)."""
    try:
        with av.open(path) as container:
            return container.streams.video[0].frames if container.streams.video else 0
    except av.FFmpegError:
        return 0


def _decord_batch(vr: decord.VideoReader, frame_numbers: list[int], path: str) -> np.ndarray:
    """decord's get_batch as a numpy array, whatever decord bridge is set globally."""
    import decord

    try:
        batch = vr.get_batch(frame_numbers)
    except (RuntimeError, decord.DECORDError) as err:
        raise VideoError(f"{path}: decord failed to decode frames {frame_numbers[:3]}... "
                         f"({str(err).strip()[:200]}); the file is corrupt: re-encode it, "
                         "or try backend='pyav'") from err
    return batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)


# --------------------------------------------------------------------------- PyAV


class _PyAVReader:
    """One open file for PyAV: a packet index for exact frame numbers, and a decoder."""

    def __init__(self, path: str, num_threads: int, size: tuple[int, int] | None = None) -> None:
        self.path = path
        # decord scales with swscale's bilinear filter: the same here gives identical pixels
        self._rgb = {"format": "rgb24"} if size is None else {
            "format": "rgb24", "height": size[0], "width": size[1], "interpolation": "BILINEAR"}
        try:
            self._container = av.open(path)
        except av.FFmpegError as err:
            raise VideoError(f"{path}: PyAV cannot open it ({err}); the file is corrupt, "
                             "truncated or not a video: re-download or re-encode it") from err
        try:
            if not self._container.streams.video:
                raise VideoError(f"{path}: the file has no video stream; check that it is a video")
            self._stream = self._container.streams.video[0]
            self._stream.thread_type = "AUTO"
            self._stream.codec_context.thread_count = num_threads
            self._pts, self._keyframes = self._index()
        except BaseException:
            self._container.close()
            raise
        self._number_of = {pts: n for n, pts in enumerate(self._pts.tolist())}

    @property
    def num_frames(self) -> int:
        return len(self._pts)

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

        Decodes straight through, seeking to the keyframe before a wanted frame only
        when that skips more than _SEEK_GAP frames. A decoded frame's number is
        looked up from its timestamp, so seeking never shifts the numbering.
        """
        decoded: Iterator[av.VideoFrame] | None = None
        current, image = -1, None  # number and pixels of the last decoded frame
        try:
            for target in wanted.tolist():
                if target == current:
                    yield image
                    continue
                key = int(self._keyframes[np.searchsorted(self._keyframes, target, "right") - 1])
                if decoded is None or key - current > _SEEK_GAP:
                    self._container.seek(int(self._pts[key]), stream=self._stream, backward=True)
                    decoded = self._container.decode(self._stream)
                for frame in decoded:
                    current = self._number_of.get(frame.pts, current + 1)
                    if current >= target:
                        break
                if current != target:
                    raise VideoError(f"{self.path}: frame {target} of {self.num_frames} was not "
                                     f"decoded (got frame {current}); the file is corrupt: "
                                     "re-encode it, or try backend='decord'")
                image = frame.to_ndarray(**self._rgb)
                yield image
        except av.FFmpegError as err:
            raise VideoError(f"{self.path}: decoding failed ({err}); the file is corrupt or "
                             "truncated: re-download or re-encode it") from err


def _pyav_batches(reader: _PyAVReader, wanted: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Group the reader's frames into (B, H, W, 3) batches; closes the file at the end."""
    with reader:
        batch: list[np.ndarray] = []
        for image in reader.frames(wanted):
            batch.append(image)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
