"""Per-video feature cache in safetensors.

Features depend on the video, the encoder and the candidate sampling only, so they are
cached once per video (the published pipeline caches per question and re-encodes a video
for each of its questions).  The key hashes all three, so changing any of them can never
return stale features.  Entries are written to a temporary file and renamed into place
(atomic on POSIX), so an interrupted run or two processes extracting into one cache leave
only whole entries; an entry that fails to parse, to match its key or to match the SHA-256
of its tensors stored beside them (flipped bits on disk, an edited value) is deleted and
recomputed with a warning.  Nothing is ever unpickled.  Temporary files a killed writer left
behind are removed on the cache's first write (`remove_stale_tmp`): only those of a process
of this machine that no longer runs, or any older than a day (no write takes that long).

Layout: `<root>/videos/<key[:2]>/<key>.safetensors` (features, frame numbers, timestamps;
metadata: fps, frame count, encoder, video fingerprint, path) and
`<root>/text/<key[:2]>/<key>.safetensors` (one question text's features) and
`<root>/scores/<key[:2]>/<key>.safetensors` (one question's scores of one video's candidates by
an expensive scorer, BLIP ITM: `selection.blip`).
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from .decode_workers import pid_running
from .policy import Sampling

log = logging.getLogger(__name__)

FORMAT = "tspo-eval/video-features@1"
SCORES_FORMAT = "tspo-eval/frame-scores@1"
_FINGERPRINT_CHUNK = 1 << 20
_STALE_TMP_S = 24 * 3600
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
# .<entry>.<host>.<pid>.<uuid>.tmp (entries written before the host was named: .<entry>.<pid>.<uuid>.tmp)
_TMP_NAME = re.compile(r"\.(?P<entry>[^/]+?\.safetensors)\.(?:(?P<host>[A-Za-z0-9-]+)\.)?(?P<pid>\d+)\.[0-9a-f]{32}\.tmp")


@dataclass
class VideoFeatures:
    """One video's candidate frames and their features."""

    features: torch.Tensor  # (T, D), the encoder's dtype
    frame_numbers: np.ndarray  # (T,) int64 absolute frame numbers
    timestamps: np.ndarray  # (T,) float64 seconds
    fps: float  # the video's average fps
    num_frames: int  # frames in the whole video
    encoder: str
    fingerprint: str
    video: str  # the path it was extracted from (informative; the key uses the fingerprint)


def video_fingerprint(path: str | os.PathLike) -> str:
    """Content identity of a video file: size + hashes of its first and last MiB.

    Reading 2 MiB is cheap next to decoding, and a re-encoded or replaced file changes it,
    whatever its name or modification time.
    """
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_CHUNK))
        if size > _FINGERPRINT_CHUNK:
            fh.seek(max(size - _FINGERPRINT_CHUNK, _FINGERPRINT_CHUNK))
            digest.update(fh.read())
    return digest.hexdigest()[:32]


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes: what a cache entry is verified against.

    About 4 ms for 1,800 x 768 bf16 features on one CPU core (docs/reliability.md).
    """
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def _checked(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    """`tensors`, or ValueError when they do not match the checksum stored with them."""
    if "checksum" not in meta:
        raise ValueError("no checksum (written by an older tspo-eval)")
    if tensor_checksum(tensors) != meta["checksum"]:
        raise ValueError("tensor data does not match its checksum (corrupted on disk)")
    return tensors


def _read_entry(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], os.stat_result]:
    """Tensors, metadata and identity of one entry file, all read through one open file.

    `safe_open` re-opens the path for the tensors, so a writer replacing the entry between its
    metadata and its tensors mixed two files (a false checksum mismatch, and the reader then
    deleted the new, whole entry). One read of one inode cannot mix them.
    """
    with path.open("rb") as fh:
        data = fh.read()
        identity = os.fstat(fh.fileno())
    if len(data) < 8:
        raise ValueError("truncated header")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    return load_safetensors(data), header.get("__metadata__") or {}, identity


def _remove_if_same(path: Path, identity: os.stat_result | None) -> None:
    """Remove a damaged entry, unless a writer has meanwhile replaced it with another file."""
    try:
        now = path.stat()
    except FileNotFoundError:
        return
    if identity is None or (now.st_ino, now.st_dev) == (identity.st_ino, identity.st_dev):
        path.unlink(missing_ok=True)


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:40]


def features_identity(encoder: str, sampling: Sampling) -> str:
    """The encoder identity cached features are stored under: decode-time scaling changes them."""
    return encoder + ("+decode-resize" if sampling.decode_resize else "")


def video_key(fingerprint: str, encoder: str, sampling: Sampling) -> str:
    """The one cache key of a video's features: its content, the encoder, and the candidate
    sampling (`Sampling`: fps, cap, decode-time scaling). Every reader and writer uses it."""
    return _hash({"format": FORMAT, "video": fingerprint, "encoder": features_identity(encoder, sampling),
                  "fps": float(sampling.fps), "max_frames": sampling.max_frames})


def scores_key(fingerprint: str, sampling: Sampling, scorer: str, text: str) -> str:
    """Cache key of one question's frame scores by an expensive scorer (BLIP): the video's content,
    the candidate sampling (fps, cap), the scorer's identity and the question text's hash."""
    return _hash({"format": SCORES_FORMAT, "video": fingerprint, "fps": float(sampling.fps),
                  "max_frames": sampling.max_frames, "scorer": scorer,
                  "text": hashlib.sha256(text.encode()).hexdigest()})


class CacheWriteError(OSError):
    """The cache cannot be written (a full disk, a folder it may not write): a fault of the cache, not
    of the video or question at hand, so the run stops instead of failing every later one the same way."""


class FeatureCache:
    """Per-video frame features and per-text question features under one root."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"--cache {self.root}: a file, not a folder; give the feature cache's folder")
        self._swept = False

    # keys ---------------------------------------------------------------------------
    def _video_path(self, key: str) -> Path:
        return self.root / "videos" / key[:2] / f"{key}.safetensors"

    def _text_path(self, encoder: str, text: str) -> tuple[str, Path]:
        key = _hash({"format": FORMAT, "encoder": encoder, "text": text})
        return key, self.root / "text" / key[:2] / f"{key}.safetensors"

    # videos -------------------------------------------------------------------------
    def get_video(self, key: str) -> VideoFeatures | None:
        """The cached entry, or None when absent; a damaged entry is removed and reported."""
        path = self._video_path(key)
        if not path.is_file():
            return None
        identity = None
        try:
            loaded, meta, identity = _read_entry(path)
            tensors = {name: loaded[name] for name in ("features", "frame_numbers", "timestamps")}
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("metadata does not match the requested key")
            _checked(tensors, meta)
            t = tensors["features"].shape[0]
            if tensors["frame_numbers"].shape != (t,) or tensors["timestamps"].shape != (t,) or t == 0:
                raise ValueError("inconsistent tensor shapes")
            return VideoFeatures(
                features=tensors["features"],
                frame_numbers=tensors["frame_numbers"].numpy(),
                timestamps=tensors["timestamps"].numpy(),
                fps=float(meta["fps"]), num_frames=int(meta["num_frames"]), encoder=meta["encoder"],
                fingerprint=meta["fingerprint"], video=meta["video"],
            )
        except FileNotFoundError:  # removed between the check and the read
            return None
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as err:
            log.warning("damaged cache entry %s (%s): removing it; it will be recomputed", path, err)
            _remove_if_same(path, identity)
            return None

    def put_video(self, key: str, entry: VideoFeatures) -> Path:
        tensors = {
            "features": entry.features.detach().cpu().contiguous(),
            "frame_numbers": torch.as_tensor(np.asarray(entry.frame_numbers, dtype=np.int64)),
            "timestamps": torch.as_tensor(np.asarray(entry.timestamps, dtype=np.float64)),
        }
        meta = {"format": FORMAT, "key": key, "fps": repr(float(entry.fps)), "num_frames": str(entry.num_frames),
                "encoder": entry.encoder, "fingerprint": entry.fingerprint, "video": entry.video}
        return self._atomic_save(self._video_path(key), tensors, meta)

    # texts --------------------------------------------------------------------------
    def text_features(self, encoder: str, texts: Sequence[str],
                      compute: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """(N, D) features of `texts`, computing (in one batch) and caching only the missing ones."""
        found: dict[str, torch.Tensor] = {}
        for text in dict.fromkeys(texts):
            key, path = self._text_path(encoder, text)
            if path.is_file():
                identity = None
                try:
                    loaded, meta, identity = _read_entry(path)
                    if meta.get("key") == key:
                        found[text] = _checked({"features": loaded["features"]}, meta)["features"]
                        continue
                except FileNotFoundError:  # removed between the check and the read: compute it
                    pass
                except (SafetensorError, OSError, ValueError, KeyError) as err:
                    log.warning("damaged cache entry %s (%s): recomputing", path, err)
                _remove_if_same(path, identity)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, feats in zip(missing, compute(missing)):
                key, path = self._text_path(encoder, text)
                found[text] = feats.detach().cpu()
                self._atomic_save(path, {"features": found[text].contiguous()},
                                  {"format": FORMAT, "key": key, "encoder": encoder})
        return torch.stack([found[t] for t in texts])

    # per-question frame scores (an expensive scorer's, e.g. BLIP ITM) ----------------
    def _scores_path(self, key: str) -> Path:
        return self.root / "scores" / key[:2] / f"{key}.safetensors"

    def get_scores(self, key: str, frame_numbers: np.ndarray) -> torch.Tensor | None:
        """(T,) cached scores of these candidate frames, or None when absent; a damaged entry (or
        one for other frame numbers) is removed with a warning, so it is recomputed."""
        path = self._scores_path(key)
        if not path.is_file():
            return None
        identity = None
        try:
            loaded, meta, identity = _read_entry(path)
            tensors = _checked({name: loaded[name] for name in ("scores", "frame_numbers")}, meta)
            if meta.get("key") != key or meta.get("format") != FORMAT:
                raise ValueError("metadata does not match the requested key")
            if not np.array_equal(tensors["frame_numbers"].numpy(), np.asarray(frame_numbers)) \
                    or tensors["scores"].shape != (len(frame_numbers),):
                raise ValueError("scores of other candidate frames")
            return tensors["scores"]
        except FileNotFoundError:
            return None
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError) as err:
            log.warning("damaged cache entry %s (%s): removing it; it will be recomputed", path, err)
            _remove_if_same(path, identity)
            return None

    def put_scores(self, key: str, scores: torch.Tensor, frame_numbers: np.ndarray, scorer: str) -> torch.Tensor:
        """Cache one question's (T,) scores of these candidate frames; returns them (float32, CPU)."""
        scores = scores.detach().float().cpu().contiguous()
        self._atomic_save(self._scores_path(key), {
            "scores": scores, "frame_numbers": torch.as_tensor(np.asarray(frame_numbers, dtype=np.int64))},
            {"format": FORMAT, "key": key, "scorer": scorer})
        return scores

    # io -----------------------------------------------------------------------------
    def remove_stale_tmp(self) -> list[Path]:
        """Remove temporary files that writers killed mid-write left; returns them.

        Never another live writer's: a file is removed when its writer was a process of this
        machine that no longer runs, or when it is older than a day (a write takes seconds).
        """
        removed = []
        now = time.time()
        for tmp in itertools.chain(*(self.root.glob(f"{kind}/*/.*.tmp") for kind in ("videos", "text", "scores"))):
            match = _TMP_NAME.fullmatch(tmp.name)
            try:
                stale = now - tmp.stat().st_mtime > _STALE_TMP_S or (
                    match is not None and match["host"] == _HOST and not pid_running(int(match["pid"])))
                if stale:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:  # renamed into place or removed meanwhile
                continue
        if removed:
            log.warning("removed %d temporary file(s) that interrupted writers left in %s", len(removed), self.root)
        return removed

    def _atomic_save(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
        if not self._swept:
            self._swept = True
            self.remove_stale_tmp()
        meta = {**meta, "checksum": tensor_checksum(tensors)}
        tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file(tensors, str(tmp), metadata=meta)
            with tmp.open("rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except (OSError, SafetensorError) as err:
            raise CacheWriteError(f"{self.root}: cannot write to the feature cache ({err}); free space there or "
                                  "give another --cache, then run the same command again (entries written so "
                                  "far are kept)") from err
        finally:
            with contextlib.suppress(OSError):  # a folder that could not be made holds no temporary file
                tmp.unlink(missing_ok=True)
        return path
