"""The plain-PyTorch CLIP against transformers' CLIPModel: same features from the same checkpoint
directory, directories that each side writes load in the other, and the agent's import path
never reaches transformers' modeling code."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from tspo_eval.agent import CONFIG_DIR, TemporalAgent, load_clip_tokenizer, random_agent
from tspo_eval.encoders import clip_preprocess, weights_fingerprint
from tspo_eval.video import read_frames

TINY = {k: v for k, v in json.loads((CONFIG_DIR / "clip-tiny.json").read_text()).items() if k[0] != "_"}
VARIANTS = {  # openai/clip-vit-large-patch14's text config has the legacy eos_token_id 2 (pooling = argmax id)
    "legacy-eos": {**TINY, "text_config": {**TINY["text_config"], "eos_token_id": 2, "bos_token_id": 0}},
    "current-eos": TINY,  # CLIPConfig's default 49407: pooling = first end-of-text token
    "gelu": {**TINY, "text_config": {**TINY["text_config"], "hidden_act": "gelu", "layer_norm_eps": 1e-6},
             "vision_config": {**TINY["vision_config"], "hidden_act": "gelu", "patch_size": 16}},
}
QUESTIONS = ["What is the man doing?", "Which colour is the car at the beginning of the video, red or blue?", "x",
             "How many people " + "and dogs " * 60 + "are there?"]  # the last is cut at 77 tokens


def pooled(out) -> torch.Tensor:
    """transformers 4.x returns the features, 5.x an output object holding them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def save_release(clip: CLIPModel, out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """`clip` saved as a released TSPO-0.4B directory: CLIPModel.save_pretrained + `selector.*`."""
    clip.save_pretrained(out)
    torch.manual_seed(seed)
    dim, dtype = clip.config.projection_dim, clip.visual_projection.weight.dtype
    head = {f"selector.{m}.{p}": torch.randn((dim, dim) if p == "weight" else (dim,)).to(dtype)
            for m in ("temporal.Self_q", "temporal.Self_k", "temporal.Self_v", "temporal.ffn_o", "mlp.0", "mlp.2")
            for p in ("weight", "bias")}
    save_file({**load_file(str(out / "model.safetensors")), **head}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    return head


@pytest.fixture(scope="module")
def frames(numbered_video_factory) -> np.ndarray:
    """Six decoded frames of a real mp4 (numbers drawn on them), 96 x 128."""
    return read_frames(numbered_video_factory(num_frames=60, height=96, width=128), [0, 11, 23, 35, 47, 59])


@pytest.mark.parametrize("variant", VARIANTS)
def test_features_equal_clipmodel(variant, frames, tmp_path):
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(**VARIANTS[variant])).eval()
    with torch.no_grad():  # CLIPModel's init leaves the layer norms at 1/0 and biases at 0: make them count
        for name, p in clip.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    head = save_release(clip, tmp_path)
    ours = TemporalAgent.from_pretrained(tmp_path)
    assert ours.dtype == torch.float32
    assert ours.tokenizer(["hello"]).input_ids[0] == [49406, 3306, 49407]  # no tokenizer files: CLIP's BPE
    torch.testing.assert_close(ours.selector.mlp[2].bias, head["selector.mlp.2.bias"])
    size = clip.config.vision_config.image_size
    pixels = clip_preprocess(torch.from_numpy(frames), size)
    tokens = load_clip_tokenizer(None)(QUESTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    assert tokens["input_ids"].shape[1] == 77 and tokens["attention_mask"][0].sum() < 77  # padded, and one cut
    # ids whose largest id is not the end-of-text token: the two pooling rules pick different positions
    ids = torch.tensor([[49406, 320, 2, 1929, 49407, 2, 49407], [0, 2, 49407, 2, 7, 8, 9]])
    # left padding: the only batch where the padding mask changes a real token (right padding comes after
    # the end-of-text token, which the causal mask already hides)
    left, left_mask = torch.tensor([[0, 0, 49406, 320, 49407], [49406, 320, 2, 500, 49407]]), torch.ones(2, 5)
    left_mask[0, :2] = 0
    with torch.no_grad():
        want_images = pooled(clip.get_image_features(pixel_values=pixels))
        want_text = pooled(clip.get_text_features(**tokens))
        torch.testing.assert_close(ours.get_image_features(pixels), want_images, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.get_text_features(ids), pooled(clip.get_text_features(input_ids=ids)),
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.get_text_features(left, left_mask),
                                   pooled(clip.get_text_features(input_ids=left, attention_mask=left_mask)),
                                   atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.encode_frames(frames), want_images, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.encode_text(QUESTIONS), want_text, atol=1e-5, rtol=1e-5)
    # the cache identity is the one the CLIPModel-based agent had for the same weights
    reloaded = CLIPModel.from_pretrained(tmp_path)
    assert ours.encoder.identity == f"hf:{tmp_path}:{size}:{weights_fingerprint(reloaded)}"


def test_bf16_release_gives_clipmodel_features(frames, tmp_path):
    """As released: bf16 weights, loaded in bf16 (the checkpoint's dtype when none is asked for)."""
    torch.manual_seed(2)
    clip = CLIPModel(CLIPConfig(**VARIANTS["legacy-eos"])).eval().to(torch.bfloat16)
    save_release(clip, tmp_path)
    ours = TemporalAgent.from_pretrained(tmp_path)
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}
    pixels = clip_preprocess(torch.from_numpy(frames), 224).to(torch.bfloat16)
    tokens = ours.tokenizer(QUESTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        want_images = pooled(clip.get_image_features(pixel_values=pixels))
        want_text = pooled(clip.get_text_features(**tokens))
    torch.testing.assert_close(ours.encode_frames(frames), want_images, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(ours.encode_text(QUESTIONS), want_text, atol=2e-2, rtol=2e-2)
    assert torch.nn.functional.cosine_similarity(ours.encode_frames(frames).float(), want_images.float()).min() > 0.999


def test_our_directory_loads_in_clipmodel_and_back(frames, tmp_path):
    agent = random_agent("clip-tiny", seed=3)
    agent.save_pretrained(tmp_path)
    clip, info = CLIPModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] in ([], set())
    assert info["unexpected_keys"] and all(k.startswith("selector.") for k in info["unexpected_keys"])
    pixels = clip_preprocess(torch.from_numpy(frames), 224)
    with torch.no_grad():
        want = pooled(clip.get_image_features(pixel_values=pixels))
        torch.testing.assert_close(agent.get_image_features(pixels), want, atol=1e-5, rtol=1e-5)
        tokens = agent.tokenizer(QUESTIONS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        torch.testing.assert_close(agent.get_text_features(**tokens), pooled(clip.get_text_features(**tokens)),
                                   atol=1e-5, rtol=1e-5)
    again = TemporalAgent.from_pretrained(tmp_path)
    assert again.state_dict().keys() == agent.state_dict().keys()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in agent.state_dict().items())
    assert json.loads((tmp_path / "config.json").read_text())["tspo_window"] == 12
    # the image-processor file: CLIPImageProcessor reads it and preprocesses as the one it stands for
    written = CLIPImageProcessor.from_pretrained(tmp_path)
    reference = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    images = list(frames[:2])
    np.testing.assert_array_equal(np.asarray(written(images=images, return_tensors="np")["pixel_values"]),
                                  np.asarray(reference(images=images, return_tensors="np")["pixel_values"]))


def test_unknown_config_keys_are_written_back(tmp_path):
    clip = CLIPModel(CLIPConfig(**TINY))
    save_release(clip, tmp_path / "in")
    config = json.loads((tmp_path / "in" / "config.json").read_text())
    (tmp_path / "in" / "config.json").write_text(json.dumps({**config, "tspo_tau": 0.5, "custom_note": [1, 2]}))
    agent = TemporalAgent.from_pretrained(tmp_path / "in")
    assert agent.tau == 0.5
    agent.save_pretrained(tmp_path / "out", dtype=torch.bfloat16)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert written["custom_note"] == [1, 2] and written["tspo_tau"] == 0.5
    assert written["text_config"]["hidden_size"] == 64 and written["vision_config"]["patch_size"] == 32
    assert {t.dtype for t in load_file(str(tmp_path / "out" / "model.safetensors")).values()} == {torch.bfloat16}
    CLIPConfig.from_pretrained(tmp_path / "out")  # transformers accepts what we write


def test_missing_or_misshapen_clip_tensor_names_file_and_key(tmp_path):
    clip = CLIPModel(CLIPConfig(**TINY))
    save_release(clip, tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(str(weights))
    save_file({k: v for k, v in state.items() if k != "text_projection.weight"}, str(weights))
    with pytest.raises(ValueError, match=r"model\.safetensors: no tensor text_projection\.weight"):
        TemporalAgent.from_pretrained(tmp_path)
    save_file({**state, "visual_projection.weight": torch.zeros(64, 32)}, str(weights))
    with pytest.raises(ValueError, match=r"model\.safetensors: visual_projection\.weight has shape \(64, 32\)"):
        TemporalAgent.from_pretrained(tmp_path)


def test_sharded_and_pytorch_bin_checkpoints_load(tmp_path):
    torch.manual_seed(5)
    clip = CLIPModel(CLIPConfig(**TINY))
    clip.save_pretrained(tmp_path / "sharded", max_shard_size="1MB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    torch.save(clip.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    for name in ("sharded", "bin"):
        agent = TemporalAgent.from_pretrained(tmp_path / name)
        assert all(torch.equal(v, agent.state_dict()[k]) for k, v in clip.state_dict().items()), name


def test_agent_extract_and_select_never_import_transformers_modeling(tmp_path):
    """Start-up: the frame path (random or loaded agent) imports no transformers modeling code, nor
    torch._dynamo / sympy (nn.Embedding's init and to_empty on the meta device would)."""
    code = ("import sys, numpy as np; import tspo_eval.agent, tspo_eval.extract, tspo_eval.selection, "
            "tspo_eval.selection.stage; from tspo_eval.agent import load_agent; "
            "frame = np.zeros((1, 40, 60, 3), np.uint8); agent = load_agent('random:clip-tiny'); "
            f"agent.encode_frames(frame); load_agent({str(tmp_path / 'saved')!r}).encode_frames(frame); "
            "print(sorted(m for m in sys.modules if m.startswith(('transformers.model', 'torch._dynamo', 'sympy'))))")
    random_agent("clip-tiny").save_pretrained(tmp_path / "saved")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
