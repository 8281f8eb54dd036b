"""Shared test fixtures: paths to the published benchmark files beside the checkout, and
generated videos whose frames show their own frame numbers."""
from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_DIR = REPO_ROOT.parent / "shared" / "data" / "official"

# Console scripts (`tspo-eval`) live beside the interpreter running the tests; put them first on
# PATH so `<venv>/bin/python -m pytest` works without activating the venv (and never finds another
# installation's script).
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """`../shared/data/official`: the real published TSVs, annotations and frame-index files."""
    if not OFFICIAL_DIR.is_dir():
        raise FileNotFoundError(f"{OFFICIAL_DIR} is missing: clone the project with ../shared beside it")
    return OFFICIAL_DIR


@pytest.fixture
def free_port() -> int:
    """A TCP port no process listens on (the OS picks it: bind to port 0), for a torchrun master.
    A fixed port collides with another test run, or a training job, on the same machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def restore_registry():
    """Benchmarks registered by a test are gone after it (and replaced built-ins are back)."""
    from tspo_eval.benchmarks import BENCHMARKS

    saved = dict(BENCHMARKS)
    yield
    BENCHMARKS.clear()
    BENCHMARKS.update(saved)


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


# MLVU's TSV indices follow positions in the complete mlvu.json, so its mini benchmark is a
# slice of the published TSV (the other form the task configs accept).
MINI_FILES = {"longvideobench": "lvb_val.json", "mlvu": "MLVU.tsv", "videomme": "videomme.json",
              "lvbench": "video_info.meta.jsonl"}


def _mini_items(benchmark: str, source: Path, videos: int, per_video: int) -> tuple[list, list[str]]:
    """Real annotation records of the first `videos` videos (at most `per_video` questions each),
    in the file's own layout, and the video file names they need."""
    if benchmark == "mlvu":
        header, *rows = source.read_text().splitlines(keepends=True)
        kept_rows: dict[str, list[str]] = {}
        for row in rows:
            name = row.split("\t")[2]
            if name in kept_rows or len(kept_rows) < videos:
                bucket = kept_rows.setdefault(name, [])
                if len(bucket) < per_video:
                    bucket.append(row)
        return [header] + [r for bucket in kept_rows.values() for r in bucket], list(kept_rows)
    if benchmark == "lvbench":
        lines = [json.loads(line) for line in source.read_text().splitlines()[:videos]]
        for line in lines:
            line["qa"] = line["qa"][:per_video]
        return lines, [f"{line['key']}.mp4" for line in lines]
    name_of = {"longvideobench": lambda it: it["video_path"], "mlvu": lambda it: it["video_name"],
               "videomme": lambda it: f"{it['videoID']}.mp4"}[benchmark]
    kept: dict[str, list] = {}
    for item in json.loads(source.read_text()):
        name = name_of(item)
        if name in kept or len(kept) < videos:
            bucket = kept.setdefault(name, [])
            if len(bucket) < per_video:
                bucket.append(item)
    return [it for bucket in kept.values() for it in bucket], list(kept)


@pytest.fixture(scope="session")
def mini_benchmarks(tmp_path_factory: pytest.TempPathFactory, official_dir: Path) -> dict[str, tuple[Path, Path]]:
    """For each of the four benchmarks: (annotation file, video root) of a mini benchmark made of
    the real annotation records of two videos (two questions each) and generated numbered mp4s
    (10 s at 10 fps) under those videos' names."""
    from tspo_eval.synthetic import number_frame, write_video

    root = tmp_path_factory.mktemp("mini")
    made = {}
    for benchmark, file_name in MINI_FILES.items():
        items, video_names = _mini_items(benchmark, official_dir / file_name, videos=2, per_video=2)
        folder = root / benchmark
        (folder / "videos").mkdir(parents=True)
        annotation = folder / file_name
        if file_name.endswith(".tsv"):
            annotation.write_text("".join(items))
        elif file_name.endswith(".jsonl"):
            annotation.write_text("".join(json.dumps(item) + "\n" for item in items))
        else:
            annotation.write_text(json.dumps(items))
        for name in video_names:
            write_video(folder / "videos" / name, (number_frame(i, 48, 64) for i in range(100)), 10)
        made[benchmark] = (annotation, folder / "videos")
    return made


@pytest.fixture
def sdpa_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(query length, cuDNN attention allowed) of every PyTorch sdpa call while the test runs."""
    import torch

    calls: list[tuple[int, bool]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        calls.append((query.shape[-2], torch.backends.cuda.cudnn_sdp_enabled()))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


BLIP_WORDS = ["what", "is", "the", "man", "doing", "a", "dog", "red", "car", "?", "which", "color"]


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BLIP ITM model at toy sizes, its image processor and a BERT tokenizer, in one directory."""
    import torch
    from transformers import (BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor,
                              BlipProcessor)

    out = tmp_path_factory.mktemp("tiny_blip")
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BLIP_WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    size = len(tokenizer) + 2  # BLIP's layout: [DEC], then [ENC], after the BERT vocabulary
    config = BlipConfig(
        text_config={"vocab_size": size, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 64, "max_position_embeddings": 64, "encoder_hidden_size": 32},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16, image_text_hidden_size=16)
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).eval().save_pretrained(out)
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out
