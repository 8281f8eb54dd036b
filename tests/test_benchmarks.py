"""Benchmarks: checked against the real published TSVs, annotations and frame-index files,
and against hand-written malformed TSVs (every error must name the file and the line)."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import pytest

from tspo_eval.benchmarks import (
    BENCHMARKS,
    TSV_COLUMNS,
    BenchmarkFormatError,
    BenchmarkSpec,
    Question,
    convert,
    get_benchmark,
    load_benchmark,
    parse_time_range,
    read_frame_idx,
    read_tsv,
    register_benchmark,
    resolve_video,
    write_frame_idx,
    write_tsv,
)

# SPEC section 5: published TSV, rows, distinct videos.
PUBLISHED = {
    "longvideobench": ("LongVideoBench.tsv", 1337, 753),
    "mlvu": ("MLVU.tsv", 2174, 1122),
    "videomme": ("VideoMME.tsv", 2700, 900),
    "lvbench": ("LVBench.tsv", 1549, 103),
}
FRAME_IDX = {"longvideobench": "TSPO_LongVideoBench_frameIdx.json", "mlvu": "TSPO_MLVU_frameIdx.json",
             "videomme": "TSPO_VideoMME_frameIdx.json"}


def raw_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows by plain splitting: the published files are unquoted, tab- and LF-separated."""
    header, *rows = path.read_text(encoding="utf-8").split("\n")
    return header.split("\t"), [row.split("\t") for row in rows]


@pytest.fixture(scope="module")
def published(official_dir: Path) -> dict[str, list[Question]]:
    return {name: read_tsv(official_dir / tsv, name) for name, (tsv, _, _) in PUBLISHED.items()}


# ---------------------------------------------------------------- registry

def test_registry_holds_the_four_published_benchmarks(official_dir):
    assert {"longvideobench", "mlvu", "videomme", "lvbench"} <= set(BENCHMARKS)
    for name, (tsv, _, _) in PUBLISHED.items():
        spec = BENCHMARKS[name]
        assert spec.tsv_file == tsv
        assert (official_dir / spec.annotation_file).is_file()
    assert {name: BENCHMARKS[name].answer_kind for name in PUBLISHED} == {
        "longvideobench": "letter", "mlvu": "text", "videomme": "letter", "lvbench": "text"}
    assert get_benchmark("LVBench") is BENCHMARKS["lvbench"]
    with pytest.raises(ValueError, match="unknown benchmark 'nope'.*longvideobench"):
        get_benchmark("nope")


def test_register_benchmark_from_outside(tmp_path, restore_registry):
    spec = BenchmarkSpec(name="tinybench", tsv_file="tiny.tsv", annotation_file="tiny.json", answer_kind="letter",
                         row=lambda item, number: {"index": item["id"], "task_name": "tiny", "video_name": "v.mp4",
                                                   "question_id": item["id"], "question": item["q"],
                                                   "answer_number": 1, "candidates": "['x', 'y']", "answer": "B"},
                         video_subdir="tiny/videos")
    register_benchmark(spec)
    annotation = tmp_path / "tiny.json"
    annotation.write_text(json.dumps([{"id": "t1", "q": "Which?"}, {"id": "t2", "q": "What?"}]))
    write_tsv(convert("tinybench", annotation), tmp_path / "tiny.tsv")
    questions = read_tsv(tmp_path / "tiny.tsv", "TinyBench")
    assert [(q.benchmark, q.index, q.question, q.answer_letter) for q in questions] == [
        ("tinybench", "t1", "Which?", "B"), ("tinybench", "t2", "What?", "B")]
    assert resolve_video("/data", "v.mp4", "tinybench") == Path("/data/tiny/videos/v.mp4")
    with pytest.raises(ValueError, match="already registered"):
        register_benchmark(spec)
    register_benchmark(dataclasses.replace(spec, video_subdir=""), replace=True)
    assert resolve_video("/data", "v.mp4", "tinybench") == Path("/data/v.mp4")


@pytest.mark.parametrize("change, message", [
    ({"name": "Tiny"}, "lowercase"),
    ({"answer_kind": "letters"}, "answer_kind"),
    ({"video_subdir": "../elsewhere"}, r"contains '\.\.'"),
])
def test_benchmark_spec_rejects_bad_fields(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(BENCHMARKS["videomme"], **change)


# ---------------------------------------------------------------- reading the published TSVs

@pytest.mark.parametrize("name", PUBLISHED)
def test_read_tsv_reads_every_published_row_verbatim(name, official_dir, published):
    tsv, n_rows, n_videos = PUBLISHED[name]
    header, rows = raw_tsv(official_dir / tsv)
    questions = published[name]
    assert header == list(TSV_COLUMNS)
    assert len(questions) == len(rows) == n_rows
    assert len({q.video_name for q in questions}) == n_videos
    col = {column: i for i, column in enumerate(header)}
    for q, row in zip(questions, rows):
        assert (q.benchmark, q.index, q.task_name, q.video_name, q.question_id, q.question, q.answer) == (
            name, row[col["index"]], row[col["task_name"]], row[col["video_name"]], row[col["question_id"]],
            row[col["question"]], row[col["answer"]])
        assert q.candidates == tuple(ast.literal_eval(row[col["candidates"]]))
        assert q.answer_number == int(row[col["answer_number"]])


def test_published_text_quirks_survive_reading(published):
    mlvu = {q.index: q for q in published["mlvu"]}
    lvbench = {q.index: q for q in published["lvbench"]}
    # Fields that begin with a double quote are literal text (the files are unquoted).
    assert mlvu["1007_mlvu_1007"].answer == '"We can do it" was written on the banner.'
    assert lvbench["FaV0tIaWWEg2119"].answer == '"Microsoft" and the logo'
    # Leading/trailing spaces are part of the published values (answer == candidate text).
    assert mlvu["1086_mlvu_1086"].answer == " In sink "
    assert mlvu["1149_mlvu_1149"].question == "What color was the trolley that i picked  up?  "
    # MLVU 24_mlvu_24 publishes two empty options.
    assert mlvu["24_mlvu_24"].candidates.count("") == 2


def test_question_helpers(published):
    videomme, lvb, lvbench = published["videomme"][0], published["longvideobench"][0], published["lvbench"][0]
    assert videomme.answer_letter == "C" and videomme.answer == "C"
    assert videomme.option_lines() == ["A. Apples.", "B. Candles.", "C. Berries.",
                                       "D. The three kinds are of the same number."]
    assert lvb.answer_letter == "B"
    assert lvb.option_lines()[1] == ("B. run away countless times, i was just scared, i still and front of our "
                                     "crown, like a world of souls,")
    assert (lvbench.answer, lvbench.answer_letter, lvbench.option_lines()[3]) == ("1633", "D", "D. 1633")


# ---------------------------------------------------------------- converters

@pytest.mark.parametrize("name", PUBLISHED)
def test_convert_reproduces_the_published_tsv(name, official_dir, tmp_path):
    spec = BENCHMARKS[name]
    header, rows = raw_tsv(official_dir / spec.tsv_file)
    df = convert(name, official_dir / spec.annotation_file)
    assert list(df.columns) == header
    assert len(df) == len(rows)
    got = [[str(value) for value in values] for values in df.itertuples(index=False, name=None)]
    mismatches = [(line, column, g, w) for line, (got_row, want_row) in enumerate(zip(got, rows), start=2)
                  for column, g, w in zip(header, got_row, want_row) if g != w]
    assert mismatches == []
    write_tsv(df, tmp_path / spec.tsv_file)
    assert (tmp_path / spec.tsv_file).read_bytes() == (official_dir / spec.tsv_file).read_bytes()


def mlvu_key(item: dict) -> tuple[str, str, tuple[str, ...]]:
    """(video, question stem as the TSV holds it, options): unique for MLVU, unlike (video, question)."""
    return item["video_name"], item["question"].split("\n(A) ")[0].replace("\n", " "), tuple(item["candidates"])


def test_mlvu_duplicate_option_quirk(official_dir, published):
    """Five MLVU questions repeat the correct option: the TSV points at its LAST copy, the JSON letter at the first.

    Graded by option text the two agree; graded by letter they do not.
    """
    json_letter = {mlvu_key(item): item["answer"] for item in json.loads((official_dir / "mlvu.json").read_text())}
    assert len(json_letter) == PUBLISHED["mlvu"][1]
    mlvu = {q.index: q for q in published["mlvu"]}
    expected = {"336_mlvu_336": ("B", 2), "388_mlvu_388": ("A", 2), "494_mlvu_494": ("A", 3),
                "1778_mlvu_1778": ("A", 3), "2074_mlvu_2074": ("A", 3)}
    letters = {q.index: json_letter[(q.video_name, q.question, q.candidates)] for q in mlvu.values()}
    assert {index for index, letter in letters.items() if letter != mlvu[index].answer_letter} == set(expected)
    for index, (letter, number) in expected.items():
        q = mlvu[index]
        assert (letters[index], q.answer_number) == (letter, number)
        assert q.candidates["ABCD".index(letter)] == q.candidates[number] == q.answer


def test_mlvu_conversion_needs_the_complete_annotation_file(official_dir, tmp_path):
    items = json.loads((official_dir / "mlvu.json").read_text())
    partial = tmp_path / "mlvu.json"
    partial.write_text(json.dumps(items[1:]))
    with pytest.raises(BenchmarkFormatError, match="complete mlvu.json") as info:
        convert("mlvu", partial)
    assert str(partial) in str(info.value)


# ---------------------------------------------------------------- time references

@pytest.mark.parametrize("text, expected", [
    ("00:15-00:19", (15.0, 19.0)),
    ("00:00-114:16", (0.0, 6856.0)),
    ("1:02:03-1:02:10", (3723.0, 3730.0)),
    ("04:19.5-08:41", (259.5, 521.0)),
    ("08:17-None", None),
    ("None-None", None),
    ("33:52-33:46", None),
])
def test_parse_time_range(text, expected):
    assert parse_time_range(text) == expected


@pytest.mark.parametrize("text", ["00:15", "ab:cd-00:19", "00:15-", "-1:00-2:00"])
def test_parse_time_range_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_time_range(text)


def test_lvbench_time_references(official_dir, published):
    questions = load_benchmark("lvbench", official_dir / "LVBench.tsv", official_dir / "video_info.meta.jsonl")
    assert [dataclasses.replace(q, time_reference=None) for q in questions] == published["lvbench"]
    by_index = {q.index: q.time_reference for q in questions}
    assert by_index["Cm73ma6Ibcs55"] == (15.0, 19.0)
    assert by_index["5dZ_lvDgevk899"] == (0.0, 6856.0)
    assert by_index["xECIRjlxM3U2387"] == (7177.0, 7225.0)
    assert by_index["rSE2YPcv89U3630"] is not None  # uid is an int in the JSONL for this video
    # 2 published references are "None", 13 end before they start: unknown, not guessed.
    assert {index for index, ref in by_index.items() if ref is None} == {
        "Vk_Af0htZGU5044", "Hf-n1yfd8II3925",
        "28CIeC8cZks221", "RbpKkvlHYTw2810", "moALQl818ZY5258", "81SbCR6p3Z0560", "RjDrZkBwzho778",
        "KktLi3UifPY1187", "ihfjEFGdZdc1599", "vaL_vSdZKZo1630", "YlQugR7KSKg1903", "jp2M1hIEtsk3479",
        "jp2M1hIEtsk3485", "Hf-n1yfd8II3936", "cWEnogdsW784071"}
    assert load_benchmark("lvbench", annotation_path=official_dir / "video_info.meta.jsonl") == questions


def test_longvideobench_reference_frames(official_dir):
    questions = load_benchmark("longvideobench", official_dir / "LongVideoBench.tsv",
                               official_dir / "lvb_val.json")
    by_index = {q.index: q for q in questions}
    assert all(q.reference_frames for q in questions)
    assert by_index["86CxyhFV9MI_0"].reference_frames == (854, 948, 1373)
    assert by_index["86CxyhFV9MI_0"].reference_seconds(30.0) == pytest.approx((854 / 30, 948 / 30, 1373 / 30))
    # Published outlier, kept as published: far beyond the 1014 s video.
    assert 61388250 in by_index["Z-1lgAXOEc8_0"].reference_frames
    assert all(q.reference_frames is None for q in load_benchmark("videomme", official_dir / "VideoMME.tsv"))


def test_join_is_verified_on_video_and_question(official_dir, tmp_path):
    items = json.loads((official_dir / "lvb_val.json").read_text())
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps([{**items[0], "question": "Something else?"}, *items[1:]]))
    with pytest.raises(BenchmarkFormatError, match=r"item 1: maps to TSV index '86CxyhFV9MI_0'"):
        load_benchmark("longvideobench", official_dir / "LongVideoBench.tsv", changed)
    changed.write_text(json.dumps(items[1:]))
    with pytest.raises(BenchmarkFormatError, match="no annotation item gives TSV index '86CxyhFV9MI_0'"):
        load_benchmark("longvideobench", official_dir / "LongVideoBench.tsv", changed)


# ---------------------------------------------------------------- frame-index files

@pytest.mark.parametrize("name, short", [("longvideobench", 361), ("mlvu", 0), ("videomme", 261)])
def test_read_frame_idx_gives_every_tsv_row_one_entry(name, short, official_dir, published):
    path = official_dir / FRAME_IDX[name]
    items = json.loads(path.read_text())
    selections = read_frame_idx(path, name)
    assert len(items) == len(selections) == PUBLISHED[name][1]
    assert set(selections) == {q.index for q in published[name]}
    # Independent join: by the item's own key, or for MLVU by (video, question stem, options).
    if name == "mlvu":
        index_of = {(q.video_name, q.question, q.candidates): q.index for q in published[name]}
        keys = [index_of[mlvu_key(item)] for item in items]
    else:
        keys = [item["id" if name == "longvideobench" else "question_id"] for item in items]
    assert {key: [int(f) for f in item["frame_idx"]] for key, item in zip(keys, items)} == selections
    # SPEC section 3: fewer than 64 frames for every LongVideoBench video under ~64 s and every short VideoMME one.
    assert sum(len(frames) < 64 for frames in selections.values()) == short


@pytest.mark.parametrize("name", FRAME_IDX)
def test_write_frame_idx_round_trips_the_published_file(name, official_dir, tmp_path):
    spec = BENCHMARKS[name]
    selections = read_frame_idx(official_dir / FRAME_IDX[name], name)
    annotation_items = json.loads((official_dir / spec.annotation_file).read_text())
    write_frame_idx(annotation_items, selections, tmp_path / "out.json", name)
    assert (tmp_path / "out.json").read_bytes() == (official_dir / FRAME_IDX[name]).read_bytes()
    del selections[next(iter(selections))]
    with pytest.raises(ValueError, match="missing"):
        write_frame_idx(annotation_items, selections, tmp_path / "out.json", name)


def test_read_frame_idx_rejects_fractional_frames(official_dir, tmp_path):
    items = json.loads((official_dir / FRAME_IDX["videomme"]).read_text())
    items[2]["frame_idx"] = [0.0, 1.5]
    path = tmp_path / "frames.json"
    path.write_text(json.dumps(items))
    with pytest.raises(BenchmarkFormatError, match=r"item 3: frame_idx must be a list of whole"):
        read_frame_idx(path, "videomme")


# ---------------------------------------------------------------- malformed TSVs

HEADER = "\t".join(TSV_COLUMNS)
GOOD = "a_0\tt\ta.mp4\ta_0\tWhich one?\t2\t['x', 'y', 'z']\tC"


def _tsv(tmp_path: Path, *lines: str, data: bytes | None = None) -> Path:
    path = tmp_path / "bad.tsv"
    path.write_bytes(data if data is not None else "\n".join(lines).encode())
    return path


def test_read_tsv_accepts_crlf_and_final_newline(tmp_path):
    path = _tsv(tmp_path, data=f"{HEADER}\r\n{GOOD}\r\n{GOOD.replace('a_0', 'a_1')}\r\n".encode())
    questions = read_tsv(path, "videomme")
    assert [(q.index, q.candidates, q.answer_number, q.answer_letter) for q in questions] == [
        ("a_0", ("x", "y", "z"), 2, "C"), ("a_1", ("x", "y", "z"), 2, "C")]


@pytest.mark.parametrize("bench, lines, line, message", [
    ("videomme", ["\t".join(TSV_COLUMNS[:-1] + ("response",)), GOOD], 1, "lacks column\\(s\\) answer;"),
    ("videomme", [HEADER, GOOD, "b_0\tt\tb.mp4\tb_0\tWhich?\t2\t['x', 'y', 'z']"], 3, "7 tab-separated field"),
    ("videomme", [HEADER, GOOD, "", GOOD.replace("a_0", "b_0")], 3, "1 tab-separated field"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("['x', 'y', 'z']", "['x', 'y'")], 3,
     "candidates .* is not a non-empty Python list"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("['x', 'y', 'z']", "[]")], 3, "candidates"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("\t2\t", "\t3\t")], 3,
     "answer_number 3 is out of range for 3 candidates"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("\t2\t", "\tC\t")], 3,
     "answer_number 'C' is not a 0-based option number"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("\tC", "\tA")], 3, "should be 'C'"),
    ("mlvu", [HEADER, GOOD.replace("\tC", "\tz"), GOOD.replace("a_0", "b_0").replace("\tC", "\ty")], 3,
     "should be 'z'"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0"), GOOD], 4,
     r"duplicate index 'a_0' \(first on line 2\)"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("a.mp4", "../../etc/a.mp4")], 3,
     "video_name '../../etc/a.mp4' contains '..'"),
    ("videomme", [HEADER, GOOD, GOOD.replace("a_0", "b_0").replace("a.mp4", "/etc/a.mp4")], 3, "absolute path"),
])
def test_read_tsv_errors_name_file_and_line(tmp_path, bench, lines, line, message):
    path = _tsv(tmp_path, *lines)
    with pytest.raises(BenchmarkFormatError, match=message) as info:
        read_tsv(path, bench)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"{path}, line {line}: ")


def test_read_tsv_never_evaluates_candidates(tmp_path):
    sentinel = tmp_path / "evaluated"
    code = f"[open({str(sentinel)!r}, 'w').write('x') and 'x', 'y', 'z']"
    path = _tsv(tmp_path, HEADER, GOOD.replace("['x', 'y', 'z']", code))
    with pytest.raises(BenchmarkFormatError, match=f"{path}, line 2: candidates"):
        read_tsv(path, "videomme")
    assert not sentinel.exists()


def test_read_tsv_locates_bytes_that_are_not_utf8(tmp_path):
    path = _tsv(tmp_path, data=f"{HEADER}\n{GOOD}\n".encode() + b"b_0\t\xff\xfe\n")
    with pytest.raises(BenchmarkFormatError, match=f"{path}, line 3: is not UTF-8"):
        read_tsv(path, "videomme")


def test_write_tsv_refuses_what_the_format_cannot_hold(official_dir, tmp_path):
    df = convert("videomme", official_dir / "videomme.json").head(3)
    df.loc[1, "question"] = "two\nlines"
    with pytest.raises(ValueError, match="row 2 \\(index '001-2'\\), column question"):
        write_tsv(df, tmp_path / "out.tsv")
    with pytest.raises(ValueError, match="columns must be exactly"):
        write_tsv(df.drop(columns="answer"), tmp_path / "out.tsv")


# ---------------------------------------------------------------- video paths

def test_resolve_video(restore_registry):
    assert resolve_video("/data/lvb", "86CxyhFV9MI.mp4", "longvideobench") == Path("/data/lvb/86CxyhFV9MI.mp4")
    register_benchmark(dataclasses.replace(BENCHMARKS["mlvu"], video_subdir="MLVU/video"), replace=True)
    assert resolve_video("/data", "needle_32.mp4", "mlvu") == Path("/data/MLVU/video/needle_32.mp4")
    for name in ["../x.mp4", "a/../../x.mp4", "/etc/passwd", "C:\\x.mp4", ""]:
        with pytest.raises(ValueError, match=re.escape(f"video_name {name!r}")):
            resolve_video("/data", name, "mlvu")


def test_a_video_stored_with_another_extension_is_found(tmp_path):
    """The TSV names `<id>.mp4`; a copy fetched as .mkv / .webm / .MP4 is used (lmms-eval's VideoMME task
    looks for .MP4 and .mkv too); the named file wins when it exists; nothing found: the named path."""
    (tmp_path / "a.mkv").write_bytes(b"")
    (tmp_path / "b.MP4").write_bytes(b"")
    (tmp_path / "c.mp4").write_bytes(b"")
    (tmp_path / "c.webm").write_bytes(b"")
    assert resolve_video(tmp_path, "a.mp4", "lvbench") == tmp_path / "a.mkv"
    assert resolve_video(tmp_path, "b.mp4", "lvbench") == tmp_path / "b.MP4"
    assert resolve_video(tmp_path, "c.mp4", "lvbench") == tmp_path / "c.mp4"
    assert resolve_video(tmp_path, "c.mkv", "lvbench") == tmp_path / "c.mp4"  # the first of VIDEO_SUFFIXES
    assert resolve_video(tmp_path, "d.mp4", "lvbench") == tmp_path / "d.mp4"
