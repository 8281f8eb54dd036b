"""LLaVA-Video backbone: visual geometry, preprocessing, tower depth, prompt splicing,
original-layout checkpoints, greedy generation (batched == single == HF generate) and
vision-feature reuse, on a tiny random model of the real architecture."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from tspo_eval.backbones import VideoQuery, backbone_loader
from tspo_eval.backbones.llava_video import (
    CheckpointError,
    LlavaVideo,
    SigLipVisionTower,
    VisualLayout,
    from_pretrained,
    place_newlines,
    pool_frames,
    preprocess_frames,
    random_llava_video,
    siglip_tower_config,
)
from tspo_eval.video import read_frames

SO400M = "google/siglip-so400m-patch14-384"


@pytest.fixture(scope="module")
def model() -> LlavaVideo:
    return random_llava_video("tiny", seed=0, device="cpu")


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("llava_video") / "ckpt")


@pytest.fixture(scope="module")
def video_frames(numbered_video_factory):
    path = numbered_video_factory()
    return path, read_frames(path, [0, 30, 60, 90])


# --------------------------------------------------------------------------- geometry


def test_llava_video_7b_geometry_is_210_tokens_per_frame():
    layout = VisualLayout(grid=27, pool_mode="bilinear", pool_stride=2, newline_position="grid",
                          merge_type="spatial_unpad")
    assert layout.pooled_side == 14
    assert layout.token_count(1) == 14 * 15 == 210
    assert layout.token_count(64) == 13_440
    pooled = pool_frames(torch.randn(3, 27 * 27, 8), layout)
    assert pooled.shape == (3, 196, 8)
    assert place_newlines(pooled, torch.randn(8), layout).shape == (3 * 210, 8)


@pytest.mark.parametrize("pool_mode", ["bilinear", "average", "max"])
@pytest.mark.parametrize("newline_position", ["grid", "frame", "one_token", "no_token"])
@pytest.mark.parametrize("merge_type", ["spatial_unpad", "flat"])
@pytest.mark.parametrize("stride", [2, 3])
def test_token_counts_match_the_sequences_built(pool_mode, newline_position, merge_type, stride):
    layout = VisualLayout(grid=27, pool_mode=pool_mode, pool_stride=stride,
                          newline_position=newline_position, merge_type=merge_type)
    # ceil for the interpolation to ceil(27 / stride), floor for kernel = stride pooling
    side = math.ceil(27 / stride) if pool_mode == "bilinear" else 27 // stride
    per_frame = {"grid": side * (side + 1), "frame": side * side + 1}.get(newline_position, side * side)
    if merge_type == "flat":
        per_frame = side * side
    once = int(merge_type == "spatial_unpad" and newline_position == "one_token")
    for frames in (1, 3):
        assert layout.token_count(frames) == frames * per_frame + once
        sequence = place_newlines(pool_frames(torch.randn(frames, 729, 4), layout), torch.randn(4), layout)
        assert sequence.shape == (layout.token_count(frames), 4)


def _bilinear_reference(grid: np.ndarray, out: int) -> np.ndarray:
    """Plain bilinear resize, half-pixel centres, edge clamping (align_corners=False)."""
    size = grid.shape[0]
    scale = size / out
    result = np.zeros((out, out, grid.shape[2]))
    for i in range(out):
        for j in range(out):
            y, x = max((i + 0.5) * scale - 0.5, 0.0), max((j + 0.5) * scale - 0.5, 0.0)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, size - 1), min(x0 + 1, size - 1)
            dy, dx = y - y0, x - x0
            result[i, j] = ((1 - dy) * (1 - dx) * grid[y0, x0] + (1 - dy) * dx * grid[y0, x1]
                            + dy * (1 - dx) * grid[y1, x0] + dy * dx * grid[y1, x1])
    return result


def _pool_reference(frame: np.ndarray, mode: str, stride: int) -> np.ndarray:
    """(729, D) -> (side, side, D) with explicit windows / interpolation."""
    grid = frame.reshape(27, 27, -1)
    if mode == "bilinear":
        return _bilinear_reference(grid, math.ceil(27 / stride))
    side = 27 // stride
    windows = [[grid[i * stride:(i + 1) * stride, j * stride:(j + 1) * stride].reshape(-1, grid.shape[2])
                for j in range(side)] for i in range(side)]
    reduce = np.mean if mode == "average" else np.max
    return np.array([[reduce(w, axis=0) for w in row] for row in windows])


@pytest.mark.parametrize("pool_mode", ["bilinear", "average", "max"])
@pytest.mark.parametrize("newline_position", ["grid", "frame", "one_token", "no_token"])
def test_pooled_sequence_matches_a_plain_implementation(pool_mode, newline_position):
    layout = VisualLayout(grid=27, pool_mode=pool_mode, pool_stride=2, newline_position=newline_position,
                          merge_type="spatial_unpad")
    gen = torch.Generator().manual_seed(1)
    features, newline = torch.randn(2, 729, 3, generator=gen, dtype=torch.float64), torch.randn(3, generator=gen,
                                                                                           dtype=torch.float64)
    got = place_newlines(pool_frames(features, layout), newline, layout).numpy()
    tokens: list[np.ndarray] = []
    for frame in features.numpy():
        pooled = _pool_reference(frame, pool_mode, 2)
        for row in pooled:
            tokens.extend(row)
            if newline_position == "grid":
                tokens.append(newline.numpy())
        if newline_position == "frame":
            tokens.append(newline.numpy())
    if newline_position == "one_token":
        tokens.append(newline.numpy())
    np.testing.assert_allclose(got, np.array(tokens), rtol=1e-12, atol=1e-12)


def test_unsupported_settings_fail_when_the_config_is_read():
    base = {"mm_spatial_pool_mode": "bilinear", "mm_patch_merge_type": "spatial_unpad", "mm_newline_position": "grid"}
    with pytest.raises(ValueError, match="add_faster_video"):
        VisualLayout.from_config({**base, "add_faster_video": True}, 27)
    with pytest.raises(ValueError, match="mm_spatial_pool_mode"):
        VisualLayout.from_config({**base, "mm_spatial_pool_mode": "area"}, 27)
    with pytest.raises(ValueError, match="mm_spatial_pool_mode"):
        VisualLayout.from_config({k: v for k, v in base.items() if k != "mm_spatial_pool_mode"}, 27)
    with pytest.raises(ValueError, match="image_newline"):  # grid newlines but no 'unpad': no newline weight
        VisualLayout.from_config({**base, "mm_patch_merge_type": "spatial"}, 27)
    with pytest.raises(ValueError, match="mm_patch_merge_type"):
        VisualLayout.from_config({**base, "mm_patch_merge_type": "maxpool"}, 27)
    with pytest.raises(ValueError, match="mm_newline_position"):
        VisualLayout.from_config({**base, "mm_newline_position": "row"}, 27)


# --------------------------------------------------------------------------- vision


def _pil_reference(frame: np.ndarray, size: int) -> np.ndarray:
    """PIL bicubic as Pillow's C core runs it (horizontal pass to a uint8 image, then vertical), /255, mean = std = 0.5.

    Two single-axis resizes fix the order (recent Pillow may run the vertical pass first for tall images).
    """
    image = Image.fromarray(frame)
    image = image.resize((size, image.height), Image.BICUBIC).resize((size, size), Image.BICUBIC)
    return ((np.asarray(image, np.float32) / 255 - 0.5) / 0.5).transpose(2, 0, 1)


@pytest.mark.parametrize("shape", [(48, 64), (500, 400), (720, 1280), (384, 384)])
def test_preprocessing_matches_pil_bicubic(shape):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    smooth = np.clip(128 + np.cumsum(rng.integers(-6, 7, (*shape, 3)), axis=1), 0, 255).astype(np.uint8)
    frames = np.stack([noise, smooth])
    got = preprocess_frames(frames, 384).numpy()
    want = np.stack([_pil_reference(f, 384) for f in frames])
    levels = np.abs(got - want) * 255 / 2  # one uint8 level is 2/255 after the normalisation
    assert got.shape == (2, 3, 384, 384)
    # PIL computes in fixed point: a one-level difference after the first pass can reach two after the second
    assert levels.max() <= 2.0 + 1e-3
    assert (levels > 0.5).mean() < 0.01


def test_tower_features_are_the_raw_second_to_last_layer_of_the_published_tower(model):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    full_config = {k: v for k, v in model.tower.items() if k != "model_type"}
    torch.manual_seed(0)
    published = SiglipVisionModel(SiglipVisionConfig(**full_config, vision_use_head=False)).eval()
    ours = SigLipVisionTower(SiglipVisionConfig(**{**full_config, "num_hidden_layers": 2}, vision_use_head=False))
    last = f"encoder.layers.{full_config['num_hidden_layers'] - 1}."
    weights = {k.removeprefix("vision_model."): v for k, v in published.state_dict().items()}
    ours.vision_tower.vision_model.load_state_dict({k: v for k, v in weights.items() if not k.startswith(last)})
    pixels = preprocess_frames(np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8), 384)
    with torch.no_grad():
        reference = published(pixel_values=pixels, output_hidden_states=True)
        got = ours.eval()(pixels)
    assert got.shape == (2, 729, full_config["hidden_size"])
    torch.testing.assert_close(got, reference.hidden_states[-2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, reference.last_hidden_state, atol=1e-2)


def test_known_tower_is_built_in_and_unknown_towers_read_their_config(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # fail fast, never download
    so400m = siglip_tower_config(SO400M)
    assert (so400m["hidden_size"], so400m["num_hidden_layers"], so400m["num_attention_heads"],
            so400m["intermediate_size"], so400m["patch_size"], so400m["image_size"]) == (1152, 27, 16, 4304, 14, 384)
    hub_style = {"model_type": "siglip", "text_config": {"hidden_size": 8},
                 "vision_config": {"hidden_size": 48, "num_hidden_layers": 4, "patch_size": 16, "image_size": 224}}
    (tmp_path / "my-siglip").mkdir()
    (tmp_path / "my-siglip" / "config.json").write_text(json.dumps(hub_style))
    tower = siglip_tower_config("my-siglip", base_dir=tmp_path)
    assert (tower["hidden_size"], tower["num_hidden_layers"], tower["image_size"]) == (48, 4, 224)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(ValueError, match="only SigLIP"):
        siglip_tower_config(str(tmp_path / "clip"))
    with pytest.raises(FileNotFoundError, match="not built in"):
        siglip_tower_config("nobody/no-such-tower-xyz")


def test_full_7b_dimensions_build_on_meta():
    big = random_llava_video("7b", device="meta")
    counts = {name: p.numel() for name, p in big.net.named_parameters()}
    tower_layers = {int(n.split(".")[6]) for n in counts if ".encoder.layers." in n}
    lm_layers = {int(n.split(".")[2]) for n in counts if n.startswith("model.layers.")}
    assert tower_layers == set(range(26)) and lm_layers == set(range(28))
    c, f, patches = 1152, 4304, 729  # SigLIP so400m/14 at 384 px, 26 of 27 layers kept
    tower = (c * 3 * 14 * 14 + c + patches * c + 26 * (4 * (c * c + c) + 4 * c + c * f + f + f * c + c) + 2 * c)
    h, i, v, kv = 3584, 18944, 152064, 4 * 128  # Qwen2-7B: 28 heads of 128, 4 kv heads
    lm = 2 * v * h + h + 28 * ((h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h)
    projector = c * h + h + h * h + h
    assert sum(counts.values()) == tower + lm + projector + h  # + image_newline
    assert (big.tokens_per_frame, big.visual_token_count(64)) == (210, 13_440)


# --------------------------------------------------------------------------- prompt


def test_prompt_templates_and_splicing(model, video_frames):
    _, frames = video_frames
    assert model.prompt_text("Q?") == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\nQ?<|im_end|>\n"
        "<|im_start|>assistant\n")
    direct = LlavaVideo(model.net, model.tokenizer, model.config, model.tower, conv_template="chatml_direct")
    assert direct.prompt_text("Q?") == (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nQ?<|im_end|>"
        "<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="<image>"):
        model.prompt_text("look at <image>")
    with pytest.raises(ValueError, match="conv_template"):
        LlavaVideo(model.net, model.tokenizer, model.config, model.tower, conv_template="vicuna_v1")

    query = VideoQuery(frames[:2], [0.0, 1.0], "What is shown?")
    embeds, mask, positions = model.build_inputs([query])
    tok = model.tokenizer
    before = tok("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n").input_ids
    after = tok("\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n").input_ids
    assert tok.convert_ids_to_tokens(before[:1]) == ["<|im_start|>"]  # special tokens are single ids
    visual = 2 * 210
    assert embeds.shape == (1, len(before) + visual + len(after), 64) and bool(mask.all())
    assert positions[0].tolist() == list(range(embeds.shape[1]))
    table = model.net.model.embed_tokens.weight
    torch.testing.assert_close(embeds[0, :len(before)], table[before])
    torch.testing.assert_close(embeds[0, len(before) + visual:], table[after])
    pixels = preprocess_frames(frames[:2], 384)
    with torch.no_grad():
        expected = place_newlines(model.encode_pixels(pixels), model.net.model.image_newline, model.layout)
    torch.testing.assert_close(embeds[0, len(before):len(before) + visual], expected)
    torch.testing.assert_close(embeds[0, len(before) + 14], model.net.model.image_newline)  # row 1 ends


# --------------------------------------------------------------------------- checkpoints


SPEC_PREFIXES = ("model.vision_tower.vision_tower.vision_model.", "model.mm_projector.0.", "model.mm_projector.2.",
                 "model.image_newline", "model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.")


def test_saved_checkpoint_uses_the_original_layout(model, saved):
    keys = set(load_file(str(saved / "model.safetensors")))
    assert all(k.startswith(SPEC_PREFIXES) for k in keys)
    for key in ("model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
                "model.vision_tower.vision_tower.vision_model.post_layernorm.weight",
                "model.mm_projector.0.weight", "model.mm_projector.2.bias", "model.image_newline",
                "model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight", "model.norm.weight",
                "lm_head.weight"):
        assert key in keys
    assert not any(".head." in k for k in keys)  # the pooling head is gone
    stored = {int(k.split(".")[6]) for k in keys if ".encoder.layers." in k}
    assert stored == set(range(model.tower["num_hidden_layers"] - 1))  # last published layer dropped
    config = json.loads((saved / "config.json").read_text())
    assert config == {**model.config, "mm_vision_tower": "vision_tower"}
    assert json.loads((saved / "vision_tower" / "config.json").read_text()) == model.tower


def test_load_round_trip_gives_identical_logits(model, saved, video_frames, tmp_path):
    assert backbone_loader("llava_video") is from_pretrained
    _, frames = video_frames
    queries = [VideoQuery(frames[:3], [0, 1, 2], "What number is shown?"), VideoQuery(frames[1:], [1, 2, 3], "Why?")]
    want = model.next_token_logits(queries)
    loaded = from_pretrained(str(saved), dtype="float32", device="cpu")
    assert (loaded.dtype, loaded.layout, loaded.eos_token_ids) == (torch.float32, model.layout, {2})
    assert torch.equal(loaded.next_token_logits(queries), want)

    sharded = model.save_pretrained(tmp_path / "sharded", max_shard_bytes=200_000)
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and not (sharded / "model.safetensors").exists()
    assert torch.equal(from_pretrained(sharded, dtype="float32", device="cpu").next_token_logits(queries), want)


def test_hub_ids_resolve_through_snapshot_download(model, saved, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    loaded = from_pretrained("someone/LLaVA-Video-tiny", dtype="float32", device="cpu")
    assert calls[0][0] == "someone/LLaVA-Video-tiny"
    assert {"*.json", "*.safetensors"} <= set(calls[0][1]["allow_patterns"])  # no other weight formats
    assert loaded.visual_token_count(3) == model.visual_token_count(3)


def _edited_copy(saved, tmp_path, edit):
    target = tmp_path / "edited"
    shutil.copytree(saved, target)
    tensors = load_file(str(target / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


def test_mismatched_checkpoints_fail_naming_the_keys(saved, tmp_path):
    missing = _edited_copy(saved, tmp_path / "a", lambda t: t.pop("model.mm_projector.2.bias"))
    with pytest.raises(CheckpointError, match=r"missing \(1\): \['model.mm_projector.2.bias'\]"):
        from_pretrained(missing, dtype="float32", device="cpu")
    head = "model.vision_tower.vision_tower.vision_model.head.probe"
    unexpected = _edited_copy(saved, tmp_path / "b", lambda t: t.update({head: torch.zeros(1, 1, 32)}))
    with pytest.raises(CheckpointError, match=rf"unexpected \(1\): \['{head}'\]"):
        from_pretrained(unexpected, dtype="float32", device="cpu")
    resized = _edited_copy(saved, tmp_path / "c", lambda t: t.update({"model.image_newline": torch.zeros(65)}))
    with pytest.raises(CheckpointError, match="model.image_newline has shape"):
        from_pretrained(resized, dtype="float32", device="cpu")
    config = json.loads((saved / "config.json").read_text())
    linear = tmp_path / "d"
    shutil.copytree(saved, linear)
    (linear / "config.json").write_text(json.dumps({**config, "mm_projector_type": "linear"}))
    with pytest.raises(ValueError, match="mlpNx_gelu"):
        from_pretrained(linear, dtype="float32", device="cpu")


# --------------------------------------------------------------------------- generation


def _hf_greedy(model, queries, max_new_tokens, eos):
    embeds, mask, _ = model.build_inputs(queries)
    with torch.no_grad():
        out = model.net.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=sorted(eos), pad_token_id=model.tokenizer.pad_token_id)
    assert out.shape[1] <= max_new_tokens  # only the new tokens when generating from embeddings
    return [row[:next((i for i, t in enumerate(row) if t in eos), len(row))] for row in out.tolist()]


def test_generation_batched_equals_single_and_hf_generate(model, video_frames):
    _, frames = video_frames
    queries = [VideoQuery(frames[:3], [0.0, 1.0, 2.0], "What number is shown in the first frame?"),
               VideoQuery(frames[2:], [2.0, 3.0], "Color?")]  # different lengths: left padding
    model.timings.reset()
    batched = model.generate_ids(queries, max_new_tokens=6)
    assert all(model.timings.seconds[p] > 0 for p in ("vision", "prefill", "decode_tokens"))
    assert batched == [model.generate_ids([q], max_new_tokens=6)[0] for q in queries]
    torch.testing.assert_close(model.next_token_logits(queries),
                               torch.cat([model.next_token_logits([q]) for q in queries]), rtol=1e-4, atol=1e-4)
    assert batched == _hf_greedy(model, queries, 6, model.eos_token_ids)
    assert model.generate(queries, max_new_tokens=6) == [
        model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in batched]

    # Make the second token of the first answer an end token: that answer stops there, the other runs on.
    saved_eos = set(model.eos_token_ids)
    stop = batched[0][1]
    try:
        model.eos_token_ids = {stop}
        early = model.generate_ids(queries, max_new_tokens=6)
        assert early[0] == batched[0][:1]
        assert early == _hf_greedy(model, queries, 6, {stop})
    finally:
        model.eos_token_ids = saved_eos


def test_vision_features_are_reused_and_bounded(model, video_frames):
    path, frames = video_frames
    encoded: list[int] = []
    hook = model.net.model.vision_tower.register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    first = VideoQuery(frames[:3], [0.0, 1.0, 2.0], "Which number?", video=str(path), frame_numbers=[0, 30, 60])
    second = VideoQuery(frames[1:], [1.0, 2.0, 3.0], "Which number?", video=str(path), frame_numbers=[30, 60, 90])
    anonymous = VideoQuery(frames[1:], [1.0, 2.0, 3.0], "Which number?")
    try:
        model.clear_vision_cache()
        model.generate_ids([first], 2)
        assert sum(encoded) == 3
        reused = model.next_token_logits([second])
        assert sum(encoded) == 4  # frames 30 and 60 came from the cache
        model.clear_vision_cache()
        model.next_token_logits([first, second])
        assert sum(encoded) == 8  # within a batch the shared frames are encoded once
        torch.testing.assert_close(reused, model.next_token_logits([anonymous]), rtol=1e-5, atol=1e-5)
        assert sum(encoded) == 11  # no video identity: nothing is cached or reused

        model.vision_cache_frames = 2
        model.clear_vision_cache()
        model.next_token_logits([first])  # the cache keeps frames 30 and 60 only
        model.next_token_logits([VideoQuery(frames[:1], [0.0], "?", video=str(path), frame_numbers=[0])])
        assert sum(encoded) == 15
        model.next_token_logits([VideoQuery(frames[2:3], [2.0], "?", video=str(path), frame_numbers=[60])])
        assert sum(encoded) == 15
    finally:
        hook.remove()
        model.vision_cache_frames = 256
        model.clear_vision_cache()
    with pytest.raises(ValueError, match="frame_numbers"):
        model.next_token_logits([VideoQuery(frames[:2], [0.0, 1.0], "?", video="v", frame_numbers=[0])])


def test_only_the_full_prompt_may_use_cudnn_attention(model, video_frames, sdpa_calls):
    """cuDNN plans every new shape: the tower, decode steps and a remainder over a kept prefix avoid it."""
    path, frames = video_frames
    layers = model.net.config.num_hidden_layers
    query = VideoQuery(frames[:4], [0.0, 1.0, 2.0, 3.0], "Which number is shown first?", video=str(path),
                       frame_numbers=[0, 30, 60, 90])
    try:
        model.clear_vision_cache()
        model.eos_token_ids, eos = set(), model.eos_token_ids  # exactly 4 tokens: 3 decode steps
        assert len(model.generate_ids([query], max_new_tokens=4)[0]) == 4
        full = [(n, cudnn) for n, cudnn in sdpa_calls if n > 1 and n != 729]  # 729: the tower's patches
        assert len(full) == layers and all(cudnn for _, cudnn in full)  # the prompt: PyTorch's choice
        tower = [cudnn for n, cudnn in sdpa_calls if n == 729]
        assert tower and not any(tower)  # frame counts vary from call to call
        assert [cudnn for n, cudnn in sdpa_calls if n == 1] == [False] * (3 * layers)
        sdpa_calls.clear()
        model.generate_ids([VideoQuery(query.frames, query.timestamps, "Which number is shown last?",
                                       video=str(path), frame_numbers=[0, 30, 60, 90])], max_new_tokens=1)
        assert model.timings.counts["prefix_tokens_reused"] > 0
        assert len(sdpa_calls) == layers and not any(cudnn for _, cudnn in sdpa_calls)  # the remainder
    finally:
        model.eos_token_ids = eos
        model.clear_vision_cache()


def test_a_shared_prompt_prefix_is_prefilled_once_with_the_same_answers(model, video_frames):
    path, frames = video_frames
    numbers = [0, 30, 60, 90]

    def query(prompt: str, count: int = 4, first: int = 0) -> VideoQuery:
        return VideoQuery(frames[first:first + count], [float(n) / 30 for n in numbers[first:first + count]], prompt,
                          video=str(path), frame_numbers=numbers[first:first + count])

    def ids(prompt: str) -> tuple[list[int], list[int]]:
        before, after = model.prompt_text(prompt).split("<image>")
        return model.tokenizer(before).input_ids, model.tokenizer(after).input_ids

    runs = [query("Which number is shown first?"), query("What colour is the background?"),
            query("Which number is shown first?", count=3), query("Which number is shown first?", first=1)]
    try:
        model.prefix_reuse = False
        model.clear_vision_cache()
        fresh = [model.generate_ids([q], max_new_tokens=6) for q in runs]
        assert model._kept is None
        model.prefix_reuse = True
        model.clear_vision_cache()
        model.timings.reset()
        reused = []
        for q in runs:
            before = model.timings.counts["prefix_tokens_reused"]
            reused.append(model.generate_ids([q], max_new_tokens=6))
            reused[-1].append(model.timings.counts["prefix_tokens_reused"] - before)
        assert [r[:-1] for r in reused] == fresh

        # Same frames, another question: the template, all 4 frames and the common text are reused.
        (b1, a1), (_, a2) = ids(runs[0].prompt), ids(runs[1].prompt)
        common = next(i for i, (x, y) in enumerate(zip(a1, a2)) if x != y)
        assert reused[0][-1] == 0
        assert reused[1][-1] == len(b1) + model.visual_token_count(4) + common
        # The first 3 of the same frames (frames are self-contained in the grid layout): reused up to them.
        assert model.layout.newline_position == "grid"
        assert reused[2][-1] == len(b1) + model.visual_token_count(3)
        # Starting at another frame: nothing shared beyond the template, below half -> a fresh prefill.
        assert reused[3][-1] == 0
        assert model.timings.counts["prompt_tokens"] == sum(
            len(ids(q.prompt)[0]) + model.visual_token_count(len(q.frames)) + len(ids(q.prompt)[1]) for q in runs)

        model.generate_ids(runs[:2], max_new_tokens=2)  # batches are prefilled whole and not kept
        assert model._kept is None
        model.generate_ids(runs[:1], max_new_tokens=2)
        model.clear_vision_cache()
        assert model._kept is None
    finally:
        model.prefix_reuse = True
        model.clear_vision_cache()


def test_compiled_vision_tower_gives_the_eager_features(video_frames):
    _, frames = video_frames
    eager = random_llava_video("tiny", seed=0, device="cpu")
    compiled = random_llava_video("tiny", seed=0, device="cpu", compile_vision=True)
    assert compiled._tower is not compiled.net.model.vision_tower
    for count in (3, 1):  # a second batch size reuses the dynamic-batch graph
        queries = [VideoQuery(frames[:count], [0.0] * count, "?")]
        torch.testing.assert_close(compiled.frame_features(queries)[0], eager.frame_features(queries)[0],
                                   rtol=1e-4, atol=1e-4)
