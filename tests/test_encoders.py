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
