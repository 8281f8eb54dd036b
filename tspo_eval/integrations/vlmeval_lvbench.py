"""VLMEvalKit dataset classes: LVBench (VLMEvalKit has none) and local copies of its own video datasets.

LVBench reads LVBench's annotation format (`video_info.meta.jsonl`, or the published TSV)
through `benchmarks.docs`, so its prompt is lmms-eval's `lvbench` prompt and its scores are
`scoring.breakdown("lvbench", ...)`: the numbers of the `tspo_lvbench` lmms-eval task. Its
files come from the arguments or, as for that task, from `$TSPO_LVBENCH_ANNOTATIONS` and
`$TSPO_LVBENCH_VIDEOS`.

`local_dataset` builds VLMEvalKit's own Video-MME / LongVideoBench / MLVU_MCQ class over a
TSV and video folder on disk (e.g. written by `vlmeval_tsv.to_vlmeval`) instead of its hub
download; prompts and evaluation stay VLMEvalKit's.

The classes subclass VLMEvalKit's and are built on first use (VLMEvalKit is optional).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from ..benchmarks import docs as bench_docs
from .vlmeval_tsv import to_vlmeval, write_vlmeval_tsv

LVBENCH_NAMES = {"LVBench": 0, "LVBench_64frame": 64}  # registered dataset name -> nframe (frames for image models)


def _env_or(value: str | Path | None, variable: str, what: str) -> Path:
    if value is not None:
        return Path(value).expanduser()
    if not os.environ.get(variable, "").strip():
        raise ValueError(f"LVBench needs {what}: pass it, or export {variable}=<path>")
    return Path(os.environ[variable]).expanduser()


@functools.cache
def lvbench_class() -> type:
    """The LVBench dataset class (a `vlmeval.dataset.video_base.VideoBaseDataset`)."""
    from vlmeval.dataset.video_base import VideoBaseDataset
    from vlmeval.smp import LMUDataRoot, dump, get_intermediate_file_path, load

    from .. import scoring

    class LVBench(VideoBaseDataset):
        """LVBench multiple choice: lmms-eval's prompt, LVBench's per-type accuracy (fractions)."""

        TYPE = "Video-MCQ"
        MODALITY = "VIDEO"

        def __init__(self, dataset: str = "LVBench", nframe: int = 0, fps: float = -1,
                     annotations: str | Path | None = None, videos: str | Path | None = None) -> None:
            annotations_var, videos_var = bench_docs.env_names("lvbench")
            self.annotation_file = _env_or(annotations, annotations_var, "its annotation file (video_info.meta.jsonl)")
            self.video_root = _env_or(videos, videos_var, "its video folder")
            super().__init__(dataset=dataset, nframe=nframe, fps=fps)
            self.docs = {doc["index"]: doc for doc in bench_docs.build_docs("lvbench", self.annotation_file, self.video_root)}

        @classmethod
        def supported_datasets(cls) -> list[str]:
            return list(LVBENCH_NAMES)

        def prepare_dataset(self, dataset: str) -> dict[str, str]:
            """Writes `<LMUData>/<dataset>.tsv` from the annotation file (cheap; always current)."""
            data_file = Path(LMUDataRoot()) / f"{dataset}.tsv"
            tmp = data_file.with_name(f"{data_file.name}.{os.getpid()}.tmp")
            write_vlmeval_tsv(to_vlmeval(self.annotation_file, "LVBench"), tmp).replace(data_file)
            return {"root": str(self.video_root), "data_file": str(data_file)}

        def build_prompt(self, line: Any, video_llm: bool) -> list[dict[str, str]]:
            if isinstance(line, int):
                line = self.data.iloc[line]
            doc = self.docs[str(line["question_id"])]
            text = {"type": "text", "value": bench_docs.prompt(doc)}
            if video_llm:
                return [{"type": "video", "value": doc["video_path"]}, text]
            return [*({"type": "image", "value": frame} for frame in self.save_video_frames(str(line["video"]))), text]

        def evaluate(self, eval_file: str, **judge_kwargs: Any) -> dict[str, float]:
            """Per-question scores to `<eval_file>_score`, the breakdown to `<eval_file>_rating.json`."""
            data = load(eval_file)
            records = []
            for qid, prediction in zip(data["question_id"], data["prediction"]):
                text = "" if not isinstance(prediction, str) else prediction
                records.append(scoring.score(self.docs[str(qid)], text))
            data["score"] = [record["score"] for record in records]
            dump(data, get_intermediate_file_path(eval_file, "_score"))
            rating = scoring.breakdown("lvbench", records)
            dump(rating, get_intermediate_file_path(eval_file, "_rating", "json"))
            return rating

        @classmethod
        def report_primary_metric(cls, metrics: dict | None) -> dict[str, float]:
            return {"lvbench_acc": metrics["lvbench_acc"]} if metrics and "lvbench_acc" in metrics else {}

    return LVBench


def local_dataset(dataset: str, data_file: str | Path, data_root: str | Path, **kwargs: Any) -> Any:
    """VLMEvalKit's own `dataset` class ("Video-MME", "LongVideoBench", "MLVU_MCQ") over local files.

    Videos sit where that class looks: Video-MME `<root>/video/<video>.mp4`, LongVideoBench
    `<root>/<video_path>` (./videos/...), MLVU_MCQ `<root>/<prefix>/<video>`. `kwargs` go to
    the class (nframe, fps, use_subtitle); LongVideoBench decodes `nframe` frames for every
    prompt, so it needs nframe > 0 even for a video LLM.
    """
    from vlmeval.dataset import MLVU_MCQ, LongVideoBench, VideoMME

    bases = {"Video-MME": VideoMME, "LongVideoBench": LongVideoBench, "MLVU_MCQ": MLVU_MCQ}
    if dataset not in bases:
        raise ValueError(f"local copies exist for {', '.join(bases)}, not {dataset!r}")
    files = {"root": str(Path(data_root).absolute()), "data_file": str(Path(data_file).absolute())}

    class Local(bases[dataset]):
        def prepare_dataset(self, dataset_name: str, *args: Any, **kw: Any) -> dict[str, str]:
            return dict(files)

    Local.__name__ = Local.__qualname__ = f"Local{bases[dataset].__name__}"
    return Local(dataset=dataset, **kwargs)


def register_datasets() -> list[str]:
    """Make LVBench a VLMEvalKit dataset (`build_dataset("LVBench")`, run.py `--data LVBench`)."""
    import vlmeval.dataset as vd
    from vlmeval.dataset.video_dataset_config import supported_video_datasets

    cls = lvbench_class()
    for name, nframe in LVBENCH_NAMES.items():
        supported_video_datasets[name] = functools.partial(cls, dataset="LVBench", nframe=nframe)
    if cls not in vd.DATASET_CLASSES:  # DATASET_TYPE / DATASET_MODALITY look names up there
        vd.DATASET_CLASSES.append(cls)
        vd.SUPPORTED_DATASETS.extend(LVBENCH_NAMES)
    vd.LVBench = cls
    return list(LVBENCH_NAMES)
