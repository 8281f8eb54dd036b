"""The temporal agent against an independent plain implementation, and its checkpoint layouts."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tspo_eval import TemporalAgent
from tspo_eval.agent import load_clip_tokenizer, random_agent

RELEASED_HEAD_KEYS = {
    f"selector.{name}.{p}"
    for name in ("temporal.Self_q", "temporal.Self_k", "temporal.Self_v", "temporal.ffn_o", "mlp.0", "mlp.2")
    for p in ("weight", "bias")
}


@pytest.fixture(scope="module")
def agent() -> TemporalAgent:
    return random_agent("clip-tiny", seed=0)


def plain_score(head, frames: torch.Tensor, text: torch.Tensor, window: int) -> torch.Tensor:
    """SPEC section 2 written out frame by frame, sharing nothing with the package's code."""
    t, d = frames.shape
    h = 8
    hd = d // h
    pe = torch.zeros(t, d)
    for i in range(t):
        for c in range(0, d, 2):
            angle = (i / t) * math.exp(-math.log(10000.0) * c / d)
            pe[i, c] = math.sin(angle)
            if c + 1 < d:
                pe[i, c + 1] = math.cos(angle)
    x = frames + pe
    att = head.temporal
    q, k, v = att.Self_q(x), att.Self_k(x), att.Self_v(x)
    out = torch.zeros(t, d)
    for j in range(t):
        allowed = sorted({min(max(j - window // 2 + m, 0), t - 1) for m in range(window)})
        for hh in range(h):
            sl = slice(hh * hd, (hh + 1) * hd)
            logits = torch.stack([q[j, sl] @ k[m, sl] / math.sqrt(hd) for m in allowed])
            weights = torch.softmax(logits, 0)
            out[j, sl] = sum(w * v[m, sl] for w, m in zip(weights, allowed))
    events = head.mlp(out) + frames
    scores = []
    for j in range(t):
        e, f = events[j], frames[j]
        event_cos = (e @ text) / (e.norm() * text.norm() + 1e-6)
        clip_cos = (f @ text) / (f.norm() * text.norm())
        scores.append(event_cos + clip_cos)
    return torch.stack(scores)


@pytest.mark.parametrize("t", [1, 3, 6, 7, 12, 13, 40])
@pytest.mark.parametrize("window", [12, 4, 5])
def test_score_matches_plain_implementation(agent, t, window):
    torch.manual_seed(t * 100 + window)
    frames = torch.randn(t, 64)
    text = torch.randn(64)
    agent.selector.window = window
    try:
        with torch.no_grad():
            got = agent.score(frames, text)
            want = plain_score(agent.selector, frames, text, window)
            logits = agent.logits(frames, text)
    finally:
        agent.selector.window = 12
    assert got.shape == (t,)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, got / 0.025)


def test_batched_score_equals_per_video(agent):
    frames = torch.randn(3, 20, 64)
    text = torch.randn(3, 64)
    with torch.no_grad():
        batched = agent.selector(frames, text)
        single = torch.stack([agent.selector(frames[i], text[i]) for i in range(3)])
    torch.testing.assert_close(batched, single)


def test_window_only_sees_neighbours(agent):
    """Changing a frame outside frame 0's window leaves frame 0's event score unchanged."""
    torch.manual_seed(1)
    frames, text = torch.randn(30, 64), torch.randn(64)
    with torch.no_grad():
        before = agent.score(frames, text)
        changed = frames.clone()
        changed[6] += 5.0  # frame 0 sees 0..5 (window 12: -6..5 clamped)
        after = agent.score(changed, text)
    assert torch.allclose(before[0], after[0], atol=1e-6)
    assert not torch.allclose(before[1], after[1], atol=1e-4)  # frame 1 sees 0..6


def test_full_size_head_has_published_parameter_count():
    from tspo_eval.agent import TemporalHead

    head = TemporalHead(768)
    # 6 Linear(768, 768) layers with bias: Self_q, Self_k, Self_v, ffn_o, mlp.0, mlp.2
    assert sum(p.numel() for p in head.parameters()) == 6 * (768 * 768 + 768) == 3_543_552


def test_save_load_round_trip_writes_released_layout(agent, tmp_path):
    agent.save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    assert {k for k in tensors if k.startswith("selector.")} == RELEASED_HEAD_KEYS
    assert "visual_projection.weight" in tensors and "text_projection.weight" in tensors
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "clip"
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = TemporalAgent.from_pretrained(tmp_path)
    frames, text = torch.randn(9, 64), torch.randn(64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(frames, text), agent.score(frames, text))
    assert loaded.tokenizer(["a cat"]).input_ids == agent.tokenizer(["a cat"]).input_ids


def test_loads_a_directory_written_without_our_class(tmp_path):
    """A released TSPO-0.4B dir is a plain CLIPModel save plus `selector.*` tensors in bf16."""
    cfg = CLIPConfig(**{k: v for k, v in json.loads(
        (__import__("tspo_eval").agent.CONFIG_DIR / "clip-tiny.json").read_text()).items() if k[0] != "_"})
    clip = CLIPModel(cfg).to(torch.bfloat16)
    clip.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    torch.manual_seed(3)
    head = {k: torch.randn(64, 64 if k.endswith("weight") else 1).squeeze(-1).to(torch.bfloat16)
            for k in RELEASED_HEAD_KEYS}
    save_file({**state, **head}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    loaded = TemporalAgent.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.selector.temporal.Self_q.weight.dtype == torch.bfloat16
    torch.testing.assert_close(loaded.selector.mlp[2].bias, head["selector.mlp.2.bias"])
    torch.testing.assert_close(loaded.vision_model.embeddings.patch_embedding.weight,
                               clip.vision_model.embeddings.patch_embedding.weight)


def test_load_head_from_training_checkpoint(agent, tmp_path):
    """Training checkpoints hold the head as `multiModal_align.*` among the LLM's tensors."""
    torch.manual_seed(4)
    head = {k.replace("selector.", "multiModal_align."): torch.randn(64, 64) if k.endswith("weight")
            else torch.randn(64) for k in RELEASED_HEAD_KEYS}
    save_file({**head, "model.layers.0.mlp.up_proj.weight": torch.randn(4, 4)},
              str(tmp_path / "model-00004-of-00004.safetensors"))
    fresh = random_agent("clip-tiny", seed=9)
    fresh.load_head(tmp_path)
    torch.testing.assert_close(fresh.selector.temporal.Self_v.weight, head["multiModal_align.temporal.Self_v.weight"])
    with pytest.raises(ValueError, match="no keys with a selector"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        fresh.load_head(tmp_path / "other.safetensors")


def test_frame_features_match_clip_image_processor(agent):
    """The torch preprocessing path gives the features of the standard CLIPImageProcessor."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(4, 96, 160, 3), dtype=np.uint8)
    frames = np.ascontiguousarray(np.repeat(np.repeat(frames[:, ::8, ::8], 8, 1), 8, 2))  # smooth-ish blocks
    ours = agent.encode_frames(frames)
    proc = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    pixels = proc(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = agent.get_image_features(pixel_values=pixels)
    ref = out if isinstance(out, torch.Tensor) else out.pooler_output
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert ours.shape == (4, 64)
    assert cos.min() > 0.999, cos


def test_text_tokens_are_openai_clip_bpe(agent):
    import open_clip

    text = "What is the scene at the beginning of the video?"
    ours = agent.tokenizer([text]).input_ids[0]
    ref = open_clip.get_tokenizer("ViT-L-14")([text])[0]
    assert ours == [int(i) for i in ref[: len(ours)]]
    assert agent.encode_text([text, "x " * 200]).shape == (2, 64)  # long text truncated at 77 tokens


def test_plain_clip_tokenizer_fallback_and_unknown_config():
    assert load_clip_tokenizer(None)(["hello"]).input_ids[0][0] == 49406
    with pytest.raises(ValueError, match="clip-tiny"):
        random_agent("no-such-config")


def test_encoder_identity_ignores_the_head_but_not_clip():
    from tspo_eval.encoders import weights_fingerprint

    agent = random_agent("clip-tiny", seed=0)
    before = weights_fingerprint(agent)
    assert agent.encoder.identity.endswith(before) and agent.encoder is agent.encoder
    with torch.no_grad():
        agent.selector.mlp[0].weight.add_(1.0)  # training the head keeps cached frame features valid
        assert weights_fingerprint(agent) == before
        agent.visual_projection.weight.add_(1.0)
        assert weights_fingerprint(agent) != before


def test_random_agent_is_built_on_its_device_and_dtype(monkeypatch):
    """Parameters are created where the agent will run (a ViT-L initialised on the CPU first took
    20 s on the H200 before moving): made on the meta device (no memory, no init), then allocated
    and drawn once on the target device in the target dtype; the default dtype is restored."""
    from tspo_eval import agent as agent_module

    built, drawn = [], []
    init, init_weights = agent_module.TemporalAgent.__init__, agent_module.TemporalAgent.init_weights

    def recording_init(self, config, *args):
        init(self, config, *args)
        built.append({(p.device.type, p.dtype) for p in self.parameters()})

    def recording_init_weights(self):
        drawn.append({(p.device.type, p.dtype) for p in self.parameters()})
        init_weights(self)

    monkeypatch.setattr(agent_module.TemporalAgent, "__init__", recording_init)
    monkeypatch.setattr(agent_module.TemporalAgent, "init_weights", recording_init_weights)
    agent = agent_module.random_agent("clip-tiny", torch_dtype=torch.bfloat16, device="cpu")
    assert built == [{("meta", torch.bfloat16)}] and drawn == [{("cpu", torch.bfloat16)}]
    assert {(p.device.type, p.dtype) for p in agent.parameters()} == {("cpu", torch.bfloat16)}
    assert all(p.abs().sum() > 0 for name, p in agent.named_parameters() if name.endswith("weight"))
    assert torch.get_default_dtype() == torch.float32


def test_the_fallback_tokenizer_is_built_without_importing_open_clip():
    """open_clip's import (timm, torchvision) cost seconds of every random-agent start-up for one
    file path; its byte table, rebuilt here, is the same in the same order (token ids depend on it)."""
    import subprocess
    import sys

    from open_clip.tokenizer import bytes_to_unicode

    from tspo_eval.encoders import _byte_symbols

    assert list(_byte_symbols().items()) == list(bytes_to_unicode().items())
    code = ("import sys; from tspo_eval.agent import load_clip_tokenizer; "
            "ids = load_clip_tokenizer(None)(['hello world']).input_ids[0]; "
            "print(ids, 'open_clip' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[49406, 3306, 1002, 49407] False"
