"""One rollout path for both trainers and `select-data`: sample a group, complete it, score it.

    agent (TSPO)       frame_group(head, episode, ...)    G frame selections (Gumbel-top-k on the
                                                          head's logits), answered by the environment
    video LLM (RLT)    answer_group(policy, sample, ...)  K fixed frames, G answers sampled from the LLM

Both end in `score` (the weighted reward library) and run without grad.  The trainers then
add group advantages and their loss; `select-data` keeps the rewards only.  A question's
randomness comes from `sample_seed(seed, epoch, index)`, so `select-data` (epoch 0) scores
exactly the rollouts the first epoch of training draws for the same seed.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from ..backbones import VideoQuery
from .config import LLMTrainConfig, Objective, VarianceConfig
from .data import Episode, Sample, video_path
from .environment import Environment
from .grpo import Rollouts, sample_rollouts
from .rewards import Group, score_group

THINK_INSTRUCTION = ("\nOutput the thinking process in <think> </think> and the final answer in "
                     "<answer> </answer> tags.")
Prompt = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # embeds (1, P, H), mask (1, P), positions (..., 1, P)
FrameChooser = Callable[[Sample], np.ndarray]  # a question's frame numbers (e.g. the agent's top-k)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one question's randomness in one epoch (independent of rank and resume)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def score(sample: Sample, completions: list[str], selections: list[np.ndarray], timestamps: np.ndarray,
          target: np.ndarray | None, duration: float, weights: dict[str, float]
          ) -> tuple[np.ndarray, dict[str, list[float | None]]]:
    """(G,) weighted rewards and each reward's values (None: not applicable) of one question's group."""
    return score_group(Group(sample, completions, selections, timestamps, target, duration), weights)


# ----------------------------------------------------------------------------- the agent's frames
@dataclass
class FrameGroup:
    """G frame selections of one question, the answerer's completions and their rewards."""

    episode: Episode
    rollouts: Rollouts
    completions: list[str]
    rewards: np.ndarray  # (G,) weighted sum
    per_reward: dict[str, list[float | None]]


def frame_group(head: nn.Module, episode: Episode, k: int, num: int, tau: float, seed: int,
                environment: Environment, weights: dict[str, float],
                objective: Objective = "plackett-luce") -> FrameGroup:
    """Head logits / tau -> `num` draws of k frames -> the environment's answers -> rewards (no grad)."""
    device = next(head.parameters()).device
    with torch.no_grad():
        logits = head(episode.features.to(device), episode.text.to(device)) / tau  # (T,)
    rollouts = sample_rollouts(logits, k, num, objective, torch.Generator().manual_seed(seed))
    completions = environment.complete(episode, rollouts.selections)
    rewards, per_reward = score(episode.sample, completions, rollouts.selections, episode.timestamps,
                                episode.target, episode.duration, weights)
    return FrameGroup(episode, rollouts, completions, rewards, per_reward)


# ----------------------------------------------------------------------------- the LLM's answers
@runtime_checkable
class TrainableBackbone(Protocol):
    """What LLM training needs of a backbone (`llava_video` and `qwen2_5_vl` provide it).

    `net` is a transformers causal LM (`net.model`, `net.lm_head`); `build_inputs` gives the
    prompt exactly as the backbone answers (Qwen2.5-VL: (3, B, L) rotary positions carrying
    the frames' real times); `vision_modules` are the parameter-name prefixes kept frozen.
    """

    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    vision_modules: tuple[str, ...]
    eos_token_ids: Collection[int]
    pad_token_id: int

    @property
    def net(self) -> nn.Module: ...

    def build_inputs(self, queries: Sequence[VideoQuery]) -> Prompt: ...


class VideoPolicy(nn.Module):
    """A backbone's LM as a policy over answer tokens given the query's prompt embeddings.

    Positions are whatever the backbone builds: (B, L) for LLaVA-Video, (3, B, L) rotary
    positions for Qwen2.5-VL; answer tokens continue from the prompt's last position, on
    every axis.
    """

    def __init__(self, backbone: TrainableBackbone) -> None:
        super().__init__()
        if not isinstance(backbone, TrainableBackbone):
            raise TypeError(f"backbone {type(backbone).__name__} is not a TrainableBackbone (net, build_inputs, "
                            "eos_token_ids, pad_token_id, vision_modules): LLM training needs them")
        self.backbone = backbone
        self.net = backbone.net
        self.eos = sorted(backbone.eos_token_ids)
        self.pad = backbone.pad_token_id

    def autocast(self) -> torch.autocast:
        """Forwards in the model's 16-bit dtype (float32 LoRA adapters' matmuls too); off for float32."""
        dtype = self.backbone.dtype
        return torch.autocast(self.backbone.device.type, dtype=dtype, enabled=dtype in (torch.bfloat16, torch.float16))

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
        """`num` answers sampled at `temperature`: ids (padded after the first EOS), mask
        (through the first EOS) and their per-token log-probs under the sampling policy, each (G, L)."""
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


def frames_for(sample: Sample, k: int, think: bool, root: str | None, chooser: FrameChooser | None = None
               ) -> tuple[VideoQuery, np.ndarray, float]:
    """The question's query (K frames with their real timestamps: uniform over all frames, or the
    chooser's), the timestamps and the video's duration."""
    from ..selection.methods import uniform_frames
    from ..video import probe, read_frames

    path = video_path(sample, root)
    info = probe(path)
    numbers = uniform_frames(info.num_frames, info.fps, k) if chooser is None else chooser(sample)
    times = numbers / info.fps
    prompt = sample.prompt + (THINK_INSTRUCTION if think else "")
    return VideoQuery(read_frames(path, numbers), times.tolist(), prompt, video=path,
                      frame_numbers=numbers.tolist()), times, info.duration


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


def answer_group(policy: VideoPolicy, sample: Sample, cfg: LLMTrainConfig | VarianceConfig, num: int, seed: int,
                 chooser: FrameChooser | None = None) -> AnswerGroup:
    """The question's K frames, prompted once; `num` answers sampled (KV-cached, no grad), decoded
    and scored.  `cfg` gives k, think, video_root, temperature, max_new_tokens and the reward weights."""
    query, times, duration = frames_for(sample, cfg.k, cfg.think, cfg.video_root, chooser)
    with policy.autocast():
        prompt = policy.prompt(query)
        generator = torch.Generator(device=prompt[0].device).manual_seed(seed)
        ids, mask, old_logp = policy.sample(prompt, num, cfg.temperature, cfg.max_new_tokens, generator)
    texts = policy.decode(ids, mask)
    rewards, per_reward = score(sample, texts, [np.arange(len(times))] * num, np.asarray(times), None, duration,
                                cfg.rewards)
    return AnswerGroup(prompt, ids, mask, old_logp, texts, rewards, per_reward)
