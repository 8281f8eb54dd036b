"""Real video files (mp4, mkv, ...) and generated benchmarks for tests and the offline demo.

`number_frame` draws a frame whose content spells its own frame number in large
black/white blocks, so a test can prove that the frame a decoder returns at position
n really is frame n, whatever lossy codec sits in between (`read_frame_number`).

`make_benchmark` writes a needle-in-a-haystack benchmark: long videos of plain scenes,
each with one short segment (a coloured square on stripes) that alone shows the answer,
in LVBench's annotation format with the segment as the time reference.  Every video and
its question come from a generator seeded by (seed, name prefix, video number), so a
folder can be regenerated, extended or reused and always matches its annotations, and
splits with different prefixes (train / heldout) never share a video.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Encoders tried, in order, when the requested one is missing from the PyAV wheel.
_ENCODER_PREFERENCE = ("libx264", "libopenh264", "mpeg4")

# Frame-number code: a _BIT_ROWS x _BIT_COLS grid of black (0) / white (1) cells over
# the top half of the frame, most significant bit first; the bottom half is a
# colour band that changes with the number (realistic chroma for pixel comparisons).
_BIT_ROWS, _BIT_COLS = 2, 8
_NUM_BITS = _BIT_ROWS * _BIT_COLS
MAX_FRAME_NUMBER = 2**_NUM_BITS - 1  # 65535: 36 min at 30 fps


def has_encoder(codec: str) -> bool:
    """Whether the installed FFmpeg (inside PyAV) can encode with `codec`."""
    try:
        av.codec.Codec(codec, "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        return False
    return True


@functools.cache
def default_encoder() -> str:
    """The first encoder of libx264 / libopenh264 / mpeg4 this PyAV wheel has."""
    for codec in _ENCODER_PREFERENCE:
        if has_encoder(codec):
            return codec
    raise RuntimeError(f"PyAV {av.__version__} has none of the encoders {_ENCODER_PREFERENCE}; "
                       "install a PyAV wheel built with FFmpeg encoders (pip install av)")


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float | Fraction,
                codec: str = "libx264", crf: int | None = None,
                gop_size: int | None = None) -> Path:
    """Encode RGB uint8 frames (H, W, 3) into a yuv420p video file; returns its path.

    Streams: `frames` may be a generator, so a 30-minute video never sits in memory.
    All frames must share one even-sized shape (yuv420p halves the chroma planes).
    `fps` is stored as the nearest rational with denominator <= 1001, so NTSC rates
    given as 30000 / 1001 or 24000 / 1001 are stored exactly, as in real files.
    `crf` is passed to encoders that know it (libx264: lower = better; mpeg4 ignores
    it); `gop_size` is the keyframe interval (small values exercise seeking).
    If `codec` is missing from the PyAV wheel, `default_encoder()` is used instead.
    """
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if not has_encoder(codec):
        fallback = default_encoder()
        warnings.warn(f"encoder {codec!r} is not in this PyAV build; writing {path} with {fallback!r}",
                      stacklevel=2)
        codec = fallback
    path = Path(path)
    options = {} if crf is None else {"crf": str(crf)}
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with av.open(str(path), mode="w") as container:
            stream = None
            for i, frame in enumerate(frames):
                if stream is None:
                    stream = _add_stream(container, codec, rate, options, frame.shape, gop_size)
                if frame.shape != (stream.height, stream.width, 3) or frame.dtype != np.uint8:
                    raise ValueError(f"frame {i} of {path} is {frame.dtype} {frame.shape}; expected "
                                     f"uint8 {(stream.height, stream.width, 3)} like frame 0")
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            if stream is None:
                raise ValueError(f"no frames given for {path}: a video needs at least one frame")
            container.mux(stream.encode())  # flush delayed (B-)frames
    except BaseException:
        path.unlink(missing_ok=True)  # never leave a half-written video behind
        raise
    return path


def _add_stream(container: av.container.OutputContainer, codec: str, rate: Fraction,
                options: dict[str, str], shape: tuple[int, ...], gop_size: int | None
                ) -> av.video.stream.VideoStream:
    """Create the video stream from the first frame's shape."""
    if len(shape) != 3 or shape[2] != 3 or shape[0] % 2 or shape[1] % 2:
        raise ValueError(f"frames must be (H, W, 3) with even H and W for yuv420p, got {shape}")
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.height, stream.width = shape[0], shape[1]
    stream.pix_fmt = "yuv420p"
    if gop_size is not None:
        stream.codec_context.gop_size = gop_size
    return stream


def _cell_edges(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column boundaries of the bit grid (top half of the frame)."""
    rows = np.linspace(0, height // 2, _BIT_ROWS + 1).astype(int)
    cols = np.linspace(0, width, _BIT_COLS + 1).astype(int)
    return rows, cols


def number_frame(frame_number: int, height: int, width: int) -> np.ndarray:
    """An RGB frame (H, W, 3) uint8 that encodes `frame_number` (0..65535).

    Top half: 16 bits as 2 x 8 black/white cells of (H/4) x (W/8) px, large enough to
    survive yuv420p and lossy coding (64 x 48 gives 12 x 8 px cells). Bottom half: a
    colour band that varies with the number.
    """
    if not 0 <= frame_number <= MAX_FRAME_NUMBER:
        raise ValueError(f"frame_number must be in [0, {MAX_FRAME_NUMBER}], got {frame_number}")
    if height < 16 or width < 32:
        raise ValueError(f"frame must be at least 16 x 32 (H x W) to hold the code, got {height} x {width}")
    frame = np.empty((height, width, 3), np.uint8)
    frame[height // 2:] = ((37 * frame_number) % 256, (91 * frame_number + 64) % 256, 160)
    rows, cols = _cell_edges(height, width)
    bits = [(frame_number >> (_NUM_BITS - 1 - k)) & 1 for k in range(_NUM_BITS)]
    for k, bit in enumerate(bits):
        r, c = divmod(k, _BIT_COLS)
        frame[rows[r]:rows[r + 1], cols[c]:cols[c + 1]] = 255 * bit
    return frame


def read_frame_number(frame: np.ndarray) -> int:
    """Decode the number drawn by `number_frame` from a (possibly lossy) RGB frame."""
    height, width = frame.shape[:2]
    rows, cols = _cell_edges(height, width)
    value = 0
    for k in range(_NUM_BITS):
        r, c = divmod(k, _BIT_COLS)
        # Only the inner half of each cell: edges blur under compression.
        dy, dx = (rows[r + 1] - rows[r]) // 4, (cols[c + 1] - cols[c]) // 4
        cell = frame[rows[r] + dy:rows[r + 1] - dy, cols[c] + dx:cols[c + 1] - dx]
        value = (value << 1) | int(cell.mean() > 127.5)
    return value


def solid_frames(colors: Iterable[tuple[int, int, int]], frames_per_color: int,
                 height: int, width: int) -> Iterator[np.ndarray]:
    """Yield `frames_per_color` identical RGB frames per colour: a fast scene stream.

    One array per colour is allocated and yielded repeatedly (treat it as read-only),
    so writing a 30-minute synthetic video costs almost nothing beyond the encoder.
    """
    for color in colors:
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = color
        for _ in range(frames_per_color):
            yield frame


# ----------------------------------------------------------------------------- generated benchmarks
NEEDLE_COLORS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (40, 60, 230), "yellow": (240, 220, 30),
                 "purple": (150, 40, 200), "orange": (250, 140, 20)}
NEEDLE_QUESTION = "What color is the square shown on the striped background?"
_MANIFEST = "benchmark.json"


@dataclass(frozen=True)
class NeedleBenchmark:
    """A generated long-video benchmark: one question per video, answered by one short segment."""

    videos: int = 6
    duration: float = 120.0  # seconds per video
    video_fps: float = 8.0
    needle: float = 3.0  # seconds the answer-bearing segment lasts
    seed: int = 0
    prefix: str = "demo"  # video names: <prefix>000.mp4, ...
    size: tuple[int, int] = (96, 128)  # (H, W)

    def __post_init__(self) -> None:
        margin = 5.0  # the needle never touches the video's first or last 5 s
        if self.videos < 1 or self.video_fps <= 0 or self.needle <= 0:
            raise ValueError("videos must be >= 1, video_fps and needle > 0")
        if self.duration < self.needle + 2 * margin + 1:
            raise ValueError(f"duration {self.duration} s leaves no room for a {self.needle} s segment "
                             f"between the first and last {margin} s")
        if self.size[0] % 2 or self.size[1] % 2:
            raise ValueError(f"size must be even (yuv420p), got {self.size}")

    def to_dict(self) -> dict:
        return {"format": "tspo-eval/needle-benchmark@1", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class NeedleVideo:
    """One generated video's question: where its needle is and what it shows."""

    key: str
    start: int  # first needle frame
    end: int  # one past the last needle frame
    answer: str  # the square's colour
    options: tuple[str, ...]  # four colours, the answer among them


def _needle_video(spec: NeedleBenchmark, number: int) -> tuple[NeedleVideo, np.random.Generator]:
    """The video's question, and the generator (seeded by (seed, prefix, number)) that draws its scenes next."""
    rng = np.random.default_rng([spec.seed, zlib.crc32(spec.prefix.encode()), number])
    needle_len = int(round(spec.needle * spec.video_fps))
    start_s = int(rng.integers(5, int(spec.duration - spec.needle - 5)))  # whole seconds: the MM:SS reference is exact
    start = int(round(start_s * spec.video_fps))
    names = list(NEEDLE_COLORS)
    answer = names[int(rng.integers(len(names)))]
    options = [answer] + list(rng.choice([c for c in names if c != answer], size=3, replace=False))
    rng.shuffle(options)
    return NeedleVideo(f"{spec.prefix}{number:03d}", start, start + needle_len, answer, tuple(options)), rng


def needle_frames(spec: NeedleBenchmark, video: NeedleVideo, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Scenes of 8-20 s in muted plain colours; frames in [start, end) show the coloured square on stripes."""
    h, w = spec.size
    scene_end, scene = 0, np.zeros((h, w, 3), np.uint8)
    stripes = (np.indices((h, w)).sum(0) // 8 % 2 * 60 + 90).astype(np.uint8)[..., None].repeat(3, -1)
    target = stripes.copy()
    target[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = NEEDLE_COLORS[video.answer]
    for i in range(int(spec.duration * spec.video_fps)):
        if video.start <= i < video.end:
            yield target
            continue
        if i >= scene_end:
            scene = np.empty((h, w, 3), np.uint8)
            scene[:] = rng.integers(60, 140, size=3)
            scene_end = i + int(rng.uniform(8, 20) * spec.video_fps)
        yield scene


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def _usable(path: Path, frames: int) -> bool:
    """Whether an existing file is a complete video of this benchmark (the frame count it must have)."""
    from .video import VideoError, probe

    try:
        return path.is_file() and probe(path).num_frames == frames
    except VideoError:
        return False


def make_benchmark(root: str | Path, spec: NeedleBenchmark,
                   progress: Callable[[int, int], None] | None = None) -> tuple[Path, Path, Path]:
    """Write the videos, `video_info.meta.jsonl` (LVBench format) and `LVBench.tsv`; returns their paths.

    Reuses a folder made from the same spec (its `benchmark.json`): present, complete videos
    are kept, missing ones written.  Any other folder (another spec, or none recorded) has
    its videos replaced.  Videos are written under a temporary name and renamed when complete, so
    an interrupted run never leaves a truncated video that a rerun would take as done.
    `progress(done, total)` is called after each video.
    """
    from .benchmarks import convert, write_tsv

    root = Path(root)
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    manifest, wanted = root / _MANIFEST, json.loads(json.dumps(spec.to_dict()))
    previous = json.loads(manifest.read_text()) if manifest.is_file() else None
    if previous not in (None, wanted):  # another spec's videos: never served under this one's annotations
        for number in range(int(previous.get("videos", 0))):
            (videos / f"{previous.get('prefix', spec.prefix)}{number:03d}.mp4").unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)  # rewritten once every video matches the spec
    lines = []
    n_frames = int(spec.duration * spec.video_fps)
    for number in range(spec.videos):
        video, rng = _needle_video(spec, number)
        path = videos / f"{video.key}.mp4"
        if previous != wanted or not _usable(path, n_frames):
            tmp = path.with_name(f".{path.stem}.tmp.mp4")
            write_video(tmp, needle_frames(spec, video, rng), spec.video_fps)
            tmp.replace(path)
        question = NEEDLE_QUESTION + "\n" + "\n".join(f"({'ABCD'[i]}) {o}" for i, o in enumerate(video.options))
        span = f"{_clock(video.start / spec.video_fps)}-{_clock(video.end / spec.video_fps)}"
        lines.append({"key": video.key, "type": "synthetic", "qa": [{
            "uid": "0", "question": question, "answer": "ABCD"[video.options.index(video.answer)],
            "question_type": ["key information retrieval"], "time_reference": span}]})
        if progress is not None:
            progress(number + 1, spec.videos)
    jsonl = root / "video_info.meta.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    tsv = root / "LVBench.tsv"
    write_tsv(convert("lvbench", jsonl), tsv)
    manifest.write_text(json.dumps(spec.to_dict(), indent=1) + "\n")
    return videos, jsonl, tsv
