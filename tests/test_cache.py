"""Per-video feature cache: keys, round trips, damaged entries, concurrent writers."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from tspo_eval.cache import FeatureCache, VideoFeatures, video_fingerprint, video_key
from tspo_eval.policy import Sampling


def entry(t: int = 5, seed: int = 0) -> VideoFeatures:
    g = torch.Generator().manual_seed(seed)
    return VideoFeatures(
        features=torch.randn(t, 8, generator=g).to(torch.bfloat16),
        frame_numbers=np.arange(t, dtype=np.int64) * 30,
        timestamps=np.arange(t, dtype=np.float64) * 30 / 29.97,
        fps=29.97, num_frames=t * 30, encoder="enc-a", fingerprint="fp", video="v.mp4",
    )


def test_round_trip_keeps_everything(tmp_path):
    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc-a", Sampling(1.0, None))
    assert cache.get_video(key) is None
    cache.put_video(key, entry())
    got = cache.get_video(key)
    want = entry()
    assert torch.equal(got.features, want.features) and got.features.dtype == torch.bfloat16
    np.testing.assert_array_equal(got.frame_numbers, want.frame_numbers)
    np.testing.assert_array_equal(got.timestamps, want.timestamps)
    assert (got.fps, got.num_frames, got.encoder, got.video) == (29.97, 150, "enc-a", "v.mp4")


def test_key_covers_encoder_sampling_and_video():
    base = video_key("fp", "enc-a", Sampling(1.0, None))
    variants = [video_key("fp2", "enc-a", Sampling(1.0, None)), video_key("fp", "enc-b", Sampling(1.0, None)),
                video_key("fp", "enc-a", Sampling(2.0, None)), video_key("fp", "enc-a", Sampling(1.0, 128)),
                video_key("fp", "enc-a", Sampling(1.0, None, decode_resize=True))]
    assert len({base, *variants}) == 6
    assert video_key("fp", "enc-a", Sampling(1, None)) == base  # 1 and 1.0 are one sampling


def test_fingerprint_follows_content_not_name(tmp_path):
    a, b, c = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "c.mp4"
    payload = np.random.default_rng(0).bytes(3 << 20)
    a.write_bytes(payload)
    b.write_bytes(payload)
    c.write_bytes(payload[:-1] + bytes([payload[-1] ^ 1]))  # last byte differs
    assert video_fingerprint(a) == video_fingerprint(b) != video_fingerprint(c)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-key"])
def test_damaged_entry_is_removed_and_reported(tmp_path, caplog, damage):
    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc-a", Sampling(1.0, None))
    path = cache.put_video(key, entry())
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        other = video_key("other", "enc-a", Sampling(1.0, None))
        path.write_bytes(cache.put_video(other, entry()).read_bytes())
    assert cache.get_video(key) is None
    assert not path.exists()
    assert str(path) in caplog.text
    cache.put_video(key, entry())
    assert cache.get_video(key) is not None


def test_text_features_compute_only_missing(tmp_path):
    cache = FeatureCache(tmp_path)
    calls: list[list[str]] = []

    def compute(texts):
        calls.append(list(texts))
        return torch.stack([torch.full((4,), float(len(t))) for t in texts])

    first = cache.text_features("enc", ["ab", "abc", "ab"], compute)
    assert calls == [["ab", "abc"]]
    assert first[:, 0].tolist() == [2.0, 3.0, 2.0]
    second = cache.text_features("enc", ["abc", "abcd"], compute)
    assert calls[-1] == ["abcd"] and second[:, 0].tolist() == [3.0, 4.0]
    cache.text_features("other-encoder", ["abc"], compute)
    assert calls[-1] == ["abc"]


def _writer(root: str, seed: int, rounds: int) -> None:
    cache = FeatureCache(root)
    key = video_key("fp", "enc-a", Sampling(1.0, None))
    for i in range(rounds):
        cache.put_video(key, entry(t=50, seed=seed * 1000 + i))


def test_concurrent_writers_never_leave_a_partial_entry(tmp_path, caplog):
    """Readers racing two writers see whole entries only: never a false "damaged" entry (reading
    one file's metadata with another's tensors), so they never delete a writer's new entry."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 30)) for s in (1, 2)]
    for p in procs:
        p.start()
    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc-a", Sampling(1.0, None))
    reads = 0
    while any(p.is_alive() for p in procs):
        got = cache.get_video(key)
        if got is not None:
            assert got.features.shape == (50, 8)
            reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert cache.get_video(key).features.shape == (50, 8)
    assert not list(tmp_path.rglob("*.tmp"))
    assert "damaged" not in caplog.text


def test_a_damaged_entry_replaced_while_read_keeps_the_new_one(tmp_path, monkeypatch):
    """Deterministic form of the race: the reader finds a damaged entry, a writer replaces it with a
    whole one before the reader removes it; the whole one must stay."""
    import tspo_eval.cache as cache_module

    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc-a", Sampling(1.0, None))
    path = cache.put_video(key, entry(seed=1))
    raw = bytearray(path.read_bytes())
    raw[-4:] = bytes(b ^ 0xFF for b in raw[-4:])  # flip the last feature bytes: checksum mismatch
    path.write_bytes(bytes(raw))
    read_entry = cache_module._read_entry

    def read_then_writer_replaces(p):
        got = read_entry(p)
        FeatureCache(tmp_path).put_video(key, entry(seed=2))  # the writer lands after our read
        return got

    monkeypatch.setattr(cache_module, "_read_entry", read_then_writer_replaces)
    assert cache.get_video(key) is None  # what we read was damaged
    monkeypatch.setattr(cache_module, "_read_entry", read_entry)
    torch.testing.assert_close(cache.get_video(key).features, entry(seed=2).features, rtol=0, atol=0)
