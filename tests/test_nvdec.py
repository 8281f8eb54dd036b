"""GPU decoding (the nvdec backend) on a machine without a GPU: the choice, the fallback, and the
reading path, with PyNvVideoCodec replaced by a stand-in that decodes on the CPU (the real decoder
is covered by scripts/bench_cli.py on the H200)."""
from __future__ import annotations

import logging
import sys
import time
import types
from typing import Callable

import numpy as np
import pytest
import torch

from tspo_eval import extract
from tspo_eval import video as video_module
from tspo_eval.agent import random_agent
from tspo_eval.cache import FeatureCache
from tspo_eval.extract import decode_plan, extract_videos, load_features
from tspo_eval.policy import ExtractConfig, Sampling
from tspo_eval.synthetic import read_frame_number
from tspo_eval.video import FrameReader, NvdecReader, VideoError, nvdec_unavailable, read_frames


def fake_pynvvideocodec(opened: list, fail: str | None = None, count_offset: int = 0,
                        gate: Callable[[], None] = lambda: None) -> types.ModuleType:
    """A PyNvVideoCodec whose SimpleDecoder decodes with PyAV and returns numpy frames (which, like
    the real DecodedFrames, support DLPack). `fail` "open": no file can be opened (an unsupported
    codec); "read": every read fails. `gate` runs first in every decoder's constructor."""
    module = types.ModuleType("PyNvVideoCodec")
    module.OutputColorType = types.SimpleNamespace(NATIVE=0, RGB=1, RGBP=2)

    class SimpleDecoder:
        def __init__(self, path, gpu_id=0, use_device_memory=True, output_color_type=0):
            gate()
            if fail == "open":
                raise RuntimeError("CUVID: codec not supported")
            assert output_color_type == module.OutputColorType.RGB and use_device_memory
            self.reader = FrameReader(path, "pyav")
            self.asked: list[list[int]] = []
            opened.append(self)

        def __len__(self):
            return self.reader.num_frames + count_offset

        def get_batch_frames_by_index(self, indices):
            assert indices == sorted(set(indices)), "the real decoder drops repeats and sorts"
            if fail == "read":
                raise RuntimeError("CUDA_ERROR_LAUNCH_FAILED")
            self.asked.append(list(indices))
            return list(self.reader.read(indices))

    module.SimpleDecoder = SimpleDecoder
    return module


@pytest.fixture()
def cuda_here(monkeypatch):
    """A CUDA device as far as the choice is concerned."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.fixture(scope="module")
def encoder():
    return random_agent("clip-tiny", seed=0).encoder


def test_nvdec_is_used_when_asked_and_auto_keeps_the_cpu_plan(monkeypatch, cuda_here, caplog):
    """`auto` never picks the GPU decoders (they did not beat 16 PyAV processes on the H200,
    docs/nvdec.md); `--backend nvdec` uses them where they work, beside CPU readers sized as the
    CPU plan's, and falls back to that plan, saying why once, where they do not."""
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec([]))
    plan = decode_plan(ExtractConfig(backend="nvdec"), cores=16, device="cuda")
    cpu_plan = decode_plan(ExtractConfig(), cores=16, device="cpu")
    assert plan.backend == "nvdec"
    assert (plan.readers, plan.decode_threads, plan.decode_processes) == (
        cpu_plan.readers, cpu_plan.decode_threads, cpu_plan.decode_processes)
    assert decode_plan(ExtractConfig(), cores=16, device="cuda") == cpu_plan  # auto: the CPU plan on a GPU too
    assert cpu_plan.backend in ("pyav", "auto") and decode_plan(ExtractConfig(backend="decord"), 16, "cuda").backend == "decord"
    assert nvdec_unavailable("cpu") is not None and nvdec_unavailable("cuda:0") is None

    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # not installed: import fails
    video_module._said.clear()
    with caplog.at_level(logging.WARNING, logger="tspo_eval.extract"):
        auto = decode_plan(ExtractConfig(), cores=16, device="cuda")
        asked = decode_plan(ExtractConfig(backend="nvdec"), cores=16, device="cuda")
        again = decode_plan(ExtractConfig(backend="nvdec"), cores=16, device="cuda")
    assert auto == asked == again == cpu_plan
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said  # once, for the explicit --backend nvdec; auto has nothing to say
    assert "PyNvVideoCodec" in said[0] and "tspo-eval[nvdec]" in said[0]


def test_nvdec_reader_gives_the_cpu_decoders_frames(numbered_video, monkeypatch):
    opened: list = []
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec(opened))
    with NvdecReader(str(numbered_video), num_frames=300) as reader:
        got = reader.read(np.array([0, 30, 30, 61]))  # repeats allowed, as for the CPU readers
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8 and got.shape == (4, 48, 64, 3)
    assert [read_frame_number(f) for f in got.numpy()] == [0, 30, 30, 61]
    assert opened[0].asked == [[0, 30, 61]]
    with FrameReader(numbered_video, "nvdec") as reader:
        assert reader.backend == "nvdec" and reader.num_frames == 300
        np.testing.assert_array_equal(reader.read([5, 90]), read_frames(numbered_video, [5, 90], backend="pyav"))

    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec([], count_offset=1))
    with pytest.raises(VideoError, match="NVDEC counts 301 frames, the CPU decoder 300"):
        NvdecReader(str(numbered_video), num_frames=300)


@pytest.mark.parametrize("gpu_fails", [None, "open", "read"])
def test_nvdec_takes_whole_videos_beside_the_cpu_and_hands_back_what_it_cannot(numbered_video_factory, encoder,
                                                                              tmp_path, monkeypatch, caplog, gpu_fails):
    """The real extraction path with backend nvdec: the CPU loop takes the first videos, a GPU decoder
    the last one, whole, straight into the encoder; every video's features equal the CPU decoders'.
    A video the GPU cannot open or read is handed back to the CPU, said once for that video and never
    counted failed. The GPU's decoder starts only once the CPU's two videos are cached, so its video
    comes back (or in) when the CPU loop has nothing left of its own: the loop must wait for it."""
    cache = FeatureCache(tmp_path / "nvdec")
    cpu_done = lambda: len(list((tmp_path / "nvdec").rglob("*.safetensors"))) == 2  # noqa: E731
    gated: list[bool] = []

    def gate() -> None:
        deadline = time.monotonic() + 60
        while not cpu_done() and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.append(cpu_done())

    opened: list = []
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec(opened, fail=gpu_fails, gate=gate))
    monkeypatch.setattr(extract, "NVDEC_TAIL", 0)  # a run long enough that the GPU takes a video
    monkeypatch.setattr(extract, "nvdec_unavailable", lambda device: None)  # a CUDA machine, as far as the plan goes
    video_module._said.clear()
    videos = [numbered_video_factory(num_frames=n) for n in (600, 450, 360)]
    cfg = ExtractConfig(encode_batch=2, readers=1, decode_threads=1, backend="nvdec")
    assert decode_plan(cfg, cores=2).backend == "nvdec"
    with caplog.at_level(logging.WARNING, logger="tspo_eval.extract"):
        report = extract_videos(videos, encoder, cache, Sampling(), cfg, progress=False)
    assert sorted(report.encoded) == sorted(map(str, videos)) and not report.failed
    for video, frames in zip(videos, (600, 450, 360)):
        got = load_features(video, encoder.identity, cache, Sampling())
        wanted = np.arange(0, frames, 30)
        np.testing.assert_array_equal(got.frame_numbers, wanted)
        torch.testing.assert_close(got.features, encoder.encode_frames(read_frames(video, wanted)),
                                   atol=1e-5, rtol=1e-5)
    assert gated == [True]  # one GPU decoder, opened after the CPU's videos were cached
    said = [r.getMessage() for r in caplog.records if "GPU decoding skipped" in r.getMessage()]
    if gpu_fails is None:
        assert not said and len(opened) == 1 and opened[0].reader.path == str(videos[2])
        assert sum(opened[0].asked, []) == list(range(0, 360, 30))  # the whole video, on the GPU
    else:
        assert len(said) == 1 and str(videos[2]) in said[0]
        assert ("codec not supported" if gpu_fails == "open" else "CUDA_ERROR_LAUNCH_FAILED") in said[0]


def test_files_whose_nvdec_numbering_is_unchecked_stay_on_the_cpu(numbered_video_factory, encoder, tmp_path,
                                                                  monkeypatch, caplog):
    """MPEG-TS / HEVC (decord misnumbers them; NVDEC's numbering there is not yet measured on a GPU):
    with backend nvdec the GPU decoder never opens them, the CPU decodes them, right, and says so."""
    opened: list = []
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec(opened))
    monkeypatch.setattr(extract, "NVDEC_TAIL", 0)
    monkeypatch.setattr(extract, "nvdec_unavailable", lambda device: None)
    video_module._said.clear()
    unchecked = [numbered_video_factory(suffix=".ts", codec="libx264"),
                 numbered_video_factory(suffix=".mp4", codec="libx265")]
    videos = [numbered_video_factory(num_frames=90), *unchecked]  # the CPU loop takes the first, the GPU the rest
    cache = FeatureCache(tmp_path / "cache")
    cfg = ExtractConfig(encode_batch=2, readers=1, prefetch_videos=1, backend="nvdec")
    with caplog.at_level(logging.WARNING, logger="tspo_eval.extract"):
        report = extract_videos(videos, encoder, cache, Sampling(), cfg, progress=False)
    assert sorted(report.encoded) == sorted(map(str, videos)) and not report.failed and not opened
    said = [r.getMessage() for r in caplog.records if "frame numbering on NVDEC is not yet checked" in r.getMessage()]
    assert any(str(unchecked[-1]) in line for line in said)  # the GPU's first video, handed back
    for path in unchecked:
        with FrameReader(path, "nvdec") as reader:
            assert reader.backend == "pyav" and [read_frame_number(f) for f in reader.read([30, 90])] == [30, 90]
        got = load_features(path, encoder.identity, cache, Sampling())
        torch.testing.assert_close(got.features, encoder.encode_frames(read_frames(path, got.frame_numbers)),
                                   atol=1e-5, rtol=1e-5)
    assert not opened


def test_nvdec_leaves_the_last_videos_of_a_run_to_the_cpu(numbered_video_factory, encoder, tmp_path, monkeypatch):
    """A GPU decoder takes ~5 s per 10-min video (it decodes every frame): the last `NVDEC_TAIL`
    videos go to the CPU, so a short run is the CPU plan's and a long one's GPU videos start early."""
    opened: list = []
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec(opened))
    monkeypatch.setattr(extract, "nvdec_unavailable", lambda device: None)
    videos = [numbered_video_factory(num_frames=n) for n in (600, 450, 360, 300)]
    cfg = ExtractConfig(encode_batch=2, readers=1, decode_threads=1, backend="nvdec", prefetch_videos=1)
    monkeypatch.setattr(extract, "NVDEC_TAIL", 4)  # as many as the run: all on the CPU
    report = extract_videos(videos, encoder, FeatureCache(tmp_path / "a"), Sampling(), cfg, progress=False)
    assert len(report.encoded) == 4 and not opened
    monkeypatch.setattr(extract, "NVDEC_TAIL", 2)  # the CPU takes 1 first; the GPU then the last ones down to 2 left
    report = extract_videos(videos, encoder, FeatureCache(tmp_path / "b"), Sampling(), cfg, progress=False)
    assert len(report.encoded) == 4 and [d.reader.path for d in opened] == [str(videos[3])]


def test_nvdec_counts_a_broken_video_it_took_as_failed(numbered_video_factory, encoder, tmp_path, monkeypatch):
    """A GPU decoder's video that the CPU probe cannot read fails as on the CPU path, with its reason,
    and the rest of the run goes on."""
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", fake_pynvvideocodec([]))
    monkeypatch.setattr(extract, "nvdec_unavailable", lambda device: None)
    monkeypatch.setattr(extract, "NVDEC_TAIL", 0)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    videos = [numbered_video_factory(num_frames=n) for n in (600, 450)] + [broken]
    cfg = ExtractConfig(encode_batch=2, readers=1, decode_threads=1, backend="nvdec")
    report = extract_videos(videos, encoder, FeatureCache(tmp_path / "c"), Sampling(), cfg, progress=False)
    assert sorted(report.encoded) == sorted(map(str, videos[:2]))
    assert list(report.failed) == [str(broken)] and "broken.mp4" in report.failed[str(broken)]


def test_decord_is_imported_after_pynvvideocodec_and_a_crash_order_is_refused(monkeypatch, cuda_here):
    """On the H200, PyNvVideoCodec's SimpleDecoder segfaults in a process that imported decord
    first (decord's FFmpeg symbols are global) and works the other way round. `import_decord`
    loads PyNvVideoCodec first where it is installed; where decord came first anyway, GPU
    decoding is refused with the reason instead of crashing."""
    import importlib.util

    from tspo_eval import video

    order: list[str] = []
    nvc = types.ModuleType("PyNvVideoCodec")
    fake_decord = types.ModuleType("decord")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "PyNvVideoCodec" else real_find_spec(name, *a))
    monkeypatch.delitem(sys.modules, "decord", raising=False)
    monkeypatch.delitem(sys.modules, "PyNvVideoCodec", raising=False)

    class Finder:  # records the order in which the two modules are imported
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in ("PyNvVideoCodec", "decord"):
                order.append(name)
                module = nvc if name == "PyNvVideoCodec" else fake_decord
                return importlib.util.spec_from_loader(name, Loader(module))
            return None

    class Loader:
        def __init__(self, module):
            self.module = module

        def create_module(self, spec):
            return self.module

        def exec_module(self, module):
            pass

    monkeypatch.setattr(sys, "meta_path", [Finder, *sys.meta_path])
    assert video.import_decord() is fake_decord
    assert order == ["PyNvVideoCodec", "decord"]
    assert video.nvdec_unavailable("cuda") is None

    monkeypatch.delitem(sys.modules, "PyNvVideoCodec")  # decord alone already loaded: the crash order
    why = video.nvdec_unavailable("cuda")
    assert why is not None and "decord was imported before PyNvVideoCodec" in why
