"""GRPO of the video LLM (tiny random LLaVA-Video): sampling log-probs, the token loss by hand,
LoRA and full fine-tuning moving exactly the parameters they should, adapters saved and reloaded."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tspo_eval.backbones.llava_video import random_llava_video
from tspo_eval.synthetic import number_frame, write_video
from tspo_eval.training.data import Sample
from tspo_eval.training.llm_grpo import (
    LLMTrainConfig,
    LLMTrainer,
    grpo_token_loss,
    load_trainable,
    make_trainable,
)
from tspo_eval.training.rollout import TrainableBackbone, VideoPolicy, frames_for


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    video = write_video(tmp_path_factory.mktemp("llm") / "v.mp4", (number_frame(i, 48, 64) for i in range(40)), 4.0)
    return [Sample(id=str(i), video=str(video), kind="multiple_choice", question="Which?", prompt="Which?\nA. x\nB. y",
                   options=("x", "y"), answer="AB"[i]) for i in range(2)]


def config(tmp_path, **kw) -> LLMTrainConfig:
    return LLMTrainConfig(**{"data": "unused", "backbone_path": "unused", "k": 2, "rollouts": 3, "max_new_tokens": 4,
                             "lr": 1e-2, "max_steps": 2, "output_dir": str(tmp_path / "run"), **kw})


def test_sampled_logprobs_equal_the_training_forward(samples, tmp_path):
    backbone = random_llava_video("tiny", seed=1)
    policy = VideoPolicy(backbone)
    query, times, duration = frames_for(samples[0], 2, False, None)
    assert len(query.frames) == 2 and duration == pytest.approx(10.0) and times.tolist() == [0.0, 39 / 4]
    prompt = policy.prompt(query)
    ids, mask, old = policy.sample(prompt, 3, 0.7, 5, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp, entropy = policy(*prompt, ids, 0.7)  # one forward, no KV cache
    torch.testing.assert_close(logp * mask, old, atol=1e-4, rtol=1e-4)
    assert bool((entropy > 0).all()) and bool(mask[:, 0].all())


def test_only_a_trainable_backbone_becomes_a_policy():
    from tspo_eval.backbones import Backbone

    class AnswerOnly(Backbone):  # answers, but exposes no LM or prompt embeddings to train
        name, tokenizer, device, dtype = "answer-only", None, torch.device("cpu"), torch.float32

        def generate(self, queries, max_new_tokens=16):
            return [""] * len(queries)

        def next_token_logits(self, queries):
            return torch.zeros(len(queries), 2)

    llava = random_llava_video("tiny", seed=1)
    assert isinstance(llava, TrainableBackbone)
    assert VideoPolicy(llava).pad == llava.pad_token_id and VideoPolicy(llava).eos == sorted(llava.eos_token_ids)
    assert not isinstance(AnswerOnly(), TrainableBackbone)
    with pytest.raises(TypeError, match="AnswerOnly is not a TrainableBackbone"):
        VideoPolicy(AnswerOnly())


def test_token_loss_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    entropy = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    adv = torch.tensor([1.0, -2.0])
    loss, stats = grpo_token_loss(logp, logp.detach(), logp.detach(), entropy, mask, adv, 0.2, 0.01, 0.1)
    # ratio 1 and reference == policy: -(3 * 1 + 2 * -2) / 5 - 0.1 * (1 + 2 + 3 + 4 + 5) / 5
    assert float(loss.detach()) == pytest.approx(1 / 5 - 0.1 * 3.0)
    assert stats["kl"] == 0 and stats["entropy"] == pytest.approx(3.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.2, -0.2, -0.2], [0.4, 0.4, 0.0]]))


def test_lora_training_moves_only_the_adapters_and_they_reload(samples, tmp_path):
    backbone = random_llava_video("tiny", seed=2)
    before = {n: p.detach().clone() for n, p in backbone.net.named_parameters()}
    trainer = LLMTrainer(config(tmp_path), backbone, samples)
    injected = {n: p.detach().clone() for n, p in backbone.net.named_parameters() if "lora_" in n}
    history = trainer.train()
    after = dict(backbone.net.named_parameters())
    lora = [n for n in after if "lora_" in n]
    assert lora and set(lora) == set(injected) and all(n.startswith("model.layers.") for n in lora)  # LM only
    assert all(not torch.equal(after[n].detach(), injected[n]) for n in lora)
    base = [n for n in after if "lora_" not in n]
    assert all(torch.equal(after[n].detach(), before[n.replace(".base_layer", "")]) for n in base)
    assert history[0]["kl"] == 0 and [m["step"] for m in history] == [1, 2]
    fresh = random_llava_video("tiny", seed=2)
    make_trainable(fresh, config(tmp_path))
    load_trainable(fresh, tmp_path / "run" / "checkpoints" / "step-000002")
    for name, value in fresh.net.named_parameters():
        assert torch.equal(value, after[name]), name


def test_full_finetuning_moves_the_language_model_but_not_the_vision_tower(samples, tmp_path):
    backbone = random_llava_video("tiny", seed=3)
    before = {n: p.detach().clone() for n, p in backbone.net.named_parameters()}
    history = LLMTrainer(config(tmp_path, finetune="full", lr=1e-3), backbone, samples).train()
    after = dict(backbone.net.named_parameters())
    moved = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    assert any(n.startswith("model.layers.") for n in moved) and "lm_head.weight" in moved
    assert not any(n.startswith(("model.vision_tower", "model.mm_projector")) for n in moved)
    assert history[0]["kl"] == 0 and np.isfinite(history[-1]["loss"])


def test_step_metrics_pool_lists_of_different_lengths():
    """With grad_accum 2 a step has two losses but one grad_norm (at the optimiser step); NaNs are left out."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True))
    metrics = LLMTrainer.reduce(trainer, {"loss": [1.0, float("nan"), 4.0], "grad_norm": [0.5], "kl": []})
    assert metrics["loss"] == 2.5 and metrics["grad_norm"] == 0.5 and np.isnan(metrics["kl"])
