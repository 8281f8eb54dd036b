"""Second mode: GRPO of the video LLM itself (Temporal-RLT, SPEC section 8), LoRA or full.

Same data, reward library and data selection as agent training; the policy is now the
LLM's answer given fixed frames (K uniform frames, lmms-eval's linspace over all frames,
or the agent's top-K).  Per question:

    query     = frames + prompt                       # decoded once
    prompt    = backbone.build_inputs([query])         # vision + text embeddings, once
    samples   = VideoPolicy.sample(prompt, G, T=1.0)    # G answers, KV-cached, rollout log-probs
    rewards   = score_group(...)                        # accuracy / temporal IoU / format
    logp      = VideoPolicy.token_logprobs(...)         # one forward with grad over the G answers
    loss      = token-mean of -min(rho A, clip(rho) A) + kl_coef * k3(ref) - entropy_coef * H

Defaults are the Temporal-RLT code's: 8 rollouts, temperature 1.0, clip 0.2, KL 1e-2 (k3),
entropy 1e-3, lr 1e-6, rewards accuracy-or-IoU 0.5 + format 0.5.  The reference policy is
the same network with the LoRA adapters switched off (LoRA), or a frozen copy (full).

The backbone must expose `build_inputs(queries) -> (embeds, mask, positions)` and `net`, a
transformers causal LM (`net.model`, `net.lm_head`): `tspo_eval.backbones.llava_video`
does.  Distribution goes through accelerate (DDP, or DeepSpeed ZeRO from an accelerate
config): the forward with grad runs through the prepared module.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..backbones import VideoQuery
from .data import Sample, read_samples
from .grpo import group_advantages
from .rewards import Group, score_group

THINK_INSTRUCTION = ("\nOutput the thinking process in <think> </think> and the final answer in "
                     "<answer> </answer> tags.")
LM_LAYERS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


@dataclass
class LLMTrainConfig:
    """GRPO of the video LLM on fixed frames."""

    data: str = field(default="", metadata={"help": "training questions (TSPO-10K / Temporal-RLT jsonl)"})
    video_root: str | None = field(default=None, metadata={"help": "folder the rows' `video` paths are relative to"})
    output_dir: str = field(default="runs/llm", metadata={"help": "checkpoints, metrics"})
    backbone: str = field(default="llava_video", metadata={"help": "registered backbone kind (needs build_inputs)"})
    backbone_path: str = field(default="", metadata={"help": "backbone checkpoint dir or hub id"})
    finetune: Literal["lora", "full"] = field(default="lora", metadata={"help": "LoRA adapters (peft) or all LM weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    frames: Literal["uniform", "agent"] = field(default="uniform", metadata={
        "help": "uniform: linspace over all frames (lmms-eval); agent: the agent's top-k"})
    agent: str = field(default="random:clip-tiny", metadata={"help": "agent for frames=agent"})
    cache: str = field(default="feature_cache", metadata={"help": "feature cache root (frames=agent)"})
    k: int = field(default=16, metadata={"help": "frames per question"})
    think: bool = field(default=False, metadata={"help": "append the <think>/<answer> instruction to prompts"})
    rollouts: int = field(default=8, metadata={"help": "G: sampled answers per question"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature"})
    max_new_tokens: int = field(default=256, metadata={"help": "answer length cap"})
    clip_eps: float = field(default=0.2, metadata={"help": "PPO ratio clipping"})
    kl_coef: float = field(default=1e-2, metadata={"help": "k3 KL to the reference policy"})
    entropy_coef: float = field(default=1e-3, metadata={"help": "entropy bonus"})
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.5, "temporal_iou": 0.5, "format": 0.5},
                                      metadata={"help": "reward name=weight"})
    adv_eps: float = field(default=1e-4, metadata={"help": "added to the group std"})
    lr: float = field(default=1e-6, metadata={"help": "AdamW learning rate, decayed linearly to 0"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    grad_accum: int = field(default=1, metadata={"help": "questions per rank per optimiser step"})
    epochs: int = field(default=1, metadata={"help": "passes over the data"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimiser steps"})
    save_every: int = field(default=500, metadata={"help": "checkpoint every N steps (and at the end)"})
    seed: int = field(default=0, metadata={"help": "seed of data order and sampling"})

    def __post_init__(self) -> None:
        from .rewards import get_rewards

        get_rewards(list(self.rewards))
        if self.finetune not in ("lora", "full") or self.frames not in ("uniform", "agent"):
            raise ValueError("finetune must be lora or full; frames uniform or agent")
        if self.rollouts < 2 or self.temperature <= 0:
            raise ValueError("need rollouts >= 2 and temperature > 0")


class VideoPolicy(nn.Module):
    """A backbone's LM as a policy over answer tokens given the query's prompt embeddings."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        if not hasattr(backbone, "build_inputs") or not hasattr(backbone, "net"):
            raise ValueError(f"backbone {type(backbone).__name__} lacks build_inputs/net: LLM training needs them")
        self.backbone = backbone
        self.net = backbone.net

    def prompt(self, query: VideoQuery) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1, P, H) embeddings, (1, P) mask and positions of the video + prompt (no grad)."""
        return self.backbone.build_inputs([query])

    def _hidden(self, embeds, mask, positions, cache=None, use_cache=False):
        out = self.net.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    @torch.no_grad()
    def sample(self, prompt: tuple[torch.Tensor, ...], num: int, temperature: float, max_new_tokens: int,
               generator: torch.Generator, eos: set[int], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`num` answers sampled at `temperature`: ids, mask (through the first EOS) and their
        per-token log-probs under the sampling policy, each (G, L)."""
        embeds, mask, positions = (t.expand(num, *t.shape[1:]) for t in prompt)
        hidden, cache = self._hidden(embeds, mask, positions, use_cache=True)
        logits = self.net.lm_head(hidden[:, -1]).float() / temperature
        done = torch.zeros(num, dtype=torch.bool, device=embeds.device)
        eos_t = torch.tensor(sorted(eos), device=embeds.device)
        ids, keep, logps = [], [], []
        step_pos = positions[:, -1:] + 1
        for _ in range(max_new_tokens):
            logp = torch.log_softmax(logits, -1)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1).masked_fill(done, pad)
            ids.append(token)
            keep.append(~done)
            logps.append(logp.gather(1, token[:, None]).squeeze(1))
            done = done | torch.isin(token, eos_t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(num, 1)], dim=1)
            hidden, cache = self._hidden(self.net.get_input_embeddings()(token[:, None]), mask, step_pos, cache, True)
            logits = self.net.lm_head(hidden[:, -1]).float() / temperature
            step_pos = step_pos + 1
        keep_t = torch.stack(keep, 1)
        return torch.stack(ids, 1), keep_t, torch.stack(logps, 1) * keep_t

    def forward(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, ids: torch.Tensor,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs and entropies (G, L) of answers `ids` after the prompt, one forward."""
        g, p = ids.shape[0], prompt_embeds.shape[1]
        embeds = torch.cat([prompt_embeds.expand(g, -1, -1), self.net.get_input_embeddings()(ids)], 1)
        mask = torch.cat([prompt_mask.expand(g, -1), torch.ones_like(ids)], 1)
        hidden, _ = self._hidden(embeds, mask, (mask.cumsum(-1) - 1).clamp(min=0))
        logits = self.net.lm_head(hidden[:, p - 1:-1]).float() / temperature  # (G, L, V): predicts ids
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, ids[..., None]).squeeze(-1), entropy


def grpo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                    entropy: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, clip_eps: float,
                    kl_coef: float, entropy_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Token-mean clipped surrogate + k3 KL - entropy bonus; every tensor (G, L) but advantages (G,)."""
    m = mask.float()
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    per_token = -surrogate - entropy_coef * entropy
    stats = {"entropy": float((entropy.detach() * m).sum() / m.sum())}
    if ref_logp is not None and kl_coef > 0:
        log_ratio = ref_logp - logp
        kl = torch.exp(log_ratio) - log_ratio - 1
        per_token = per_token + kl_coef * kl
        stats["kl"] = float((kl.detach() * m).sum() / m.sum())
    return (per_token * m).sum() / m.sum(), stats


def _lora_enabled(net: nn.Module, enabled: bool) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in net.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


def make_trainable(backbone: Any, cfg: LLMTrainConfig) -> list[nn.Parameter]:
    """LoRA adapters injected in place on the LM layers (vision tower frozen), or every LM weight."""
    net = backbone.net
    net.requires_grad_(False)
    if cfg.finetune == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                           target_modules=LM_LAYERS), net)
        return [p for n, p in net.named_parameters() if "lora_" in n]
    params = [p for n, p in net.named_parameters() if not n.startswith(("model.vision_tower", "model.mm_projector"))]
    for p in params:
        p.requires_grad_(True)
    return params


def frames_for(sample: Sample, cfg: LLMTrainConfig, root: str | None, chooser: Any = None
               ) -> tuple[VideoQuery, np.ndarray, float]:
    """The question's query (K frames), their timestamps and the video's duration."""
    from ..video import probe, read_frames

    path = sample.video if root is None or Path(sample.video).is_absolute() else str(Path(root) / sample.video)
    info = probe(path)
    if chooser is None:
        numbers = np.linspace(0, info.num_frames - 1, min(cfg.k, info.num_frames), dtype=int)
    else:
        numbers = chooser(sample)
    times = numbers / info.fps
    prompt = sample.prompt + (THINK_INSTRUCTION if cfg.think else "")
    return VideoQuery(read_frames(path, numbers), times.tolist(), prompt, video=path,
                      frame_numbers=numbers.tolist()), times, info.duration


def agent_chooser(cfg: LLMTrainConfig, root: str | None, device: torch.device):
    """frames=agent: the agent's top-k candidates of each question."""
    from ..agent import load_agent
    from ..cache import FeatureCache
    from ..selection import select
    from .data import EpisodeBuilder

    agent = load_agent(cfg.agent, device=device)
    builder = EpisodeBuilder(root, agent.encoder, FeatureCache(cfg.cache))

    def choose(sample: Sample) -> np.ndarray:
        ep = builder.build(sample, np.random.default_rng(0))
        return ep.frame_numbers[select(agent.score(ep.features, ep.text), cfg.k, "topk")]
    return choose


class LLMTrainer:
    """GRPO of the video LLM, one explicit loop (`train`)."""

    def __init__(self, cfg: LLMTrainConfig, backbone: Any, samples: list[Sample], chooser: Any = None) -> None:
        from accelerate import Accelerator

        from .trainer import total_steps

        self.cfg, self.samples, self.chooser = cfg, samples, chooser
        self.accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                                       cpu=backbone.device.type == "cpu")
        self.params = make_trainable(backbone, cfg)
        self.policy = VideoPolicy(backbone)
        self.ref_net = (copy.deepcopy(backbone.net).requires_grad_(False)
                        if cfg.finetune == "full" and cfg.kl_coef > 0 else None)
        self.steps = total_steps(cfg, len(samples), self.accelerator.num_processes)
        optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.optimizer = self.accelerator.prepare(self.policy, optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer,
                                                           lambda s: max(0.0, 1 - s / self.steps))
        tok = backbone.tokenizer
        self.eos = set(getattr(backbone, "eos_token_ids", set())) | {tok.eos_token_id} - {None}
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else min(self.eos)
        self.out = Path(cfg.output_dir)

    def reference_logp(self, prompt, ids) -> torch.Tensor | None:
        """Token log-probs under the reference policy (LoRA off, or the frozen copy)."""
        if self.cfg.kl_coef <= 0:
            return None
        with torch.no_grad():
            if self.ref_net is not None:
                live, self.policy.net = self.policy.net, self.ref_net
                logp = self.policy(prompt[0], prompt[1], ids, self.cfg.temperature)[0]
                self.policy.net = live
                return logp
            _lora_enabled(self.policy.net, False)
            logp = self.policy(prompt[0], prompt[1], ids, self.cfg.temperature)[0]
            _lora_enabled(self.policy.net, True)
            return logp

    def group(self, epoch: int, index: int) -> dict[str, Any]:
        """Sample G answers to one question and score them (no grad)."""
        from .trainer import sample_seed

        seed = sample_seed(self.cfg.seed, epoch, index)
        sample = self.samples[index]
        query, times, duration = frames_for(sample, self.cfg, self.cfg.video_root, self.chooser)
        prompt = self.policy.prompt(query)
        gen = torch.Generator(device=prompt[0].device).manual_seed(seed)
        ids, mask, old_logp = self.policy.sample(prompt, self.cfg.rollouts, self.cfg.temperature,
                                                 self.cfg.max_new_tokens, gen, self.eos, self.pad)
        texts = [self.policy.backbone.tokenizer.decode(row[m].tolist(), skip_special_tokens=True)
                 for row, m in zip(ids, mask)]
        positions = np.arange(len(times))
        rewards, per_reward = score_group(Group(sample, texts, [positions] * len(texts), times, None, duration),
                                          self.cfg.rewards)
        adv = group_advantages(torch.as_tensor(rewards, dtype=torch.float32), self.cfg.adv_eps).to(ids.device)
        return {"prompt": prompt, "ids": ids, "mask": mask, "old_logp": old_logp, "adv": adv, "rewards": rewards,
                "texts": texts, "per_reward": per_reward}

    def loss(self, g: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        logp, entropy = self.model(g["prompt"][0], g["prompt"][1], g["ids"], self.cfg.temperature)
        return grpo_token_loss(logp, g["old_logp"], self.reference_logp(g["prompt"], g["ids"]), entropy,
                               g["mask"], g["adv"], self.cfg.clip_eps, self.cfg.kl_coef, self.cfg.entropy_coef)

    def train(self) -> list[dict[str, float]]:
        from .trainer import step_samples

        history = []
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        for step in tqdm(range(self.steps), desc="train-llm", disable=rank != 0):
            stats: dict[str, list[float]] = {}
            for epoch, index in step_samples(self.cfg, step, len(self.samples), rank, world):
                g = self.group(epoch, index)
                with self.accelerator.accumulate(self.model):
                    loss, extra = self.loss(g)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                for key, value in {"loss": float(loss.detach()), "reward": float(g["rewards"].mean()),
                                   "reward_std": float(g["rewards"].std(ddof=1)), **extra}.items():
                    stats.setdefault(key, []).append(value)
            self.scheduler.step()
            metrics = {k: float(self.accelerator.reduce(torch.tensor(np.mean(v), device=self.accelerator.device),
                                                        "mean")) for k, v in sorted(stats.items())}
            metrics["step"] = step + 1
            history.append(metrics)
            if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.steps:
                self.save(step + 1)
        return history

    def save(self, step: int) -> Path:
        """Trainable weights (LoRA adapters in peft's naming, or the LM) and the run config."""
        self.accelerator.wait_for_everyone()
        path = self.out / "checkpoints" / f"step-{step:06d}"
        if self.accelerator.is_main_process:
            path.mkdir(parents=True, exist_ok=True)
            net = self.policy.net
            if self.cfg.finetune == "lora":
                from peft import get_peft_model_state_dict

                state = {f"base_model.model.{k}": v for k, v in get_peft_model_state_dict(net).items()}
                save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                          str(path / "adapter_model.safetensors"))
                (path / "adapter_config.json").write_text(json.dumps(
                    {"peft_type": "LORA", "r": self.cfg.lora_r, "lora_alpha": self.cfg.lora_alpha,
                     "lora_dropout": self.cfg.lora_dropout, "target_modules": LM_LAYERS}, indent=1))
            else:
                save_file({n: p.detach().cpu().contiguous() for n, p in net.named_parameters() if p.requires_grad},
                          str(path / "trainable.safetensors"))
            (path / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
        self.accelerator.wait_for_everyone()
        return path


def load_trainable(backbone: Any, checkpoint: str | Path) -> None:
    """Put a checkpoint's LoRA adapters (already injected) or trained LM weights on `backbone.net`."""
    path = Path(checkpoint)
    if (path / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        state = load_file(str(path / "adapter_model.safetensors"))
        set_peft_model_state_dict(backbone.net, {k.removeprefix("base_model.model."): v for k, v in state.items()})
    else:
        backbone.net.load_state_dict(load_file(str(path / "trainable.safetensors")), strict=False)


def _load(cfg: Any, device: torch.device):
    from ..backbones import load_backbone

    return load_backbone(cfg.backbone, cfg.backbone_path, device=device)


def run_llm_training(cfg: LLMTrainConfig) -> list[dict[str, float]]:
    """`tspo-eval train-llm`."""
    from accelerate import PartialState

    if not cfg.data or not cfg.backbone_path:
        raise ValueError("--data and --backbone-path are required")
    device = PartialState().device
    backbone = _load(cfg, device)
    chooser = agent_chooser(cfg, cfg.video_root, device) if cfg.frames == "agent" else None
    return LLMTrainer(cfg, backbone, read_samples(cfg.data), chooser).train()


def llm_group_rewards(cfg: Any):
    """select-data with policy=llm: N sampled answers per sample on K uniform frames."""
    from .. import distributed

    device = distributed.local_device()
    backbone = _load(cfg, device)
    policy = VideoPolicy(backbone)
    llm_cfg = LLMTrainConfig(k=cfg.k, rollouts=cfg.runs, rewards=dict(cfg.rewards))
    tok = backbone.tokenizer
    eos = set(getattr(backbone, "eos_token_ids", set())) | {tok.eos_token_id} - {None}

    def group_rewards(index: int, sample: Sample) -> np.ndarray:
        query, times, duration = frames_for(sample, llm_cfg, cfg.video_root)
        prompt = policy.prompt(query)
        gen = torch.Generator(device=prompt[0].device).manual_seed(cfg.seed * 1_000_003 + index)
        ids, mask, _ = policy.sample(prompt, cfg.runs, cfg.temperature, cfg.max_new_tokens, gen, eos,
                                     tok.pad_token_id if tok.pad_token_id is not None else min(eos))
        texts = [tok.decode(r[m].tolist(), skip_special_tokens=True) for r, m in zip(ids, mask)]
        group = Group(sample, texts, [np.arange(len(times))] * len(texts), times, None, duration)
        return score_group(group, cfg.rewards)[0]

    return group_rewards


__all__ = ["LLMTrainConfig", "LLMTrainer", "VideoPolicy", "grpo_token_loss", "load_trainable", "make_trainable",
           "run_llm_training"]
