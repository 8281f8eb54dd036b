"""The fault suite of issue 18: planted faults, each with the behaviour the user must see.

docs/reliability.md maps every fault to its test (here or in the stage's own test file).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tspo_eval import cache as cache_module
from tspo_eval.cache import FeatureCache, VideoFeatures, tensor_checksum


# ----------------------------------------------------------------------------- cache
def _entry(t: int = 40, d: int = 16) -> VideoFeatures:
    g = torch.Generator().manual_seed(0)
    return VideoFeatures(features=torch.randn(t, d, generator=g).to(torch.bfloat16),
                         frame_numbers=np.arange(t, dtype=np.int64) * 30, timestamps=np.arange(t) * 30 / 29.97,
                         fps=29.97, num_frames=t * 30, encoder="enc", fingerprint="fp", video="v.mp4")


def _tensor_span(path, name: str) -> tuple[int, int]:
    """Byte range of one tensor's data in a safetensors file (8-byte header length, JSON header, data)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    start, stop = json.loads(raw[8:8 + size])[name]["data_offsets"]
    return 8 + size + start, 8 + size + stop


def _edit(path, name: str, edit) -> None:
    raw = bytearray(path.read_bytes())
    start, stop = _tensor_span(path, name)
    raw[start:stop] = edit(bytes(raw[start:stop]))
    path.write_bytes(bytes(raw))


def _flip_64_bytes(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]


def _frame_999999(data: bytes) -> bytes:
    return data[:8] + np.int64(999999).tobytes() + data[16:]  # the second frame number


@pytest.mark.parametrize("tensor, edit", [("features", _flip_64_bytes), ("frame_numbers", _frame_999999)])
def test_corrupted_cache_data_is_detected_and_recomputed(tmp_path, caplog, tensor, edit):
    cache = FeatureCache(tmp_path)
    key = cache.video_key("fp", "enc", 1.0, None)
    path = cache.put_video(key, _entry())
    _edit(path, tensor, edit)
    with caplog.at_level("WARNING"):
        assert cache.get_video(key) is None  # never served
    assert "checksum" in caplog.text and str(path) in caplog.text
    assert not path.exists()  # removed, so the next extraction recomputes it
    cache.put_video(key, _entry())
    assert torch.equal(cache.get_video(key).features, _entry().features)


def test_corrupted_text_features_are_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return torch.ones(len(texts), 4)

    cache.text_features("enc", ["a question"], compute)
    (path,) = (tmp_path / "text").rglob("*.safetensors")
    _edit(path, "features", lambda data: bytes(b ^ 1 for b in data))
    assert torch.equal(cache.text_features("enc", ["a question"], compute), torch.ones(1, 4))
    assert calls == [["a question"], ["a question"]]


def test_entry_without_checksum_is_recomputed(tmp_path):
    """Entries of the version before checksums: recomputed once, never trusted unverified."""
    from safetensors.torch import save_file

    cache = FeatureCache(tmp_path)
    key = cache.video_key("fp", "enc", 1.0, None)
    path = cache.put_video(key, _entry())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    del meta["checksum"]
    save_file(tensors, str(path), metadata=meta)
    assert cache.get_video(key) is None and not path.exists()


def test_checksum_covers_values_dtype_and_shape():
    base = {"x": torch.arange(6, dtype=torch.int64)}
    assert tensor_checksum(base) == tensor_checksum({"x": torch.arange(6, dtype=torch.int64)})
    variants = [{"x": torch.arange(6, dtype=torch.int32)}, {"x": torch.arange(6).reshape(2, 3)},
                {"x": torch.tensor([0, 1, 2, 3, 4, 6])}, {"y": torch.arange(6)}]
    assert len({tensor_checksum(v) for v in variants} | {tensor_checksum(base)}) == 5


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_tmp_files_are_removed_but_never_a_live_writers(tmp_path):
    cache = FeatureCache(tmp_path)
    folder = tmp_path / "videos" / "ab"
    folder.mkdir(parents=True)
    name, host, uid = "ab12.safetensors", cache_module._HOST, "0" * 32
    dead = folder / f".{name}.{host}.{_dead_pid()}.{uid}.tmp"  # killed writer of this machine
    live = folder / f".{name}.{host}.{os.getpid()}.{uid}.tmp"  # this process: writing now
    elsewhere = folder / f".{name}.otherhost.{_dead_pid()}.{uid}.tmp"  # another machine's: cannot tell
    old = folder / f".{name}.otherhost.1.{uid}.tmp"
    legacy = folder / f".{name}.{os.getpid()}.{uid}.tmp"  # the name before hosts were recorded
    for path in (dead, live, elsewhere, old, legacy):
        path.write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    text_dead = tmp_path / "text" / "cd" / f".cd34.safetensors.{host}.{_dead_pid()}.{uid}.tmp"
    text_dead.parent.mkdir(parents=True)
    text_dead.write_bytes(b"partial")
    # the first write sweeps the whole cache once
    cache.put_video(cache.video_key("fp", "enc", 1.0, None), _entry())
    assert not dead.exists() and not old.exists() and not text_dead.exists()
    assert live.exists() and elsewhere.exists() and legacy.exists()
