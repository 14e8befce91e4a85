"""The seeds suite from the CLI, and what evaluation reports for generation tasks."""

import json

import pytest
import torch

import fasttune
from fasttune import cli
from fasttune.evaluation import EvalConfig, score_outputs


def test_generation_report_counts_empty_and_truncated_outputs_and_bootstraps_corpus_bleu(data_root):
    task = fasttune.tasks.get("arxiv_title", data_dir=data_root / "arxiv")
    examples = task.load("test")[:6]
    outputs = [task.format(e).completion for e in examples[:3]] + ["", "A study of", "Some title"]
    report = score_outputs(task, examples, outputs, model_name="m", engine="generate", seconds=1.0,
                           config=EvalConfig(bootstrap_resamples=200), truncated=[False] * 4 + [True, False])
    assert (report.empty_outputs, report.truncated_outputs, report.parse_failures) == (1, 1, 1)
    assert report.metrics["bleu"] == pytest.approx(task.metric(
        [task.parse_answer(o, e) for o, e in zip(outputs, examples)], [task.answer(e) for e in examples])["bleu"])
    low, high = report.intervals["bleu"]
    assert low < report.metrics["bleu"] < high and report.predicted == {}
    assert "truncated outputs" in str(report) and "1 (17%)" in str(report)


def test_seeds_suite_runs_from_the_cli_on_every_task(tiny_model_dir, data_root, tmp_path):
    summary = cli.run(["bench", "--suite", "seeds", "--model", str(tiny_model_dir), "--data", str(data_root),
                          "--limit", "3", "--out", str(tmp_path)])
    runs = {(r["task"]["name"], r["engine"]) for r in summary["reports"]}
    assert {name for name, _ in runs} == set(fasttune.tasks.builtin()) and summary["not_run"] == {}
    assert ("recipe_mpr", "embedding") in runs and ("scitldr", "generate") in runs and ("mnli", "loglik") in runs
    assert all(r["n"] == 3 for r in summary["reports"])
    saved = json.loads((tmp_path / "suite.json").read_text())
    assert saved["limit"] == 3 and saved["machine"]["torch"] == torch.__version__
    assert (tmp_path / "shopbench-generate.predictions.jsonl").exists()
