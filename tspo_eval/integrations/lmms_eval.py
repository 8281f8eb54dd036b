"""lmms-eval adapter: `llava_vid_tspo`, `qwen_2_5_vl_tspo` and their uniform baselines.

Registered through the `lmms_eval.models` entry-point group (see pyproject.toml), which
calls `manifests()`; this module imports nothing heavy at import time, so a broken GPU
stack can never hide lmms-eval's other entry-point models.

    lmms-eval --model llava_vid_tspo \
        --model_args pretrained=lmms-lab/LLaVA-Video-7B-Qwen2,agent=hzf666/TSPO-0.4B,k=64 \
        --tasks tspo_lvbench --include_path "$(tspo-eval tasks-path)" --batch_size 4

All four names run one code path (`answering.answer_questions`); a `*_uniform` model only
changes the frame method, so a comparison differs in nothing but frame choice.
"""
from __future__ import annotations

import logging
from typing import Any

from .models import FLAVOURS, parse_model_args

log = logging.getLogger(__name__)


def question_ref(doc: dict, context: str, doc_to_visual, fallback_index: str):
    """A `QuestionRef` from an lmms-eval document.

    Documents of the tspo tasks carry `index`, `benchmark`, `video_path` and the stem in
    `question`; for other video tasks the video comes from `doc_to_visual`, the id is
    task/split/doc_id and the whole prompt stands in for the stem.
    """
    from ..answering import QuestionRef

    video = doc.get("video_path") or doc_to_visual(doc)[0]
    return QuestionRef(index=str(doc.get("index", fallback_index)), benchmark=str(doc.get("benchmark", "")),
                       video_path=str(video), question=str(doc.get("question") or context), prompt=context)


def model_class(model_name: str) -> type:
    """The lmms-eval model class for one of FLAVOURS (built lazily: lmms-eval is imported here)."""
    if model_name in _CLASSES:
        return _CLASSES[model_name]
    from lmms_eval.api.model import lmms

    class TSPOVideoModel(lmms):
        is_simple = True

        def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None,
                     device: str | None = None, **model_args: Any) -> None:
            super().__init__()
            import torch

            from ..distributed import local_device
            from .models import build_answering

            try:
                self.args = parse_model_args(model_name, model_args)
                # lmms-eval passes cuda:0 by default; each rank takes its own GPU (CPU when there is none)
                self._device = torch.device(device) if device == "cpu" else local_device()
                self.batch_size_per_gpu = int(batch_size) if str(batch_size) != "auto" else 1
                self.backbone, self.planner, self.answer_cfg = build_answering(
                    model_name, self.args, self._device, self.batch_size_per_gpu)
            except Exception as err:  # lmms-eval logs it among retries and exits 0: say it once, clearly
                log.error("%s cannot be built: %s: %s", model_name, type(err).__name__, err)
                raise

        @property
        def device(self):
            return self._device

        @property
        def batch_size(self) -> int:
            return self.batch_size_per_gpu

        def _record_path(self) -> str | None:
            if self.args.record is None:
                return None
            return self.args.record if self.world_size == 1 else f"{self.args.record}.rank{self.rank}"

        def generate_until(self, requests) -> list[str]:
            from dataclasses import replace

            from ..answering import answer_questions
            from ..scoring import NO_ANSWER

            refs, budgets = [], []
            texts: list[str] = [NO_ANSWER] * len(requests)  # refused rows and failed questions keep it
            for context, gen_kwargs, doc_to_visual, doc_id, task, split in (r.args for r in requests):
                doc = self.task_dict[task][split][doc_id]
                if doc.get("refused"):  # a bad row: its video is never read
                    log.warning("question %s refused: %s", doc.get("index"), doc["refused"])
                    refs.append(None)
                else:
                    refs.append(question_ref(doc, context, doc_to_visual, f"{task}/{split}/{doc_id}"))
                budgets.append(int(gen_kwargs.get("max_new_tokens", 16)))
            for budget in sorted(set(budgets)):
                members = [i for i, b in enumerate(budgets) if b == budget and refs[i] is not None]
                if not members:
                    continue
                answers = answer_questions([refs[i] for i in members], self.planner, self.backbone,
                                           replace(self.answer_cfg, max_new_tokens=budget),
                                           record=self._record_path(), progress=self.rank == 0)
                for i, answer in zip(members, answers):
                    texts[i] = NO_ANSWER if answer.error is not None else answer.text
            return texts

        def loglikelihood(self, requests):
            raise NotImplementedError(f"{model_name} answers multiple-choice video questions by generation only")

        def generate_until_multi_round(self, requests):
            raise NotImplementedError(f"{model_name} does not support multi-round generation")

    TSPOVideoModel.__name__ = TSPOVideoModel.__qualname__ = _class_name(model_name)
    _CLASSES[model_name] = TSPOVideoModel
    return TSPOVideoModel


_CLASSES: dict[str, type] = {}


def _class_name(model_name: str) -> str:
    return "".join(part.title() for part in model_name.split("_"))


def __getattr__(name: str) -> type:
    """`tspo_eval.integrations.lmms_eval.LlavaVidTspo` etc.: the class paths the manifests name."""
    for model_name in FLAVOURS:
        if _class_name(model_name) == name:
            return model_class(model_name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def manifests() -> list:
    """Entry point of the `lmms_eval.models` group: one manifest per model name."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=name, simple_class_path=f"{__name__}.{_class_name(name)}") for name in FLAVOURS]
