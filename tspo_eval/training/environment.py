"""The answerer that turns a rollout's frames into a completion, for the rewards to score.

- `SyntheticEnvironment`: no model at all.  It answers correctly exactly when one of the
  chosen frames shows the asked-about content (the episode's target mask), and wrongly
  otherwise: the idealised frozen LLM of the toy example and of tests.
- `BackboneEnvironment`: a real frozen video LLM behind `tspo_eval.backbones.Backbone`.
  Per question it decodes the union of the G rollouts' frames once, asks once per rollout
  and sends the G queries in batches of `answer_batch` (one forward for the whole group
  by default).  Queries carry the episode key and candidate positions, so a backbone that
  caches vision features reuses those of frames shared by several rollouts.  With
  `answer_from="logits"` the answer is the single token argmax of the first-token logits,
  which is by construction what greedy decoding emits first (`max_new_tokens=1`): enough
  for a prompt that asks for the option letter directly, without the decoding loop.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..backbones import Backbone, VideoQuery
from .data import Episode


class Environment(ABC):
    """Answers one question from each rollout's chosen candidates."""

    name: str
    needs_pixels: bool = False  # whether `complete` reads the candidates' frames

    @abstractmethod
    def complete(self, episode: Episode, selections: Sequence[np.ndarray]) -> list[str]:
        """One completion per rollout; `selections` are candidate positions in time order."""


class SyntheticEnvironment(Environment):
    """Right iff a chosen frame is in the target: the correct letter (or answer text, or the
    span of the seen target frames); otherwise the next option letter (or "unknown")."""

    name = "synthetic (answers right iff a chosen frame shows the asked-about content)"

    def complete(self, episode: Episode, selections: Sequence[np.ndarray]) -> list[str]:
        if episode.target is None:
            raise ValueError(f"sample {episode.sample.id} has no target (no span, not a needle): the synthetic "
                             "environment cannot know what its frames show; use --environment backbone")
        return [self._answer(episode, np.asarray(sel)) for sel in selections]

    @staticmethod
    def _answer(episode: Episode, sel: np.ndarray) -> str:
        sample = episode.sample
        seen = sel[episode.target[sel]]
        if sample.kind in ("grounding", "grounded_qa"):
            if not len(seen):
                return "<answer>unknown</answer>"
            span = {"start_time": f"{episode.timestamps[seen].min():.2f}",
                    "end_time": f"{episode.timestamps[seen].max():.2f}"}
            text = sample.answer if sample.kind == "grounded_qa" else ""
            return f"{text}<answer>{json.dumps(span)}</answer>"
        if sample.options:
            correct = ord(sample.answer.upper()) - 65
            return chr(65 + (correct if len(seen) else (correct + 1) % len(sample.options)))
        return sample.answer if len(seen) else "unknown"


class BackboneEnvironment(Environment):
    """A frozen video LLM asked once per rollout, the group batched."""

    needs_pixels = True

    def __init__(self, backbone: Backbone, answer_from: Literal["logits", "generate"] = "logits",
                 max_new_tokens: int = 16, answer_batch: int | None = None) -> None:
        self.backbone, self.answer_from = backbone, answer_from
        self.max_new_tokens, self.answer_batch = max_new_tokens, answer_batch
        self.name = f"backbone {getattr(backbone, 'name', type(backbone).__name__)} ({answer_from})"

    def queries(self, episode: Episode, selections: Sequence[np.ndarray]) -> list[VideoQuery]:
        """One query per rollout; the union of their frames is decoded once."""
        union = np.unique(np.concatenate([np.asarray(s) for s in selections]))
        pixels = episode.frames(union)
        row = {int(p): i for i, p in enumerate(union)}
        return [VideoQuery(frames=pixels[[row[int(p)] for p in sel]], timestamps=episode.timestamps[sel].tolist(),
                           prompt=episode.sample.prompt, video=episode.key, frame_numbers=[int(p) for p in sel])
                for sel in selections]

    def complete(self, episode: Episode, selections: Sequence[np.ndarray]) -> list[str]:
        queries = self.queries(episode, selections)
        step = self.answer_batch or len(queries)
        out: list[str] = []
        for i in range(0, len(queries), step):
            batch = queries[i:i + step]
            if self.answer_from == "generate":
                out += self.backbone.generate(batch, max_new_tokens=self.max_new_tokens)
            else:
                tokens = self.backbone.next_token_logits(batch).argmax(-1).tolist()
                out += [self.backbone.tokenizer.decode([t], skip_special_tokens=True) for t in tokens]
        return out


def build_environment(kind: Literal["synthetic", "backbone"], backbone: str = "llava_video",
                      backbone_path: str | None = None, answer_from: Literal["logits", "generate"] = "logits",
                      max_new_tokens: int = 16, answer_batch: int | None = None, **backbone_options) -> Environment:
    """The answerer a config names; a real backbone is loaded through the backbone registry."""
    if kind == "synthetic":
        return SyntheticEnvironment()
    from ..backbones import load_backbone

    if backbone_path is None:
        raise ValueError("a backbone environment needs the backbone's checkpoint (backbone_path)")
    return BackboneEnvironment(load_backbone(backbone, backbone_path, **backbone_options), answer_from,
                               max_new_tokens, answer_batch)
