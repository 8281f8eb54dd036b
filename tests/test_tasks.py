"""lmms-eval task configs: documents from the real annotation files, prompts, answer parsing
and the per-category scores, checked against the published TSVs, hand-written strings and
numbers, and lmms-eval's own built-in task code; then the YAMLs through lmms-eval's loader."""
from __future__ import annotations

import ast
import importlib.util
import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml

from tspo_eval import scoring
from tspo_eval.benchmarks import build_docs, docs_from_env, get_benchmark
from tspo_eval.benchmarks.docs import env_names, prompt
from tspo_eval.benchmarks.protocol import extract_choice, parse_longvideobench
from tspo_eval.integrations.lmms_tasks import tasks_path

TASKS_DIR = tasks_path()
# SPEC section 5: rows and distinct videos of each published TSV.
SPEC_ROWS = {"longvideobench": (1337, 753), "mlvu": (2174, 1122), "videomme": (2700, 900), "lvbench": (1549, 103)}
TASK_NAMES = {"longvideobench": "tspo_longvideobench_val", "mlvu": "tspo_mlvu_dev", "videomme": "tspo_videomme",
              "lvbench": "tspo_lvbench"}
MODEL_NAMES = ("llava_vid_tspo", "qwen_2_5_vl_tspo", "llava_vid_uniform", "qwen_2_5_vl_uniform")
CATEGORY_FIELDS = {"longvideobench": ("duration_group", "question_category"),
                   "videomme": ("duration", "domain", "task_type"), "mlvu": ("task_type",),
                   "lvbench": ("question_type", "video_type")}
RAW_CATEGORY_KEYS = {**CATEGORY_FIELDS, "lvbench": ("question_type", "type")}  # their names in the annotation files
LMMS_TASKS = Path(importlib.util.find_spec("lmms_eval").origin).parent / "tasks"


def raw_tsv(path: Path) -> list[dict[str, str]]:
    """Rows by plain splitting (the published files are unquoted, tab- and LF-separated)."""
    header, *rows = path.read_text(encoding="utf-8").split("\n")
    return [dict(zip(header.split("\t"), row.split("\t"))) for row in rows]


def raw_items(official_dir: Path, benchmark: str) -> list[dict]:
    """Annotation items straight from the file, one per question (LVBench: flattened by hand)."""
    path = official_dir / get_benchmark(benchmark).annotation_file
    if benchmark != "lvbench":
        return json.loads(path.read_text())
    return [{"key": video["key"], "type": video["type"], **qa}
            for video in map(json.loads, path.read_text().splitlines()) for qa in video["qa"]]


def natural_key(benchmark: str, item: dict) -> str | tuple:
    """How each benchmark's items are told apart without our converters (SPEC section 5)."""
    if benchmark == "mlvu":  # no key: video, stem and options
        return item["video_name"], item["question"].split("\n(A) ")[0], tuple(item["candidates"])
    if benchmark == "lvbench":
        return f"{item['key']}{item['uid']}"
    return item["id"] if benchmark == "longvideobench" else item["question_id"]


@pytest.fixture(scope="module")
def video_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def docs(official_dir, video_root) -> dict[str, list[dict]]:
    return {name: build_docs(name, official_dir / get_benchmark(name).annotation_file, video_root)
            for name in SPEC_ROWS}


def by_index(docs: list[dict]) -> dict[str, dict]:
    return {doc["index"]: doc for doc in docs}


# ---------------------------------------------------------------- documents

@pytest.mark.parametrize("name", SPEC_ROWS)
def test_docs_follow_the_published_tsv(name, docs, official_dir, video_root):
    rows = raw_tsv(official_dir / get_benchmark(name).tsv_file)
    built = docs[name]
    assert len(built) == len(rows) == SPEC_ROWS[name][0]
    assert len({doc["video_name"] for doc in built}) == SPEC_ROWS[name][1]
    assert [doc["index"] for doc in built] == [row["index"] for row in rows]
    for doc, row in zip(built, rows):
        assert doc["benchmark"] == name
        assert (doc["task_name"], doc["video_name"], doc["question"]) == (
            row["task_name"], row["video_name"], row["question"])
        assert doc["candidates"] == ast.literal_eval(row["candidates"])
        assert doc["video_path"] == str(video_root / row["video_name"])
        # The letter names the right option; for text answers it is the option with that text.
        right = doc["candidates"][doc["answer_number"]]
        assert doc["answer"] == "ABCDE"[doc["answer_number"]]
        assert right == (row["answer"] if name in ("mlvu", "lvbench") else doc["candidates"]["ABCDE".index(row["answer"])])


@pytest.mark.parametrize("name", SPEC_ROWS)
def test_category_fields_come_from_each_questions_own_item(name, docs, official_dir):
    items: dict = defaultdict(list)
    for item in raw_items(official_dir, name):
        items[natural_key(name, item)].append(item)
    for doc in docs[name]:
        key = (doc["video_name"], doc["question_original"], tuple(doc["candidates"])) if name == "mlvu" else doc["index"]
        [item] = items[key]
        expected = tuple(item[key] for key in RAW_CATEGORY_KEYS[name])
        assert tuple(doc[field] for field in CATEGORY_FIELDS[name]) == expected
        if name != "longvideobench":
            assert doc["answer"] == item["answer"]


def test_category_values_are_the_declared_ones(docs):
    """Every category value of the real files has its metric, and every metric has questions."""
    assert Counter(doc["duration"] for doc in docs["videomme"]) == {"short": 900, "medium": 900, "long": 900}
    for name in SPEC_ROWS:
        metrics = get_benchmark(name).metrics
        for metric in metrics:
            if metric.field and not metric.macro:
                assert any(metric.includes(doc) for doc in docs[name]), metric.name
        for field in {metric.field for metric in metrics if metric.field}:
            values = {v for doc in docs[name] for v in (doc[field] if isinstance(doc[field], list) else [doc[field]])}
            declared = {metric.value for metric in metrics if metric.field == field and not metric.macro}
            assert values == declared, field


def test_mlvu_docs_keep_the_annotation_letter_on_repeated_options(docs, official_dir):
    rows = {row["index"]: row for row in raw_tsv(official_dir / "MLVU.tsv")}
    differing = {doc["index"]: (doc["answer"], rows[doc["index"]]["answer_number"]) for doc in docs["mlvu"]
                 if str(doc["answer_number"]) != rows[doc["index"]]["answer_number"]}
    # mlvu.json's letter vs the TSV's last copy of the same option text.
    assert differing == {"336_mlvu_336": ("B", "2"), "388_mlvu_388": ("A", "2"), "494_mlvu_494": ("A", "3"),
                         "1778_mlvu_1778": ("A", "3"), "2074_mlvu_2074": ("A", "3")}


def test_time_references_and_stems_with_line_breaks(docs):
    lvbench, lvb = by_index(docs["lvbench"]), by_index(docs["longvideobench"])
    assert lvbench["Cm73ma6Ibcs55"]["time_reference"] == [15.0, 19.0]
    assert lvbench["Cm73ma6Ibcs55"]["question_type"] == ["key information retrieval"]
    assert lvb["86CxyhFV9MI_0"]["reference_frames"] == [854, 948, 1373]
    assert sum("\n" in doc["question_original"] for doc in docs["videomme"]) == 77
    assert sum("\n" in doc["question_original"] for doc in docs["mlvu"]) == 4
    assert all("\n" not in doc["question"] for name in docs for doc in docs[name])


def test_docs_from_the_published_tsv(official_dir, video_root, docs):
    from_tsv = build_docs("videomme", official_dir / "VideoMME.tsv", video_root)
    keep = ("index", "video_path", "question", "candidates", "answer", "answer_number")
    assert [{k: d[k] for k in keep} for d in from_tsv] == [{k: d[k] for k in keep} for d in docs["videomme"]]
    assert "task_type" not in from_tsv[0] and from_tsv[0]["question_original"] == from_tsv[0]["question"]
    records = [scoring.score(doc, "A") for doc in from_tsv]
    results = scoring.breakdown("videomme", records)
    assert not math.isnan(results["videomme_acc"]) and math.isnan(results["videomme_acc_short"])


def test_docs_from_env_name_the_variable(official_dir, video_root, monkeypatch, tmp_path):
    assert env_names("mlvu") == ("TSPO_MLVU_ANNOTATIONS", "TSPO_MLVU_VIDEOS")
    monkeypatch.delenv("TSPO_MLVU_ANNOTATIONS", raising=False)
    with pytest.raises(ValueError, match="TSPO_MLVU_ANNOTATIONS is not set.*mlvu.json.*MLVU.tsv"):
        docs_from_env("mlvu")
    monkeypatch.setenv("TSPO_MLVU_ANNOTATIONS", str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="TSPO_MLVU_ANNOTATIONS=.*nope.json: no such file"):
        docs_from_env("mlvu")
    monkeypatch.setenv("TSPO_MLVU_ANNOTATIONS", str(official_dir / "mlvu.json"))
    monkeypatch.delenv("TSPO_MLVU_VIDEOS", raising=False)
    with pytest.raises(ValueError, match="TSPO_MLVU_VIDEOS is not set"):
        docs_from_env("mlvu")
    monkeypatch.setenv("TSPO_MLVU_VIDEOS", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="TSPO_MLVU_VIDEOS=.*missing: no such folder"):
        docs_from_env("mlvu")
    monkeypatch.setenv("TSPO_MLVU_VIDEOS", str(video_root))
    assert len(docs_from_env("mlvu")) == 2174  # no video exists: not an error here


# ---------------------------------------------------------------- prompts

EXPECTED_PROMPTS = {
    ("longvideobench", "kj3Po7zUeyw_0"):
        "What is the ethnicity of the first person to appear in the video?\nA. White\nB. Black\nC. Asian\n"
        "Answer with the option's letter from the given choices directly.\n",
    ("videomme", "642-2"):
        "Select the best answer to the following multiple-choice question based on the video and the subtitles. "
        "Respond with only the letter (A, B, C, or D) of the correct option.\n"
        "What is the order in which the following is introduced in the video?\n① SN-1987A\n② Type 1a Supernova\n"
        "③ Kilonova\nA. ①③②.\nB. ②③①.\nC. ①②③.\nD. ③①②.\n"
        "\nAnswer with the option's letter from the given choices directly.",
    ("mlvu", "1009_mlvu_1009"):
        "What did I put in the pocket?\n\n(A) Phone\n(B) Measure Tape\n(C) Pen\n(D) Wallet\n"
        "\nOnly give the best option.\nBest option: (",
    ("lvbench", "Cm73ma6Ibcs55"):
        "What year appears in the opening caption of the video?\n(A) 1636\n(B) 1366\n(C) 1363\n(D) 1633"
        "\nAnswer the question with the option letter",
}
# The published TSPO fork's MLVU prompt, used for our model names.
FORK_MLVU_PROMPT = ("\nWhat did I put in the pocket?\n\n(A) Phone\n(B) Measure Tape\n(C) Pen\n(D) Wallet\n"
                    "\nOnly give the best option.\n\nBest option: (")


@pytest.mark.parametrize("name, index", EXPECTED_PROMPTS)
def test_prompt_of_a_known_question(name, index, docs):
    assert prompt(by_index(docs[name])[index]) == EXPECTED_PROMPTS[name, index]


def _builtin(name: str):
    """lmms-eval's own task module (imports decord, torch, cv2 as the built-in does)."""
    spec = importlib.util.spec_from_file_location(f"builtin_{name}_utils", LMMS_TASKS / name / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _builtin_prompt(name: str, module, item: dict) -> str:
    kwargs = {"pre_prompt": "", "post_prompt": get_benchmark(name).post_prompt}
    if name == "longvideobench":  # the built-in reads the HF layout: option0..option4, "N/A" when absent
        options = {f"option{i}": item["candidates"][i] if i < len(item["candidates"]) else "N/A" for i in range(5)}
        return module.longvideobench_doc_to_text({**item, **options}, kwargs)
    return getattr(module, f"{name}_doc_to_text")(item, kwargs)


@pytest.mark.parametrize("name", SPEC_ROWS)
def test_every_prompt_equals_the_builtin_tasks(name, docs, official_dir):
    """The installed lmms-eval's own doc_to_text on the raw annotation item, for every question."""
    module = _builtin(name)
    items = {natural_key(name, item): item for item in raw_items(official_dir, name)}
    for doc in docs[name]:
        key = (doc["video_name"], doc["question_original"], tuple(doc["candidates"])) if name == "mlvu" else doc["index"]
        assert prompt(doc) == _builtin_prompt(name, module, items[key]), doc["index"]


# ---------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, n, expected", [
    ("B", 4, "B"), ("(C) the cat", 4, "C"), ("Answer: D.", 4, "D"), ("<answer>B</answer>", 4, "B"),
    ("I think C", 4, "C"), ("E", 4, None), ("E", 5, "E"), ("a cat", 4, None), ("Based on it, A", 4, "A"),
    ("A man walks; B", 4, "A"), ("", 4, None), ("CD", 4, None),
])
def test_parse_option_letter(text, n, expected):
    assert scoring.parse_option_letter(text, n) == expected


@pytest.mark.parametrize("text, expected", [
    ("C", "C"), ("Best answer: C", "C"), ("The best answer is (D).", "D"), ("Doing so, B", "D"),
    ("(E) all of them", "E"), ("none of these", None), ("", None),
])
def test_parse_longvideobench(text, expected):
    assert parse_longvideobench(text, 5) == expected


def test_longvideobench_random_fallback_is_reproducible_per_question():
    picks = {key: parse_longvideobench("no idea", 4, random_fallback=0, key=key) for key in map(str, range(200))}
    assert set(picks.values()) == set("ABCD")
    assert picks == {key: parse_longvideobench("no idea", 4, random_fallback=0, key=key) for key in picks}
    assert picks != {key: parse_longvideobench("no idea", 4, random_fallback=1, key=key) for key in picks}
    assert parse_longvideobench("E is it", 4, random_fallback=0, key="1") == "E"  # as the built-in


@pytest.mark.parametrize("text, expected", [
    ("A", "A"), ("(B)", "B"), ("The answer is C.", "C"), ("B. a dog", "B"), ("I choose D because", "D"),
    ("Option C: red", "C"), ("It is A or maybe D", "D"), ("答案是B", "B"), ("nothing", None), ("  ", None),
])
def test_extract_choice(text, expected):
    assert extract_choice(text, 4) == expected


def _outputs(seed: int, count: int) -> list[str]:
    """Generated model outputs mixing letters, punctuation, answer phrases and words."""
    atoms = ["A", "B", "C", "D", "E", "a", "(", ")", ".", ":", " ", "\n", "'", '"', ",", "the answer is ",
             "Best option: ", "The best answer is", "I choose ", "Based", "option", "答案是", "Doing", "The answer"]
    rng = random.Random(seed)
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(0, 9))) for _ in range(count)]


def test_extract_choice_agrees_with_lmms_eval():
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
    for text in _outputs(0, 20_000):
        assert extract_choice(text, 4) == (extract_mcq_answer(text, choices=list("ABCD")) or None), text


def test_parse_longvideobench_agrees_with_the_builtin():
    builtin = _builtin("longvideobench").parse_multi_choice_response
    random.seed(0)
    for text in _outputs(1, 20_000):
        ours = parse_longvideobench(text, 4)
        theirs = builtin(text, list("ABCD"), {})
        assert ours == theirs if ours is not None else theirs in "ABCD", text


# ---------------------------------------------------------------- scores

def _doc(benchmark: str, index: str, answer: str, **categories) -> dict:
    return {"benchmark": benchmark, "index": index, "video_name": f"{index}.mp4", "candidates": ["a", "b", "c", "d"],
            "answer": answer, **categories}


def _lmms(benchmark: str, pairs: list[tuple[dict, str]]) -> dict[str, float]:
    """What lmms-eval does with process_results items: collect per metric, then aggregate."""
    items: dict[str, list] = defaultdict(list)
    for doc, output in pairs:
        for metric, value in scoring.lmms_results(doc, output).items():
            items[metric].append(value)
    return {metric.name: scoring.lmms_count(items[metric.name], metric.count) if metric.count else
            scoring.lmms_aggregate(benchmark, items[metric.name], metric.field if metric.macro else None)
            for metric in get_benchmark(benchmark).metrics}


def _check(benchmark: str, pairs: list[tuple[dict, str]], expected: dict[str, float]) -> None:
    """`expected` accuracies of a run without failures: over the answered they are the same."""
    expected = {**expected, **{f"{name}_answered": value for name, value in expected.items()
                               if f"{name}_answered" in {m.name for m in get_benchmark(benchmark).metrics}},
                "answered": len(pairs), "failed": 0}
    for results in (scoring.breakdown(benchmark, [scoring.score(doc, out) for doc, out in pairs]),
                    _lmms(benchmark, pairs)):
        assert set(results) == {metric.name for metric in get_benchmark(benchmark).metrics}
        for name, value in results.items():
            assert (math.isnan(value) if name not in expected else value == pytest.approx(expected[name])), name


def test_mlvu_macro_and_micro_differ_on_imbalanced_types():
    pairs = [(_doc("mlvu", f"p{i}", "A", task_type="plotQA"), "(A)") for i in range(3)]
    pairs.append((_doc("mlvu", "n0", "B", task_type="needle"), "A"))
    # micro: 3 of 4 right; macro: plotQA 100 %, needle 0 % -> 50 %.
    _check("mlvu", pairs, {"mlvu_micro_avg": 75.0, "mlvu_m_avg": 50.0, "mlvu_acc_plotqa": 100.0,
                           "mlvu_acc_needle": 0.0})


def test_videomme_breakdown():
    cats = {"domain": "Knowledge", "task_type": "OCR Problems"}
    pairs = [(_doc("videomme", "1", "A", duration="short", **cats), "A"),
             (_doc("videomme", "2", "B", duration="short", **cats), "The answer is C."),
             (_doc("videomme", "3", "C", duration="long", domain="Multilingual", task_type="OCR Problems"), "C"),
             (_doc("videomme", "4", "D", duration="medium", domain="Knowledge", task_type="Counting Problem"), "(D)")]
    _check("videomme", pairs, {"videomme_acc": 75.0, "videomme_acc_short": 50.0, "videomme_acc_medium": 100.0,
                               "videomme_acc_long": 100.0, "videomme_acc_domain_knowledge": 200 / 3,
                               "videomme_acc_domain_multilingual": 100.0, "videomme_acc_task_ocr_problems": 200 / 3,
                               "videomme_acc_task_counting_problem": 100.0})


def test_longvideobench_breakdown_in_fractions():
    pairs = [(_doc("longvideobench", "1", "E", duration_group=15, question_category="S2E"), "E"),
             (_doc("longvideobench", "2", "A", duration_group=15, question_category="TAA"), "no letter here"),
             (_doc("longvideobench", "3", "B", duration_group=3600, question_category="S2E"), "Best answer: B")]
    _check("longvideobench", pairs, {"lvb_acc": 2 / 3, "lvb_acc_duration_15": 0.5, "lvb_acc_duration_3600": 1.0,
                                     "lvb_acc_s2e": 1.0, "lvb_acc_taa": 0.0})


def test_lvbench_counts_a_question_in_each_of_its_types():
    pairs = [(_doc("lvbench", "1", "A", question_type=["entity recognition", "event understanding"]), "A"),
             (_doc("lvbench", "2", "B", question_type=["entity recognition"]), "C"),
             (_doc("lvbench", "3", "C", question_type=["reasoning"]), "(C)")]
    _check("lvbench", pairs, {"lvbench_acc": 2 / 3, "lvbench_acc_entity_recognition": 0.5,
                              "lvbench_acc_event_understanding": 1.0, "lvbench_acc_reasoning": 1.0})


# ---------------------------------------------------------------- the YAMLs

class _Loader(yaml.SafeLoader):
    """Reads task YAMLs without importing their functions."""


_Loader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


@pytest.mark.parametrize("name", SPEC_ROWS)
def test_yaml_matches_spec_and_scoring(name):
    config = yaml.load((TASKS_DIR / name / f"{TASK_NAMES[name]}.yaml").read_text(), Loader=_Loader)
    assert config["task"] == TASK_NAMES[name]
    assert (config["dataset_path"], config["dataset_kwargs"]) == ("json", {"data_files": {"test": "manifest.jsonl"}})
    assert (TASKS_DIR / name / "manifest.jsonl").is_file()
    generation = config["generation_kwargs"]
    assert (generation["max_new_tokens"], generation["do_sample"], generation["temperature"]) == (
        32 if name == "longvideobench" else 16, False, 0)
    assert [entry["metric"] for entry in config["metric_list"]] == [m.name for m in get_benchmark(name).metrics]
    assert {entry["metric"] for entry in config["metric_list"]
            if entry["aggregation"] == "!function utils.macro_accuracy"} == (
        {"mlvu_m_avg", "mlvu_m_avg_answered"} if name == "mlvu" else set())
    assert [(entry["metric"], entry["aggregation"]) for entry in config["metric_list"][-2:]] == [
        ("answered", "!function utils.answered"), ("failed", "!function utils.failed")]
    prompts = config["lmms_eval_specific_kwargs"]
    assert prompts["default"] == {"pre_prompt": "", "post_prompt": get_benchmark(name).post_prompt}
    for model in MODEL_NAMES:
        fork = {"pre_prompt": "\n", "post_prompt": "\nOnly give the best option.\n\nBest option: ("}
        assert prompts[model] == (fork if name == "mlvu" else prompts["default"]), model


@pytest.fixture
def task_env(official_dir, video_root, monkeypatch, tmp_path):
    for name in SPEC_ROWS:
        annotations, videos = env_names(name)
        monkeypatch.setenv(annotations, str(official_dir / get_benchmark(name).annotation_file))
        monkeypatch.setenv(videos, str(video_root))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))


def test_lmms_eval_loads_the_tasks(task_env, official_dir, video_root):
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    names = [*TASK_NAMES.values(), "tspo_longvideobench_val_random_fallback"]
    assert set(names) <= set(manager.all_tasks)
    tasks = get_task_dict(names, manager)
    for name, task_name in TASK_NAMES.items():
        task = tasks[task_name]
        task_docs = task.test_docs()
        assert len(task_docs) == SPEC_ROWS[name][0]
        doc = by_index(task_docs)[next(index for bench, index in EXPECTED_PROMPTS if bench == name)]
        assert task.doc_to_text(doc) == prompt(doc) == EXPECTED_PROMPTS[name, doc["index"]]
        assert task.doc_to_visual(doc) == [str(video_root / doc["video_name"])]
        assert task.doc_to_target(doc) == doc["answer"]
        assert task.config.generation_kwargs["do_sample"] is False
        # Answer "A" everywhere: accuracy = share of questions whose right option is A, from the raw files.
        items: dict[str, list] = defaultdict(list)
        for task_doc in task_docs:
            for metric, value in task.process_results(task_doc, ["A"]).items():
                items[metric].append(value)
        results = {metric: task.aggregation()[metric](values) for metric, values in items.items()}
        rows = raw_tsv(official_dir / get_benchmark(name).tsv_file)
        share_a = sum(row["answer_number"] == "0" for row in rows) / len(rows)
        if name == "mlvu":
            answers = [(item["task_type"], item["answer"] == "A") for item in raw_items(official_dir, "mlvu")]
            per_type = [sum(a for t, a in answers if t == kind) / sum(t == kind for t, _ in answers)
                        for kind in {t for t, _ in answers}]
            assert results["mlvu_micro_avg"] == pytest.approx(100 * sum(a for _, a in answers) / len(answers))
            assert results["mlvu_m_avg"] == pytest.approx(100 * sum(per_type) / len(per_type))
        else:
            headline = {"longvideobench": "lvb_acc", "videomme": "videomme_acc", "lvbench": "lvbench_acc"}[name]
            assert results[headline] == pytest.approx(get_benchmark(name).scale * share_a)
    fallback = tasks["tspo_longvideobench_val_random_fallback"]
    doc = fallback.test_docs()[0]
    assert fallback.process_results(doc, ["no idea"])["lvb_acc"]["pred"] in "ABCDE"
    assert tasks["tspo_longvideobench_val"].process_results(doc, ["no idea"])["lvb_acc"]["pred"] is None


def test_model_entries_select_the_published_mlvu_prompt(task_env):
    from lmms_eval.tasks import TaskManager, get_task_dict

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, model_name="qwen_2_5_vl_uniform")
    tasks = get_task_dict(["tspo_mlvu_dev", "tspo_lvbench"], manager)
    mlvu, lvbench = tasks["tspo_mlvu_dev"], tasks["tspo_lvbench"]
    assert mlvu.doc_to_text(by_index(mlvu.test_docs())["1009_mlvu_1009"]) == FORK_MLVU_PROMPT
    assert lvbench.doc_to_text(by_index(lvbench.test_docs())["Cm73ma6Ibcs55"]) == EXPECTED_PROMPTS[
        "lvbench", "Cm73ma6Ibcs55"]
