"""Encoders: the open_clip implementation from a local weights file, and the shared preprocessing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tspo_eval.encoders import OpenClipEncoder, as_uint8_batch, clip_preprocess


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp_path_factory.mktemp("openclip") / "vit_b_32_random.pt"
    torch.save(model.state_dict(), path)
    return path, model


def test_open_clip_encoder_loads_a_local_file_and_matches_the_model(weights):
    path, reference = weights
    enc = OpenClipEncoder("ViT-B-32", pretrained=str(path))
    frames = np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    feats = enc.encode_frames(frames)
    assert feats.shape == (3, enc.dim) == (3, 512)
    pixels = clip_preprocess(torch.from_numpy(frames))
    with torch.no_grad():
        torch.testing.assert_close(feats, reference.eval().encode_image(pixels), atol=1e-5, rtol=1e-5)
    assert enc.encode_text(["a red square", "b"]).shape == (2, 512)
    assert enc.identity.startswith("open_clip:ViT-B-32:224:")


def test_identity_changes_with_the_weights(weights, tmp_path):
    path, reference = weights
    state = torch.load(path)
    state["visual.proj"] = state["visual.proj"] + 1.0
    other = tmp_path / "other.pt"
    torch.save(state, other)
    assert OpenClipEncoder("ViT-B-32", str(path)).identity != OpenClipEncoder("ViT-B-32", str(other)).identity


def test_preprocess_geometry_and_input_checks():
    # 100 x 300 (H x W): shortest side -> 224, long side int(224 * 300 / 100) = 672, centre crop 224
    frame = np.zeros((1, 100, 300, 3), np.uint8)
    frame[:, :, 100:200] = 255  # the middle third is white: after the centre crop everything is white
    out = clip_preprocess(torch.from_numpy(frame))
    assert out.shape == (1, 3, 224, 224)
    white = (1.0 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(out[0, :, 10:-10, 10:-10].mean((1, 2)), white, atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="uint8 N x H x W x 3"):
        as_uint8_batch(np.zeros((2, 8, 8, 3), np.float32))


def test_compiled_encoder_matches_eager_for_every_batch_size():
    """One dynamic-batch compile: a full batch, a short last batch and a batch of one (run as two)."""
    from tspo_eval.agent import random_agent

    eager, compiled = random_agent("clip-tiny", seed=0).encoder, random_agent("clip-tiny", seed=0).encoder
    assert compiled.compile() is compiled and compiled.compiled and not eager.compiled
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 90, 160, 3), dtype=np.uint8)
    for n in (5, 3, 1):
        torch.testing.assert_close(compiled.encode_frames(frames[:n]), eager.encode_frames(frames[:n]),
                                   atol=1e-4, rtol=1e-4)


def test_preprocess_skips_the_resize_for_frames_already_at_scale():
    """Frames decoded at the CLIP scale (ExtractConfig.decode_resize) are only cropped and normalised."""
    from tspo_eval.encoders import clip_resize_shape

    assert clip_resize_shape(270, 480, 224) == (224, 398) and clip_resize_shape(480, 270, 224) == (398, 224)
    frames = torch.from_numpy(np.random.default_rng(1).integers(0, 256, size=(2, 224, 398, 3), dtype=np.uint8))
    out = clip_preprocess(frames)
    left = (398 - 224) // 2
    expected = (frames[:, :, left:left + 224].permute(0, 3, 1, 2).float() / 255
                - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) \
        / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
