"""Second mode: GRPO of the video LLM itself (Temporal-RLT, SPEC section 8), LoRA or full.

Same data, reward library and data selection as agent training; the policy is now the
LLM's answer given fixed frames (K uniform frames, lmms-eval's linspace over all frames,
or the agent's top-K).  One optimiser step (`LLMTrainer.train`), per question:

    rollout = answer_group(policy, sample, cfg, G, seed)  # K frames decoded once (real timestamps),
                                                          # prompt once, G answers sampled (KV cache,
                                                          # no grad), decoded, rewards (accuracy /
                                                          # temporal IoU / format, weighted): the
                                                          # rollout path select-data runs too
    adv     = group_advantages(rollout.rewards)           # (r - mean) / (std + eps)
    logp, H = model(prompt, answers)                      # one forward with grad over the G answers
    ref     = reference_logp(prompt, answers)             # LoRA off, or the frozen copy
    loss    = grpo_token_loss(...)                        # token mean of -min(rho A, clip(rho) A)
                                                          # + kl_coef * k3(ref) - entropy_coef * H

Defaults are the Temporal-RLT code's: 8 rollouts, temperature 1.0, clip 0.2, KL 1e-2 (k3),
entropy 1e-3, lr 1e-6, rewards accuracy-or-IoU 0.5 + format 0.5.

The backbone must be a `rollout.TrainableBackbone` (`build_inputs`, `net`, `vision_modules`,
EOS / pad ids): `llava_video` and `qwen2_5_vl` are.  Distribution goes through accelerate (DDP, or DeepSpeed ZeRO from an accelerate
config): the forward with grad runs through the prepared module; under DeepSpeed a
checkpoint also holds DeepSpeed's own (optimizer) state.
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..backbones import load_backbone
from ..backbones.base import PhaseTimer
from ..config import read_safetensors
from .config import LLMTrainConfig
from .data import Sample, read_samples, video_path
from .grpo import group_advantages
from .rollout import AnswerGroup, FrameChooser, Prompt, TrainableBackbone, VideoPolicy, answer_group, sample_seed
from .trainer import checkpoint_interrupted, log_metrics, metrics_writer, step_samples, total_steps

log = logging.getLogger(__name__)

# Attention and MLP projections of the language model only: `model.layers` (LLaVA-Video),
# `model.language_model.layers` (Qwen2.5-VL, whose vision blocks also have `mlp.*_proj`).
LM_LAYERS = r"model\.(language_model\.)?layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


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


def make_trainable(backbone: TrainableBackbone, cfg: LLMTrainConfig) -> list[nn.Parameter]:
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


def agent_chooser(cfg: LLMTrainConfig, root: str | None, device: torch.device) -> FrameChooser:
    """frames=agent: the agent's top-k candidates of each question."""
    from ..agent import load_agent
    from ..cache import FeatureCache
    from ..selection.registry import select
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

    def __init__(self, cfg: LLMTrainConfig, backbone: TrainableBackbone, samples: list[Sample],
                 chooser: FrameChooser | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

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
    def rollout(self, epoch: int, index: int) -> AnswerGroup:
        """The question's frames, G sampled answers and their rewards (no grad): `rollout.answer_group`."""
        return answer_group(self.policy, self.samples[index], self.cfg, self.cfg.rollouts,
                            sample_seed(self.cfg.seed, epoch, index), self.chooser)

    def reference_logp(self, prompt: Prompt, ids: torch.Tensor) -> torch.Tensor | None:
        """Token log-probs under the reference policy (LoRA off, or the frozen copy)."""
        if self.cfg.kl_coef <= 0:
            return None
        with torch.no_grad(), self.policy.autocast():
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
            with self.policy.autocast():  # under DeepSpeed bf16, float32 master copies live in its optimizer
                logp, entropy = self.model(*g.prompt, g.ids, self.cfg.temperature)
        finally:
            self.policy.net.eval()  # sampling keeps its KV cache
        return grpo_token_loss(logp, g.old_logp, self.reference_logp(g.prompt, g.ids), entropy, g.mask, advantages,
                               self.cfg.clip_eps, self.cfg.kl_coef, self.cfg.entropy_coef)

    # ------------------------------------------------------------------ the loop
    def train(self, callback: Callable[[int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
        """Run to the last step (from the newest checkpoint with `resume`); returns the metrics."""
        if self.cfg.resume:
            self.load_latest()
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        main = self.accelerator.is_main_process
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        writer = metrics_writer(self.out, self.start_step) if main else None
        history = []
        done = saved = self.start_step  # steps finished, and checkpointed
        between = True  # the weights are those after step `done`: no update of the next one yet
        try:
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
                    between = False
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
                between, done = True, step + 1
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
                    saved = step + 1
        except KeyboardInterrupt:
            checkpoint_interrupted(self.save, world, between, done, saved)
            raise
        finally:
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


def load_trainable(backbone: TrainableBackbone, checkpoint: str | Path) -> None:
    """Put a checkpoint's LoRA adapters (already injected) or trained LM weights on `backbone.net`."""
    path = Path(checkpoint)
    if (path / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        state = read_safetensors(path / "adapter_model.safetensors")
        set_peft_model_state_dict(backbone.net, {k.removeprefix("base_model.model."): v for k, v in state.items()})
    else:
        backbone.net.load_state_dict(read_safetensors(path / "trainable.safetensors"), strict=False)


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
    backbone = load_backbone(cfg.backbone, cfg.backbone_path, device=state.device)
    chooser = agent_chooser(cfg, cfg.video_root, state.device) if cfg.frames == "agent" else None
    return LLMTrainer(cfg, backbone, samples, chooser).train()


__all__ = ["LLMTrainConfig", "LLMTrainer", "grpo_token_loss", "load_trainable", "make_trainable", "run_llm_training"]
