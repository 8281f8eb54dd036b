"""BLIP image-text matching scores per candidate frame (`scores=blip`), as AKS scores its frames.

AKS's published numbers (ncTimTang/AKS `feature_extract.py`, `--extract_feature_model blip`,
its default) score every 1-fps frame against the question stem with LAVIS's
`blip_image_text_matching` model, type "large" (BLIP with ViT-L, fine-tuned for COCO retrieval),
through its ITM head (`match_head="itm"`): the softmax over the head's two logits, probability of
class 1 ("match").  Here the same head and probability come from transformers'
`BlipForImageTextRetrieval` (default weights `Salesforce/blip-itm-large-coco`, the same checkpoint
converted), with LAVIS's inputs where transformers differs:

- the text is LAVIS's eval caption processing (`blip_caption`: lower case, `.!"()*#:;~` become
  spaces, whitespace collapsed, at most 50 words) and at most 35 tokens (BLIP ITM's max_txt_len);
- the first token is BLIP's `[ENC]` token, as BLIP's ITM encodes a text conditioned on an image
  (transformers keeps `[CLS]`: huggingface/transformers#25629); the vocabulary row after the
  tokenizer's (`[DEC]` = 30522, `[ENC]` = 30523 in BLIP's layout). A model whose vocabulary has
  no such row (tiny test models) keeps `[CLS]`.
- images: the checkpoint's image processor (384 x 384 bicubic, CLIP mean / std: LAVIS's
  `blip_image_eval`).

The vision tower runs once per frame and the text encoder once per (frame, question), so all
questions of a video are scored in one pass (`BlipScorer.score`).  Scores are cached per video
and question (`FeatureCache.question_scores`) beside the features, so a second run does not
decode or score again.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..cache import FeatureCache, VideoFeatures, scores_key
from ..encoders import weights_fingerprint
from ..policy import Sampling
from ..video import iter_frames
from .registry import FrameScorer

BLIP_MAX_WORDS = 50  # LAVIS BlipCaptionProcessor(max_words=50)
BLIP_MAX_TOKENS = 35  # BLIP ITM max_txt_len


def blip_caption(text: str) -> str:
    """The question as LAVIS's eval caption processor hands it to BLIP (see the module docstring)."""
    text = re.sub(r"[.!\"()*#:;~]", " ", text.lower())
    words = re.sub(r"\s{2,}", " ", text).strip().split(" ")
    return " ".join(words[:BLIP_MAX_WORDS])


class BlipScorer:
    """ITM probability of "match" for frames x texts, from a `BlipForImageTextRetrieval`."""

    def __init__(self, model: torch.nn.Module, image_processor: Callable, tokenizer: Callable,
                 name: str = "blip", batch_size: int = 16) -> None:
        self.model, self.image_processor, self.tokenizer = model.eval(), image_processor, tokenizer
        self.batch_size = batch_size
        self.identity = f"blip-itm:{name}:{weights_fingerprint(model, skip_prefix='-')}"
        vocab = tokenizer.get_vocab()
        enc = vocab.get("[ENC]", len(tokenizer) + (0 if "[DEC]" in vocab else 1))
        self.first_token = enc if enc < model.config.text_config.vocab_size else None

    @classmethod
    def from_pretrained(cls, spec: str, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> "BlipScorer":
        """Load a BLIP ITM checkpoint from a local directory or a hub id (weights, image
        processor and tokenizer all from `spec`)."""
        from transformers import AutoTokenizer, BlipForImageTextRetrieval, BlipImageProcessor

        local = Path(spec).expanduser()
        source = str(local.resolve()) if local.is_dir() else spec
        try:
            model = BlipForImageTextRetrieval.from_pretrained(source)  # (dtype's keyword differs in 4.5x / 5.x)
            image_processor = BlipImageProcessor.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot load a BLIP image-text matching model from {spec!r} (a directory or hub "
                             f"id holding a BlipForImageTextRetrieval, its image processor and tokenizer): "
                             f"{err}") from None
        return cls(model.to(device or "cpu", dtype or torch.float32), image_processor, tokenizer, name=source)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _tokens(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer([blip_caption(t) for t in texts], padding="longest", truncation=True,
                                max_length=BLIP_MAX_TOKENS, return_tensors="pt")
        ids = tokens["input_ids"].clone()
        if self.first_token is not None:
            ids[:, 0] = self.first_token
        return {"input_ids": ids.to(self.device), "attention_mask": tokens["attention_mask"].to(self.device)}

    @torch.no_grad()
    def score(self, frames: np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), N) float32 ITM match probabilities of N RGB uint8 frames (N, H, W, 3)."""
        tokens = self._tokens(texts)
        pixels = self.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, next(self.model.parameters()).dtype)
        image = self.model.vision_model(pixel_values=pixels).last_hidden_state  # (N, L, H), once per frame
        out = torch.empty(len(texts), len(frames))
        for q in range(len(texts)):
            ids = tokens["input_ids"][q:q + 1].expand(len(frames), -1)
            mask = tokens["attention_mask"][q:q + 1].expand(len(frames), -1)
            hidden = self.model.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image,
                                             encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long,
                                                                               device=image.device)
                                             ).last_hidden_state
            out[q] = self.model.itm_head(hidden[:, 0]).float().softmax(-1)[:, 1].cpu()
        return out

    def score_video(self, path: str | Path, frame_numbers: np.ndarray, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), T) scores of a video's candidate frames, decoded in batches (never all at once)."""
        parts = [self.score(batch, texts) for batch in iter_frames(path, frame_numbers, self.batch_size)]
        return torch.cat(parts, dim=1) if parts else torch.empty(len(texts), 0)


def blip_scores(scorer: BlipScorer, vf: VideoFeatures, path: str | Path, texts: Sequence[str],
                cache: FeatureCache, sampling: Sampling) -> torch.Tensor:
    """(len(texts), T) BLIP scores of the video's candidates (`vf.frame_numbers`) for each text:
    cached ones read, the others computed in one decoding pass and cached."""
    keys = {text: scores_key(vf.fingerprint, sampling, scorer.identity, text) for text in dict.fromkeys(texts)}
    found = {text: cache.get_scores(key, vf.frame_numbers) for text, key in keys.items()}
    # an entry `blip_frame_scorer` left holds some frames' scores only (NaN elsewhere): scored anew, whole
    missing = [text for text, value in found.items() if value is None or bool(value.isnan().any())]
    if missing:
        for text, row in zip(missing, scorer.score_video(path, vf.frame_numbers, missing)):
            found[text] = cache.put_scores(keys[text], row, vf.frame_numbers, scorer.identity)
    return torch.stack([found[text] for text in texts])


def blip_frame_scorer(scorer: BlipScorer, vf: VideoFeatures, path: str | Path, text: str, cache: FeatureCache,
                      sampling: Sampling) -> FrameScorer:
    """An on-demand BLIP scorer of one question's candidates (for `focus`): it decodes and scores
    only the positions asked for. What it scores is cached as it goes (the question's entry holds NaN
    for the frames not scored yet), so a second run scores nothing it scored before; a question whose
    full scores are cached reads them."""
    key = scores_key(vf.fingerprint, sampling, scorer.identity, text)
    cached = cache.get_scores(key, vf.frame_numbers)
    if cached is not None and not cached.isnan().any():
        return FrameScorer.of(cached)
    known = torch.full((len(vf.frame_numbers),), float("nan")) if cached is None else cached.clone()

    def score(positions: np.ndarray) -> np.ndarray:
        order = np.argsort(positions, kind="stable")  # decoding wants ascending frame numbers
        values = scorer.score_video(path, vf.frame_numbers[positions[order]], [text])[0].numpy()
        out = np.empty(len(positions))
        out[order] = values
        known[torch.from_numpy(positions)] = torch.from_numpy(out).float()
        cache.put_scores(key, known, vf.frame_numbers, scorer.identity)
        return out

    frame_scorer = FrameScorer(score, len(vf.frame_numbers))
    scored = (~known.isnan()).nonzero().flatten().tolist()
    frame_scorer.known.update(zip(scored, known[scored].double().tolist()))
    return frame_scorer
