"""Reports saved and loaded back: the same report, the same comparison, and errors that name the file."""

import json

import pytest

import fasttune
from fasttune.evaluation import EvalConfig, score_outputs
from fasttune.report import Report


def _reports():
    """Two reports of larger_number's first 12 test rows: one right on the first 4, one on the first 9."""
    task = fasttune.tasks.get("larger_number")
    examples = task.load("test")[:12]
    right = [str(task.answer(e)) for e in examples]
    wrong = [str(min(e["a"], e["b"])) for e in examples]
    base, tuned = (score_outputs(task, examples, right[:k] + wrong[k:-1] + ["no idea"], model_name=name,
                                 engine="generate", seconds=1.5, config=EvalConfig(bootstrap_resamples=200),
                                 truncated=[False] * 11 + [True])
                   for name, k in (("base", 4), ("tuned", 9)))
    return base, tuned


def test_a_saved_report_loads_back_as_the_same_report(tmp_path):
    report, _ = _reports()
    path = report.save(tmp_path, "base")
    assert path == tmp_path / "base.json" and (tmp_path / "base.predictions.jsonl").is_file()
    loaded = Report.load(path)
    assert loaded.to_dict() == report.to_dict()
    assert loaded.intervals == report.intervals and isinstance(loaded.intervals["accuracy"], tuple)
    assert (loaded.n, loaded.parse_failures, loaded.truncated_outputs, loaded.primary) == (12, 1, 1, "accuracy")
    assert loaded.records[0]["id"] == "test-0" and loaded.records[-1]["parsed"] is None
    assert str(loaded) == str(report)


def test_to_dict_is_what_save_writes(tmp_path):
    report, _ = _reports()
    everything = report.to_dict()
    records = everything.pop("records")
    report.save(tmp_path, "r")
    assert json.loads((tmp_path / "r.json").read_text()) == everything
    lines = (tmp_path / "r.predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == records and len(records) == report.n


def test_comparing_two_saved_reports_gives_the_comparison_of_the_originals(tmp_path):
    base, tuned = _reports()
    expected = fasttune.compare(base, tuned, labels=("base", "tuned"))
    again = fasttune.compare(Report.load(base.save(tmp_path, "base")), Report.load(tuned.save(tmp_path, "tuned")),
                             labels=("base", "tuned"))
    assert again.to_dict() == expected.to_dict() and again.rows == expected.rows
    assert (again.fixed, again.broken) == (expected.fixed, expected.broken) and len(again.fixed) == 5
    assert str(again) == str(expected)


def test_report_is_one_class_wherever_it_is_imported_from():
    from fasttune import evaluation

    assert fasttune.Report is Report is evaluation.Report


def test_loading_a_report_that_is_not_there_names_the_path(tmp_path):
    with pytest.raises(fasttune.FasttuneError, match=r"No saved report at .*missing.json"):
        Report.load(tmp_path / "missing.json")


def test_a_cut_off_report_summary_is_an_error_naming_the_file(tmp_path):
    report, _ = _reports()
    path = report.save(tmp_path, "r")
    path.write_text(path.read_text()[:50])
    with pytest.raises(fasttune.FasttuneError, match=r"r.json is not valid JSON, perhaps cut off .*file=.*r.json"):
        Report.load(path)


def test_a_json_file_that_is_not_a_report_lists_the_missing_and_unknown_fields(tmp_path):
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"task": {"name": "t"}, "model": "m", "score": 3}))
    with pytest.raises(fasttune.FasttuneError, match=r"other.json is not a saved fasttune report \(missing field "
                                                     r"'engine'.*unknown field 'score'\)"):
        Report.load(path)


def test_predictions_that_do_not_match_the_summary_are_refused(tmp_path):
    report, _ = _reports()
    path = report.save(tmp_path, "r")
    predictions = tmp_path / "r.predictions.jsonl"
    predictions.write_text("".join(predictions.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(fasttune.FasttuneError, match=r"do not match its summary \(n=12, lines=11"):
        Report.load(path)
    predictions.write_text(json.dumps({"id": "x", "output": "1"}) + "\n")
    with pytest.raises(fasttune.FasttuneError, match=r"r.predictions.jsonl, line 1: missing field 'scores'"):
        Report.load(path)
