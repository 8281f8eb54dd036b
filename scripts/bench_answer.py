"""Speed of answering: our answering stage against the published wrapper's approach, in one run.

Both answer the same questions (K frames each, chosen per question, several questions per
video as in the real benchmarks) with the same backbone object (full-size architecture,
random weights, bf16) and the same number of generated tokens:

  published  batch 1; the question's frames decoded from the file for every question (decord,
             one thread, one get_batch); the vision tower run again for every question (the
             published lmms-eval wrapper).  LLaVA-Video as the published `llava_vid_tspo` runs
             it: LLaVA-NeXT's SigLipImageProcessor on the CPU, frame by frame (transformers'
             PIL resize, rescale, normalize), and logits at every prompt position (LLaVA-NeXT's
             forward takes no `logits_to_keep`, so transformers 4.49's `generate` computes them
             all).  Qwen2.5-VL: frames preprocessed by our backbone, as in session 2.
  ours       `answering.answer_questions`: frames planned and decoded on threads ahead of
             the GPU, decoded frames shared by questions on one video, vision features
             reused across questions sharing frames, `--batch-size` questions per call;
             LLaVA-Video at batch 1 also reuses the KV cache of a shared prompt prefix.
             With `--compile-vision` it runs once more with the vision tower compiled.

`--overlap 1` gives every question on a video the same frames (the uniform baseline).
`--prompts videomme` (or another benchmark) takes the real questions of the published TSV
(`--official`), `--per-video` of one real video per generated video: prompt lengths vary as in
a real run (a backend that prepares per shape pays for it); `synthetic` gives every question
the same length.

Reports seconds per question split into decode (time the GPU waited for frames) / vision /
prefill / decode_tokens, questions per second, and the ratio; writes JSON.

    python scripts/bench_answer.py --backbone llava_video --size 7b --device cuda --out benchmarks/answer_h200.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_extract import make_video
from bench_kernels import ORDERS, backend

from tspo_eval.answering import AnswerConfig, answer_questions
from tspo_eval.policy import FramePolicy
from tspo_eval.backbones import VideoQuery
from tspo_eval.benchmarks.docs import build_docs, prompt
from tspo_eval.selection.stage import FramePlanner, QuestionRef, Selection, SelectionSet
from tspo_eval.video import iter_frames, probe

SYNTHETIC = ("Question {q} about the video?\nA. one\nB. two\nC. three\nD. four\n"
             "Answer with the option's letter from the given choices directly.")
TSV = {"videomme": "VideoMME.tsv", "longvideobench": "LongVideoBench.tsv", "mlvu": "MLVU.tsv", "lvbench": "LVBench.tsv"}


def build_backbone(kind: str, size: str, device: str, dtype: torch.dtype, attn: str | None):
    if kind == "llava_video":
        from tspo_eval.backbones.llava_video import random_llava_video

        return random_llava_video(size, dtype=dtype, device=device, attn_implementation=attn)
    from tspo_eval.backbones.qwen_vl import random_qwen_vl

    return random_qwen_vl(size, dtype=dtype, device=device, attn_implementation=attn)


def real_prompts(benchmark: str, official: Path, videos: int, per_video: int) -> list[list[str]]:
    """The lmms-eval prompts of the first `videos` real videos with >= `per_video` questions."""
    by_video: dict[str, list[str]] = {}
    for doc in build_docs(benchmark, official / TSV[benchmark], official):
        by_video.setdefault(doc["video_name"], []).append(prompt(doc))
    chosen = [texts[:per_video] for texts in by_video.values() if len(texts) >= per_video][:videos]
    if len(chosen) < videos:
        raise SystemExit(f"{benchmark}: only {len(chosen)} videos have {per_video} questions")
    return chosen


def make_questions(videos: list[Path], per_video: int, k: int, overlap: float, seed: int,
                   prompts: list[list[str]] | None = None) -> tuple[list[QuestionRef], SelectionSet]:
    """`per_video` questions per video; each takes k of the 1-fps candidates, sharing about
    `overlap` of them with the video's other questions (TSPO's picks overlap on one video;
    0.5 at 3 questions per video reuses 1/3 of the frames, VideoMME's published selections
    0.326). `prompts[v][q]`: question q's prompt on video v (default: synthetic ones)."""
    rng = np.random.default_rng(seed)
    refs, chosen = [], {}
    for v, path in enumerate(videos):
        info = probe(path)
        step = round(info.fps)
        candidates = np.arange(0, info.num_frames, step)
        common = rng.choice(candidates, size=int(k * overlap), replace=False)
        for q in range(per_video):
            rest = rng.choice(np.setdiff1d(candidates, common), size=k - len(common), replace=False)
            frames = np.sort(np.concatenate([common, rest])).astype(int).tolist()
            index = f"v{v}q{q}"
            chosen[index] = Selection(path.name, frames, [f / info.fps for f in frames], len(candidates), info.fps)
            text = SYNTHETIC.format(q=q) if prompts is None else prompts[v][q]
            refs.append(QuestionRef(index, "bench", str(path), f"question {q}", text))
    return refs, SelectionSet({"benchmark": "bench", "method": "tspo", "k": k}, chosen)


def stock_vision_attention(backbone, stock: bool) -> None:
    """Qwen2.5-VL: transformers' own per-window attention loop (as the published wrapper runs) or ours."""
    if backbone.name == "qwen2_5_vl":
        from tspo_eval.backbones.qwen_vision import set_grouped_vision_attention

        set_grouped_vision_attention(backbone.model, not stock)


def prefix_reuse(backbone, on: bool) -> None:
    """LLaVA-Video's reuse of a shared prompt prefix (the published wrapper has none)."""
    if hasattr(backbone, "prefix_reuse"):
        backbone.prefix_reuse = on
    backbone.clear_vision_cache()


def published_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """LLaVA-NeXT's SigLipImageProcessor.preprocess: per frame on the CPU, PIL bicubic squash to
    size x size, 1/255, mean = std = 0.5, channels first; float32 (N, 3, size, size)."""
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    first, last = ChannelDimension.FIRST, ChannelDimension.LAST
    return torch.from_numpy(np.stack([
        normalize(rescale(resize(frame, (size, size), resample=PILImageResampling.BICUBIC, data_format=first,
                                 input_data_format=last), 1 / 255, data_format=first, input_data_format=first),
                  (0.5,) * 3, (0.5,) * 3, data_format=first, input_data_format=first)
        for frame in frames]))


@contextlib.contextmanager
def published_forward(backbone, features: torch.Tensor):
    """LLaVA-NeXT's model as the published wrapper calls it: the vision features it computed
    itself, and the language model's logits at every position (taken at the last one)."""
    def full_logits(embeds, mask, positions, cache=None, use_cache=True):
        out = backbone.net.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                 past_key_values=cache, use_cache=use_cache)
        return backbone.net.lm_head(out.last_hidden_state)[:, -1].float(), out.past_key_values

    backbone.frame_features, backbone._step = (lambda queries: [features]), full_logits
    try:
        yield
    finally:
        del backbone.frame_features, backbone._step


def published(refs: list[QuestionRef], sset: SelectionSet, backbone, max_new_tokens: int) -> dict:
    """Batch 1, decode per question, vision recomputed (no video identity -> no reuse), stock attention."""
    stock_vision_attention(backbone, True)
    prefix_reuse(backbone, False)
    backbone.timings.reset()
    llava = backbone.name == "llava_video"
    start = time.perf_counter()
    for ref in refs:
        sel = sset.selections[ref.index]
        with backbone.timings("decode"):
            frames = next(iter_frames(ref.video_path, sel.frame_numbers, batch_size=len(sel.frame_numbers),
                                      backend="decord", num_threads=1))
        query = VideoQuery(frames, sel.timestamps, ref.prompt)
        with torch.inference_mode():
            if not llava:
                backbone.generate([query], max_new_tokens=max_new_tokens)
                continue
            with backbone.timings("preprocess"):
                pixels = published_pixels(frames, backbone.image_size).to(backbone.device).to(backbone.dtype)
            with backbone.timings("vision"):
                features = backbone.encode_pixels(pixels)
            with published_forward(backbone, features):
                backbone.generate([query], max_new_tokens=max_new_tokens)
    return summary(time.perf_counter() - start, len(refs), backbone)


def ours(refs: list[QuestionRef], sel_path: Path, backbone, batch_size: int, max_new_tokens: int) -> dict:
    stock_vision_attention(backbone, False)
    prefix_reuse(backbone, True)
    backbone.timings.reset()
    planner = FramePlanner(FramePolicy(k=len(next(iter(SelectionSet.load(sel_path).selections.values()))
                                             .frame_numbers), selections=str(sel_path)))
    start = time.perf_counter()
    answer_questions(refs, planner, backbone, AnswerConfig(answer_batch=batch_size, max_new_tokens=max_new_tokens),
                     progress=False)
    return summary(time.perf_counter() - start, len(refs), backbone)


def summary(wall: float, n: int, backbone) -> dict:
    phases = {k: v / n for k, v in backbone.timings.seconds.items()}
    return {"questions": n, "wall_s": wall, "s_per_question": wall / n, "questions_per_s": n / wall,
            "phase_s_per_question": phases, "counts": dict(backbone.timings.counts)}


def compare(refs: list[QuestionRef], sset: SelectionSet, sel_path: Path, backbone, a: argparse.Namespace,
            tag: str) -> dict:
    """Ours (per batch size, and compiled with `--compile-vision`), then the published path.

    Ours runs first: attention plans built for a prompt length (cuDNN builds one per shape)
    are then already there when the published path meets that length again.
    """
    warm = refs[:1]
    runs = {}
    towers = {"": getattr(backbone, "_tower", None)}
    if a.compile_vision:  # what `compile_vision=True` builds, swapped in on the same weights
        towers["_compiled"] = torch.compile(backbone.net.model.vision_tower, dynamic=True)
    for suffix, tower in towers.items():
        if tower is not None:
            backbone._tower = tower
        start = time.perf_counter()
        ours(warm, sel_path, backbone, 1, a.max_new_tokens)  # warm-up (compilation), caches then cleared
        runs_warm = time.perf_counter() - start
        for bs in a.batch_size:
            runs[f"ours_batch{bs}{suffix}{tag}"] = ours(refs, sel_path, backbone, bs, a.max_new_tokens)
            runs[f"ours_batch{bs}{suffix}{tag}"]["warm_up_s"] = runs_warm
    if a.compile_vision:
        backbone._tower = towers[""]
    published(warm, sset, backbone, a.max_new_tokens)  # warm-up (kernels, allocator)
    base = published(refs, sset, backbone, a.max_new_tokens)
    for mine in runs.values():
        mine["speedup"] = mine["questions_per_s"] / base["questions_per_s"]
    return {f"published{tag}": base, **runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=["llava_video", "qwen2_5_vl"], default="llava_video")
    ap.add_argument("--size", choices=["tiny", "7b"], default="tiny")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--per-video", type=int, default=3, help="questions per video (VideoMME: 3)")
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5, help="share of a question's frames common on its video")
    ap.add_argument("--batch-size", type=int, nargs="+", default=[4], help="ours is run once per value")
    ap.add_argument("--attn", default=None, help="attention implementation (default: the backbone's)")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--compile-vision", action="store_true", help="LLaVA-Video: also run ours with a compiled tower")
    ap.add_argument("--kernels", nargs="+", choices=list(ORDERS), default=["default"],
                    help="sdpa backend priorities; both paths are run under each")
    ap.add_argument("--prompts", choices=["synthetic", *TSV], default="synthetic",
                    help="question prompts: synthetic (all one length) or a benchmark's real ones")
    ap.add_argument("--official", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/official",
                    help="folder of the published TSVs (for --prompts)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "tspo_bench_answer")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    a.workdir.mkdir(parents=True, exist_ok=True)
    videos = [make_video(a.workdir / f"video{i}_{a.minutes}min.mp4", a.minutes) for i in range(a.videos)]
    prompts = None if a.prompts == "synthetic" else real_prompts(a.prompts, a.official, a.videos, a.per_video)
    refs, sset = make_questions(videos, a.per_video, a.k, a.overlap, seed=0, prompts=prompts)
    sel_path = sset.save(a.workdir / "selections.json")
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    backbone = build_backbone(a.backbone, a.size, a.device, dtype, a.attn)

    runs = {}
    for kernels in a.kernels:
        tag = "" if kernels == "default" else f"_{kernels}"
        with backend(kernels):
            runs.update(compare(refs, sset, sel_path, backbone, a, tag))
    result = {"backbone": a.backbone, "size": a.size, "device": a.device, "dtype": str(dtype), "attn": a.attn,
              "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor(),
              "videos": a.videos, "minutes": a.minutes, "questions_per_video": a.per_video, "k": a.k,
              "overlap": a.overlap, "prompts": a.prompts, "kernels": a.kernels, "max_new_tokens": a.max_new_tokens, "runs": runs,
              "command": " ".join(sys.argv)}
    for name, r in runs.items():
        phases = "  ".join(f"{k} {v:.3f}" for k, v in sorted(r["phase_s_per_question"].items()))
        ratio = f"  {r['speedup']:.2f}x" if "speedup" in r else ""
        print(f"{name:22s} {r['s_per_question']:.3f} s/question{ratio}  ({phases})  {r['counts']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
