"""The agent's plain-PyTorch CLIP against transformers' CLIPModel on one device, and their start-up.

A random agent of a named architecture is saved in the released layout (bf16), then loaded by
`TemporalAgent.from_pretrained` and by `transformers.CLIPModel.from_pretrained`; both encode the
same random pixels and a padded batch of questions (one cut at 77 tokens).  Prints the largest
difference and the smallest cosine per tower (tests/test_clip.py checks fp32 equality on the CPU;
this is the GPU's bf16 kernels), then fresh-process import seconds (median of 3).

    python3 scripts/check_clip.py --device cuda            # ViT-L/14, as released
    python3 scripts/check_clip.py --device cpu --clip clip-tiny
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tspo_eval.agent import TemporalAgent, random_agent  # noqa: E402


def pooled(out) -> torch.Tensor:
    """transformers 4.x returns the features, 5.x an output object holding them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def import_seconds(code: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    runs = [float(subprocess.run([sys.executable, "-c", f"import time; t = time.perf_counter(); {code}; "
                                  "print(time.perf_counter() - t)"], capture_output=True, text=True,
                                 check=True, env=env).stdout) for _ in range(3)]
    return round(statistics.median(runs), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--clip", default="clip-vit-l-14", help="agent config (tspo_eval/configs/*.json)")
    p.add_argument("--out", type=Path, default=None, help="also write the figures here (JSON)")
    a = p.parse_args()
    from transformers import CLIPModel

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        random_agent(a.clip, torch_dtype=torch.bfloat16, device=a.device).save_pretrained(tmp)
        start = time.perf_counter()
        ours = TemporalAgent.from_pretrained(tmp, device=a.device)
        out["from_pretrained_s"] = round(time.perf_counter() - start, 2)
        ref = CLIPModel.from_pretrained(tmp, torch_dtype=torch.bfloat16).to(a.device).eval()
        ours.tokenizer  # the directory's own, loaded (on first use) while it exists
    size = ours.config.vision_config.image_size
    pixels = torch.randn(16, 3, size, size, device=a.device, dtype=torch.bfloat16)
    tokens = ours.tokenizer(["What happens first?", "Which colour is the car at the start of the video?", "x " * 100],
                            padding=True, truncation=True, max_length=77, return_tensors="pt").to(a.device)
    with torch.no_grad():
        pairs = {"image": (ours.get_image_features(pixels), pooled(ref.get_image_features(pixel_values=pixels))),
                 "text": (ours.get_text_features(tokens["input_ids"], tokens["attention_mask"]),
                          pooled(ref.get_text_features(**tokens)))}
    for name, (got, want) in pairs.items():
        got, want = got.float(), want.float()
        out[f"{name}_max_abs_diff"] = (got - want).abs().max().item()
        out[f"{name}_min_cosine"] = torch.nn.functional.cosine_similarity(got, want).min().item()
    for code in ("import torch", "import tspo_eval.agent", "import tspo_eval.cli, tspo_eval.extract, tspo_eval.agent",
                 "import transformers; from transformers import CLIPModel"):
        out[f"import_s: {code}"] = import_seconds(code)
    print(json.dumps(out, indent=1))
    if a.out is not None:
        a.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
