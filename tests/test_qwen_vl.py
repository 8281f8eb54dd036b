"""Qwen2.5-VL backbone: time encodings against hand-computed positions and transformers'
own path, greedy decoding against `generate`, batching, pixels, vision reuse, save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from tspo_eval.backbones import VideoQuery, backbone_loader, load_backbone
from tspo_eval.backbones.qwen_vl import (
    QwenVL,
    from_pretrained,
    random_qwen_vl,
    temporal_positions,
)
from tspo_eval.synthetic import read_frame_number
from tspo_eval.video import probe, read_frames

SIDE = 224  # frames of 224 x 224 with min = max pixels 224^2 keep their size: a 16 x 16 patch grid
PIXELS = {"min_pixels": SIDE * SIDE, "max_pixels": SIDE * SIDE}
TOKENS_PER_PAIR = (SIDE // 28) ** 2  # 2 x 2 patches merge into one token: 8 x 8 = 64


@pytest.fixture(scope="module")
def tiny() -> QwenVL:
    return random_qwen_vl("tiny", seed=0, device="cpu", **PIXELS)


def variant(base: QwenVL, **options) -> QwenVL:
    """Another backbone over the same weights and processor (own options, own vision cache)."""
    return QwenVL(base.model, base.processor, **{**PIXELS, **options})


def frames(n: int, seed: int = 0, height: int = SIDE, width: int = SIDE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def chat(prompt: str) -> str:
    """The published prompt: Qwen chat format, default system prompt, video before the text."""
    return ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
            f"<|vision_start|><|video_pad|><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n")


def native_inputs(backbone: QwenVL, queries: list[VideoQuery], fps: float) -> dict:
    """transformers' own processor output for these queries, told that the frames are `fps` apart."""
    timing = ({"video_metadata": [{"total_num_frames": len(q.frames), "fps": fps} for q in queries]}
              if int(transformers.__version__.split(".")[0]) >= 5 else {"fps": fps})
    backbone.tokenizer.padding_side = "left"
    return dict(backbone.processor(
        text=[chat(q.prompt) for q in queries], videos=[q.frames for q in queries], padding=True,
        return_tensors="pt", size={"shortest_edge": backbone.min_pixels, "longest_edge": backbone.max_pixels},
        do_sample_frames=False, **timing))


def native_positions(backbone: QwenVL, inputs: dict) -> torch.Tensor:
    names = ("input_ids", "attention_mask", "video_grid_thw", "second_per_grid_ts", "mm_token_type_ids")
    return backbone.model.model.get_rope_index(**{k: inputs[k] for k in names if k in inputs})[0]


def video_positions(backbone: QwenVL, query: VideoQuery) -> tuple[torch.Tensor, int, torch.Tensor]:
    """(3, pairs, h, w) positions of the video tokens, the video's start index and the text after it."""
    batch = backbone.encode([query])
    is_video = batch.input_ids[0] == backbone.video_token_id
    start = int(torch.nonzero(is_video)[0])
    t, h, w = (batch.video_grid_thw[0] // torch.tensor([1, 2, 2])).tolist()
    return batch.position_ids[:, 0, is_video].reshape(3, t, h, w), start, batch.position_ids[:, 0, ~is_video][:, start:]


# ------------------------------------------------------------------ time encodings


IRREGULAR = [0.0, 0.4, 1.0, 1.1, 7.3, 7.5, 12.0]  # 7 frames: 4 pairs, the last one a single frame


@pytest.mark.parametrize("encoding, expected", [
    ("real", [0, 2, 14, 24]),  # pair starts 0, 1.0, 7.3, 12.0 s x 2 tokens/s, truncated
    ("mean", [0, 8, 16, 24]),  # mean spacing 12 / 6 = 2 s: a pair spans 4 s = 8 positions
    ("none", [0, 2, 4, 6]),    # published: frames assumed 0.5 s apart (fps 2), a pair = 2 positions
])
def test_temporal_positions_of_each_pair_are_hand_computed(tiny: QwenVL, encoding: str, expected: list[int]) -> None:
    assert temporal_positions(IRREGULAR, encoding, tokens_per_second=2) == expected
    positions, start, after = video_positions(variant(tiny, time_encoding=encoding),
                                              VideoQuery(frames(7), IRREGULAR, "When?"))
    grid = torch.arange(SIDE // 28)
    for pair, offset in enumerate(expected):
        assert (positions[0, pair] == start + offset).all()
        assert torch.equal(positions[1, pair], start + grid[:, None].expand(-1, len(grid)))
        assert torch.equal(positions[2, pair], start + grid[None, :].expand(len(grid), -1))
    first_text = start + max(expected[-1], len(grid) - 1) + 1  # text resumes after the largest video position
    assert torch.equal(after, torch.arange(first_text, first_text + after.shape[1]).expand(3, -1))


def test_truncation_is_immune_to_timestamp_float_noise() -> None:
    # 0.3 - 0.1 = 0.19999999999999998 and 2.3 - 1.1 = 1.1999999999999997 in floating point
    assert temporal_positions([0.1, 0.2, 0.3, 0.35], "real", tokens_per_second=10) == [0, 2]
    assert temporal_positions([1.1, 1.2, 2.3], "real", tokens_per_second=5) == [0, 6]


def test_max_frames_thins_uniformly_with_the_kept_times(tiny: QwenVL) -> None:
    positions, start, _ = video_positions(variant(tiny, max_frames=4), VideoQuery(frames(7), IRREGULAR, "When?"))
    # kept frames 0, 2, 4, 6 (times 0, 1.0, 7.3, 12.0): pairs start at 0 and 7.3 s
    assert positions.shape[1] == 2
    assert positions[0, :, 0, 0].tolist() == [start, start + 14]


def test_real_on_uniform_times_equals_transformers_with_that_fps(tiny: QwenVL) -> None:
    query = VideoQuery(frames(4), [10.0, 10.5, 11.0, 11.5], "What happens?")  # 2 fps, not starting at 0
    native = native_inputs(tiny, [query], fps=2.0)
    ours = tiny.encode([query])
    assert torch.equal(ours.input_ids, native["input_ids"])
    assert torch.equal(ours.position_ids, native_positions(tiny, native))
    with torch.no_grad():
        expected = tiny.model(**native).logits[:, -1]
    torch.testing.assert_close(tiny.next_token_logits([query]), expected)


def test_real_video_positions_equal_transformers_over_a_long_span(tiny: QwenVL) -> None:
    """16 frames 1 s apart: temporal positions reach 28, beyond the 8 x 8 spatial grid.

    transformers 5.x then starts the following text at max(h, w) past the video start,
    inside the video's temporal range; we keep Qwen's rule (largest position + 1), so only
    the video tokens are compared here and the text after is checked by hand.
    """
    query = VideoQuery(frames(16), [float(i) for i in range(16)], "What happens?")
    native = native_inputs(tiny, [query], fps=1.0)
    ours = tiny.encode([query])
    is_video = ours.input_ids[0] == tiny.video_token_id
    assert torch.equal(ours.position_ids[:, 0, is_video], native_positions(tiny, native)[:, 0, is_video])
    _, start, after = video_positions(tiny, query)
    assert after[0, 0] == start + 28 + 1


@pytest.mark.parametrize("encoding, fps", [("mean", 1 / 1.5), ("none", 2.0)])
def test_mean_and_none_equal_transformers_with_the_matching_fps(tiny: QwenVL, encoding: str, fps: float) -> None:
    query = VideoQuery(frames(4, seed=1), [0.0, 0.5, 3.2, 4.5], "Why?")  # mean spacing 1.5 s
    backbone = variant(tiny, time_encoding=encoding)
    native = native_inputs(backbone, [query], fps=fps)
    assert torch.equal(backbone.encode([query]).position_ids, native_positions(backbone, native))
    with torch.no_grad():
        expected = tiny.model(**native).logits[:, -1]
    torch.testing.assert_close(backbone.next_token_logits([query]), expected)


# ------------------------------------------------------------------ decoding and batching


def test_greedy_loop_equals_transformers_generate_on_a_padded_batch(tiny: QwenVL) -> None:
    queries = [VideoQuery(frames(4, seed=2), [0.0, 0.5, 1.0, 1.5], "Describe the scene in detail."),
               VideoQuery(frames(2, seed=3), [3.0, 3.5], "Color?")]
    native = native_inputs(tiny, queries, fps=2.0)
    assert native["attention_mask"][1, 0] == 0  # the second row really is left padded
    with torch.no_grad():
        out = tiny.model.generate(**native, max_new_tokens=8, do_sample=False,
                                  eos_token_id=tiny.eos_token_ids, pad_token_id=tiny.pad_token_id)
    expected = []
    for row in out[:, native["input_ids"].shape[1]:].tolist():
        stops = [i for i, token in enumerate(row) if token in tiny.eos_token_ids]
        expected.append(row[:stops[0]] if stops else row)
    assert tiny.generate_ids(queries, max_new_tokens=8) == expected
    assert all(expected)


@pytest.fixture(scope="module")
def video_queries(numbered_video_factory) -> list[VideoQuery]:
    """Two questions on frames decoded from a real mp4; 6 and 3 frames (an odd count)."""
    path = numbered_video_factory()
    fps = probe(path).fps
    queries = []
    for numbers, prompt in [([0, 30, 45, 200, 201, 299], "What number is shown first?"),
                            ([10, 100, 250], "Which frame comes last?")]:
        decoded = read_frames(path, numbers)
        assert [read_frame_number(f) for f in decoded] == numbers
        queries.append(VideoQuery(decoded, [n / fps for n in numbers], prompt, video=str(path), frame_numbers=numbers))
    return queries


def test_decode_steps_never_use_cudnn_attention(tiny: QwenVL, sdpa_calls) -> None:
    """cuDNN plans every new shape, and every generated token has a new key length."""
    query = VideoQuery(frames(4, seed=2), [0.0, 0.5, 1.0, 1.5], "Describe the scene in detail.")
    eos, tiny.eos_token_ids = tiny.eos_token_ids, []  # exactly 5 tokens: 4 decode steps
    try:
        assert len(tiny.generate_ids([query], max_new_tokens=5)[0]) == 5
    finally:
        tiny.eos_token_ids = eos
    layers = tiny.model.config.get_text_config().num_hidden_layers
    assert [cudnn for n, cudnn in sdpa_calls if n == 1] == [False] * (4 * layers)
    assert [cudnn for n, cudnn in sdpa_calls if n > 1]  # the prompt (and vision): PyTorch's choice
    assert all(cudnn for n, cudnn in sdpa_calls if n > 1)


def test_generation_on_decoded_video_frames_batch_equals_each_alone(tiny: QwenVL, video_queries) -> None:
    backbone = variant(tiny, vision_cache_size=0)
    together = backbone.generate(video_queries, max_new_tokens=6)
    alone = [backbone.generate([q], max_new_tokens=6)[0] for q in video_queries]
    assert together == alone
    assert all(isinstance(a, str) and a for a in together)
    logits = backbone.next_token_logits(video_queries)
    assert logits.shape == (2, tiny.model.config.text_config.vocab_size)
    for row, query in enumerate(video_queries):
        torch.testing.assert_close(logits[row], backbone.next_token_logits([query])[0], rtol=1e-4, atol=1e-5)
    assert set(backbone.timings.seconds) == {"vision", "prefill", "decode_tokens"}


# ------------------------------------------------------------------ pixels and vision reuse


@pytest.mark.parametrize("height, width, resized", [
    # 48 x 64 rounds to 56 x 56 = 3136 < min 200704: scale by sqrt(200704 / 3072) = 8.083, ceil to
    # multiples of 28: 392 x 532 = 208544 pixels
    (48, 64, (392, 532)),
    # 720 x 1280 rounds to 728 x 1288 > max 235200: scale by 1 / sqrt(921600 / 235200) = 1 / 1.9795,
    # floor to multiples of 28: 336 x 644 = 216384 pixels
    (720, 1280, (336, 644)),
])
def test_published_pixel_range_sets_the_grid_and_token_count(tiny: QwenVL, height: int, width: int,
                                                             resized: tuple[int, int]) -> None:
    backbone = QwenVL(tiny.model, tiny.processor)  # defaults: the published 200704 .. 235200
    assert (backbone.min_pixels, backbone.max_pixels) == (200704, 235200)
    batch = backbone.encode([VideoQuery(frames(4, height=height, width=width), [0.0, 1.0, 2.0, 3.0], "?")])
    assert batch.video_grid_thw[0].tolist() == [2, resized[0] // 14, resized[1] // 14]
    assert 200704 <= resized[0] * resized[1] <= 235200
    tokens = 2 * (resized[0] // 28) * (resized[1] // 28)
    assert int((batch.input_ids == tiny.video_token_id).sum()) == tokens
    assert batch.inputs_embeds.shape[1] == batch.input_ids.shape[1]


class _Recording:
    """Wraps a video processor: records what it returns (the pixel values the vision tower gets)."""

    def __init__(self, inner) -> None:
        self.inner, self.outputs = inner, []

    def __call__(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.outputs.append(out)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _pixels_fed(backbone: QwenVL, query: VideoQuery, monkeypatch) -> torch.Tensor:
    recording = _Recording(backbone.processor.video_processor)
    monkeypatch.setattr(backbone.processor, "video_processor", recording)
    backbone.encode([query])
    monkeypatch.undo()
    return recording.outputs[-1]["pixel_values_videos"]


def test_published_resize_feeds_the_forks_pixels(tiny: QwenVL, monkeypatch) -> None:
    """The fork resizes with torchvision (float bicubic + antialias, clamp, round) before the
    processor. Reference computed here with torch's own interpolate: 360 x 640 -> 364 x 644."""
    raw = frames(4, seed=3, height=360, width=640)
    query = VideoQuery(raw, [0.0, 1.0, 2.0, 3.0], "?")
    published = QwenVL(tiny.model, tiny.processor)  # default resize="published", published pixel range
    got = _pixels_fed(published, query, monkeypatch)

    x = torch.from_numpy(raw).permute(0, 3, 1, 2).float()
    ref = torch.nn.functional.interpolate(x, size=(364, 644), mode="bicubic", align_corners=False, antialias=True)
    ref = ref.clamp(0, 255).round().to(torch.uint8)  # what torchvision returns for uint8 input
    # the processor then keeps the size: identical pixel values to it given the reference frames
    want = _pixels_fed(variant(tiny, min_pixels=200704, max_pixels=235200, resize="processor"),
                       VideoQuery(ref.permute(0, 2, 3, 1).numpy(), [0.0, 1.0, 2.0, 3.0], "?"), monkeypatch)
    assert got.shape == want.shape and torch.equal(got, want)
    # the processor's own resize of the raw frames is another kernel: many values differ, visibly
    other = _pixels_fed(variant(tiny, min_pixels=200704, max_pixels=235200, resize="processor"), query,
                        monkeypatch)
    assert other.shape == got.shape
    differ = (other - got).abs()
    assert (differ > 1e-6).float().mean() > 0.05 and differ.max() > 0.03


def test_vision_features_are_reused_for_the_same_video_and_frames(tiny: QwenVL, video_queries) -> None:
    calls = []
    hook = tiny.model.model.visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        backbone = variant(tiny, vision_cache_size=1)
        first = backbone.next_token_logits(video_queries[:1])
        again = backbone.next_token_logits(video_queries[:1])
        assert len(calls) == 1 and torch.equal(first, again)
        cold = variant(tiny, vision_cache_size=0).next_token_logits(video_queries[:1])
        assert len(calls) == 2 and torch.equal(first, cold)
        backbone.next_token_logits(video_queries[1:])  # evicts the first (cache of one)
        backbone.next_token_logits(video_queries[:1])
        assert len(calls) == 4
        unkeyed = VideoQuery(video_queries[0].frames, video_queries[0].timestamps, video_queries[0].prompt)
        backbone.next_token_logits([unkeyed, unkeyed])  # no key: computed, never cached
        assert len(calls) == 5
    finally:
        hook.remove()


# ------------------------------------------------------------------ loading


def test_save_and_load_round_trip_gives_identical_logits(tiny: QwenVL, video_queries, tmp_path) -> None:
    tiny.save_pretrained(tmp_path)
    loaded = load_backbone("qwen2_5_vl", tmp_path, dtype="float32", device="cpu", **PIXELS)
    assert backbone_loader("qwen2_5_vl") is from_pretrained
    assert torch.equal(loaded.next_token_logits(video_queries), tiny.next_token_logits(video_queries))
    assert loaded.generate(video_queries, 4) == tiny.generate(video_queries, 4)


def test_7b_architecture_has_the_released_parameter_count() -> None:
    model = random_qwen_vl("7b", device="meta").model
    # Qwen/Qwen2.5-VL-7B-Instruct: 16,584,333,312 bytes of bf16 weights = 8,292,166,656 parameters
    assert sum(p.numel() for p in model.parameters()) == 8_292_166_656


def test_options_are_checked_when_built(tiny: QwenVL) -> None:
    with pytest.raises(ValueError, match="time_encoding"):
        variant(tiny, time_encoding="uniform")
    with pytest.raises(ValueError, match="resize"):
        variant(tiny, resize="pil")
    with pytest.raises(ValueError, match="min_pixels"):
        QwenVL(tiny.model, tiny.processor, min_pixels=10, max_pixels=5)
    with pytest.raises(ValueError, match="time order"):
        temporal_positions([1.0, 0.5], "real", tokens_per_second=2)


def test_grouped_vision_attention_equals_the_per_window_loop(tiny):
    """Frames whose patch grid is no multiple of the 112-px window give windows of several
    lengths; grouping them into batched calls must not change the vision features."""
    from tspo_eval.backbones.qwen_vision import set_grouped_vision_attention

    query = VideoQuery(frames(6, seed=3, height=200, width=300), [0.0, 0.7, 1.1, 2.0, 4.5, 4.6], "What?")
    calls = []
    hook = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return hook(*args, **kwargs)

    results = {}
    for grouped in (False, True):
        set_grouped_vision_attention(tiny.model, grouped)
        tiny._vision_cache.clear()
        calls.clear()
        torch.nn.functional.scaled_dot_product_attention = counting
        try:
            results[grouped] = tiny.encode([query]).inputs_embeds
        finally:
            torch.nn.functional.scaled_dot_product_attention = hook
        results[f"calls{grouped}"] = len(calls)
    set_grouped_vision_attention(tiny.model, True)
    torch.testing.assert_close(results[True], results[False], atol=1e-5, rtol=1e-5)
    assert results["callsTrue"] < results["callsFalse"] / 4  # few batched calls instead of one per window
