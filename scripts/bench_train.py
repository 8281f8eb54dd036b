"""Speed of one TSPO training step: our trainer against the published step structure, in one run.

One step = one question: CLIP features of its 128 candidates -> G rollouts of K frames
(Gumbel-top-k) -> the frozen LLaVA-Video answers each rollout -> rewards -> advantages ->
loss -> backward -> AdamW step.  Both ways use the same backbone object (random weights,
full-size architecture with `--size 7b`), the same agent architecture and the same questions
in the same order (one video per question, so nothing is reused across steps):

  published  built from our modules in the published structure (tspo_trainer.compute_loss):
             every step the candidates decoded from the file (`load_video`: decord, one
             thread, one get_batch) and CLIP-encoded (`extract_clip_features`: a PIL image per
             frame, CLIPProcessor on the CPU); per rollout the head's logits recomputed, the
             rollout's frames preprocessed on the CPU (LLaVA-NeXT's SigLipImageProcessor), the
             vision tower re-run, one batch-1 greedy `generate` with logits at every prompt
             position (as `bench_answer.py`'s published path); per rollout a forward with grad
             for the per-frame (`official`) loss, summed, one backward
  ours       `Trainer.train()` with a `BackboneEnvironment` (as `tspo-eval train`): cached CLIP
             features, the union of the rollouts' frames decoded and vision-encoded once, the G
             queries in one call, the letter read from the first-token logits

The published code decodes greedily with max_new_tokens=256 and stops at EOS; a trained
LLaVA-Video answers "<letter><|im_end|>" (2 tokens) to its "answer with the option's letter"
prompt, while random weights never emit EOS, so `--published-new-tokens` defaults to 2 (pass
256 for the cap charged in full).  Ours' CLIP extraction happens once per video before
training (`EpisodeBuilder.prepare`); it is timed and also reported amortised over one
question per video.  Medians over `--steps` steps after one warm-up step; writes JSON.

    python scripts/bench_train.py --size 7b --device cuda --out benchmarks/train_h200.json
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_answer import published_forward, published_pixels
from bench_extract import make_video, published_image_features

from tspo_eval.agent import TemporalHead, random_agent
from tspo_eval.backbones import VideoQuery
from tspo_eval.backbones.llava_video import random_llava_video
from tspo_eval.cache import FeatureCache
from tspo_eval.training.config import TrainConfig
from tspo_eval.training.data import MC_INSTRUCTION, EpisodeBuilder, Sample
from tspo_eval.training.environment import BackboneEnvironment
from tspo_eval.training.grpo import (
    Rollouts,
    group_advantages,
    gumbel_topk,
    logprob,
    policy_loss,
    tau_at,
)
from tspo_eval.training.rewards import Group, score_group
from tspo_eval.training.rollout import sample_seed
from tspo_eval.training.trainer import Trainer, step_samples
from tspo_eval.video import iter_frames

PUBLISHED_MAX_NEW_TOKENS = 256  # tspo_trainer.compute_loss: generate(do_sample=False, max_new_tokens=256)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_samples(videos: list[Path]) -> list[Sample]:
    """One multiple-choice question with a ground-truth span per video (both rewards apply)."""
    options = ("a red scene", "a blue scene", "a moving pattern", "nothing")
    samples = []
    for i, path in enumerate(videos):
        stem = f"What is shown in scene {i + 1} of the video?"
        prompt = stem + "".join(f"\n{chr(65 + j)}. {o}" for j, o in enumerate(options)) + MC_INSTRUCTION
        samples.append(Sample(id=f"q{i}", video=str(path), kind="multiple_choice", question=stem, prompt=prompt,
                              options=options, answer="ABCD"[i % 4], span=(10.0 + 5 * i, 30.0 + 5 * i)))
    return samples


class Published:
    """The published step structure, from the project's modules (no published code)."""

    def __init__(self, cfg: TrainConfig, agent, head: TemporalHead, builder: EpisodeBuilder, backbone,
                 new_tokens: int, device: torch.device) -> None:
        self.cfg, self.agent, self.head, self.builder = cfg, agent, head, builder
        self.backbone, self.new_tokens, self.device = backbone, new_tokens, device
        self.optimizer = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=cfg.lr)
        from transformers import CLIPImageProcessor

        self.clip_processor = CLIPImageProcessor()  # CLIPProcessor's image half, OpenAI CLIP settings

    def step(self, sample: Sample, index: int, step: int, total: int) -> dict[str, float]:
        cfg, g_num = self.cfg, self.cfg.rollouts
        seed = sample_seed(cfg.seed, 0, index)
        episode = self.builder.build(sample, np.random.default_rng(seed))  # positions, timestamps, target only
        tau = tau_at(step, total, cfg.tau_start, cfg.tau_end)
        t0 = time.perf_counter()
        frames = next(iter_frames(episode.videos[0], episode.frame_numbers, batch_size=len(episode.frame_numbers),
                                  backend="decord", num_threads=1))  # decoded every step
        t_decode = time.perf_counter() - t0
        with torch.no_grad():  # CLIP every step
            feats = published_image_features(self.agent, self.clip_processor, frames).to(self.device)
            text = self.agent.encode_text([sample.question])[0].to(self.device)
        sync(self.device)
        t_clip = time.perf_counter() - t0 - t_decode
        timings = self.backbone.timings
        generator = torch.Generator().manual_seed(seed)
        draws, completions = [], []
        for _ in range(g_num):
            with torch.no_grad():
                logits = self.head(feats, text) / tau  # recomputed per rollout
            draw = gumbel_topk(logits, cfg.k, 1, generator)[0]
            chosen = np.sort(draw.cpu().numpy())
            query = VideoQuery(frames[chosen], episode.timestamps[chosen].tolist(), sample.prompt)  # no identity
            with torch.inference_mode():
                with timings("preprocess"):
                    pixels = published_pixels(frames[chosen], self.backbone.image_size).to(self.device)
                with timings("vision"):
                    features = self.backbone.encode_pixels(pixels.to(self.backbone.dtype))
                with published_forward(self.backbone, features):
                    completions += self.backbone.generate([query], max_new_tokens=self.new_tokens)
            draws.append(draw)
        selections = [np.sort(d.cpu().numpy()) for d in draws]
        group = Group(sample, completions, selections, episode.timestamps, episode.target, episode.duration)
        rewards, _ = score_group(group, cfg.rewards)
        advantages = group_advantages(torch.as_tensor(rewards, dtype=torch.float32), cfg.adv_eps).to(self.device)
        total_loss = torch.zeros((), device=self.device)
        for g, draw in enumerate(draws):  # a forward with grad per rollout, one backward of the sum
            logits = self.head(feats, text) / tau
            rollout = Rollouts(draw[None], logprob(logits.detach(), draw[None], "official"), logits.detach())
            loss, _ = policy_loss(logits, rollout, advantages[g:g + 1], "official")
            total_loss = total_loss + loss / g_num
        total_loss.backward()
        torch.nn.utils.clip_grad_norm_(self.head.parameters(), cfg.max_grad_norm or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"decode": t_decode, "clip": t_clip, "frames_encoded": float(g_num * cfg.k)}


def summary(times: list[float], extras: list[dict[str, float]], device: torch.device) -> dict:
    """Medians of the timed steps (the warm-up step already dropped) and the peak GPU memory."""
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    keys = sorted({k for e in extras for k in e})
    return {"steps": len(times), "s_per_step": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "all_s": times, "peak_gpu_gib": None if peak is None else peak / 2**30,
            "median_per_step": {k: statistics.median(e.get(k, 0.0) for e in extras) for k in keys}}


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "7b"], default="tiny", help="LLaVA-Video architecture (random weights)")
    ap.add_argument("--agent", default=None, help="agent config (default: clip-vit-l-14 for 7b, clip-tiny for tiny)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (questions), after one warm-up step")
    ap.add_argument("--minutes", type=float, default=2.5, help="video length (2.5 min at 1 fps > 128: 128 uniform)")
    ap.add_argument("--rollouts", type=int, default=8, help="G")
    ap.add_argument("--k", type=int, default=16, help="K frames per rollout")
    ap.add_argument("--candidates", type=int, default=128)
    ap.add_argument("--published-new-tokens", type=int, default=2,
                    help=f"tokens per published generate (published cap {PUBLISHED_MAX_NEW_TOKENS}, stops at EOS)")
    ap.add_argument("--attn", default=None, help="attention implementation (default: the backbone's)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_train")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = a.steps + 1
    a.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(min(n, 8)) as pool:
        videos = list(pool.map(lambda i: make_video(a.workdir / f"video{i}_{a.minutes}min.mp4", a.minutes), range(n)))
    videos_s = time.perf_counter() - t0
    samples = make_samples(videos)
    t0 = time.perf_counter()
    backbone = random_llava_video(a.size, dtype=dtype, device=device, attn_implementation=a.attn)
    agent = random_agent(a.agent or ("clip-vit-l-14" if a.size == "7b" else "clip-tiny"), torch_dtype=dtype,
                         device=device)
    build_s = time.perf_counter() - t0
    published_head = copy.deepcopy(agent.selector).float().requires_grad_(True)  # same start as ours

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(environment="backbone", backbone_path=f"random:{a.size}", rollouts=a.rollouts, k=a.k,
                          grad_accum=1, max_candidates=a.candidates, save_every=10**9, output_dir=f"{tmp}/run",
                          cache=f"{tmp}/cache", device=str(device), answer_from="logits")
        builder = EpisodeBuilder(None, agent.encoder, FeatureCache(cfg.cache), cfg.max_candidates, cfg.min_candidates)
        sync(device)
        t0 = time.perf_counter()
        builder.prepare(samples, progress=False)  # ours: CLIP features once per video, before training
        sync(device)
        extraction_s = (time.perf_counter() - t0) / n
        order = [step_samples(cfg, s, n, 0, 1)[0][1] for s in range(n)]  # the trainer's question order

        # published: warm-up step + timed steps
        published = Published(cfg, agent, published_head, builder, backbone, a.published_new_tokens, device)
        reset_peak(device)
        times, extras = [], []
        for s, index in enumerate(order):
            before = dict(backbone.timings.seconds)
            sync(device)
            t0 = time.perf_counter()
            extra = published.step(samples[index], index, s, n)
            sync(device)
            times.append(time.perf_counter() - t0)
            now = dict(backbone.timings.seconds)
            extras.append({**extra, **{k: v - before.get(k, 0.0) for k, v in now.items()}})
        runs = {"published": summary(times[1:], extras[1:], device)}

        # ours: the real trainer loop; step times between its per-step callbacks
        backbone.clear_vision_cache()
        env = BackboneEnvironment(backbone, cfg.answer_from, cfg.max_new_tokens, cfg.answer_batch)
        trainer = Trainer(cfg, agent, samples, builder, env, device)
        reset_peak(device)
        marks, extras, last = [], [], [dict(backbone.timings.seconds)]

        def callback(step: int, groups, metrics: dict[str, float]) -> None:
            sync(device)
            marks.append(time.perf_counter())
            now = dict(backbone.timings.seconds)
            union = sum(len(np.unique(np.concatenate(g.rollouts.selections))) for g in groups)
            extras.append({"frames_encoded": float(union), **{k: v - last[0].get(k, 0.0) for k, v in now.items()}})
            last[0] = now

        sync(device)
        start = time.perf_counter()
        trainer.train(callback)
        times = np.diff([start, *marks]).tolist()
        runs["ours"] = summary(times[1:], extras[1:], device)

    ratio = runs["published"]["s_per_step"] / runs["ours"]["s_per_step"]
    ratio_amortised = runs["published"]["s_per_step"] / (runs["ours"]["s_per_step"] + extraction_s)
    result = {"size": a.size, "device": a.device, "dtype": str(dtype), "attn": a.attn,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "torch": torch.__version__, "rollouts": a.rollouts, "k": a.k, "candidates": a.candidates,
              "minutes": a.minutes, "published_new_tokens": a.published_new_tokens,
              "published_max_new_tokens_cap": PUBLISHED_MAX_NEW_TOKENS, "ours_answer_from": cfg.answer_from,
              "ours_extraction_s_per_video": extraction_s, "build_s": build_s, "videos_s": videos_s, "runs": runs,
              "ratio": ratio, "ratio_with_extraction_per_question": ratio_amortised, "target_ratio": 4.0,
              "command": " ".join(sys.argv)}
    print(f"{'path':10s} {'s/step':>8s} {'min':>7s} {'max':>7s} {'peak GiB':>9s} {'frames':>7s}  phases s/step")
    for name, r in runs.items():
        med = r["median_per_step"]
        gib = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
        ph = "  ".join(f"{k} {v:.3f}" for k, v in med.items() if k != "frames_encoded")
        print(f"{name:10s} {r['s_per_step']:8.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} {gib:>9s} "
              f"{med['frames_encoded']:7.0f}  {ph}")
    print(f"ratio {ratio:.2f}x (target >= 4x); with ours' CLIP extraction ({extraction_s:.3f} s/video) "
          f"charged to every question: {ratio_amortised:.2f}x")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
