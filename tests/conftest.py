"""Shared test fixtures: paths to the published benchmark files beside the checkout, and
generated videos whose frames show their own frame numbers."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_DIR = REPO_ROOT.parent / "shared" / "data" / "official"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """`../shared/data/official`: the real published TSVs, annotations and frame-index files."""
    if not OFFICIAL_DIR.is_dir():
        raise FileNotFoundError(f"{OFFICIAL_DIR} is missing: clone the project with ../shared beside it")
    return OFFICIAL_DIR


@pytest.fixture(scope="session")
def numbered_video_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make (once per session per argument set) a real video whose frame n shows n.

    Read a decoded frame's number back with `tspo_eval.synthetic.read_frame_number`.
    """
    from tspo_eval.synthetic import number_frame, write_video

    made: dict[tuple, Path] = {}

    def make(num_frames: int = 300, fps: float = 30000 / 1001, height: int = 48, width: int = 64,
             suffix: str = ".mp4", codec: str = "libx264", gop_size: int | None = 30) -> Path:
        key = (num_frames, fps, height, width, suffix, codec, gop_size)
        if key not in made:
            path = tmp_path_factory.mktemp("videos") / f"numbered{suffix}"
            frames = (number_frame(i, height, width) for i in range(num_frames))
            made[key] = write_video(path, frames, fps, codec=codec, gop_size=gop_size)
        return made[key]

    return make


@pytest.fixture(scope="session")
def numbered_video(numbered_video_factory: Callable[..., Path]) -> Path:
    """10 s mp4 at 29.97 (30000/1001) fps, 64 x 48, keyframe at most every 30 frames."""
    return numbered_video_factory()
