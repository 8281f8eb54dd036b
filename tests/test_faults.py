"""The fault suite of issue 18: planted faults, each with the behaviour the user must see.

docs/reliability.md maps every fault to its test (here or in the stage's own test file).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tspo_eval import cache as cache_module
from tspo_eval import cli, scoring
from tspo_eval.benchmarks import BenchmarkFormatError, get_benchmark, load_benchmark, read_tsv
from tspo_eval.benchmarks.core import RefusedRow
from tspo_eval.benchmarks.docs import build_docs, refused_doc
from tspo_eval.cache import FeatureCache, VideoFeatures, tensor_checksum, video_key
from tspo_eval.integrations import vlmeval as tv
from tspo_eval.integrations.models import parse_model_args
from tspo_eval.policy import FramePolicy, Sampling, parse_bool
from tspo_eval.selection.stage import SelectionSet


# ----------------------------------------------------------------------------- cache
def _entry(t: int = 40, d: int = 16) -> VideoFeatures:
    g = torch.Generator().manual_seed(0)
    return VideoFeatures(features=torch.randn(t, d, generator=g).to(torch.bfloat16),
                         frame_numbers=np.arange(t, dtype=np.int64) * 30, timestamps=np.arange(t) * 30 / 29.97,
                         fps=29.97, num_frames=t * 30, encoder="enc", fingerprint="fp", video="v.mp4")


def _tensor_span(path, name: str) -> tuple[int, int]:
    """Byte range of one tensor's data in a safetensors file (8-byte header length, JSON header, data)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    start, stop = json.loads(raw[8:8 + size])[name]["data_offsets"]
    return 8 + size + start, 8 + size + stop


def _edit(path, name: str, edit) -> None:
    raw = bytearray(path.read_bytes())
    start, stop = _tensor_span(path, name)
    raw[start:stop] = edit(bytes(raw[start:stop]))
    path.write_bytes(bytes(raw))


def _flip_64_bytes(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]


def _frame_999999(data: bytes) -> bytes:
    return data[:8] + np.int64(999999).tobytes() + data[16:]  # the second frame number


@pytest.mark.parametrize("tensor, edit", [("features", _flip_64_bytes), ("frame_numbers", _frame_999999)])
def test_corrupted_cache_data_is_detected_and_recomputed(tmp_path, caplog, tensor, edit):
    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc", Sampling())
    path = cache.put_video(key, _entry())
    _edit(path, tensor, edit)
    with caplog.at_level("WARNING"):
        assert cache.get_video(key) is None  # never served
    assert "checksum" in caplog.text and str(path) in caplog.text
    assert not path.exists()  # removed, so the next extraction recomputes it
    cache.put_video(key, _entry())
    assert torch.equal(cache.get_video(key).features, _entry().features)


def test_corrupted_text_features_are_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute(texts):
        calls.append(list(texts))
        return torch.ones(len(texts), 4)

    cache.text_features("enc", ["a question"], compute)
    (path,) = (tmp_path / "text").rglob("*.safetensors")
    _edit(path, "features", lambda data: bytes(b ^ 1 for b in data))
    assert torch.equal(cache.text_features("enc", ["a question"], compute), torch.ones(1, 4))
    assert calls == [["a question"], ["a question"]]


def test_entry_without_checksum_is_recomputed(tmp_path):
    """Entries of the version before checksums: recomputed once, never trusted unverified."""
    from safetensors.torch import save_file

    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc", Sampling())
    path = cache.put_video(key, _entry())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    del meta["checksum"]
    save_file(tensors, str(path), metadata=meta)
    assert cache.get_video(key) is None and not path.exists()


def test_checksum_covers_values_dtype_and_shape():
    base = {"x": torch.arange(6, dtype=torch.int64)}
    assert tensor_checksum(base) == tensor_checksum({"x": torch.arange(6, dtype=torch.int64)})
    variants = [{"x": torch.arange(6, dtype=torch.int32)}, {"x": torch.arange(6).reshape(2, 3)},
                {"x": torch.tensor([0, 1, 2, 3, 4, 6])}, {"y": torch.arange(6)}]
    assert len({tensor_checksum(v) for v in variants} | {tensor_checksum(base)}) == 5


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_tmp_files_are_removed_but_never_a_live_writers(tmp_path):
    cache = FeatureCache(tmp_path)
    folder = tmp_path / "videos" / "ab"
    folder.mkdir(parents=True)
    name, host, uid = "ab12.safetensors", cache_module._HOST, "0" * 32
    dead = folder / f".{name}.{host}.{_dead_pid()}.{uid}.tmp"  # killed writer of this machine
    live = folder / f".{name}.{host}.{os.getpid()}.{uid}.tmp"  # this process: writing now
    elsewhere = folder / f".{name}.otherhost.{_dead_pid()}.{uid}.tmp"  # another machine's: cannot tell
    old = folder / f".{name}.otherhost.1.{uid}.tmp"
    legacy = folder / f".{name}.{os.getpid()}.{uid}.tmp"  # the name before hosts were recorded
    for path in (dead, live, elsewhere, old, legacy):
        path.write_bytes(b"partial")
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    text_dead = tmp_path / "text" / "cd" / f".cd34.safetensors.{host}.{_dead_pid()}.{uid}.tmp"
    text_dead.parent.mkdir(parents=True)
    text_dead.write_bytes(b"partial")
    # the first write sweeps the whole cache once
    cache.put_video(video_key("fp", "enc", Sampling()), _entry())
    assert not dead.exists() and not old.exists() and not text_dead.exists()
    assert live.exists() and elsewhere.exists() and legacy.exists()


# ----------------------------------------------------------------------------- benchmark rows

AGENT = ["--agent", "random:clip-tiny"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A generated LVBench-layout benchmark: 3 videos, one question each (TSV + annotation file)."""
    from tspo_eval.synthetic import NeedleBenchmark, make_benchmark

    root = tmp_path_factory.mktemp("bench")
    videos, jsonl, tsv = make_benchmark(root, NeedleBenchmark(videos=3, duration=20.0, video_fps=4.0))
    return videos, jsonl, tsv


def _escaping_tsv(tsv, out, row: int = 2):
    """`tsv` with the video of its `row`-th data row (1-based) replaced by a path leaving the video root."""
    lines = tsv.read_text().split("\n")
    fields = lines[row].split("\t")
    fields[2] = "../escape.mp4"
    lines[row] = "\t".join(fields)
    out.write_text("\n".join(lines))
    return out, fields[0]


def test_a_bad_row_refuses_that_question_alone(bench, tmp_path):
    videos, jsonl, tsv = bench
    bad, index = _escaping_tsv(tsv, tmp_path / "bad.tsv")
    with pytest.raises(BenchmarkFormatError, match="line 3.*'..'"):
        read_tsv(bad, "lvbench")  # strict: the whole file, as before
    refused = []
    questions = load_benchmark("lvbench", bad, refused=refused)
    assert [q.index for q in questions] == [q.index for q in read_tsv(tsv, "lvbench") if q.index != index]
    (row,) = refused
    assert (row.index, row.path, row.where) == (index, str(bad), "line 3") and "'..'" in row.problem
    # with the annotation file joined, the refused row's item is simply not asked for
    refused = []
    assert len(load_benchmark("lvbench", bad, jsonl, refused=refused)) == 2 and [r.index for r in refused] == [index]


def test_a_bad_annotation_item_refuses_that_question_alone(official_dir, tmp_path):
    items = json.loads((official_dir / "lvb_val.json").read_text())[:5]
    items[1]["video_path"] = "../../etc/passwd"
    bad = tmp_path / "lvb_val.json"
    bad.write_text(json.dumps(items))
    with pytest.raises(BenchmarkFormatError, match="item 2"):
        load_benchmark("longvideobench", annotation_path=bad)
    docs = build_docs("longvideobench", bad, tmp_path)  # what lmms-eval's task reads
    assert [d["index"] for d in docs] == [it["id"] for it in items if it is not items[1]] + [items[1]["id"]]
    refused = docs[-1]
    assert refused["video_path"] == "" and f"{bad}, item 2" in refused["refused"] and "'..'" in refused["refused"]
    assert all(d["refused"] is None and d["question_category"] for d in docs[:-1])  # categories still aligned
    with pytest.raises(BenchmarkFormatError):
        build_docs("longvideobench", bad, tmp_path, strict=True)


def test_cli_runs_the_rest_and_counts_the_refused_row(bench, tmp_path, capsys):
    videos, jsonl, tsv = bench
    bad, index = _escaping_tsv(tsv, tmp_path / "bad.tsv")
    (tmp_path / "escape.mp4").write_bytes(b"never read")
    common = ["--benchmark", "lvbench", "--tsv", str(bad), "--video-root", str(videos), *AGENT,
              "--cache", str(tmp_path / "cache")]
    assert cli.main(["extract", *common]) == 0
    out, err = capsys.readouterr()
    assert "2 videos: 2 encoded" in out and "1 refused row(s)" in out and f"{bad}, line 3" in err
    assert cli.main(["select", *common, "--method", "uniform", "--k", "2", "--out", str(tmp_path / "s.json")]) == 0
    result = SelectionSet.load(tmp_path / "s.json")
    assert len(result.selections) == 2 and list(result.failed) == [index]
    assert f"{bad}, line 3" in result.failed[index]
    assert "2 questions selected, 1 failed" in capsys.readouterr().out
    assert cli.main(["extract", *common, "--strict"]) == 2
    assert f"{bad}, line 3" in capsys.readouterr().err


def test_select_with_every_question_failed_exits_non_zero_with_reasons(bench, tmp_path, capsys):
    videos, jsonl, tsv = bench
    empty = tmp_path / "no_videos"
    empty.mkdir()
    code = cli.main(["select", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(empty), *AGENT,
                     "--cache", str(tmp_path / "cache"), "--method", "uniform", "--k", "2",
                     "--out", str(tmp_path / "s.json")])
    out, err = capsys.readouterr()
    assert code == 1 and "0 questions selected, 3 failed" in out and "no question got frames" in err
    (group,) = [line for line in out.splitlines() if line.startswith("  3 failed")]  # one reason, grouped
    assert "cannot read" in group or "no such" in group.lower()


def test_a_damaged_checkpoint_is_named_with_what_to_do(bench, tmp_path, capsys):
    """A model.safetensors whose download stopped half-way, or whose head does not fit TSPO's: the
    command exits 2 naming the file and the remedy (safetensors alone says "incomplete metadata,
    file not fully covered"; torch raised a RuntimeError traceback for the head)."""
    from safetensors.torch import load_file, save_file

    from tspo_eval.agent import load_agent
    from tspo_eval.backbones.llava_video import from_pretrained, random_llava_video
    from tspo_eval.config import CheckpointError

    videos, jsonl, tsv = bench
    agent = tmp_path / "agent"
    load_agent("random:clip-tiny", torch_dtype=torch.float32).save_pretrained(agent)
    weights = agent / "model.safetensors"
    state = load_file(weights)
    extract = ["extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos),
               "--agent", str(agent), "--cache", str(tmp_path / "cache")]
    save_file({**state, "selector.mlp.0.bias": torch.zeros(state["selector.mlp.0.bias"].numel() + 1)}, weights)
    assert cli.main(extract) == 2
    assert f"{weights}: its temporal head does not fit TSPO's (" in capsys.readouterr().err
    save_file(state, weights)
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert cli.main(extract) == 2 and f"{weights}: not a readable safetensors file" in capsys.readouterr().err
    llava = tmp_path / "llava"
    random_llava_video("tiny", dtype="float32", device="cpu").save_pretrained(llava)
    (shard,) = llava.glob("*.safetensors")
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{shard}: .* cut short"):
        from_pretrained(llava, dtype="float32", device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine does not have")
def test_a_gpu_this_machine_lacks_is_named_before_any_work(bench, tmp_path, capsys):
    """`--device cuda` on a machine without CUDA (and cuda:N past its GPUs): one line saying so and
    what to use, exit 2, instead of torch's driver traceback at the first tensor."""
    from tspo_eval.distributed import device_for

    videos, jsonl, tsv = bench
    code = cli.main(["extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos), *AGENT,
                     "--device", "cuda", "--cache", str(tmp_path / "cache")])
    assert code == 2 and "device 'cuda': CUDA is not available here" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
    with pytest.raises(ValueError, match="give cuda, cuda:N or cpu"):
        device_for("gpu0")
    assert device_for("cpu") == torch.device("cpu") and device_for(None) == torch.device("cpu")


def test_an_output_that_cannot_be_written_is_said_before_any_work(bench, tmp_path, capsys):
    """`--out` under a file, or a file as `--cache`: said at once, exit 2, before any video is read
    (the selections used to be computed, then lost to "[Errno 17] File exists")."""
    videos, jsonl, tsv = bench
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    common = ["--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos), *AGENT]
    assert cli.main(["select", *common, "--cache", str(tmp_path / "cache"), "--out", str(blocker / "s.json")]) == 2
    assert f"--out {blocker}: cannot be made a folder" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # nothing extracted, nothing encoded
    assert cli.main(["extract", *common, "--cache", str(blocker)]) == 2
    assert f"--cache {blocker}: a file, not a folder" in capsys.readouterr().err
    assert cli.main(["compare", *common, "--cache", str(tmp_path / "cache"), "--out", str(blocker / "c")]) == 2
    assert not (tmp_path / "cache").exists()


def test_header_only_tsv_says_there_is_nothing_to_do(bench, tmp_path, capsys):
    videos, jsonl, tsv = bench
    header_only = tmp_path / "LVBench.tsv"
    header_only.write_text(tsv.read_text().split("\n")[0])
    code = cli.main(["extract", "--benchmark", "lvbench", "--tsv", str(header_only), "--video-root", str(videos),
                     *AGENT, "--cache", str(tmp_path / "cache")])
    assert code != 0 and "nothing to do" in capsys.readouterr().err


# ----------------------------------------------------------------------------- failures in results


def test_results_count_answered_and_failed_beside_accuracy():
    """8 of 24 failed (planted bad videos and rows): accuracy counts them wrong (the published
    convention), the counts say how many, and the accuracy over the answered leaves them out."""
    def doc(i):
        return {"benchmark": "videomme", "index": str(i), "video_name": f"{i}.mp4", "candidates": list("abcd"),
                "answer": "A", "duration": "short", "domain": "Knowledge", "task_type": "OCR Problems"}

    pairs = [(doc(i), "A" if i % 2 else "B") for i in range(16)]  # 8 right of 16 answered
    pairs += [(doc(i), scoring.NO_ANSWER) for i in range(16, 22)]  # the video failed
    pairs += [(refused_doc("videomme", RefusedRow("VideoMME.tsv", f"line {i}", "bad", str(i))), "A")
              for i in range(22, 24)]  # refused rows: even an "A" is no answer
    records = [scoring.score(d, out) for d, out in pairs]
    got = scoring.breakdown("videomme", records)
    assert got["videomme_acc"] == pytest.approx(100 * 8 / 24)
    assert got["videomme_acc_answered"] == pytest.approx(100 * 8 / 16)
    assert (got["answered"], got["failed"]) == (16, 8)
    # lmms-eval's path: process_results items per metric, then the task's aggregations
    from tspo_eval.integrations.lmms_hooks import BenchmarkHooks, answered, failed

    hooks = BenchmarkHooks("videomme")
    items = {m.name: [scoring.lmms_results(d, out)[m.name] for d, out in pairs]
             for m in get_benchmark("videomme").metrics}
    assert (answered(items["answered"]), failed(items["failed"])) == (16, 8)
    assert hooks.accuracy(items["videomme_acc_answered"]) == pytest.approx(50.0)
    assert hooks.accuracy(items["videomme_acc"]) == pytest.approx(100 / 3)


def test_no_answer_reads_as_no_letter_to_any_parser():
    """What our models output for a failed question names no option under any benchmark's rule."""
    for benchmark in ("longvideobench", "mlvu", "videomme", "lvbench"):
        assert get_benchmark(benchmark).parse_answer(scoring.NO_ANSWER, 5) is None


# ----------------------------------------------------------------------------- messages
def test_quality_on_a_benchmark_without_time_references_says_so(official_dir, tmp_path):
    sel = tmp_path / "uniform.json"
    SelectionSet({"benchmark": "videomme", "method": "uniform", "k": 4}).save(sel)
    args = ["quality", "--benchmark", "videomme", "--annotations", str(official_dir / "videomme.json"), str(sel)]
    with pytest.raises(SystemExit, match="videomme annotations hold no time references.*lvbench"):
        cli.main(args)


def test_quality_without_annotations_asks_for_them(official_dir, tmp_path):
    sel = tmp_path / "uniform.json"
    SelectionSet({"benchmark": "lvbench", "method": "uniform", "k": 4}).save(sel)
    with pytest.raises(SystemExit, match="pass --annotations video_info.meta.jsonl"):
        cli.main(["quality", "--benchmark", "lvbench", "--tsv", str(official_dir / "LVBench.tsv"), str(sel)])


def test_a_zero_time_scale_is_named_not_called_truncated(numbered_video_factory, tmp_path):
    from tspo_eval.video import FrameReader, VideoError

    raw = bytearray(numbered_video_factory(num_frames=50).read_bytes())
    at = raw.find(b"mdhd")
    assert raw[at + 4] == 0  # version 0: 4 bytes each of flags, creation, modification, then the time scale
    raw[at + 16:at + 20] = bytes(4)
    zero = tmp_path / "zero.mp4"
    zero.write_bytes(bytes(raw))
    for backend in ("pyav", "decord"):
        with pytest.raises(VideoError, match="time scale is 0") as err:
            FrameReader(str(zero), backend).candidates(1.0, None)
        assert "truncated" not in str(err.value)


def test_aks_choosing_nothing_fails_those_questions_and_names_the_flag(bench, tmp_path):
    from tspo_eval.agent import random_agent
    from tspo_eval.selection.stage import select_benchmark

    videos, jsonl, tsv = bench
    agent = random_agent("clip-tiny", seed=0)
    questions = load_benchmark("lvbench", tsv)
    result = select_benchmark(questions, videos, agent.encoder, FeatureCache(tmp_path / "cache"),
                              FramePolicy(method="aks", k=8), progress=False)  # depth 5: 32 leaves > 8
    assert not result.selections and set(result.failed) == {q.index for q in questions}  # the run went on
    assert all("--params preset=tspo" in why for why in result.failed.values())
    fixed = select_benchmark(questions, videos, agent.encoder, FeatureCache(tmp_path / "cache"),
                             FramePolicy(method="aks", k=8, params={"preset": "tspo"}), progress=False)
    assert len(fixed.selections) == len(questions) and not fixed.failed


# ----------------------------------------------------------------------------- VLMEvalKit runs


def test_boolean_options_accept_true_false_1_0_and_nothing_else():
    for text, value in (("true", True), ("False", False), ("1", True), ("0", False), (True, True), (0, False)):
        assert parse_bool(text) is value
        assert parse_model_args("llava_vid_tspo", {"compile_vision": text}).compile_vision is value
        assert parse_model_args("llava_vid_tspo", {"official": text}).policy.official is value
    for bad in ("yes", "flase", "2"):
        with pytest.raises(ValueError, match="compile_vision.*true, false, 1 or 0"):
            parse_model_args("llava_vid_tspo", {"compile_vision": bad})
        with pytest.raises(ValueError, match="official.*true, false, 1 or 0"):
            parse_model_args("llava_vid_tspo", {"official": bad})
    parser = cli.build_parser()
    base = ["vlmeval", "run", "--model", "llava_vid_tspo", "--data", "LVBench"]
    assert parser.parse_args([*base, "--compile-vision", "false"]).compile_vision is False
    assert parser.parse_args([*base, "--compile-vision", "1"]).compile_vision is True
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--compile-vision", "no"])


def test_every_boolean_flag_reads_alike_at_every_command(tmp_path, capsys):
    """One form for every boolean flag (policy, extraction, training, benchmark rows): `--flag` alone
    is true, `--flag false` says false (train's `--decode-resize false` was "unrecognized
    arguments", the same setting as select's), and a config file's `true` can be turned off."""
    import dataclasses

    parser = cli.build_parser()
    bools = []
    for command in cli._commands():
        full = cli.build_parser([command])._subparsers._group_actions[0].choices[command]
        for action in full._actions:
            if action.metavar == "BOOL" or isinstance(action, argparse._StoreTrueAction):
                bools.append((command, action))
    assert len(bools) > 15 and not [(c, a.option_strings) for c, a in bools if a.metavar != "BOOL"]
    for command, action in bools:
        assert action.nargs == "?" and action.const is True, (command, action.option_strings)
        assert action.type("false") is False and action.type("1") is True

    train = ["train", "--data", "d.jsonl", "--environment", "synthetic"]
    assert parser.parse_args([*train, "--decode-resize"]).decode_resize is True
    assert parser.parse_args([*train, "--decode-resize", "false", "--resume", "0"]).resume is False
    config = tmp_path / "run.yaml"
    config.write_text("resume: true\ndecode_resize: true\n")
    from tspo_eval.config import config_with_file
    from tspo_eval.training.config import TrainConfig

    ns = cli.build_parser(["train"]).parse_args([*train, "--config", str(config), "--resume", "false"])
    cfg = config_with_file(TrainConfig, ns)
    assert cfg.resume is False and cfg.decode_resize is True and dataclasses.is_dataclass(cfg)


class FakeDataset:
    """What `run` uses of a VLMEvalKit dataset; `answer(model keywords) -> prediction` plays the model."""

    def __init__(self, rows: int, answer) -> None:
        self.rows, self.answer = rows, answer

    def evaluate(self, result_file, model, nproc):
        predictions = json.loads(open(result_file).read())["prediction"]
        return {"acc": sum(p == "B" for p in predictions) / len(predictions)} if predictions else None


@pytest.fixture
def fake_vlmeval(monkeypatch):
    """A stand-in for VLMEvalKit (not on the registry): its inference reuses a complete prediction
    file, as VLMEvalKit's does, else writes what the dataset's `answer` gives for the registered
    model's arguments."""
    import types

    state = {"dataset": None}
    mods = {name: types.ModuleType(name) for name in (
        "vlmeval", "vlmeval.config", "vlmeval.dataset", "vlmeval.dataset.video_base",
        "vlmeval.dataset.video_dataset_config", "vlmeval.inference_video", "vlmeval.smp", "vlmeval.vlm",
        "vlmeval.vlm.base")}
    mods["vlmeval.config"].supported_VLM = {}
    mods["vlmeval.dataset"].build_dataset = lambda name: state["dataset"]
    mods["vlmeval.dataset"].DATASET_CLASSES, mods["vlmeval.dataset"].SUPPORTED_DATASETS = [], []
    mods["vlmeval.dataset.video_base"].VideoBaseDataset = type("VideoBaseDataset", (), {})
    mods["vlmeval.dataset.video_dataset_config"].supported_video_datasets = {}
    mods["vlmeval.vlm.base"].BaseModel = type("BaseModel", (), {})

    def infer(model, work_dir, model_name, dataset, result_file):
        if os.path.exists(result_file):
            return
        keywords = mods["vlmeval.config"].supported_VLM[model_name].keywords
        predictions = [dataset.answer(keywords) for _ in range(dataset.rows)]
        if predictions:
            with open(result_file, "w") as fh:
                fh.write(json.dumps({"prediction": predictions}))

    mods["vlmeval.inference_video"].infer_data_job_video = infer
    mods["vlmeval.smp"].get_pred_file_path = lambda out, model, data, use_env_format: f"{out}/{model}_{data}.json"
    mods["vlmeval.smp"].load = lambda path: json.loads(open(path).read())
    mods["vlmeval.smp"].LMUDataRoot = mods["vlmeval.smp"].dump = mods["vlmeval.smp"].get_intermediate_file_path = None
    for name, module in mods.items():
        monkeypatch.setitem(sys.modules, name, module)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(mods[parent], child, module)
    from tspo_eval.integrations.vlmeval_lvbench import lvbench_class

    tv.model_class.cache_clear()
    lvbench_class.cache_clear()
    yield state
    tv.model_class.cache_clear()
    lvbench_class.cache_clear()


def test_rerun_with_other_selections_never_reuses_the_old_predictions(fake_vlmeval, tmp_path):
    fake_vlmeval["dataset"] = FakeDataset(3, lambda keywords: keywords["selections"])
    (tmp_path / "q.tsv").write_text("questions")
    first, second = tmp_path / "tspo.json", tmp_path / "aks.json"
    first.write_text("tspo frames")
    second.write_text("aks frames")

    def predictions(selections):
        tv.run("llava_vid_tspo", "Video-MME", tmp_path / "work",
               model_args={"selections": str(selections), "questions": str(tmp_path / "q.tsv")})
        (found,) = [p for p in (tmp_path / "work").rglob("*_Video-MME.json")
                    if json.loads((p.parent / "policy.json").read_text())["frames"]["selections"] == str(selections)]
        return json.loads(found.read_text())["prediction"]

    assert predictions(first) == [str(first)] * 3
    assert predictions(second) == [str(second)] * 3  # its own answers, not the first run's
    assert predictions(first) == [str(first)] * 3  # the same policy reuses its complete file
    second.write_text("aks frames, recomputed")  # same path, new contents: another policy
    folders = {p.parent for p in (tmp_path / "work").rglob("policy.json")}
    tv.run("llava_vid_tspo", "Video-MME", tmp_path / "work",
           model_args={"selections": str(second), "questions": str(tmp_path / "q.tsv")})
    (new,) = {p.parent for p in (tmp_path / "work").rglob("policy.json")} - folders
    assert json.loads((new / "llava_vid_tspo_Video-MME.json").read_text())["prediction"] == [str(second)] * 3


@pytest.mark.parametrize("rows, answer, message", [
    (0, None, "wrote no predictions"),  # e.g. a dataset name with no local copy: nothing to run
    (3, lambda keywords: scoring.NO_ANSWER, "every one of the 3 questions failed")])
def test_vlmeval_run_that_ran_nothing_exits_non_zero(fake_vlmeval, tmp_path, capsys, rows, answer, message):
    fake_vlmeval["dataset"] = FakeDataset(rows, answer)
    code = cli.main(["vlmeval", "run", "--model", "llava_vid_uniform", "--data", "Video-MME",
                     "--work-dir", str(tmp_path / "work")])
    assert code == 1 and message in capsys.readouterr().err


def test_vlmeval_run_on_lvbench_without_its_variables_exits_non_zero(fake_vlmeval, tmp_path, capsys, monkeypatch):
    for name in ("TSPO_LVBENCH_ANNOTATIONS", "TSPO_LVBENCH_VIDEOS"):
        monkeypatch.delenv(name, raising=False)
    code = cli.main(["vlmeval", "run", "--model", "llava_vid_uniform", "--data", "LVBench",
                     "--work-dir", str(tmp_path / "work")])
    assert code != 0 and "TSPO_LVBENCH_ANNOTATIONS" in capsys.readouterr().err


# ----------------------------------------------------------------------------- faults that already held
_KILLED_EXTRACTION = """
import sys, time
from pathlib import Path
from tspo_eval.agent import random_agent
from tspo_eval.cache import FeatureCache
from tspo_eval.extract import ExtractConfig, extract_videos

class StallsOnSecondVideo:
    def __init__(self, inner):
        self.inner, self.identity, self.dim, self.image_size = inner, inner.identity, inner.dim, inner.image_size
        self.device = inner.device
    def compile(self):
        return self
    def encode_frames(self, frames):
        if list(Path(sys.argv[1]).rglob("*.safetensors")):  # the first video is in the cache
            time.sleep(600)  # killed here, mid-extraction of the second video
        return self.inner.encode_frames(frames)

encoder = StallsOnSecondVideo(random_agent("clip-tiny", seed=0).encoder)
extract_videos(sys.argv[2:], encoder, FeatureCache(sys.argv[1]), cfg=ExtractConfig(encode_batch=64), progress=False)
"""


def test_kill_9_mid_extraction_loses_only_the_video_in_progress(bench, tmp_path):
    from tspo_eval.agent import random_agent
    from tspo_eval.extract import ExtractConfig, extract_videos

    videos = sorted(str(v) for v in bench[0].glob("*.mp4"))
    cache_root = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_EXTRACTION, str(cache_root), *videos])
    deadline = time.time() + 120
    while not list(cache_root.rglob("*.safetensors")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the second video's stalled encoding
    proc.kill()
    proc.wait()
    assert len(list((cache_root / "videos").rglob("*.safetensors"))) == 1  # the first video, whole
    encoder = random_agent("clip-tiny", seed=0).encoder
    cfg = ExtractConfig(encode_batch=64)
    report = extract_videos(videos, encoder, FeatureCache(cache_root), cfg=cfg, progress=False)
    assert report.cached == videos[:1] and report.encoded == videos[1:] and not report.failed
    again = extract_videos(videos, encoder, FeatureCache(cache_root), cfg=cfg, progress=False)
    assert again.cached == videos and not list(cache_root.rglob("*.tmp"))


@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_mid_extraction_exits_with_a_line_and_leaves_nothing_running(tmp_path, signum, code, said):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler, `timeout`) to the real command while its decoding
    processes work: one line saying how to go on instead of a traceback (SIGTERM used to kill it on
    the spot, leaving its shared blocks), exit 128 + the signal, no decoding process or shared
    block left behind, and the same command then finishes the job."""
    from tspo_eval.synthetic import number_frame, write_video

    videos = tmp_path / "videos"
    videos.mkdir()
    lines = ["index\ttask_name\tvideo_name\tquestion_id\tquestion\tanswer_number\tcandidates\tanswer"]
    for i in range(3):  # 1,800 candidates each at --fps 30: seconds of encoding per video on a CPU
        write_video(videos / f"v{i}.mp4", (number_frame(i * 2000 + n, 48, 64) for n in range(1800)), 30)
        lines.append(f"q{i}\tbench\tv{i}.mp4\tq{i}\twhat happens?\t0\t['a', 'b', 'c', 'd']\ta")
    (tmp_path / "q.tsv").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "tspo_eval.cli", "extract", "--benchmark", "lvbench", "--annotations",
           str(tmp_path / "q.tsv"), "--videos", str(videos), *AGENT, "--device", "cpu", "--cache",
           str(tmp_path / "cache"), "--fps", "30", "--decode-processes", "--readers", "2"]
    # a shell's background job ignores SIGINT; the command must get it as from a terminal
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def children() -> list[int]:
        """The command's child processes (from /proc: field 4 of a process's stat is its parent)."""
        found = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            if int(fields[1]) == proc.pid:
                found.append(int(Path(stat).parent.name))
        return found

    deadline = time.time() + 120
    while len(workers := children()) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # both decoding processes started: the videos are being read
    assert proc.poll() is None and len(workers) == 2, proc.communicate()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert f"{said}: what was finished is kept" in err and "Traceback" not in err
    deadline = time.time() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert not [path for folder in ("/dev/shm", tempfile.gettempdir())
                for path in glob.glob(f"{folder}/tspo-decode-{proc.pid}-*")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "3 videos:" in done.stdout and "0 failed" in done.stdout, done.stderr[-2000:]


def test_a_full_disk_stops_the_run_with_what_to_do_and_keeps_what_was_cached(bench, tmp_path, capsys, monkeypatch):
    """The second cache write fails as on a full disk (safetensors' own error): the command stops
    there (every later video would fail the same way), says where and what to do, exits 1, and
    keeps the first video's entry whole; after that the same command finishes the job."""
    from safetensors import SafetensorError

    videos, jsonl, tsv = bench
    writes = []
    real_save = cache_module.save_file

    def full_after_one(tensors, path, metadata=None):
        writes.append(path)
        if len(writes) > 1:
            Path(path).write_bytes(b"half")  # what a failed write leaves: must not stay behind
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(cache_module, "save_file", full_after_one)
    common = ["extract", "--benchmark", "lvbench", "--tsv", str(tsv), "--video-root", str(videos), *AGENT,
              "--cache", str(tmp_path / "cache"), "--prefetch-videos", "1"]
    assert cli.main(common) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cache'}: cannot write to the feature cache" in err and "No space left on device" in err
    assert "give another --cache" in err and len(writes) == 2  # stopped: the third video was not written
    entries = list((tmp_path / "cache" / "videos").rglob("*"))
    assert [p.suffix for p in entries if p.is_file()] == [".safetensors"]  # the first, no temporary file
    monkeypatch.setattr(cache_module, "save_file", real_save)
    assert cli.main(common) == 0
    assert "3 videos: 2 encoded, 1 already cached, 0 failed" in capsys.readouterr().out


def test_a_pickle_in_the_cache_is_never_unpickled(tmp_path):
    """A cache entry replaced by a pickle that runs code when loaded: treated as damaged, never executed."""
    cache = FeatureCache(tmp_path)
    key = video_key("fp", "enc", Sampling())
    path = cache.put_video(key, _entry())
    sentinel = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    torch.save({"features": Payload()}, path)
    assert cache.get_video(key) is None and not path.exists()
    assert not sentinel.exists()


def test_a_bad_registry_row_costs_only_its_own_match(bench, tmp_path, caplog):
    """VLMEvalKit runs match their questions to the registry: a bad row there is left out, loudly."""
    from tspo_eval.integrations.vlmeval_tsv import load_registry

    videos, jsonl, tsv = bench
    bad, index = _escaping_tsv(tsv, tmp_path / "LVBench.tsv")
    with caplog.at_level("WARNING"):
        questions = load_registry(bad, "lvbench")
    assert [q.index for q in questions] == [q.index for q in read_tsv(tsv, "lvbench") if q.index != index]
    assert f"{bad}, line 3" in caplog.text


def test_two_saves_of_one_selections_file_do_not_break_each_other(tmp_path, monkeypatch):
    """Two runs saving the same selections file at once: the second save runs whole between the
    first's write and its rename (forced, not left to timing). With one shared temporary name
    the first rename found its file gone (FileNotFoundError) after the second had replaced it."""
    from pathlib import Path

    from tspo_eval.selection.stage import Selection

    path = tmp_path / "tspo_lvbench.json"
    first = SelectionSet({"method": "tspo", "run": 1}, {"q0": Selection("v.mp4", [0, 30], [0.0, 1.0], 2, 30.0)})
    second = SelectionSet({"method": "tspo", "run": 2}, {"q0": Selection("v.mp4", [60, 90], [2.0, 3.0], 2, 30.0)})
    real_write = Path.write_text
    nested = []

    def write_then_let_the_other_save(self, *args, **kwargs):
        written = real_write(self, *args, **kwargs)
        if not nested:  # the first save's write: the second save runs to its end now
            nested.append(True)
            second.save(path)
        return written

    monkeypatch.setattr(Path, "write_text", write_then_let_the_other_save)
    first.save(path)
    monkeypatch.undo()
    assert nested and SelectionSet.load(path).meta["run"] == 1  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
