"""The VLMEvalKit adapter without VLMEvalKit (message parsing, TSV conversion, selection reuse,
the lazy import) and, where it is installed, with its real dataset classes and inference loop.

VLMEvalKit's messages and TSVs are written here as its code writes them (`build_prompt`,
`generate_tsv` of vlmeval/dataset/videomme.py, longvideobench.py, mlvu.py), from the real
published annotation records; truths are the records' own ids and the published TSVs."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tspo_eval.answering import (
    AnswerConfig,
    FramePlanner,
    answer_questions,
)
from tspo_eval.backbones import Backbone
from tspo_eval.benchmarks import read_tsv
from tspo_eval.policy import FramePolicy
from tspo_eval.integrations import vlmeval as tv
from tspo_eval.integrations.vlmeval_tsv import (
    QuestionIndex,
    from_vlmeval,
    questions_frame,
    read_vlmeval_tsv,
    to_vlmeval,
    write_vlmeval_tsv,
)
from tspo_eval.synthetic import read_frame_number

PUBLISHED = {"Video-MME": ("videomme", "videomme.json", "VideoMME.tsv"),
             "LongVideoBench": ("longvideobench", "lvb_val.json", "LongVideoBench.tsv"),
             "MLVU_MCQ": ("mlvu", "mlvu.json", "MLVU.tsv"),
             "LVBench": ("lvbench", "video_info.meta.jsonl", "LVBench.tsv")}
# VLMEvalKit's columns, as its generate_tsv functions write them.
VIDEOMME_COLUMNS = ["index", "video", "video_path", "duration", "domain", "candidates", "sub_category", "task_type",
                    "subtitle_path", "question", "answer"]
MLVU_COLUMNS = ["task_type", "prefix", "duration", "video", "question", "answer", "candidates", "index"]
VIDEOMME_TMPL = ("\nThese are the frames of a video. Select the best answer to the following multiple-choice question "
                 "based on the video. Respond with only the letter (A, B, C, or D) of the correct option.\n")
MLVU_SYS = ("Carefully watch this video and pay attention to every detail. Based on your observations, select the best "
            "option that accurately addresses the question.")


def _text(value: str, **extra: str) -> dict[str, str]:
    return {"type": "text", "value": value, **extra}


def vlmeval_message(dataset: str, row: dict, root: Path) -> list[dict[str, str]]:
    """The message VLMEvalKit's `build_prompt(line, video_llm=True)` gives a video LLM."""
    options = ast.literal_eval(row["candidates"])
    if dataset == "Video-MME":
        question = row["question"] + "\n" + "\n".join(options)
        return [_text(""), {"type": "video", "value": str(root / "video" / f"{row['video']}.mp4")},
                _text(VIDEOMME_TMPL), _text(f"Question: {question}\nAnswer: ")]
    if dataset == "LongVideoBench":
        question = row["question"] + "\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(options))
        return [_text(""), {"type": "video", "value": str(root / row["video_path"])},
                _text(question + "\nAnswer with the option's letter from the given choices directly.")]
    if dataset == "MLVU_MCQ":
        question = f"Question: {row['question']}\nOptions:\n" + "".join(
            f"({chr(65 + i)}) {c}\n" for i, c in enumerate(options))
        return [_text(MLVU_SYS, role="system"), {"type": "video", "value": str(root / row["prefix"] / row["video"])},
                _text(question.rstrip()), _text("\nOnly give the best option.")]
    # LVBench: lmms-eval's `lvbench` prompt
    question = row["question"] + "\n" + "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(options))
    return [{"type": "video", "value": str(root / row["video_path"])},
            _text(question + "\nAnswer the question with the option letter")]


def _truth_indices(dataset: str, official_dir: Path) -> list[str]:
    """Registry index of every VLMEvalKit row, from the records' own ids (or the published TSV order)."""
    benchmark, annotation, tsv = PUBLISHED[dataset]
    if dataset == "Video-MME":
        return [item["question_id"] for item in json.loads((official_dir / annotation).read_text())]
    if dataset == "LongVideoBench":
        return [item["id"] for item in json.loads((official_dir / annotation).read_text())]
    return [q.index for q in read_tsv(official_dir / tsv, benchmark)]  # both list the published order


# ---------------------------------------------------------------- without VLMEvalKit

def test_importing_the_adapter_imports_no_vlmeval_and_using_it_without_vlmeval_says_how_to_install(monkeypatch):
    code = "import sys, tspo_eval.integrations.vlmeval; print('vlmeval' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "vlmeval", None)  # as if it were not installed
    for use in (lambda: tv.model_class("llava_vid_tspo"), lambda: tv.register(), lambda: tv.build_dataset("LVBench"),
                lambda: tv.run("llava_vid_uniform", "LVBench")):
        with pytest.raises(ImportError, match=r"(?s)not on the package registry.*pip install -e VLMEvalKit"):
            use()


@pytest.mark.parametrize("dataset", list(PUBLISHED))
def test_every_published_question_is_found_from_its_vlmeval_message(dataset, official_dir, tmp_path):
    benchmark, annotation, tsv = PUBLISHED[dataset]
    registry = read_tsv(official_dir / tsv, benchmark)
    index = QuestionIndex(registry)
    by_index = {q.index: q for q in registry}
    path = write_vlmeval_tsv(to_vlmeval(official_dir / annotation, dataset), tmp_path / f"{dataset}.tsv")
    rows = read_vlmeval_tsv(path).to_dict("records")
    truth = _truth_indices(dataset, official_dir)
    assert len(rows) == len(truth) == len(registry)
    for row, expected in zip(rows, truth):
        message = vlmeval_message(dataset, row, tmp_path)
        ref = tv.question_ref(message, dataset, index)
        assert ref.index == expected, (dataset, row["index"])
        assert ref.benchmark == benchmark
        assert ref.question == by_index[expected].question  # the stem the selector encodes, as the TSV holds it
        assert ref.video_path == message[[m["type"] for m in message].index("video")]["value"]


def test_prompt_is_the_text_items_stripped_one_per_line_and_unmatched_questions_get_a_stable_id(official_dir, tmp_path):
    row = read_vlmeval_tsv(write_vlmeval_tsv(to_vlmeval(official_dir / "videomme.json", "Video-MME"),
                                             tmp_path / "v.tsv")).iloc[0].to_dict()
    message = vlmeval_message("Video-MME", row, tmp_path)
    ref = tv.question_ref(message, "Video-MME", None)
    assert ref.prompt == (VIDEOMME_TMPL.strip() + "\nQuestion: " + row["question"] + "\n"
                          + "\n".join(ast.literal_eval(row["candidates"])) + "\nAnswer:")
    assert ref.question == row["question"] and ref.index.startswith("Video-MME:fFjv93ACGo8.mp4:")
    assert tv.question_ref(message, "Video-MME", None).index == ref.index  # same question, same id
    other = tv.question_ref(vlmeval_message("Video-MME", {**row, "question": "Another?"}, tmp_path), "Video-MME")
    assert other.index != ref.index
    unknown = tv.question_ref([{"type": "video", "value": "/v/x.mp4"}, _text(" What happens? ")], "SomeOtherBench")
    assert (unknown.benchmark, unknown.question, unknown.prompt) == ("", "What happens?", "What happens?")
    with pytest.raises(ValueError, match="holds no video"):
        tv.question_ref([{"type": "image", "value": "/f.jpg"}, _text("q")], "Video-MME")


def test_vlmeval_tsvs_have_vlmeval_columns_and_convert_back_to_the_published_tsvs(official_dir, tmp_path):
    videomme = to_vlmeval(official_dir / "videomme.json", "Video-MME")
    assert list(videomme.columns) == VIDEOMME_COLUMNS
    assert list(to_vlmeval(official_dir / "mlvu.json", "MLVU_MCQ").columns) == MLVU_COLUMNS
    lvb = to_vlmeval(official_dir / "lvb_val.json", "LongVideoBench")
    keys = list(json.loads((official_dir / "lvb_val.json").read_text())[0])
    assert list(lvb.columns) == keys + ["index", "video"] and lvb["video_path"][0] == "./videos/86CxyhFV9MI.mp4"
    # LongVideoBench and LVBench rows carry the registry index: no registry needed, byte-identical TSVs
    from tspo_eval.benchmarks import write_tsv

    for dataset in ("LongVideoBench", "LVBench"):
        benchmark, annotation, tsv = PUBLISHED[dataset]
        path = write_vlmeval_tsv(to_vlmeval(official_dir / annotation, dataset), tmp_path / f"{dataset}.tsv")
        write_tsv(questions_frame(from_vlmeval(path, dataset)), tmp_path / tsv)
        assert (tmp_path / tsv).read_bytes() == (official_dir / tsv).read_bytes(), dataset
    # Video-MME and MLVU rows do not: the registry gives them their index
    for dataset in ("Video-MME", "MLVU_MCQ"):
        benchmark, annotation, tsv = PUBLISHED[dataset]
        path = write_vlmeval_tsv(to_vlmeval(official_dir / annotation, dataset), tmp_path / f"{dataset}.tsv")
        own = from_vlmeval(path, dataset)
        assert [q.index for q in own[:2]] == ["vlmeval-0", "vlmeval-1"]
        matched = from_vlmeval(path, dataset, read_tsv(official_dir / tsv, benchmark))
        assert [q.index for q in matched] == _truth_indices(dataset, official_dir)


def test_handwritten_vlmeval_tsvs_convert_with_their_quirks(tmp_path):
    """VLMEvalKit-layout rows written by hand: a stem with a line break, MLVU answers that look like
    numbers and a repeated option (the registry's answer_number is its last occurrence)."""
    videomme = pd.DataFrame([[0, "fFjv93ACGo8", "./video/fFjv93ACGo8.mp4", "short", "Knowledge",
                              "['A. Apples.', 'B. Candles.', 'C. Berries.', 'D. Same.']", "Humanity & History",
                              "Counting Problem", "./subtitle/fFjv93ACGo8.srt", "How many\ntrees?", "C"]],
                            columns=VIDEOMME_COLUMNS)
    videomme.to_csv(tmp_path / "Video-MME.tsv", sep="\t", index=False)
    (q,) = from_vlmeval(tmp_path / "Video-MME.tsv", "Video-MME")
    assert (q.video_name, q.question, q.answer, q.answer_number) == ("fFjv93ACGo8.mp4", "How many trees?", "C", 2)
    mlvu = pd.DataFrame([["count", "./MLVU/video/4_count", 120.0, "count_1.mp4", "How many cats?", "3",
                          "['2', '3', '4', '3']", 0]], columns=MLVU_COLUMNS)
    mlvu.to_csv(tmp_path / "MLVU_MCQ.tsv", sep="\t", index=False)
    (q,) = from_vlmeval(tmp_path / "MLVU_MCQ.tsv", "MLVU_MCQ")
    assert (q.answer, q.answer_number, q.candidates, q.task_name) == ("3", 3, ("2", "3", "4", "3"), "count")
    # a registry question with the same video, stem and options but another answer: different releases
    from dataclasses import replace

    with pytest.raises(ValueError, match="different releases"):
        from_vlmeval(tmp_path / "MLVU_MCQ.tsv", "MLVU_MCQ", [replace(q, index="7_mlvu_7", answer_number=1)])


def test_model_args_are_the_lmms_eval_ones_plus_questions(tmp_path):
    args, extra = tv.parse_args("qwen_2_5_vl_uniform", {"k": "8", "max_pixels": 1000, "max_new_tokens": "4",
                                                        "questions": "data"})
    assert (args.policy.k, args.max_pixels, args.policy.method, extra.max_new_tokens, extra.questions) == \
        (8, 1000, "uniform", 4, "data")
    assert args.policy.loader == "qwen2_5_vl"  # official uniform frames: this backbone's published loader
    with pytest.raises(ValueError, match=r"unknown model_args frames.*k.*questions"):
        tv.parse_args("llava_vid_tspo", {"frames": 8})
    with pytest.raises(ValueError, match="pass questions="):
        tv.parse_args("llava_vid_tspo", {"selections": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="selections runs/nothing: no such file"):
        tv.parse_args("llava_vid_tspo", {"selections": "runs/nothing"})


@pytest.mark.parametrize(("visible", "expected"), [(1, 0), (8, 3)])
def test_each_rank_takes_its_own_gpu_among_those_it_sees(visible, expected, monkeypatch):
    """torchrun rank 3: VLMEvalKit's run.py leaves it one GPU (cuda:0); plain torchrun leaves all 8."""
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    from tspo_eval.distributed import local_device

    assert local_device() == torch.device("cuda", expected)


class PixelReadingBackbone(Backbone):
    """Answers with the frame numbers drawn in the pixels it received; records each budget."""

    name = "pixel-reader"
    dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.budgets: list[int] = []

    def generate(self, queries, max_new_tokens: int = 16) -> list[str]:
        self.budgets.append(max_new_tokens)
        return [" ".join(str(read_frame_number(f)) for f in q.frames) for q in queries]

    def next_token_logits(self, queries) -> torch.Tensor:
        return torch.zeros(len(queries), 1)


VLMEVAL_LAYOUT = {"Video-MME": lambda row: Path("video") / f"{row['video']}.mp4",
                  "LongVideoBench": lambda row: Path(row["video_path"]),
                  "MLVU_MCQ": lambda row: Path(row["prefix"]) / row["video"],
                  "LVBench": lambda row: Path(row["video_path"])}


def vlmeval_copy(dataset: str, annotations: Path, videos: Path, root: Path) -> Path:
    """VLMEvalKit's TSV of a mini benchmark, with its videos linked where VLMEvalKit's class looks."""
    frame = to_vlmeval(annotations, dataset)
    for row in frame.astype(str).to_dict("records"):
        target = root / VLMEVAL_LAYOUT[dataset](row)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(videos / get_video_name(dataset, row))
    return write_vlmeval_tsv(frame, root / f"{dataset}.tsv")


def get_video_name(dataset: str, row: dict) -> str:
    return from_vlmeval(pd.DataFrame([row]), dataset)[0].video_name


@pytest.fixture(scope="module")
def mini_selections(mini_benchmarks, tmp_path_factory) -> Path:
    """`tspo_<benchmark>.json` for every mini benchmark, chosen by a random agent (k=4)."""
    from tspo_eval.agent import random_agent
    from tspo_eval.cache import FeatureCache
    from tspo_eval.selection.stage import select_benchmark

    folder = tmp_path_factory.mktemp("selections")
    agent = random_agent("clip-tiny")
    for benchmark, (source, videos) in mini_benchmarks.items():
        questions = tv.load_registry(source, benchmark)
        result = select_benchmark(questions, videos, agent.encoder, FeatureCache(folder / "cache"),
                                  FramePolicy(method="tspo", k=4), agent=agent, progress=False)
        result.save(folder / f"tspo_{benchmark}.json")
    return folder


@pytest.mark.parametrize("dataset", list(PUBLISHED))
def test_same_question_gets_the_same_frames_in_lmms_eval_and_vlmevalkit(dataset, mini_benchmarks, mini_selections,
                                                                         tmp_path):
    from tspo_eval.benchmarks.docs import build_docs, prompt
    from tspo_eval.integrations.lmms_eval import question_ref as lmms_question_ref
    from tspo_eval.selection.stage import SelectionSet

    benchmark = PUBLISHED[dataset][0]
    annotations, videos = mini_benchmarks[benchmark]
    expected = {k: v.frame_numbers for k, v in SelectionSet.load(mini_selections / f"tspo_{benchmark}.json")
                .selections.items()}
    frames = FramePolicy(method="tspo", k=4, selections=str(mini_selections))
    # lmms-eval: the task's documents through the lmms-eval adapter
    docs = build_docs(benchmark, annotations, videos)
    lmms_refs = [lmms_question_ref(doc, prompt(doc), None, "") for doc in docs]
    lmms_answers = answer_questions(lmms_refs, FramePlanner(frames), PixelReadingBackbone(), progress=False)
    # VLMEvalKit: its own TSV and layout, one message at a time
    tsv = vlmeval_copy(dataset, annotations, videos, tmp_path / "vlmeval")
    backbone = PixelReadingBackbone()
    answerer = tv.MessageAnswerer(backbone, FramePlanner(frames), AnswerConfig(), questions=annotations.parent)
    texts = [answerer.answer(vlmeval_message(dataset, row, tmp_path / "vlmeval"), dataset)
             for row in read_vlmeval_tsv(tsv).to_dict("records")]

    assert sorted(a.index for a in lmms_answers) == sorted(expected)
    lmms_by_index = {a.index: a.text for a in lmms_answers}
    vlmeval_by_index = {answerer.ref(vlmeval_message(dataset, row, tmp_path / "vlmeval"), dataset).index: text
                        for row, text in zip(read_vlmeval_tsv(tsv).to_dict("records"), texts)}
    assert vlmeval_by_index.keys() == expected.keys()
    for index, chosen in expected.items():
        assert [int(x) for x in vlmeval_by_index[index].split()] == chosen  # read from the decoded pixels
        assert vlmeval_by_index[index] == lmms_by_index[index]
    assert set(backbone.budgets) == {32 if benchmark == "longvideobench" else 16}  # the lmms-eval tasks' lengths


def test_convert_command_writes_both_layouts(official_dir, tmp_path):
    from tspo_eval.cli import build_parser

    parser = build_parser()
    ns = parser.parse_args(["vlmeval", "convert", "--dataset", "Video-MME", "--annotations",
                            str(official_dir / "videomme.json"), "--out", str(tmp_path / "Video-MME.tsv")])
    assert ns.run(ns) == 0
    assert list(read_vlmeval_tsv(tmp_path / "Video-MME.tsv").columns) == VIDEOMME_COLUMNS
    ns = parser.parse_args(["vlmeval", "convert", "--dataset", "Video-MME", "--from-vlmeval",
                            str(tmp_path / "Video-MME.tsv"), "--registry", str(official_dir / "VideoMME.tsv"),
                            "--out", str(tmp_path / "VideoMME.tsv")])
    assert ns.run(ns) == 0
    assert (tmp_path / "VideoMME.tsv").read_bytes() == (official_dir / "VideoMME.tsv").read_bytes()


# ---------------------------------------------------------------- with VLMEvalKit

@pytest.fixture()
def vlmeval_env(monkeypatch, tmp_path):
    """VLMEvalKit installed (else skipped), writing its TSVs and frames under tmp_path."""
    pytest.importorskip("vlmeval")
    monkeypatch.setenv("LMUData", str(tmp_path / "LMUData"))
    (tmp_path / "LMUData").mkdir()
    return tmp_path


def _mini_truth(benchmark: str, annotations: Path) -> list[str]:
    """Registry indices of a mini benchmark's questions in VLMEvalKit's row order, from the records' own ids."""
    if benchmark == "videomme":
        return [item["question_id"] for item in json.loads(annotations.read_text())]
    if benchmark == "longvideobench":
        return [item["id"] for item in json.loads(annotations.read_text())]
    if benchmark == "lvbench":
        return [f"{v['key']}{qa['uid']}" for v in map(json.loads, annotations.read_text().splitlines()) for qa in v["qa"]]
    return [line.split("\t")[0] for line in annotations.read_text().splitlines()[1:]]  # MLVU: a published TSV slice


@pytest.mark.parametrize("dataset", list(PUBLISHED))
def test_vlmevalkit_dataset_classes_build_messages_we_read(dataset, vlmeval_env, mini_benchmarks):
    benchmark = PUBLISHED[dataset][0]
    annotations, videos = mini_benchmarks[benchmark]
    if dataset == "LVBench":
        built = tv.build_dataset("LVBench", annotations, videos)
    else:
        tsv = vlmeval_copy(dataset, annotations, videos, vlmeval_env / "data")
        built = tv.build_dataset(dataset, tsv, vlmeval_env / "data", nframe=2)
    index = QuestionIndex(tv.load_registry(annotations, benchmark))
    found = [tv.question_ref(built.build_prompt(i, video_llm=True), dataset, index) for i in range(len(built.data))]
    assert [ref.index for ref in found] == _mini_truth(benchmark, annotations)
    assert all(Path(ref.video_path).is_file() for ref in found)


class LetterBackbone(PixelReadingBackbone):
    """Always names option B, in words lmms-eval's LVBench parsing reads."""

    def generate(self, queries, max_new_tokens: int = 16) -> list[str]:
        return ["The answer is B." for _ in queries]


def test_vlmevalkit_runs_our_model_on_lvbench_from_the_selected_frames_and_scores_it(vlmeval_env, mini_benchmarks,
                                                                                      mini_selections, monkeypatch):
    import vlmeval.config
    from vlmeval.smp import load

    from tspo_eval import backbones
    from tspo_eval.selection.stage import SelectionSet

    annotations, videos = mini_benchmarks["lvbench"]
    record = vlmeval_env / "answers.jsonl"
    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: PixelReadingBackbone())
    tv.run("llava_vid_tspo", "LVBench", vlmeval_env / "out", data_file=annotations, data_root=videos,
           model_args={"selections": str(mini_selections), "k": 4, "record": str(record)})
    assert vlmeval.config.supported_VLM["llava_vid_tspo"].keywords["k"] == 4
    chosen = {k: v.frame_numbers for k, v in SelectionSet.load(mini_selections / "tspo_lvbench.json")
              .selections.items()}
    assert {r["index"]: r["frame_numbers"] for r in map(json.loads, record.read_text().splitlines())} == chosen
    (predictions_file,) = (vlmeval_env / "out" / "llava_vid_tspo").glob("*/llava_vid_tspo_LVBench.xlsx")
    predictions = load(str(predictions_file))  # in the folder of this frame policy
    for qid, prediction in zip(predictions["question_id"], predictions["prediction"]):
        assert [int(x) for x in str(prediction).split()] == chosen[qid]  # VLMEvalKit stored what the pixels say

    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: LetterBackbone())
    result = tv.run("llava_vid_uniform", "LVBench", vlmeval_env / "out", data_file=annotations, data_root=videos)
    answers = [(qa["answer"], qa["question_type"]) for v in map(json.loads, annotations.read_text().splitlines())
               for qa in v["qa"]]
    assert result["lvbench_acc"] == pytest.approx(sum(a == "B" for a, _ in answers) / len(answers))
    retrieval = [a == "B" for a, types in answers if "key information retrieval" in types]
    assert result["lvbench_acc_key_information_retrieval"] == pytest.approx(sum(retrieval) / len(retrieval))
