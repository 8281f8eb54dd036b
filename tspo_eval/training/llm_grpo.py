"""Second mode: GRPO of the video LLM itself (Temporal-RLT, SPEC section 8), LoRA or full.

Same data, reward library and data selection as agent training; the policy is now the
LLM's answer given fixed frames (K uniform frames, lmms-eval's linspace over all frames,
or the agent's top-K).  One optimiser step (`LLMTrainer.train`), per question:

    query   = frames_for(sample)                          # K frames decoded once, real timestamps
    rollout = answer_group(policy, sample, query, ...)    # prompt once, G answers sampled (KV cache,
                                                          # no grad), decoded, rewards (accuracy /
                                                          # temporal IoU / format, weighted)
    adv     = group_advantages(rollout.rewards)           # (r - mean) / (std + eps)
    logp, H = model(prompt, answers)                      # one forward with grad over the G answers
    ref     = reference_logp(prompt, answers)             # LoRA off, or the frozen copy
    loss    = grpo_token_loss(...)                        # token mean of -min(rho A, clip(rho) A)
                                                          # + kl_coef * k3(ref) - entropy_coef * H

Defaults are the Temporal-RLT code's: 8 rollouts, temperature 1.0, clip 0.2, KL 1e-2 (k3),
entropy 1e-3, lr 1e-6, rewards accuracy-or-IoU 0.5 + format 0.5.

The backbone must expose `build_inputs(queries) -> (embeds, mask, positions)`, `net` (a
transformers causal LM: `net.model`, `net.lm_head`) and `vision_modules` (the frozen vision
parameters): `llava_video` and `qwen2_5_vl` do.  Qwen2.5-VL's positions are its (3, B, L)
rotary positions with the frames' real timestamps, built by the backbone exactly as when it
answers.  Distribution goes through accelerate (DDP, or DeepSpeed ZeRO from an accelerate
config): the forward with grad runs through the prepared module; under DeepSpeed a
checkpoint also holds DeepSpeed's own (optimizer) state.
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..backbones import VideoQuery
from ..backbones.base import PhaseTimer
from .config import LLMTrainConfig
from .data import Sample, read_samples
from .grpo import group_advantages
from .rewards import Group, score_group

log = logging.getLogger(__name__)

THINK_INSTRUCTION = ("\nOutput the thinking process in <think> </think> and the final answer in "
                     "<answer> </answer> tags.")
# Attention and MLP projections of the language model only: `model.layers` (LLaVA-Video),
# `model.language_model.layers` (Qwen2.5-VL, whose vision blocks also have `mlp.*_proj`).
LM_LAYERS = r"model\.(language_model\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
Prompt = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # embeds (1, P, H), mask (1, P), positions (..., 1, P)


class VideoPolicy(nn.Module):
    """A backbone's LM as a policy over answer tokens given the query's prompt embeddings.

    Positions are whatever the backbone builds: (B, L) for LLaVA-Video, (3, B, L) rotary
    positions carrying the frames' real times for Qwen2.5-VL; answer tokens continue from
    the prompt's last position, on every axis.
    """

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        if not hasattr(backbone, "build_inputs") or not hasattr(backbone, "net"):
            raise ValueError(f"backbone {type(backbone).__name__} lacks build_inputs/net: LLM training needs them")
        self.backbone = backbone
        self.net = backbone.net
        tok = backbone.tokenizer
        self.eos = sorted(set(getattr(backbone, "eos_token_ids", ())) | {tok.eos_token_id} - {None})
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos[0]

    def prompt(self, query: VideoQuery) -> Prompt:
        """Embeddings (1, P, H), mask (1, P) and positions (..., 1, P) of the video + prompt (no grad)."""
        return self.backbone.build_inputs([query])

    def _hidden(self, embeds, mask, positions, cache=None, use_cache=False):
        out = self.net.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=use_cache)
        return out.last_hidden_state, out.past_key_values

    @torch.no_grad()
    def sample(self, prompt: Prompt, num: int, temperature: float, max_new_tokens: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`num` answers sampled at `temperature`: ids, mask (through the first EOS) and their
        per-token log-probs under the sampling policy, each (G, L)."""
        embeds, mask, positions = expand_prompt(prompt, num)
        hidden, cache = self._hidden(embeds, mask, positions, use_cache=True)
        logits = self.net.lm_head(hidden[:, -1]).float() / temperature
        done = torch.zeros(num, dtype=torch.bool, device=embeds.device)
        eos_t = torch.tensor(self.eos, device=embeds.device)
        ids, keep, logps = [], [], []
        for step in range(max_new_tokens):
            logp = torch.log_softmax(logits, -1)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1).masked_fill(done, self.pad)
            ids.append(token)
            keep.append(~done)
            logps.append(logp.gather(1, token[:, None]).squeeze(1))
            done = done | torch.isin(token, eos_t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(num, 1)], dim=1)
            hidden, cache = self._hidden(self.net.get_input_embeddings()(token[:, None]), mask,
                                         positions[..., -1:] + step + 1, cache, True)
            logits = self.net.lm_head(hidden[:, -1]).float() / temperature
        keep_t = torch.stack(keep, 1)
        return torch.stack(ids, 1), keep_t, torch.stack(logps, 1) * keep_t

    def decode(self, ids: torch.Tensor, mask: torch.Tensor) -> list[str]:
        """The answers' text (tokens through the first EOS, special tokens dropped)."""
        return [self.backbone.tokenizer.decode(row[m].tolist(), skip_special_tokens=True) for row, m in zip(ids, mask)]

    def forward(self, prompt_embeds: torch.Tensor, prompt_mask: torch.Tensor, prompt_positions: torch.Tensor,
                ids: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs and entropies (G, L) of answers `ids` after the prompt, one forward."""
        g, p, length = ids.shape[0], prompt_embeds.shape[1], ids.shape[1]
        embeds, mask, positions = expand_prompt((prompt_embeds, prompt_mask, prompt_positions), g)
        embeds = torch.cat([embeds, self.net.get_input_embeddings()(ids)], 1)
        mask = torch.cat([mask, torch.ones_like(ids)], 1)
        steps = torch.arange(1, length + 1, device=positions.device)
        positions = torch.cat([positions, positions[..., -1:] + steps], -1)
        hidden, _ = self._hidden(embeds, mask, positions)
        logits = self.net.lm_head(hidden[:, p - 1:-1]).float() / temperature  # (G, L, V): predicts ids
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1)
        return logp.gather(-1, ids[..., None]).squeeze(-1), entropy


def expand_prompt(prompt: Prompt, num: int) -> Prompt:
    """One prompt repeated `num` times along the batch axis (axis 0; -2 of the positions)."""
    embeds, mask, positions = prompt
    return (embeds.expand(num, -1, -1), mask.expand(num, -1),
            positions.expand(*positions.shape[:-2], num, positions.shape[-1]))


@dataclass
class AnswerGroup:
    """G sampled answers to one question and their rewards: GRPO's rollout."""

    prompt: Prompt
    ids: torch.Tensor  # (G, L) answer tokens
    mask: torch.Tensor  # (G, L) through the first EOS
    old_logp: torch.Tensor  # (G, L) log-probs under the sampling policy
    texts: list[str]
    rewards: np.ndarray  # (G,) weighted sum
    per_reward: dict[str, list[float | None]]


def answer_group(policy: VideoPolicy, sample: Sample, query: VideoQuery, times: np.ndarray, duration: float,
                 num: int, temperature: float, max_new_tokens: int, seed: int,
                 weights: dict[str, float]) -> AnswerGroup:
    """Prompt once, sample `num` answers (KV-cached, no grad), decode and score them."""
    prompt = policy.prompt(query)
    generator = torch.Generator(device=prompt[0].device).manual_seed(seed)
    ids, mask, old_logp = policy.sample(prompt, num, temperature, max_new_tokens, generator)
    texts = policy.decode(ids, mask)
    group = Group(sample, texts, [np.arange(len(times))] * num, np.asarray(times), None, duration)
    rewards, per_reward = score_group(group, weights)
    return AnswerGroup(prompt, ids, mask, old_logp, texts, rewards, per_reward)


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
    """LoRA adapters injected in place on the LM layers, or every LM weight; the backbone's
    `vision_modules` stay frozen.  Adapters are kept in float32 whatever the model's dtype
    (a 1e-6 step vanishes in bf16); DeepSpeed's bf16 mode keeps its own fp32 master copy."""
    net = backbone.net
    net.requires_grad_(False)
    if cfg.finetune == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                           target_modules=LM_LAYERS), net)
        params = [p for n, p in net.named_parameters() if "lora_" in n]
        for param in params:
            param.data = param.data.float()
        for module in net.modules():  # under autocast the 16-bit input goes in as is: no float32 copy kept
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
        return params
    frozen = tuple(backbone.vision_modules)
    if not frozen:
        raise ValueError(f"backbone {type(backbone).__name__} names no vision_modules to keep frozen")
    params = [p for n, p in net.named_parameters() if not n.startswith(frozen)]
    for p in params:
        p.requires_grad_(True)
    return params


def video_path(sample: Sample, root: str | None) -> str:
    """The sample's video file (`video` is relative to `root` unless absolute)."""
    return sample.video if root is None or Path(sample.video).is_absolute() else str(Path(root) / sample.video)


def usable_samples(samples: list[Sample], root: str | None) -> tuple[list[Sample], dict[str, str]]:
    """The samples whose video opens, and {video: why} for those that do not (their samples are dropped)."""
    from ..video import probe

    failed: dict[str, str] = {}
    for path in sorted({video_path(s, root) for s in samples}):
        try:
            probe(path)
        except (OSError, ValueError, RuntimeError) as err:  # VideoError is a RuntimeError
            failed[path] = f"{type(err).__name__}: {err}"
    return [s for s in samples if video_path(s, root) not in failed], failed


def frames_for(sample: Sample, cfg: LLMTrainConfig, root: str | None, chooser: Any = None
               ) -> tuple[VideoQuery, np.ndarray, float]:
    """The question's query (K frames with their real timestamps), the timestamps and the video's duration."""
    from ..selection.methods import uniform_frames
    from ..video import probe, read_frames

    path = video_path(sample, root)
    info = probe(path)
    if chooser is None:
        numbers = uniform_frames(info.num_frames, info.fps, cfg.k)  # the uniform rule of every entry point
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
    from ..selection.methods import select
    from .data import EpisodeBuilder

    agent = load_agent(cfg.agent, device=device)
    builder = EpisodeBuilder(root, agent.encoder, FeatureCache(cfg.cache), decode_resize=cfg.decode_resize,
                             extract=cfg.extract)

    def choose(sample: Sample) -> np.ndarray:
        ep = builder.build(sample, np.random.default_rng(0))
        return ep.frame_numbers[select(agent.score(ep.features, ep.text), cfg.k, "topk")]
    return choose


class LLMTrainer:
    """GRPO of the video LLM: `train` is the loop, one optimiser step per iteration."""

    def __init__(self, cfg: LLMTrainConfig, backbone: Any, samples: list[Sample], chooser: Any = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        from .trainer import total_steps

        self.cfg, self.samples, self.chooser = cfg, samples, chooser
        # cpu=True (which also turns DeepSpeed off) only to keep a CPU backbone on the CPU of a GPU machine.
        self.accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                                       cpu=backbone.device.type == "cpu" and torch.cuda.is_available())
        self.deepspeed = self.accelerator.distributed_type == DistributedType.DEEPSPEED
        self.params = make_trainable(backbone, cfg)
        if cfg.gradient_checkpointing:
            backbone.net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.policy = VideoPolicy(backbone)
        self.ref_net = (copy.deepcopy(backbone.net).requires_grad_(False)
                        if cfg.finetune == "full" and cfg.kl_coef > 0 else None)
        self.steps = total_steps(cfg, len(samples), self.accelerator.num_processes)
        self.adamw = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        # the schedule drives the plain AdamW's param groups, which DeepSpeed's optimizer steps too
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.adamw, lambda s: max(0.0, 1 - s / self.steps))
        self.model, self.optimizer = self.accelerator.prepare(self.policy, self.adamw)
        self.out = Path(cfg.output_dir)
        self.start_step = 0
        self.timer = PhaseTimer()

    # ------------------------------------------------------------------ one question
    def autocast(self) -> torch.autocast:
        """Every forward runs in the model's 16-bit dtype: the float32 adapters' matmuls too (under
        DeepSpeed they are cast to bf16 anyway, with float32 master copies in its optimizer)."""
        dtype = self.policy.backbone.dtype
        return torch.autocast(self.accelerator.device.type, dtype=dtype,
                              enabled=dtype in (torch.bfloat16, torch.float16))

    def rollout(self, epoch: int, index: int) -> AnswerGroup:
        """The question's frames, G sampled answers and their rewards (no grad)."""
        from .trainer import sample_seed

        sample = self.samples[index]
        query, times, duration = frames_for(sample, self.cfg, self.cfg.video_root, self.chooser)
        with self.autocast():
            return answer_group(self.policy, sample, query, times, duration, self.cfg.rollouts, self.cfg.temperature,
                                self.cfg.max_new_tokens, sample_seed(self.cfg.seed, epoch, index), self.cfg.rewards)

    def reference_logp(self, prompt: Prompt, ids: torch.Tensor) -> torch.Tensor | None:
        """Token log-probs under the reference policy (LoRA off, or the frozen copy)."""
        if self.cfg.kl_coef <= 0:
            return None
        with torch.no_grad(), self.autocast():
            if self.ref_net is not None:
                live, self.policy.net = self.policy.net, self.ref_net
                logp = self.policy(*prompt, ids, self.cfg.temperature)[0]
                self.policy.net = live
                return logp
            _lora_enabled(self.policy.net, False)
            logp = self.policy(*prompt, ids, self.cfg.temperature)[0]
            _lora_enabled(self.policy.net, True)
            return logp

    def loss(self, g: AnswerGroup, advantages: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The GRPO token loss of one question's answers (forward with grad through the prepared model)."""
        self.policy.net.train(self.cfg.gradient_checkpointing)  # transformers checkpoints in training mode only
        try:
            with self.autocast():
                logp, entropy = self.model(*g.prompt, g.ids, self.cfg.temperature)
        finally:
            self.policy.net.eval()  # sampling keeps its KV cache
        return grpo_token_loss(logp, g.old_logp, self.reference_logp(g.prompt, g.ids), entropy, g.mask, advantages,
                               self.cfg.clip_eps, self.cfg.kl_coef, self.cfg.entropy_coef)

    # ------------------------------------------------------------------ the loop
    def train(self, callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run to the last step (from the newest checkpoint with `resume`); returns the metrics."""
        from .trainer import log_metrics, metrics_writer, step_samples

        if self.cfg.resume:
            self.load_latest()
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        main = self.accelerator.is_main_process
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        writer = metrics_writer(self.out, self.start_step) if main else None
        history = []
        for step in tqdm(range(self.start_step, self.steps), desc="train-llm", disable=not main,
                         initial=self.start_step, total=self.steps):
            self.timer.reset()
            lr = self.scheduler.get_last_lr()[0]
            stats: dict[str, list[float]] = {}
            for epoch, index in step_samples(self.cfg, step, len(self.samples), rank, world):
                with self.timer("rollout"):
                    g = self.rollout(epoch, index)
                    adv = group_advantages(torch.as_tensor(g.rewards, dtype=torch.float32),
                                           self.cfg.adv_eps).to(g.ids.device)
                with self.timer("update"), self.accelerator.accumulate(self.model):
                    loss, extra = self.loss(g, adv)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        norm = self.accelerator.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
                        extra["grad_norm"] = float("nan") if norm is None else float(norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                for key, value in {**self.group_stats(g), "loss": float(loss.detach()), **extra}.items():
                    stats.setdefault(key, []).append(value)
            self.scheduler.step()
            metrics = self.reduce(stats)
            metrics.update(step=step + 1, lr=lr, **{f"time/{k}": v for k, v in self.timer.seconds.items()})
            if torch.cuda.is_available():
                metrics["memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
            history.append(metrics)
            if main:
                log_metrics(writer, self.out, metrics)
            if callback is not None:
                callback(step, metrics)
            if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.steps:
                self.save(step + 1)
        if writer is not None:
            writer.close()
        return history

    def group_stats(self, g: AnswerGroup) -> dict[str, float]:
        """One question's reward statistics; a reward that applies to none of its answers is NaN."""
        stats = {"reward": float(g.rewards.mean()), "reward_std": float(g.rewards.std(ddof=1)),
                 "frac_reward_zero_std": float(g.rewards.std() < 1e-8),
                 "completion_length": float(g.mask.sum(1).float().mean())}
        for name, values in g.per_reward.items():
            known = [v for v in values if v is not None]
            stats[f"rewards/{name}"] = float(np.mean(known)) if known else float("nan")
        return stats

    def reduce(self, stats: dict[str, list[float]]) -> dict[str, float]:
        """Mean over this rank's questions, then over ranks; NaNs (not applicable) are left out."""
        keys = sorted(stats)  # lists may differ in length: grad_norm comes once per step, not per question
        finite = [np.asarray(stats[k], dtype=np.float64)[np.isfinite(stats[k])] for k in keys]
        pairs = torch.tensor([[v.sum(), v.size] for v in finite], dtype=torch.float64, device=self.accelerator.device)
        pairs = self.accelerator.reduce(pairs, "sum").cpu()
        return {k: float(s / c) if c else float("nan") for k, (s, c) in zip(keys, pairs.tolist())}

    # ------------------------------------------------------------------ checkpoints
    def save(self, step: int) -> Path:
        """`checkpoints/step-N/`: trainable weights (LoRA adapters in peft's naming, or the LM),
        `trainer.pt` (schedule, step; the optimiser unless DeepSpeed keeps it in `deepspeed/`)
        and the run config.  trainer.pt is written last: a checkpoint without it is incomplete."""
        path = self.out / "checkpoints" / f"step-{step:06d}"
        self.accelerator.wait_for_everyone()
        if self.deepspeed:  # every rank writes its optimizer partition; frozen weights are left out
            self.model.save_checkpoint(str(path / "deepspeed"), tag="state", exclude_frozen_parameters=True)
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
            state = {"scheduler": self.scheduler.state_dict(), "step": step}
            if not self.deepspeed:
                state["optimizer"] = self.adamw.state_dict()
            torch.save(state, path / "trainer.pt")
        self.accelerator.wait_for_everyone()
        return path

    def load_latest(self) -> None:
        """Restore weights, optimiser, schedule and step from the newest complete checkpoint, if any."""
        found = sorted(p for p in (self.out / "checkpoints").glob("step-[0-9]*") if (p / "trainer.pt").is_file())
        if not found:
            log.warning("resume: no checkpoint in %s; starting from step 0", self.out)
            return
        state = torch.load(found[-1] / "trainer.pt", map_location="cpu", weights_only=True)
        if self.deepspeed:
            self.model.load_checkpoint(str(found[-1] / "deepspeed"), tag="state", load_module_strict=False,
                                       load_lr_scheduler_states=False)
        else:
            load_trainable(self.policy.backbone, found[-1])
            self.adamw.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_step = int(state["step"])


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
    state = PartialState()
    samples, failed = usable_samples(read_samples(cfg.data), cfg.video_root)
    if state.is_main_process:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        if failed:
            (out / "failed_videos.json").write_text(json.dumps(failed, indent=1))
            log.warning("%d videos do not open; their samples are dropped (%s; all in %s)", len(failed),
                        "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3]), out / "failed_videos.json")
    if not samples:
        raise ValueError(f"{cfg.data}: no sample has a video that opens ({len(failed)} videos failed)")
    backbone = _load(cfg, state.device)
    chooser = agent_chooser(cfg, cfg.video_root, state.device) if cfg.frames == "agent" else None
    return LLMTrainer(cfg, backbone, samples, chooser).train()


def llm_group_rewards(cfg: Any):
    """select-data with policy=llm: N sampled answers per sample on K uniform frames, scored."""
    from .. import distributed
    from .trainer import sample_seed

    policy = VideoPolicy(_load(cfg, distributed.local_device()))
    frames_cfg = LLMTrainConfig(k=cfg.k, think=cfg.think, rewards=dict(cfg.rewards))  # train-llm's prompts

    def group_rewards(index: int, sample: Sample) -> np.ndarray:
        query, times, duration = frames_for(sample, frames_cfg, cfg.video_root)
        return answer_group(policy, sample, query, times, duration, cfg.runs, cfg.temperature, cfg.max_new_tokens,
                            sample_seed(cfg.seed, 0, index), cfg.rewards).rewards

    return group_rewards


__all__ = ["AnswerGroup", "LLMTrainConfig", "LLMTrainer", "VideoPolicy", "answer_group", "grpo_token_loss",
           "load_trainable", "make_trainable", "run_llm_training"]
