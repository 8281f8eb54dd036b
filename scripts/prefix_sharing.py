"""How often a question's frames start like the previous question's on its video, on the real
benchmarks: the share of questions whose prompt KV cache LLaVA-Video can reuse (a shared
prefix of at least half the frames), for the published TSPO selections and for uniform
sampling (every question on a video gets the same frames).

    python scripts/prefix_sharing.py --official ../shared/data/official --out benchmarks/prefix_sharing.json
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from tspo_eval.benchmarks import load_benchmark, read_frame_idx

FILES = {"longvideobench": ("LongVideoBench.tsv", "TSPO_LongVideoBench_frameIdx.json"),
         "mlvu": ("MLVU.tsv", "TSPO_MLVU_frameIdx.json"),
         "videomme": ("VideoMME.tsv", "TSPO_VideoMME_frameIdx.json")}


def shared_frames(a: list[int], b: list[int]) -> int:
    """Leading frames two sorted selections have in common."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", type=Path, default=Path("../shared/data/official"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    result = {}
    for name, (tsv, frame_idx) in FILES.items():
        selections = read_frame_idx(a.official / frame_idx, name)
        by_video: dict[str, list[list[int]]] = {}
        for q in load_benchmark(name, a.official / tsv):
            if q.index in selections:
                by_video.setdefault(q.video_name, []).append(selections[q.index])
        pairs = [(prev, cur) for lists in by_video.values() for prev, cur in itertools.pairwise(lists)]
        questions = sum(len(v) for v in by_video.values())
        tspo = sum(2 * shared_frames(p, c) >= len(c) for p, c in pairs)
        result[name] = {"questions": questions, "videos": len(by_video),
                        "tspo_identical": sum(p == c for p, c in pairs),
                        "tspo_reusable": tspo, "tspo_reusable_share": tspo / questions,
                        "uniform_reusable": len(pairs), "uniform_reusable_share": len(pairs) / questions}
        r = result[name]
        print(f"{name:15s} {questions:5d} questions on {len(by_video):4d} videos: prompt prefix reusable for "
              f"{r['tspo_reusable_share']:.1%} (TSPO selections, {r['tspo_identical']} identical), "
              f"{r['uniform_reusable_share']:.1%} (uniform)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
