"""GRPO of Qwen2.5-VL (tiny random, CPU): real frame times in the training prompt, sampled
log-probs equal to the training forward, rewards of scripted answers against hand-computed
values for every question kind, LoRA / full moving exactly the trainable weights, a resumed
run continuing bit-identically, and select-data --policy llm scoring what training samples."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tspo_eval.backbones.qwen_vl import random_qwen_vl
from tspo_eval.synthetic import number_frame, write_video
from tspo_eval.training.data import parse_row
from tspo_eval.training.llm_grpo import LLMTrainConfig, LLMTrainer
from tspo_eval.training.rollout import TrainableBackbone, VideoPolicy, frames_for

SIDE = 56  # frames resized to 56 x 56: 4 x 4 patches, 2 x 2 merged tokens per frame pair
PIXELS = {"min_pixels": SIDE * SIDE, "max_pixels": SIDE * SIDE}


def tiny(seed: int = 0):
    return random_qwen_vl("tiny", seed=seed, device="cpu", **PIXELS)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """A 10 s video (40 frames at 4 fps) and one question of each Temporal-RLT kind on it."""
    frames = (number_frame(i, 48, 64) for i in range(40))
    video = write_video(tmp_path_factory.mktemp("qwen_llm") / "v.mp4", frames, 4.0)
    return [
        {"video": str(video), "problem": "Which digit?", "problem_type": "multiple_choice", "options": ["one", "two"],
         "solution": "B"},
        {"video": str(video), "problem": "When is the digit odd?", "problem_type": "grounding", "timestamps": [2, 6]},
        {"video": str(video), "problem": "What is shown?", "problem_type": "grounded_qa",
         "options": ["a digit", "a cat"], "solution": "A", "timestamps": [4, 8]},
    ]


@pytest.fixture(scope="module")
def samples(rows):
    return [parse_row(r, n) for n, r in enumerate(rows)]


def config(tmp_path, **kw) -> LLMTrainConfig:
    return LLMTrainConfig(**{"data": "unused", "backbone_path": "unused", "k": 4, "rollouts": 3, "max_new_tokens": 4,
                             "lr": 1e-2, "max_steps": 2, "output_dir": str(tmp_path / "run"), **kw})


def test_training_prompt_carries_the_real_frame_times_and_sampling_matches_the_forward(samples, tmp_path):
    backbone = tiny(1)
    assert isinstance(backbone, TrainableBackbone)
    policy = VideoPolicy(backbone)
    query, times, duration = frames_for(samples[0], 4, False, None)
    assert times.tolist() == [0.0, 3.25, 6.5, 9.75] and duration == pytest.approx(10.0)  # frames 0, 13, 26, 39
    embeds, mask, positions = policy.prompt(query)
    assert positions.shape == (3, 1, embeds.shape[1])
    ids = backbone.encode([query]).input_ids[0]
    video = positions[:, 0, ids == backbone.video_token_id]
    start = int(video[0, 0])
    # pairs start at 0 s and 6.5 s: temporal positions floor(t * 2 tokens/s) = 0 and 13 past the video start
    assert sorted(set((video[0] - start).tolist())) == [0, 13]
    gen = torch.Generator().manual_seed(0)
    answers, keep, old = policy.sample((embeds, mask, positions), 3, 0.7, 5, gen)
    with torch.no_grad():
        logp, _ = policy(embeds, mask, positions, answers, 0.7)  # one forward over prompt + answers, no cache
    torch.testing.assert_close(logp * keep, old, atol=1e-4, rtol=1e-4)


SCRIPTED = {  # per question: answers and their (accuracy, temporal_iou, format) by hand
    0: [("<think>two</think><answer>B</answer>", (1, None, 1)), ("The answer is A", (0, None, 0))],
    # truth 2-6 s of 10 s; 4-8 s: overlap 2 / union 6; 0:01-0:05: overlap 3 / union 5
    1: [('<think>odd</think><answer>{"start_time": "4", "end_time": "8"}</answer>', (None, 1 / 3, 1)),
        ("from 0:01 to 0:05", (None, 3 / 5, 0))],
    # truth A at 4-8 s; 3-9 s: overlap 4 / union 6
    2: [("<think>digit</think><answer>A, 3 to 9</answer>", (1, 2 / 3, 1)), ("B 20 30", (0, 0.0, 0))],
}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_rewards_of_scripted_answers_equal_hand_computed_values(samples, tmp_path, monkeypatch, index):
    trainer = LLMTrainer(config(tmp_path, rollouts=2), tiny(2), samples)
    tok = trainer.policy.backbone.tokenizer
    texts = [t for t, _ in SCRIPTED[index]]
    encoded = [tok(t, add_special_tokens=False).input_ids + [trainer.policy.eos[0]] for t in texts]
    length = max(map(len, encoded))
    ids = torch.tensor([e + [trainer.policy.pad] * (length - len(e)) for e in encoded])
    keep = torch.tensor([[i < len(e) for i in range(length)] for e in encoded])
    monkeypatch.setattr(trainer.policy, "sample", lambda *a, **k: (ids, keep, torch.zeros(ids.shape)))
    group = trainer.rollout(0, index)
    assert group.texts == texts
    for name, column in zip(("accuracy", "temporal_iou", "format"), zip(*(r for _, r in SCRIPTED[index]))):
        if column[0] is None:  # not applicable to this kind of question
            assert group.per_reward[name] == [None, None], name
        else:
            assert group.per_reward[name] == pytest.approx(list(column)), name
    expected = [0.5 * sum(v for v in r if v is not None) for _, r in SCRIPTED[index]]
    assert group.rewards.tolist() == pytest.approx(expected)


def test_lora_moves_every_adapter_and_nothing_else(samples, tmp_path):
    backbone = tiny(3)
    before = {n: p.detach().clone() for n, p in backbone.net.state_dict().items()}
    trainer = LLMTrainer(config(tmp_path), backbone, samples)
    injected = {n: p.detach().clone() for n, p in backbone.net.named_parameters() if "lora_" in n}
    history = trainer.train()
    after = backbone.net.state_dict()
    layers = backbone.net.config.get_text_config().num_hidden_layers
    assert len(injected) == 2 * 7 * layers and all(n.startswith("model.language_model.layers.") for n in injected)
    assert [n for n, p in backbone.net.named_parameters() if p.requires_grad] == list(injected)
    assert all(not torch.equal(after[n], injected[n]) for n in injected)
    base = [n for n in after if "lora_" not in n]
    assert len(base) == len(before)
    assert all(torch.equal(after[n], before[n.replace(".base_layer", "")]) for n in base)
    assert [m["step"] for m in history] == [1, 2] and all(np.isfinite(m["loss"]) for m in history)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [1, 2] and "rewards/temporal_iou" in lines[0]


def test_full_finetuning_moves_every_language_weight_and_not_the_vision_tower(samples, tmp_path):
    backbone = tiny(4)
    before = {n: p.detach().clone() for n, p in backbone.net.named_parameters()}
    LLMTrainer(config(tmp_path, finetune="full", lr=1e-3), backbone, samples).train()
    after = dict(backbone.net.named_parameters())
    moved = {n for n in after if not torch.equal(after[n].detach(), before[n])}
    vision = {n for n in after if n.startswith("model.visual.")}
    assert vision and moved == set(after) - vision


def test_a_resumed_run_continues_bit_identically(samples, tmp_path):
    straight = LLMTrainer(config(tmp_path / "a", max_steps=3, save_every=1), tiny(5), samples)
    full = straight.train()

    class Stop(Exception):
        pass

    def stop_after_two(step, metrics):
        if step == 1:  # the step-2 checkpoint is written after the callback: the last one is step 1
            raise Stop

    with pytest.raises(Stop):
        LLMTrainer(config(tmp_path / "b", max_steps=3, save_every=1), tiny(5), samples).train(stop_after_two)
    resumed = LLMTrainer(config(tmp_path / "b", max_steps=3, save_every=1, resume=True), tiny(5), samples)
    rest = resumed.train()
    assert resumed.start_step == 1 and [m["step"] for m in rest] == [2, 3]
    for key in ("loss", "reward", "kl", "entropy", "grad_norm"):
        assert [m[key] for m in rest] == [m[key] for m in full[1:]], key
    mine, theirs = resumed.policy.net.state_dict(), straight.policy.net.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_ctrl_c_between_steps_checkpoints_the_last_one_and_resume_is_bit_identical(samples, tmp_path):
    """Ctrl-C after step 2 of 3 with checkpoints every 2 (none yet for step 2 when it comes): step 2 is
    checkpointed on the way out and the resumed run ends where the uninterrupted one does."""
    straight = LLMTrainer(config(tmp_path / "a", max_steps=3, save_every=2), tiny(5), samples)
    full = straight.train()

    def ctrl_c_after_two(step, metrics):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        LLMTrainer(config(tmp_path / "b", max_steps=3, save_every=2), tiny(5), samples).train(ctrl_c_after_two)
    assert [p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir()] == ["step-000002"]
    resumed = LLMTrainer(config(tmp_path / "b", max_steps=3, save_every=2, resume=True), tiny(5), samples)
    rest = resumed.train()
    assert resumed.start_step == 2 and [m["step"] for m in rest] == [3]
    assert [m["loss"] for m in rest] == [m["loss"] for m in full[2:]]
    mine, theirs = resumed.policy.net.state_dict(), straight.policy.net.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_select_data_with_the_llm_scores_what_training_samples(rows, samples, tmp_path, monkeypatch):
    """select-data's N rewards of a sample are the rewards train-llm's first epoch draws for it.
    A random model's answers are all wrong, so a length reward makes every answer count."""
    from tspo_eval.backbones import load_backbone
    from tspo_eval.training.data import write_samples
    from tspo_eval.training.rewards import REWARDS
    from tspo_eval.training.variance import VarianceConfig, select_data

    monkeypatch.setitem(REWARDS, "test_length", lambda g: [float(len(c)) for c in g.completions])

    tiny(6).save_pretrained(tmp_path / "qwen")
    write_samples(samples, tmp_path / "pool.jsonl")
    cfg = VarianceConfig(data=str(tmp_path / "pool.jsonl"), out=str(tmp_path / "sel"), policy="llm", runs=3, k=4,
                         backbone="qwen2_5_vl", backbone_path=str(tmp_path / "qwen"), max_new_tokens=4,
                         temperature=1.5, rewards={"accuracy": 1.0, "temporal_iou": 1.0, "test_length": 0.1}, seed=7)
    select_data(cfg)
    scores = [json.loads(line) for line in (tmp_path / "sel" / "scores.jsonl").read_text().splitlines()]
    trainer = LLMTrainer(config(tmp_path, k=4, rollouts=3, temperature=1.5, max_new_tokens=4, seed=7,
                                rewards=cfg.rewards), load_backbone("qwen2_5_vl", str(tmp_path / "qwen"), device="cpu"),
                         samples)
    for i, record in enumerate(scores):
        group = trainer.rollout(0, i)  # epoch 0: the adapters are still zero, so the policy is the base model
        assert record["rewards"] == group.rewards.tolist()
        assert record["kept"] == bool(group.rewards.max() > group.rewards.min())
    assert len({r for record in scores for r in record["rewards"]}) > 3  # other answers would score otherwise
    kept = (tmp_path / "sel" / "kept.jsonl").read_text().splitlines()
    assert len(kept) == sum(r["kept"] for r in scores)


def test_gradient_checkpointing_keeps_fewer_activations_and_gives_the_same_gradients(samples, tmp_path):
    grads, kept = {}, {}
    for on in (False, True):
        backbone = tiny(8)
        torch.manual_seed(0)  # the same LoRA A initialisation both times
        trainer = LLMTrainer(config(tmp_path / str(on), gradient_checkpointing=on), backbone, samples)
        group = trainer.rollout(0, 2)
        weights = {p.untyped_storage().data_ptr() for p in backbone.net.parameters()}
        saved = {}

        def keep(t):  # activations the autograd graph holds on to (weights excluded)
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss, _ = trainer.loss(group, torch.tensor([1.0, -0.5, -0.5]))
        loss.backward()
        kept[on] = sum(saved.values())
        grads[on] = [p.grad.clone() for p in trainer.params]
        assert not backbone.net.training  # back in eval mode: sampling keeps its KV cache
    assert kept[True] < 0.5 * kept[False], kept
    assert all(g.abs().sum() > 0 for g in grads[True][1::2])  # lora_B of every layer gets a gradient
    for plain, checkpointed in zip(grads[False], grads[True]):
        torch.testing.assert_close(checkpointed, plain)


def test_train_llm_drops_the_questions_of_a_broken_video_and_trains_on_the_rest(rows, tmp_path, caplog):
    from tspo_eval.training.llm_grpo import run_llm_training

    tiny(9).save_pretrained(tmp_path / "qwen")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "video": str(broken)}]))
    cfg = config(tmp_path, data=str(data), backbone="qwen2_5_vl", backbone_path=str(tmp_path / "qwen"), k=2,
                 rollouts=2, max_new_tokens=2, max_steps=None)
    with caplog.at_level("WARNING"):
        history = run_llm_training(cfg)
    assert [m["step"] for m in history] == [1, 2, 3]  # the three good questions, one per step
    failed = json.loads((tmp_path / "run" / "failed_videos.json").read_text())
    assert list(failed) == [str(broken)] and "1 videos do not open" in caplog.text
    data.write_text(json.dumps({**rows[0], "video": str(broken)}) + "\n")
    with pytest.raises(ValueError, match="no sample has a video that opens"):
        run_llm_training(cfg)
