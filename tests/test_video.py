"""Video stage on real generated files: frame numbering, both backends, streaming, errors.

Ground truth is independent of the decoders: the frame count and rate we wrote, and
the number each frame shows (`number_frame` / `read_frame_number`).
"""
from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tspo_eval import video
from tspo_eval.synthetic import (
    MAX_FRAME_NUMBER,
    has_encoder,
    number_frame,
    read_frame_number,
    solid_frames,
    write_video,
)
from tspo_eval.video import (
    FrameReader,
    VideoError,
    candidate_frame_numbers,
    decode_runs,
    iter_frames,
    probe,
    read_frames,
    sample_candidates,
)

BACKENDS = ["decord", "pyav"]
NTSC = 30000 / 1001  # 29.97 fps


def numbers_of(frames: np.ndarray) -> list[int]:
    return [read_frame_number(frame) for frame in frames]


# ------------------------------------------------------------------ candidate frames


@pytest.mark.parametrize("num_frames, avg_fps, fps, max_frames, expected", [
    (300, NTSC, 1.0, None, list(range(0, 300, 30))),  # round(29.97) = 30
    (301, 30.0, 1.0, None, list(range(0, 301, 30))),  # last frame 300 is a candidate
    (100, 25.0, 1.0, None, [0, 25, 50, 75]),
    (100, 24000 / 1001, 1.0, None, [0, 24, 48, 72, 96]),  # round(23.976) = 24
    (61, 30.0, 2.0, None, [0, 15, 30, 45, 60]),
    (50, 25.0, 2.0, None, [0, 12, 24, 36, 48]),  # round(12.5) = 12, half to even
    (5, 30.0, 60.0, None, [0, 1, 2, 3, 4]),  # step never below 1
    (20, 30.0, 1.0, None, [0]),  # shorter than one step
    (20, 30.0, 1.0, 1, [0]),
    (3000, 30.0, 1.0, 100, list(range(0, 3000, 30))),  # cap reached, not exceeded
    (3000, 30.0, 1.0, 500, list(range(0, 3000, 30))),
    (3000, 30.0, 1.0, 4, [0, 1000, 1999, 2999]),  # linspace 0, 999.67, 1999.33, 2999
    (10, 1.0, 1.0, 3, [0, 4, 9]),  # linspace 0, 4.5, 9 -> 4.5 rounds half to even
])
def test_candidate_frame_numbers(num_frames: int, avg_fps: float, fps: float,
                                 max_frames: int | None, expected: list[int]) -> None:
    got = candidate_frame_numbers(num_frames, avg_fps, fps, max_frames)
    assert got.dtype == np.int64
    assert got.tolist() == expected


@pytest.mark.parametrize("args", [(0, 30.0), (10, float("nan")), (10, 0.0), (10, 30.0, 0.0),
                                  (10, 30.0, 1.0, 0)])
def test_candidate_frame_numbers_rejects_bad_input(args: tuple) -> None:
    with pytest.raises(ValueError):
        candidate_frame_numbers(*args)


def test_sample_candidates_reads_back_one_frame_per_second(numbered_video: Path) -> None:
    candidates = sample_candidates(numbered_video)
    assert candidates.frame_numbers.tolist() == list(range(0, 300, 30))
    np.testing.assert_allclose(candidates.timestamps, np.arange(0, 300, 30) * 1001 / 30000)
    assert candidates.info.num_frames == 300
    assert numbers_of(read_frames(numbered_video, candidates.frame_numbers)) == list(range(0, 300, 30))


# ------------------------------------------------------------------ probing


@pytest.mark.parametrize("suffix, codec, fps, num_frames", [
    (".mp4", "libx264", NTSC, 101),
    (".mkv", "libx264", 25.0, 77),  # mkv keeps no frame count: PyAV stream.frames == 0
    (".mp4", "mpeg4", 30.0, 45),
    (".webm", "libvpx", 24000 / 1001, 33),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_probe_reports_what_was_written(numbered_video_factory: Callable[..., Path], backend: str,
                                        suffix: str, codec: str, fps: float, num_frames: int) -> None:
    # PyPI's PyAV wheels bundle these encoders; fail loudly rather than lose the case silently.
    assert has_encoder(codec), f"this PyAV build has no {codec} encoder: install the PyPI wheel (pip install av)"
    path = numbered_video_factory(num_frames, fps, height=48, width=96, suffix=suffix, codec=codec)
    info = probe(path, backend)
    assert (info.num_frames, info.width, info.height, info.path) == (num_frames, 96, 48, str(path))
    assert info.fps == pytest.approx(fps, rel=1e-9)
    assert info.duration == pytest.approx(num_frames / fps, rel=1e-9)
    if suffix == ".mkv":  # the case where counting packets, not the header, is needed
        with av.open(str(path)) as container:
            assert container.streams.video[0].frames == 0


def test_auto_falls_back_to_pyav_without_decord(numbered_video: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` now raises ImportError
    assert probe(numbered_video).num_frames == 300
    assert numbers_of(read_frames(numbered_video, [0, 299])) == [0, 299]
    with pytest.raises(VideoError, match="not installed"):
        probe(numbered_video, backend="decord")


# ------------------------------------------------------------------ decoding


def test_backends_decode_the_same_frames_and_pixels(numbered_video: Path) -> None:
    """Every frame n reads back as n in both backends; pixels agree within tolerance.

    Tolerance: mean |decord - pyav| < 1 grey level (both convert yuv420p to RGB with
    FFmpeg's swscale; observed 0 here). Each also stays within 4 levels of the source
    frames (lossy coding; observed ~1.3).
    """
    decoded = {b: read_frames(numbered_video, np.arange(300), backend=b) for b in BACKENDS}
    source = np.stack([number_frame(i, 48, 64) for i in range(300)]).astype(np.int16)
    for backend, frames in decoded.items():
        assert frames.shape == (300, 48, 64, 3) and frames.dtype == np.uint8
        assert numbers_of(frames) == list(range(300)), backend
        assert np.abs(frames - source).mean() < 4, backend
    assert np.abs(decoded["decord"].astype(np.int16) - decoded["pyav"]).mean() < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_picks_are_exact(numbered_video: Path, backend: str) -> None:
    """Keyframe seeks over long gaps keep the numbering exact; repeats are returned twice."""
    picks = [0, 0, 29, 30, 31, 95, 96, 200, 200, 201, 299]
    assert numbers_of(read_frames(numbered_video, picks, backend=backend)) == picks
    rng = np.random.default_rng(0)
    for _ in range(10):
        picks = np.sort(rng.choice(300, size=rng.integers(1, 12), replace=False))
        assert numbers_of(read_frames(numbered_video, picks, backend=backend)) == picks.tolist()


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_frames_batches_in_order(numbered_video: Path, backend: str) -> None:
    picks = np.arange(0, 300, 4)  # 75 frames
    batches = list(iter_frames(numbered_video, picks, batch_size=7, backend=backend))
    assert [len(b) for b in batches] == [7] * 10 + [5]
    assert numbers_of(np.concatenate(batches)) == picks.tolist()
    assert list(iter_frames(numbered_video, [], backend=backend)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_iter_frames_streams_with_bounded_memory(numbered_video_factory: Callable[..., Path],
                                                 backend: str) -> None:
    """3000 frames (55 MB decoded) through batches of 8: traced memory stays a few batches."""
    path = numbered_video_factory(3000, 30.0, height=64, width=96, gop_size=None)
    video_bytes, batch_bytes = 3000 * 64 * 96 * 3, 8 * 64 * 96 * 3
    count, last = 0, -1
    tracemalloc.start()
    try:
        for batch in iter_frames(path, np.arange(3000), batch_size=8, backend=backend):
            assert batch.shape[0] <= 8
            count += len(batch)
            last = read_frame_number(batch[-1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (count, last) == (3000, 2999)
    assert peak < 10 * batch_bytes < video_bytes / 30, peak


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_reader_reads_on_and_back(numbered_video: Path, backend: str) -> None:
    """One open file, several reads: on from the last one, across keyframes, and backwards."""
    with FrameReader(numbered_video, backend, num_threads=1) as reader:
        assert reader.num_frames == 300 and abs(reader.fps - NTSC) < 1e-6
        keys = reader.keyframes  # written with a keyframe at most every 30 frames
        assert keys[0] == 0 and np.diff(keys).max() <= 30 and keys[-1] < 300
        for picks in ([5, 10], [11, 11, 40], [95], [20, 21], [299], [0]):
            assert numbers_of(reader.read(picks)) == picks
        with pytest.raises(ValueError, match="no frame numbers"):
            reader.read([])


@pytest.mark.parametrize("backend", BACKENDS)
def test_reading_into_a_given_array_gives_the_same_frames(numbered_video: Path, backend: str) -> None:
    """`out=` (how a decoding process fills its shared block) holds what a plain read returns; a
    frame of another size is refused naming the file, not written past or broadcast."""
    picks = [3, 30, 31, 200]
    with FrameReader(numbered_video, backend) as reader:
        plain = reader.read(picks)
        out = np.zeros((4, 48, 64, 3), np.uint8)
        assert reader.read(picks, out=out) is out
        np.testing.assert_array_equal(out, plain)
        with pytest.raises(VideoError, match=r"numbered.mp4: decoded frames are \(48, 64, 3\), not the \(48, 32, 3\)"):
            reader.read(picks, out=np.zeros((4, 48, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="out holds 3 frames, 4 asked"):
            reader.read(picks, out=np.zeros((3, 48, 64, 3), np.uint8))


def test_pyav_skipping_unreferenced_frames_is_exact(numbered_video: Path) -> None:
    """PyAV drops frames no read asks for when nothing references them (this video has 80
    B-frames, 65 unreferenced): what it returns is bit-identical to decoding every frame,
    also when consecutive reads want neighbouring frames that B-frame reordering fed early."""
    with FrameReader(numbered_video, "pyav", num_threads=1) as reader:
        every = reader.read(np.arange(300))
    rng = np.random.default_rng(0)
    for _ in range(20):
        picks = np.sort(rng.choice(300, size=int(rng.integers(1, 60)), replace=False))
        cuts = np.sort(rng.choice(np.arange(1, len(picks) + 1), size=min(4, len(picks)), replace=False))
        with FrameReader(numbered_video, "pyav", num_threads=int(rng.integers(0, 3))) as reader:
            got = np.concatenate([reader.read(part) for part in np.split(picks, cuts) if len(part)])
        np.testing.assert_array_equal(got, every[picks])


def test_pyav_really_skips_unreferenced_frames_reading_on(numbered_video: Path) -> None:
    """Reading every 30th frame decodes straight through (no seeks) and leaves the unreferenced
    B-frames undecoded: far fewer than 300 frames come out of the decoder."""
    with FrameReader(numbered_video, "pyav", num_threads=1) as reader:
        decode, decoded = reader._pyav._decode_packets, []

        def counted():
            for frame in decode():
                decoded.append(frame.pts)
                yield frame

        reader._pyav._decode_packets = counted
        assert numbers_of(reader.read(np.arange(0, 300, 30))) == list(range(0, 300, 30))
    assert len(decoded) <= 300 - 50 and max(decoded) >= reader._pyav._pts[270]


def _writable(cases: list[tuple[str, str]]) -> list:
    """(suffix, codec) cases, each skipped, saying so, where this PyAV build lacks the encoder to write
    its file (the registry's wheels have them all: CI runs every case)."""
    return [pytest.param(suffix, codec, marks=pytest.mark.skipif(
        not has_encoder(codec), reason=f"this PyAV build has no {codec} encoder to write the {suffix} file"))
        for suffix, codec in cases]


# Files decord numbers wrongly (measured: whole GOPs off at 1 fps); "auto" reads them with PyAV.
MISNUMBERED_BY_DECORD = [(".ts", "libx264"), (".ts", "mpeg2video"), (".mpg", "mpeg2video"), (".mp4", "libx265")]


@pytest.mark.parametrize("suffix, codec", _writable(MISNUMBERED_BY_DECORD + [(".mkv", "libx264"),
                                                                             (".webm", "libvpx-vp9")]))
def test_auto_and_pyav_give_the_frames_asked_for_in_every_container(numbered_video_factory: Callable[..., Path],
                                                                    suffix: str, codec: str) -> None:
    """MPEG-TS / -PS demuxers land on the next keyframe when asked for one (PyAV used to report
    "frame 0 was not decoded"); open-GOP HEVC drops leading frames after a seek. Each read here
    seeks (backwards too) and must return the frames whose numbers were asked for."""
    path = numbered_video_factory(suffix=suffix, codec=codec)
    rng = np.random.default_rng(1)
    reads = [np.arange(0, 300, 30), np.sort(rng.choice(300, 40, replace=False)), np.array([5, 250, 251]),
             np.array([299]), np.array([0, 1])]
    for backend in ("auto", "pyav"):
        with FrameReader(path, backend) as reader:
            assert reader.num_frames == 300
            for picks in reads:
                assert numbers_of(reader.read(picks)) == picks.tolist(), (backend, picks)


@pytest.mark.parametrize("suffix, codec", _writable(MISNUMBERED_BY_DECORD))
def test_auto_leaves_decord_for_the_files_it_misnumbers(numbered_video_factory: Callable[..., Path],
                                                        suffix: str, codec: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The reason "auto" reads these with PyAV: decord, asked for them, returns other frames.
    (When a decord release numbers them right this fails: then "auto" may use it again.)"""
    path = numbered_video_factory(suffix=suffix, codec=codec)
    picks = np.arange(0, 300, 30)
    with FrameReader(path, "auto") as reader:
        assert reader.backend == "pyav"
    video._said.clear()
    with caplog.at_level("WARNING", logger="tspo_eval.video"), FrameReader(path, "decord") as reader:
        assert numbers_of(reader.read(picks)) != picks.tolist()  # asked for: read, and said
    assert f"{path}: decord returns other frames than asked for" in caplog.text
    with FrameReader(numbered_video_factory(suffix=".mp4", codec="libx264"), "auto") as reader:
        assert reader.backend == "decord"  # H.264 in mp4, as the published pipeline reads it


def test_frames_that_share_a_timestamp_are_numbered_in_turn(tmp_path: Path) -> None:
    """Times given in ms to an encoder counting in 1/30 s collide (20 of 150 frames share a time
    with their neighbour, as some muxers write). PyAV reported a frame missing ("frame 4 ... was
    not decoded"), decord numbers every frame after a shared time one off; "auto" reads such a
    file with PyAV, which numbers frames sharing a time in turn."""
    path = tmp_path / "shared_times.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for n in range(150):
            frame = av.VideoFrame.from_ndarray(number_frame(n, 48, 64), format="rgb24")
            frame.pts, frame.time_base = n * 33 + (n % 3) * 9, Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    picks = np.array([0, 3, 4, 5, 30, 60, 90, 120, 149])
    with FrameReader(path, "decord") as reader:
        assert numbers_of(reader.read(picks)) != picks.tolist()
    with FrameReader(path, "auto") as reader:
        assert reader.backend == "pyav" and reader.num_frames == 150
        assert numbers_of(reader.read(picks)) == picks.tolist()
        assert numbers_of(reader.read([4])) == [4] and numbers_of(reader.read([120, 121])) == [120, 121]


def test_both_backends_report_the_same_keyframes(numbered_video_factory: Callable[..., Path]) -> None:
    path = numbered_video_factory(num_frames=200, gop_size=45)
    keys = {}
    for backend in BACKENDS:
        with FrameReader(path, backend) as reader:
            keys[backend] = reader.keyframes.tolist()
    assert keys["decord"] == keys["pyav"] and np.diff(keys["decord"]).max() <= 45


@pytest.mark.parametrize("min_length, expected", [
    (1, [(0, 4), (4, 11), (11, 12)]),
    (5, [(0, 11), (11, 12)]),
    (20, [(0, 12)]),
])
def test_decode_runs_by_hand(min_length: int, expected: list) -> None:
    # wanted 0, 25, ..., 275; keyframes 0, 100, 260: groups {0..75}, {100..250}, {275}
    assert decode_runs(np.arange(0, 300, 25), np.array([0, 100, 260]), min_length) == expected
    assert decode_runs(np.zeros(0, np.int64), np.array([0]), min_length) == []


def test_decode_runs_never_share_a_frame() -> None:
    """Runs tile the wanted frames, and a keyframe lies between each run's first frame and the
    previous run's last one: the reader of a run seeks there, past everything decoded before."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        wanted = np.unique(rng.integers(0, 5000, rng.integers(1, 300)))
        keys = np.union1d([0], rng.integers(0, 5000, rng.integers(0, 40)))
        min_length = int(rng.integers(1, 40))
        runs = decode_runs(wanted, keys, min_length)
        assert [a for a, _ in runs] == [0] + [b for _, b in runs[:-1]] and runs[-1][1] == len(wanted)
        for before, start in runs[:-1]:
            assert start - before >= min_length
            assert np.any((keys > wanted[start - 1]) & (keys <= wanted[start]))


def test_concurrent_reads_from_threads(numbered_video: Path) -> None:
    """No shared reader state: parallel calls, mixed backends, each gets its own frames."""
    jobs = [(BACKENDS[i % 2], list(range(i, 300, 37))) for i in range(8)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: numbers_of(read_frames(numbered_video, job[1], job[0])),
                                jobs))
    assert results == [picks for _, picks in jobs]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("picks, message", [
    ([-1, 3], r"\[0, 299\]"),
    ([5, 300], r"\[0, 299\]"),
    ([10, 5], "ascending"),
    ([0.5, 2.0], "integers"),
    ([[0, 1]], "1-D"),
])
def test_invalid_frame_numbers(numbered_video: Path, backend: str, picks: list, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        iter_frames(numbered_video, picks, backend=backend)
    assert str(numbered_video) in str(err.value)


def test_integral_float_frame_numbers_are_accepted(numbered_video: Path) -> None:
    """The published frame-index files store frame numbers as floats."""
    assert numbers_of(read_frames(numbered_video, [0.0, 30.0, 60.0])) == [0, 30, 60]


# ------------------------------------------------------------------ broken files


def _faststart_copy(src: Path, dst: Path) -> list[int]:
    """Remux with the index (moov) first, like streamable downloads; returns packet offsets."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with av.open(str(dst)) as inp:
        return [p.pos for p in inp.demux(inp.streams.video[0]) if p.size]


def _broken_file(kind: str, good: Path, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.mp4"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(20_000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":  # a normal mp4 (index at the end) cut in half
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind in ("truncated_faststart", "truncated_at_packet"):
        offsets = _faststart_copy(good, tmp_path / "faststart.mp4")
        data = (tmp_path / "faststart.mp4").read_bytes()
        cut = offsets[150] + (7 if kind == "truncated_faststart" else 0)  # mid-packet / boundary
        path.write_bytes(data[:cut])
    return path  # "missing": never written


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("kind", ["missing", "random_bytes", "empty", "truncated",
                                  "truncated_faststart", "truncated_at_packet"])
def test_broken_files_raise_video_error_naming_the_file(numbered_video: Path, tmp_path: Path,
                                                        kind: str, backend: str) -> None:
    path = _broken_file(kind, numbered_video, tmp_path)
    with pytest.raises(VideoError) as err:
        probe(path, backend)
    assert str(path) in str(err.value)
    with pytest.raises(VideoError) as err:
        iter_frames(path, [0], backend=backend)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("fps", [0.0, float("nan"), 5000.0])
def test_unusable_frame_rate_is_rejected(numbered_video: Path, monkeypatch: pytest.MonkeyPatch,
                                         fps: float) -> None:
    monkeypatch.setattr(video._PyAVReader, "fps", property(lambda self: fps))
    with pytest.raises(VideoError, match="frame rate") as err:
        probe(numbered_video, backend="pyav")
    assert str(numbered_video) in str(err.value)


# ------------------------------------------------------------------ synthetic videos


@pytest.mark.parametrize("n", [0, 1, 255, 256, 0xAAAA, 0x5555, MAX_FRAME_NUMBER])
def test_number_frame_round_trip(n: int) -> None:
    assert read_frame_number(number_frame(n, 48, 64)) == n


def test_number_frame_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        number_frame(MAX_FRAME_NUMBER + 1, 48, 64)


def test_write_video_falls_back_to_an_available_encoder(tmp_path: Path) -> None:
    frames = solid_frames([(255, 0, 0), (0, 0, 255)], 5, 32, 48)
    with pytest.warns(UserWarning, match="no_such_codec"):
        path = write_video(tmp_path / "fallback.mp4", frames, 10.0, codec="no_such_codec")
    red_then_blue = read_frames(path, [0, 9], backend="pyav").astype(int)
    assert probe(path, "pyav").num_frames == 10
    assert red_then_blue[0, ..., 0].mean() > 200 and red_then_blue[1, ..., 2].mean() > 200


def test_write_video_rejects_bad_frames_and_cleans_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", solid_frames([(0, 0, 0)], 2, 33, 48), 10.0)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "none.mp4", [], 10.0)
    shapes = [np.zeros((32, 48, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "mixed.mp4", shapes, 10.0)
    assert list(tmp_path.iterdir()) == []  # no half-written files left behind


@pytest.fixture(scope="module")
def textured_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """360 x 640 frames of a drifting luminance texture on a coloured base (like the speed benchmark's)."""
    yy, xx = np.mgrid[0:360, 0:640]
    frames = (np.clip(np.array([120, 100, 80]) + ((np.sin(2 * np.pi * (xx + 3 * i) / 40) + np.cos(yy / 23.0))
                                                   * 40)[..., None], 0, 255).astype(np.uint8) for i in range(30))
    return write_video(tmp_path_factory.mktemp("textured") / "textured.mp4", frames, 30.0, crf=18)


def test_decode_time_resize_is_the_same_on_both_backends_and_close_to_the_reference(textured_video: Path) -> None:
    """Scaling inside the decoder: identical sizes, pixels equal between the backends (both use
    swscale's bilinear filter), and within the stated tolerance of the reference CLIP resize
    (torch bicubic antialias from the full-size frames): mean < 1 grey level, max <= 4."""
    torch = pytest.importorskip("torch")
    from tspo_eval.encoders import OPENAI_CLIP_STD, clip_preprocess, clip_resize_shape

    wanted = np.arange(0, 30, 7)
    size = clip_resize_shape(360, 640, 224)
    assert size == (224, 398)
    small = {b: np.concatenate(list(iter_frames(textured_video, wanted, 3, b, size=size))) for b in ("decord", "pyav")}
    assert small["decord"].shape == (len(wanted), 224, 398, 3)
    assert np.abs(small["decord"].astype(int) - small["pyav"]).max() <= 2  # swscale versions may round apart
    reference = clip_preprocess(torch.from_numpy(read_frames(textured_video, wanted)))
    ours = clip_preprocess(torch.from_numpy(small["pyav"]))
    grey_levels = (reference - ours).abs() * torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1) * 255
    assert grey_levels.mean() < 1.0 and grey_levels.max() <= 4.01
    with pytest.raises(ValueError, match="size"):
        iter_frames(textured_video, wanted, size=(0, 10))
