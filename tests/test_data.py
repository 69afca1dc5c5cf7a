"""Tests of launch.questions.data: loading every format, validation, split, dedup, prepare, check."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from launch.questions.data import (
    DataError,
    PreparedData,
    Question,
    check_path,
    dedup_train,
    letter_counts,
    load_jsonl_questions,
    load_questions,
    normalize_question,
    prepare_splits,
    split_questions,
)
from launch.spec.config import DataConfig, DataSource

CYBERMETRIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "cybermetric"


def _record(i: int, solution: str = "A", question: str | None = None) -> dict:
    return {
        "question": question if question is not None else f"Question number {i}?",
        "answers": {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}", "D": f"d{i}"},
        "solution": solution,
    }


def _records(n: int) -> list[dict]:
    return [_record(i, "ABCD"[i % 4]) for i in range(n)]


def _write_json(path: Path, records: list) -> Path:
    path.write_text(json.dumps({"questions": records}), encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _questions(n: int) -> list[Question]:
    return [Question(r["question"], r["answers"], r["solution"]) for r in _records(n)]


def _problems(source: DataSource) -> list[str]:
    with pytest.raises(DataError) as info:
        load_questions(source)
    return info.value.problems


# --------------------------------------------------------------------------- formats


def test_cybermetric_json_loads(tmp_path):
    path = _write_json(tmp_path / "q.json", _records(6))
    qs = load_questions(DataSource(path=str(path)))
    assert len(qs) == 6
    assert qs[1] == Question("Question number 1?", {"A": "a1", "B": "b1", "C": "c1", "D": "d1"}, "B")
    assert qs[1].to_record() == _record(1, "B")


def test_extra_keys_are_ignored_and_bom_tolerated(tmp_path):
    rec = {**_record(0), "source": "x", "id": 7}
    path = tmp_path / "q.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"questions": [rec], "meta": 1}).encode())
    assert load_questions(DataSource(path=str(path)))[0].to_record() == _record(0)


def test_jsonl_loads_and_skips_blank_lines(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps(_record(0)) + "\n\n" + json.dumps(_record(1, "D")) + "\n", encoding="utf-8")
    qs = load_questions(DataSource(path=str(path)))
    assert [q.solution for q in qs] == ["A", "D"]


def test_hf_dataset_and_datasetdict_directories_load(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(_records(5))
    ds.save_to_disk(str(tmp_path / "ds"))
    qs = load_questions(DataSource(path=str(tmp_path / "ds")))
    assert [q.to_record() for q in qs] == _records(5)

    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(_records(2))})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_questions(DataSource(path=str(tmp_path / "dd"), split="test"))) == 2
    problems = _problems(DataSource(path=str(tmp_path / "dd"), split="validation"))
    assert "no split 'validation'" in problems[0] and "'train'" in problems[0]


def test_hf_struct_padding_keys_are_not_reported(tmp_path):
    # One row with an extra option key makes Arrow add that key (as None) to every row.
    datasets = pytest.importorskip("datasets")
    bad = _record(1)
    bad["answers"] = {**bad["answers"], "E": "e1"}
    datasets.Dataset.from_list([_record(0), bad]).save_to_disk(str(tmp_path / "ds"))
    problems = _problems(DataSource(path=str(tmp_path / "ds")))
    assert len(problems) == 1
    assert "record 1" in problems[0] and "unexpected 'E'" in problems[0]


def test_hub_error_becomes_data_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    problems = _problems(DataSource(path="someorg/somedata", split="train"))
    assert "someorg/somedata" in problems[0]
    assert "ConnectionError: no network" in problems[0] and "save_to_disk" in problems[0]


# --------------------------------------------------------------------------- bad records


def test_every_bad_record_is_reported_with_index(tmp_path):
    recs = _records(12)
    recs[1] = ["not", "a", "mapping"]
    del recs[2]["question"]
    recs[3]["question"] = "   "
    recs[4]["answers"] = ["x", "y", "z", "w"]
    recs[5]["answers"] = {"A": "x", "B": "y", "C": "z"}
    recs[6]["answers"]["D"] = 4
    recs[7]["answers"]["B"] = ""
    recs[8]["solution"] = "E"
    recs[9]["solution"] = " b"
    del recs[10]["solution"]
    recs[11]["answers"] = {"a": "x", "b": "y", "c": "z", "d": "w"}
    path = _write_json(tmp_path / "bad.json", recs)
    problems = _problems(DataSource(path=str(path)))
    expected = {
        1: "expected a mapping",
        2: "missing 'question'",
        3: "'question' is empty",
        4: "'answers' is a list, expected a mapping",
        5: "missing D",
        6: "answers['D'] is a int 4, not text",
        7: "answers['B'] is empty",
        8: "solution 'E' is not one of A, B, C, D",
        9: "solution ' b' is not one of A, B, C, D -> write 'B'",
        10: "missing 'solution'",
        11: "use upper-case letters",
    }
    assert len(problems) == len(expected)
    for p, (i, text) in zip(problems, expected.items()):
        assert p.startswith(f"{path} record {i}: "), p
        assert text in p, p
    assert (
        problems[7]
        == f"{path} record 8: solution 'E' is not one of A, B, C, D -> give the letter of the correct option"
    )


def test_several_problems_in_one_record_are_all_reported(tmp_path):
    path = _write_json(tmp_path / "bad.json", [_record(0), {"question": 3, "answers": {}, "solution": 1}])
    problems = _problems(DataSource(path=str(path)))
    assert len(problems) == 3
    assert all(p.startswith(f"{path} record 1: ") for p in problems)
    assert "'B' if 1 is a 0-based option index" in problems[2]


def test_repeated_wrong_options_are_fine_but_a_repeated_correct_one_is_refused(tmp_path):
    rec = _record(0)  # solution A
    rec["answers"] = {"A": "right", "B": "same", "C": "same", "D": "other"}
    assert len(load_questions(DataSource(path=str(_write_json(tmp_path / "q.json", [rec]))))) == 1
    rec["answers"] = {"A": "same", "B": "Same.", "C": "same", "D": "other"}  # no option could be told apart
    problems = _problems(DataSource(path=str(_write_json(tmp_path / "q.json", [rec]))))
    assert len(problems) == 1 and "record 0: the correct answer A 'same' is also option(s) B, C" in problems[0]


def test_jsonl_bad_line_reports_line_and_other_records_still_checked(tmp_path):
    path = tmp_path / "q.jsonl"
    lines = [json.dumps(_record(0)), "", "{not json", json.dumps(_record(2, "Z"))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = _problems(DataSource(path=str(path)))
    assert len(problems) == 2
    assert problems[0].startswith(f"{path} record 1 (line 3): invalid JSON at column 2")
    assert problems[1].startswith(f"{path} record 2 (line 4): solution 'Z'")


# --------------------------------------------------------------------------- unreadable sources


def test_missing_file(tmp_path):
    problems = _problems(DataSource(path=str(tmp_path / "nope.json")))
    assert problems == [f"{tmp_path / 'nope.json'}: file not found -> check the path (relative to {Path.cwd()})"]
    assert "not found" in _problems(DataSource(path=str(tmp_path / "nope")))[0]


def test_directory_where_file_expected(tmp_path):
    (tmp_path / "d").mkdir()
    problems = _problems(DataSource(path=str(tmp_path / "d"), format="jsonl"))
    assert "is a directory" in problems[0] and "format: hf" in problems[0]


def test_invalid_utf8_names_byte_offset(tmp_path):
    path = tmp_path / "q.json"
    data = b'{"questions": [\n{"question": "caf\xe9"}]}'
    path.write_bytes(data)
    problems = _problems(DataSource(path=str(path)))
    assert data.index(b"\xe9") == 33
    assert "not valid UTF-8 at byte offset 33 (line 2, byte 0xe9)" in problems[0]


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{"questions": [\n  {"question": "x",}\n]}', encoding="utf-8")
    problems = _problems(DataSource(path=str(path)))
    assert len(problems) == 1 and "invalid JSON at line 2 column 20" in problems[0]


@pytest.mark.parametrize(
    "content, text",
    [
        ("[]", "top level is a list"),
        ('"x"', "top level is a string"),
        ('{"items": []}', "no 'questions' key (keys: 'items')"),
        ('{"questions": {}}', "'questions' is a mapping, expected a list"),
        ('{"questions": []}', "contains 0 questions"),
    ],
)
def test_bad_top_level_and_empty(tmp_path, content, text):
    path = tmp_path / "q.json"
    path.write_text(content, encoding="utf-8")
    problems = _problems(DataSource(path=str(path)))
    assert len(problems) == 1 and text in problems[0]


def test_empty_jsonl(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    assert "contains 0 questions" in _problems(DataSource(path=str(path)))[0]


def test_data_error_message_lists_problems():
    err = DataError([f"p{i}" for i in range(60)], "x.json")
    assert str(err).startswith("60 problem(s) in x.json:\n  - p0\n")
    assert "... and 10 more" in str(err) and len(err.problems) == 60


# --------------------------------------------------------------------------- split, dedup, counts


def test_normalize_question():
    assert normalize_question("  What IS  the\tport?? ") == "what is the port"
    assert normalize_question("¿Qué?") == "qué"
    assert normalize_question("Use ../ paths.") == "use ../ paths"


def test_split_is_deterministic_and_sized():
    qs = _questions(100)
    train, eval_ = split_questions(qs, 0.2, seed=0)
    assert (len(train), len(eval_)) == (80, 20)
    assert split_questions(qs, 0.2, seed=0) == (train, eval_)
    assert split_questions(qs, 0.2, seed=1)[1] != eval_
    assert sorted(q.question for q in train + eval_) == sorted(q.question for q in qs)
    assert [qs.index(q) for q in train] == sorted(qs.index(q) for q in train)  # input order kept


def test_split_is_independent_of_hash_seed(tmp_path):
    # Two interpreters with different PYTHONHASHSEED must hold out the same questions.
    import subprocess

    code = (
        "from launch.questions.data import split_questions, Question;"
        "qs=[Question(f'q{i}', {k: k for k in 'ABCD'}, 'A') for i in range(50)];"
        "print([q.question for q in split_questions(qs, 0.3, 7)[1]])"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


@pytest.mark.parametrize("fraction, n", [(0.0, 10), (1.0, 10), (0.5, 1)])
def test_split_rejects_bad_input(fraction, n):
    with pytest.raises(ValueError):
        split_questions(_questions(n), fraction, 0)


def test_split_keeps_at_least_one_on_each_side():
    assert [len(p) for p in split_questions(_questions(3), 0.01, 0)] == [2, 1]
    assert [len(p) for p in split_questions(_questions(3), 0.99, 0)] == [1, 2]


def test_dedup_counts_overlap_and_repeats():
    train = _questions(6) + [Question("question NUMBER 1", {k: k for k in "ABCD"}, "C")]
    train += [Question(" Question number 5 ?", {k: k for k in "ABCD"}, "B")]
    eval_ = [Question("QUESTION NUMBER 0.", {k: k for k in "ABCD"}, "A")]
    kept, dropped = dedup_train(train, eval_)
    # record 0 overlaps eval; the two last ones repeat records 1 and 5 of train
    assert dropped == 3
    assert [q.question for q in kept] == [f"Question number {i}?" for i in range(1, 6)]


def test_letter_counts():
    assert letter_counts(_questions(6)) == {"A": 2, "B": 2, "C": 1, "D": 1}
    assert letter_counts([]) == {"A": 0, "B": 0, "C": 0, "D": 0}


# --------------------------------------------------------------------------- prepare_splits


def test_prepare_splits_from_one_source(tmp_path):
    recs = _records(40) + [_record(3, "D", question="question number 3")]  # repeat of record 3
    src = _write_json(tmp_path / "all.json", recs)
    cfg = DataConfig(train=DataSource(path=str(src)), eval_fraction=0.25, seed=3)
    out = tmp_path / "out"
    prepared = prepare_splits(cfg, out, progress=False)
    assert isinstance(prepared, PreparedData)
    assert prepared.n_eval == 10
    assert prepared.n_train + prepared.n_dropped_duplicates == 31
    assert prepared.n_dropped_duplicates == 1
    train = load_jsonl_questions(prepared.train_path)
    eval_ = load_jsonl_questions(prepared.eval_path)
    assert (len(train), len(eval_)) == (prepared.n_train, prepared.n_eval)
    assert letter_counts(train) == prepared.letter_counts_train
    assert not {normalize_question(q.question) for q in train} & {normalize_question(q.question) for q in eval_}
    report = json.loads((out / "data_report.json").read_text())
    assert report["n_train"] == 30 and report["n_eval"] == 10 and report["eval_fraction"] == 0.25
    assert report["n_dropped_duplicates"] == 1
    assert report["n_dropped_eval_overlap"] + report["n_dropped_repeated_in_train"] == 1
    # deterministic: the same config writes the same files
    again = prepare_splits(cfg, tmp_path / "again", progress=False)
    assert again.train_path.read_bytes() == prepared.train_path.read_bytes()
    assert again.eval_path.read_bytes() == prepared.eval_path.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["data_report.json", "eval.jsonl", "train.jsonl"]


def test_prepare_splits_with_eval_source_dedup_and_caps(tmp_path):
    train_src = _write_jsonl(tmp_path / "train.jsonl", _records(30))
    eval_src = _write_json(tmp_path / "eval.json", _records(5))  # questions 0-4 are also in train
    cfg = DataConfig(
        train=DataSource(path=str(train_src)), eval=DataSource(path=str(eval_src)), max_train=10, max_eval=3
    )
    prepared = prepare_splits(cfg, tmp_path / "out", progress=False)
    assert (prepared.n_train, prepared.n_eval, prepared.n_dropped_duplicates) == (10, 3, 5)
    assert len(load_jsonl_questions(prepared.train_path)) == 10
    nodedup = prepare_splits(DataConfig(train=cfg.train, eval=cfg.eval, dedup=False), tmp_path / "o2", progress=False)
    assert (nodedup.n_train, nodedup.n_dropped_duplicates) == (30, 0)


def test_prepare_splits_collects_problems_of_both_sources(tmp_path):
    bad_train = _write_json(tmp_path / "t.json", [_record(0, "X")])
    cfg = DataConfig(train=DataSource(path=str(bad_train)), eval=DataSource(path=str(tmp_path / "missing.json")))
    with pytest.raises(DataError) as info:
        prepare_splits(cfg, tmp_path / "out", progress=False)
    assert len(info.value.problems) == 2
    assert "record 0: solution 'X'" in info.value.problems[0] and "file not found" in info.value.problems[1]
    assert not (tmp_path / "out").exists()


def test_prepare_splits_all_train_in_eval(tmp_path):
    src = _write_json(tmp_path / "q.json", _records(4))
    cfg = DataConfig(train=DataSource(path=str(src)), eval=DataSource(path=str(src)))
    with pytest.raises(DataError, match="no training questions left after dropping 4"):
        prepare_splits(cfg, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- check_path


def test_check_path_clean(tmp_path):
    recs = _records(8) + [_record(1, "B", question="QUESTION number 1")]
    path = _write_json(tmp_path / "q.json", recs)
    out = io.StringIO()
    assert check_path(str(path), out=out) == 0
    text = out.getvalue()
    assert f"{path}: 9 records, 9 valid (format cybermetric)" in text
    assert "answer letters: A 2 (22.2%), B 3 (33.3%), C 2 (22.2%), D 2 (22.2%)" in text
    assert "duplicate questions (normalised): 1" in text
    assert "problems: none" in text


def test_check_path_with_problems(tmp_path):
    recs = _records(4)
    recs[2]["solution"] = "E"
    path = _write_jsonl(tmp_path / "q.jsonl", recs)
    out = io.StringIO()
    assert check_path(str(path), out=out) == 2
    text = out.getvalue()
    assert "4 records, 3 valid (format jsonl)" in text
    assert "problems (1):" in text and "record 2 (line 3): solution 'E'" in text


def test_check_path_unreadable(tmp_path, capsys):
    assert check_path(str(tmp_path / "missing.json")) == 2
    text = capsys.readouterr().out
    assert "cannot be read" in text and "file not found" in text


# --------------------------------------------------------------------------- real CyberMetric files


def _cybermetric(name: str) -> DataSource:
    path = CYBERMETRIC / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (../shared/data/cybermetric is only on machines that have it)")
    return DataSource(path=str(path))


def test_real_cybermetric_files_load():
    q80 = load_questions(_cybermetric("CyberMetric-80-v1.json"))
    q500 = load_questions(_cybermetric("CyberMetric-500-v1.json"))
    assert (len(q80), len(q500)) == (80, 500)
    assert sum(letter_counts(q500).values()) == 500


def test_real_cybermetric_dedup_500_against_80():
    q80 = load_questions(_cybermetric("CyberMetric-80-v1.json"))
    q500 = load_questions(_cybermetric("CyberMetric-500-v1.json"))
    kept, dropped = dedup_train(q500, q80)
    assert dropped == 80 and len(kept) == 420


def test_real_cybermetric_check_path():
    out = io.StringIO()
    assert check_path(_cybermetric("CyberMetric-500-v1.json").path, out=out) == 0
    assert "500 records, 500 valid" in out.getvalue()
