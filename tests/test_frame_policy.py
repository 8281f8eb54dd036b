"""One frame policy for every entry point.

- The policy parser: every key, typed or as a string, round trips; typos fail when built.
- The equivalence matrix on a generated mini benchmark (LVBench layout, real mp4s): for uniform,
  topk, bin-max, aks (non-default parameters) and tspo, with and without `official`, the frames
  `tspo-eval select` writes are the frames that reach the backbone from lmms-eval on the fly,
  lmms-eval reading the selections file, the VLMEvalKit adapter and `tspo-eval evaluate`.
  The cache is filled once by `tspo-eval extract` with non-default sampling and extraction
  settings; every entry point given those settings finds it (any re-extraction fails the test).
- Every entry of the three released frame_idx files reaches the backbone under `official` as
  the published `load_video_index` feeds it (no videos: probing and decoding are stubbed).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_eval.backbones import Backbone
from tspo_eval.policy import FramePolicy, Sampling, parse_extract, parse_policy
from tspo_eval.synthetic import read_frame_number

AGENT = "random:clip-tiny"
SAMPLING = {"fps": "2", "max_frames": "8", "decode_resize": "true"}  # 20 candidates at 2 fps, capped to 8
KNOBS = {"readers": "1", "decode_threads": "1", "backend": "pyav", "encode_batch": "3"}  # speed only


class RecordingBackbone(Backbone):
    """Records the frame numbers of every query and checks the decoded pixels show them."""

    name = "recording"
    dtype = torch.float32

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def generate(self, queries, max_new_tokens: int = 16) -> list[str]:
        for q in queries:
            self.seen.append(list(q.frame_numbers))
            if np.asarray(q.frames).shape[1:3] == (48, 64):  # a real decoded frame: it shows its number
                assert [read_frame_number(f) for f in q.frames] == list(q.frame_numbers)
        return ["A"] * len(queries)

    def next_token_logits(self, queries) -> torch.Tensor:
        return torch.zeros(len(queries), 1)


@dataclass
class _Request:
    args: tuple


def _run_lmms_model(model_name: str, model_args: str, docs: list[dict]) -> None:
    """lmms-eval's side of a run, in this process: its own model-argument parser, our model class
    (found as lmms-eval finds it), `generate_until` over the task's documents."""
    from lmms_eval.utils import simple_parse_args_string

    from tspo_eval.benchmarks.docs import prompt
    from tspo_eval.integrations.lmms_eval import model_class

    model = model_class(model_name)(batch_size=2, device="cpu", **simple_parse_args_string(model_args))
    model.task_dict = {"task": {"test": docs}}
    model.generate_until([_Request((prompt(doc), {"max_new_tokens": 16}, None, i, "task", "test"))
                          for i, doc in enumerate(docs)])


def _recorded(path: Path) -> dict[str, list[int]]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    assert all(row["error"] is None for row in rows), rows
    return {row["index"]: row["frame_numbers"] for row in rows}


# ----------------------------------------------------------------------------- the parser
def test_every_setting_round_trips_through_the_one_parser():
    policy = parse_policy({"method": "aks", "k": "32", "params": "preset=tspo;t1=0.5", "scores": "clip",
                           "official": "true", "loader": "qwen2_5_vl", "selections": "none", "fps": "2",
                           "max_frames": "100", "decode_resize": "1"})
    assert policy == FramePolicy("aks", 32, {"preset": "tspo", "t1": 0.5}, "clip", True, "qwen2_5_vl", None,
                                 Sampling(2.0, 100, True))
    assert parse_policy(policy.to_args()) == policy  # the strings model arguments and command lines carry
    assert parse_policy({}) == FramePolicy() and FramePolicy().to_args() == {}
    assert parse_extract(KNOBS).to_args() == KNOBS
    # the fingerprint names the frames: the loader only matters for official uniform frames
    assert policy.fingerprint() == policy.replace(loader="llava_video").fingerprint()
    uniform = FramePolicy("uniform", official=True)
    assert uniform.fingerprint() != uniform.replace(loader="qwen2_5_vl").fingerprint()
    assert policy.fingerprint() != policy.replace(k=31).fingerprint()


@pytest.mark.parametrize("raw, message", [
    ({"metod": "topk"}, "unknown frame policy setting"),
    ({"method": "topkk"}, "method='topkk' is not one of"),
    ({"k": "2.5"}, "k='2.5' is not an integer"),
    ({"k": "0"}, "k must be >= 1"),
    ({"scores": "agnt"}, "scores='agnt' is not one of auto, agent, clip"),
    ({"official": "maybe"}, "not a boolean"),
    ({"loader": "decord"}, "loader='decord' is not one of"),
    ({"method": "aks", "params": "presett=tspo"}, "has no parameter"),
    ({"method": "aks", "params": "preset=tsp"}, "unknown aks preset"),
    ({"method": "uniform", "params": "convention=decord"}, "convention='decord' is not one of lmms-eval, vlmevalkit"),
    ({"method": "dpp", "params": "lam=abc"}, r"method 'dpp': lam='abc' is not a number"),  # was a TypeError
    ({"method": "aks", "params": "depth=2.5"}, r"depth=2.5 is not a whole number"),
    ({"method": "bolt", "params": "repeats=x"}, r"repeats='x' is not one of spread, drop"),
    ({"fps": "0"}, "fps must be > 0"),
])
def test_a_typo_fails_when_the_policy_is_built(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(raw, where="llava_vid_tspo")


def test_model_args_take_the_policy_and_extraction_keys_and_fail_before_weights(monkeypatch):
    from tspo_eval.integrations import models

    monkeypatch.setattr("tspo_eval.backbones.load_backbone", lambda *a, **k: pytest.fail("weights loaded"))
    args = models.parse_model_args("qwen_2_5_vl_uniform", {"k": 8, "official": True, **SAMPLING, **KNOBS})
    assert args.policy == FramePolicy("uniform", 8, official=True, loader="qwen2_5_vl",
                                      sampling=Sampling(2.0, 8, True))
    assert args.extract.to_args() == KNOBS
    # official: the published Qwen2.5-VL time (no fps: pairs 2 fps apart) unless asked otherwise
    assert args.time_encoding == "none"
    assert models.parse_model_args("qwen_2_5_vl_tspo", {}).time_encoding is None  # the backbone's own: real
    assert models.parse_model_args("qwen_2_5_vl_tspo", {"official": "true", "time_encoding": "real"}
                                   ).time_encoding == "real"
    with pytest.raises(ValueError, match="qwen_2_5_vl_tspo: method='tspoo'"):
        models.parse_model_args("qwen_2_5_vl_tspo", {"method": "tspoo"})
    with pytest.raises(ValueError, match="unknown model_args frames.*decode_resize"):
        models.parse_model_args("llava_vid_tspo", {"frames": 8})


# ----------------------------------------------------------------------------- the equivalence matrix
CASES = [(method, params, official, k, "llava_video")
         for method, params in (("uniform", ""), ("topk", ""), ("bin-max", ""), ("aks", "t1=0.05;depth=2"),
                                ("tspo", ""))
         for official in (False, True) for k in (4, 12)]
CASES += [("uniform", "", True, k, "qwen2_5_vl") for k in (4, 12)]  # the other published uniform loader


@pytest.fixture(scope="module")
def bench(mini_benchmarks, tmp_path_factory):
    """The mini LVBench as a TSV, its feature cache filled once by `tspo-eval extract` with
    non-default sampling and extraction settings, and its VLMEvalKit copy."""
    from tspo_eval.benchmarks import convert, write_tsv
    from tspo_eval.cli import main
    from tspo_eval.integrations.vlmeval_tsv import to_vlmeval

    annotations, videos = mini_benchmarks["lvbench"]
    root = tmp_path_factory.mktemp("policy_bench")
    tsv = root / "LVBench.tsv"
    write_tsv(convert("lvbench", annotations), tsv)
    cache = root / "cache"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SAMPLING, **KNOBS}.items()]
    assert main(["extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
                 "--agent", AGENT, "--cache", str(cache), *flags]) == 0
    rows = to_vlmeval(annotations, "LVBench").astype(str).to_dict("records")
    return annotations, videos, tsv, cache, rows


@pytest.fixture
def no_reextraction(monkeypatch):
    """Any entry point that misses the cache (and so would extract again) fails the test."""
    from tspo_eval import extract

    monkeypatch.setattr(extract, "_encode", lambda *a, **k: pytest.fail("features extracted again: cache missed"))


@pytest.mark.parametrize("method, params, official, k, backbone", CASES)
def test_every_entry_point_feeds_the_frames_select_writes(method, params, official, k, backbone, bench, tmp_path,
                                                          monkeypatch, no_reextraction):
    from tspo_eval.integrations import lmms_runner
    from tspo_eval.benchmarks import build_docs
    from tspo_eval.cli import main
    from tspo_eval.integrations import vlmeval as tv
    from tspo_eval.selection.stage import SelectionSet

    annotations, videos, tsv, cache, rows = bench
    recorders: list[RecordingBackbone] = []

    def load_backbone(kind, *args, **kwargs):
        assert kind == backbone
        recorders.append(RecordingBackbone())
        return recorders[-1]

    monkeypatch.setattr("tspo_eval.backbones.load_backbone", load_backbone)
    settings = {"method": method, "k": str(k), "official": str(official).lower(), **SAMPLING,
                **({"params": params} if params else {})}
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    prefix = {"llava_video": "llava_vid", "qwen2_5_vl": "qwen_2_5_vl"}[backbone]
    model = f"{prefix}_{'uniform' if method == 'uniform' else 'tspo'}"
    knobs = ",".join(f"{key}={value}" for key, value in KNOBS.items())

    # 1. tspo-eval select (uniform official frames by this backbone's published loader)
    selections = tmp_path / f"{method}_lvbench.json"
    assert main(["select", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos), "--agent",
                 AGENT, "--cache", str(cache), "--out", str(selections), "--loader", backbone, *flags,
                 *(f"--{key.replace('_', '-')}={value}" for key, value in KNOBS.items())]) == 0
    chosen = SelectionSet.load(selections)
    assert not chosen.failed and len(chosen.selections) == 4
    expected = {index: s.frame_numbers for index, s in chosen.selections.items()}
    if official and k == 12 and method != "uniform":  # 8 candidates < k: the published fallback
        assert all(f == np.linspace(0, 99, 12, dtype=int).tolist() for f in expected.values())

    docs = build_docs("lvbench", annotations, videos)
    policy_args = ",".join(f"{key}={value}" for key, value in settings.items())
    common = f"agent={AGENT},cache_dir={cache},{policy_args},{knobs}"
    runs: dict[str, dict[str, list[int]]] = {}
    # 2. lmms-eval, frames chosen on the fly
    _run_lmms_model(model, f"{common},record={tmp_path / 'fly.jsonl'}", docs)
    runs["lmms-eval on the fly"] = _recorded(tmp_path / "fly.jsonl")
    # 3. lmms-eval reading the selections file
    _run_lmms_model(model, f"{common},selections={selections},record={tmp_path / 'file.jsonl'}", docs)
    runs["lmms-eval from the file"] = _recorded(tmp_path / "file.jsonl")
    # 4. the VLMEvalKit adapter (VLMEvalKit itself not needed): its messages, one at a time
    from test_vlmeval import vlmeval_copy, vlmeval_message

    vlmeval_copy("LVBench", annotations, videos, tmp_path / "vlmeval")
    answerer = tv.MessageAnswerer.from_args(model, {"agent": AGENT, "cache_dir": str(cache), **settings, **KNOBS,
                                                    "questions": str(annotations.parent),
                                                    "record": str(tmp_path / "vlmeval.jsonl")})
    for row in rows:
        answerer.answer(vlmeval_message("LVBench", row, tmp_path / "vlmeval"), "LVBench")
    runs["VLMEvalKit adapter"] = _recorded(tmp_path / "vlmeval.jsonl")

    # 5. tspo-eval evaluate: its lmms-eval command line is run by the in-process model above
    def lmms_eval_process(cmd, env=None):
        model_name, model_args = cmd[cmd.index("--model") + 1], cmd[cmd.index("--model_args") + 1]
        _run_lmms_model(model_name, model_args, docs)
        out = Path(cmd[cmd.index("--output_path") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_results.json").write_text(json.dumps({"results": {"tspo_lvbench": {"acc": 0.0}}}))
        return 0, []  # exit code, output lines

    monkeypatch.setattr(lmms_runner, "run_logged", lmms_eval_process)
    eval_flags = [f for f in flags if not f.startswith("--method=")]
    out = tmp_path / "evaluate"
    assert main(["evaluate", "--benchmark", "lvbench", "--annotations", str(annotations), "--videos", str(videos),
                 "--backbone", backbone, "--agent", AGENT, "--methods", method, "--out", str(out),
                 "--cache", str(cache), *eval_flags, *(f"--{key.replace('_', '-')}={value}"
                                                      for key, value in KNOBS.items())]) == 0
    (record,) = (out / "answers").glob("*.jsonl")
    runs["tspo-eval evaluate"] = _recorded(record)

    for door, frames in runs.items():
        assert frames == expected, door
    # what reached the backbones: the same frames, question by question (4 entry points x 4 questions)
    seen = sorted(f for r in recorders for f in r.seen)
    assert seen == sorted(f for _ in range(4) for f in expected.values())


def test_training_episodes_find_a_cache_built_with_their_sampling(mini_benchmarks, tmp_path, monkeypatch):
    """Episodes extract with their own sampling (1 fps, capped); given decode_resize they find what
    `tspo-eval extract` cached with the same settings and never extract again."""
    from tspo_eval import extract
    from tspo_eval.agent import random_agent
    from tspo_eval.benchmarks import convert, write_tsv
    from tspo_eval.cache import FeatureCache
    from tspo_eval.cli import main
    from tspo_eval.training.data import EpisodeBuilder, Sample

    annotations, videos = mini_benchmarks["lvbench"]
    tsv = tmp_path / "LVBench.tsv"
    write_tsv(convert("lvbench", annotations), tsv)
    assert main(["extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos), "--agent",
                 AGENT, "--cache", str(tmp_path / "cache"), "--max-frames", "6", "--decode-resize"]) == 0
    monkeypatch.setattr(extract, "_encode", lambda *a, **k: pytest.fail("features extracted again: cache missed"))
    encoder = random_agent("clip-tiny").encoder
    builder = EpisodeBuilder(videos, encoder, FeatureCache(tmp_path / "cache"), max_candidates=6, min_candidates=1,
                             decode_resize=True, extract=parse_extract(KNOBS))
    for video in sorted(videos.glob("*.mp4")):
        sample = Sample(id="s", video=video.name, kind="multiple_choice", question="q", prompt="q", answer="A")
        episode = builder.build(sample, np.random.default_rng(0))
        # the 10 s video's candidates capped to 6: what the cache holds under that sampling
        frames = episode.frame_numbers
        assert len(frames) == 6 and (np.diff(frames) > 0).all() and 0 <= frames[0] and frames[-1] < 100


# ----------------------------------------------------------------------------- released frame_idx files
def _video_frames(name: str) -> int:
    """A made-up frame count per video (no videos here): only the published fallback uses it."""
    return 1000 + sum(map(ord, name)) % 5000


@pytest.mark.parametrize("benchmark, model, frame_idx, annotation, fallbacks", [
    ("longvideobench", "llava_vid_tspo", "TSPO_LongVideoBench_frameIdx.json", "lvb_val.json", 361),
    ("mlvu", "llava_vid_tspo", "TSPO_MLVU_frameIdx.json", "mlvu.json", 0),
    ("videomme", "qwen_2_5_vl_tspo", "TSPO_VideoMME_frameIdx.json", "videomme.json", 261),
])
def test_every_released_frame_idx_entry_reaches_the_backbone_as_published(benchmark, model, frame_idx, annotation,
                                                                          fallbacks, official_dir, tmp_path,
                                                                          monkeypatch):
    from tspo_eval import answering
    from tspo_eval.selection import stage as selections
    from tspo_eval.benchmarks import build_docs, read_frame_idx
    from tspo_eval.video import VideoInfo

    recorder = RecordingBackbone()
    monkeypatch.setattr("tspo_eval.backbones.load_backbone", lambda *a, **k: recorder)
    monkeypatch.setattr(selections, "probe", lambda path: VideoInfo(str(path), _video_frames(Path(path).name),
                                                                    30.0, 64, 48))
    monkeypatch.setattr(answering, "read_frames",
                        lambda path, numbers: np.zeros((len(numbers), 2, 2, 3), np.uint8))
    docs = build_docs(benchmark, official_dir / annotation, tmp_path / "no_videos")
    record = tmp_path / "answers.jsonl"
    _run_lmms_model(model, f"selections={official_dir / frame_idx},official=true,record={record}", docs)

    # the published rule (load_video_index), from the file itself
    items = json.loads((official_dir / frame_idx).read_text())
    by_index = read_frame_idx(official_dir / frame_idx, benchmark)
    video_of = {doc["index"]: Path(doc["video_path"]).name for doc in docs}
    fed = _recorded(record)
    assert len(fed) == len(items) == len(by_index) == len(recorder.seen)
    fell_back = 0
    for index, listed in by_index.items():
        published = sorted(listed[:64])
        if len(published) < 64:
            published = np.linspace(0, _video_frames(video_of[index]) - 1, 64, dtype=int).tolist()
            fell_back += 1
        assert fed[index] == published, index
    assert fell_back == fallbacks
    assert sorted(map(tuple, recorder.seen)) == sorted(map(tuple, fed.values()))


def test_released_frame_idx_without_official_is_fed_as_listed(official_dir, tmp_path, monkeypatch):
    from tspo_eval import answering
    from tspo_eval.selection import stage as selections
    from tspo_eval.benchmarks import build_docs, read_frame_idx
    from tspo_eval.video import VideoInfo

    monkeypatch.setattr("tspo_eval.backbones.load_backbone", lambda *a, **k: RecordingBackbone())
    monkeypatch.setattr(selections, "probe", lambda path: VideoInfo(str(path), 100000, 30.0, 64, 48))
    monkeypatch.setattr(answering, "read_frames", lambda path, numbers: np.zeros((len(numbers), 2, 2, 3), np.uint8))
    docs = build_docs("longvideobench", official_dir / "lvb_val.json", tmp_path)[:50]
    record = tmp_path / "answers.jsonl"
    _run_lmms_model("llava_vid_tspo", f"selections={official_dir / 'TSPO_LongVideoBench_frameIdx.json'},"
                    f"record={record}", docs)
    listed = read_frame_idx(official_dir / "TSPO_LongVideoBench_frameIdx.json", "longvideobench")
    assert _recorded(record) == {doc["index"]: listed[doc["index"]] for doc in docs}


def test_select_data_with_the_llm_scores_the_prompt_train_llm_trains_on(numbered_video, tmp_path, monkeypatch):
    """`select-data --policy llm --think` must score `train-llm --think`'s prompt (and frames)."""
    import contextlib

    from tspo_eval.training import rollout, variance
    from tspo_eval.training.data import Sample
    from tspo_eval.training.llm_grpo import LLMTrainConfig

    class Prompted(Exception):
        pass

    class RecordingPolicy:  # stands for the LLM: records the query it is prompted with, then stops
        def __init__(self):
            self.queries = []

        def autocast(self):
            return contextlib.nullcontext()

        def prompt(self, query):
            self.queries.append(query)
            raise Prompted

    selecting, training = RecordingPolicy(), RecordingPolicy()
    monkeypatch.setattr("tspo_eval.backbones.load_backbone", lambda *a, **k: None)
    monkeypatch.setattr(variance, "VideoPolicy", lambda backbone: selecting)
    sample = Sample(id="s", video=str(numbered_video), kind="multiple_choice", question="q", prompt="Q?\nA. x\nB. y")
    with pytest.raises(Prompted):
        variance.llm_group_rewards(variance.VarianceConfig(data="unused.jsonl", policy="llm", runs=2, k=4,
                                                           think=True))(0, sample)
    with pytest.raises(Prompted):  # what LLMTrainer.rollout asks of the same sample
        rollout.answer_group(training, sample, LLMTrainConfig(k=4, think=True), 2, 0)
    scored, trained = selecting.queries[0], training.queries[0]
    assert scored.prompt == trained.prompt and scored.prompt.endswith(rollout.THINK_INSTRUCTION)
    assert scored.frame_numbers == trained.frame_numbers == [0, 99, 199, 299]  # linspace(0, 299, 4)


@pytest.mark.parametrize("command, extra", [("train", ["--environment", "synthetic"]),
                                            ("select-data", ["--data", "pool.jsonl"]), ("train-llm", [])])
def test_training_commands_take_decode_resize_and_the_extraction_knobs(command, extra, tmp_path):
    """Spelled as for every other command; a --config file's `extract` mapping, flags over it, and a
    saved run's config.json reads back equal."""
    from tspo_eval.cli import build_parser
    from tspo_eval.policy import ExtractConfig
    from tspo_eval.config import config_with_file
    from tspo_eval.training.config import LLMTrainConfig, TrainConfig, VarianceConfig

    cls = {"train": TrainConfig, "select-data": VarianceConfig, "train-llm": LLMTrainConfig}[command]
    (tmp_path / "run.yaml").write_text("extract:\n  readers: 3\n  backend: pyav\n")
    ns = build_parser().parse_args([command, "--config", str(tmp_path / "run.yaml"), "--readers", "5",
                                    "--decode-resize", *extra])
    cfg = config_with_file(cls, ns)
    assert cfg.extract == ExtractConfig(readers=5, backend="pyav") and cfg.decode_resize is True
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    again = config_with_file(cls, build_parser().parse_args([command, "--config", str(tmp_path / "config.json"),
                                                             *extra]))
    assert again == cfg
    for bad, message in (("backend: pyv", "backend='pyv' is not one of"), ("reader: 4", "unknown extraction")):
        (tmp_path / "bad.yaml").write_text(f"extract:\n  {bad}\n")
        with pytest.raises(ValueError, match=message):
            config_with_file(cls, build_parser().parse_args([command, "--config", str(tmp_path / "bad.yaml"), *extra]))


def test_question_frames_answers_frame_numbers_and_timestamps(numbered_video):
    """The one-question form of the planner: 300 frames at 29.97 fps, uniform K = 4 over all of them."""
    from tspo_eval import FramePolicy as PublicPolicy, question_frames
    from tspo_eval.selection.stage import QuestionRef

    ref = QuestionRef("q", "lvbench", str(numbered_video), "what?")
    chosen = question_frames(ref, PublicPolicy("uniform", 4))
    assert chosen.frame_numbers == [0, 99, 199, 299]  # linspace(0, 299, 4) truncated
    assert np.allclose(chosen.timestamps, np.array([0, 99, 199, 299]) * 1001 / 30000)
    official = question_frames(ref, PublicPolicy("uniform", 16, official=True))  # 10 one-fps frames <= 16
    assert official.frame_numbers == list(range(0, 300, 30))
