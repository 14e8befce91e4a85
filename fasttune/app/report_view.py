"""The Report page's content as tables: one saved Report, or a Comparison of two, and their predictions.

A prediction is *right* when its primary score is full credit (1), *unparsed* when parse_answer found no answer,
*wrong* otherwise; in a comparison it is *flipped* when its primary score differs between the two reports.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fasttune.comparison import Comparison
from fasttune.errors import FasttuneError
from fasttune.report import Report
from fasttune.task import Task

OUTCOMES = ("all", "right", "wrong", "unparsed")
"""Filters of one report's predictions; a comparison adds "flipped"."""


def outcome(record: dict, metric: str) -> str:
    """right, wrong or unparsed (see the module docstring)."""
    if record["parsed"] is None:
        return "unparsed"
    return "right" if record["scores"][metric] >= 1 else "wrong"


def summary(report: Report, comparison: Comparison | None = None) -> str:
    """A Markdown heading naming the task, split, engine and model(s)."""
    task = f"{report.task['name']} v{report.task['version']}"
    if comparison is None:
        return (f"### {task} | {report.model} | split {report.split} | n={report.n} | {report.engine} | "
                f"{report.seconds:.1f} s\nparse failures: {report.parse_failures} (counted wrong)")
    a, b = comparison.labels
    return (f"### {task} | split {report.split} | {a} vs {b} | n={comparison.n} paired\n"
            f"fixed (wrong -> right): {len(comparison.fixed)}, broken (right -> wrong): {len(comparison.broken)}")


def metrics_table(report: Report, comparison: Comparison | None = None) -> pd.DataFrame:
    """Each metric in percent with its 95% bootstrap interval; for a comparison both reports, delta and p-value."""
    if comparison is None:
        return pd.DataFrame([[name, _percent(value), _interval(report.intervals.get(name))]
                             for name, value in report.metrics.items()], columns=["metric", "value", "95% CI"])
    a, b = comparison.labels
    return pd.DataFrame([[row.metric, _percent(row.a), _interval(row.a_ci), _percent(row.b), _interval(row.b_ci),
                          f"{100 * (row.b - row.a):+.1f}", f"{row.p_value:.3g}", row.test] for row in comparison.rows],
                        columns=["metric", a, f"{a} 95% CI", b, f"{b} 95% CI", "delta", "p-value", "test"])


def distribution_table(reports: list[Report], labels: list[str]) -> pd.DataFrame:
    """How often each answer label was predicted (per report) and is gold."""
    names = list(dict.fromkeys([*reports[0].gold, *(label for r in reports for label in r.predicted)]))
    return pd.DataFrame([[name, *(r.predicted.get(name, 0) for r in reports), reports[0].gold.get(name, 0)]
                         for name in names], columns=["answer", *(f"predicted ({label})" for label in labels), "gold"])


def category_table(reports: list[Report], labels: list[str]) -> pd.DataFrame:
    """The primary metric in percent per category, per report."""
    metric = reports[0].primary
    names = list(dict.fromkeys(name for r in reports for name in r.per_category))
    rows = [[name, reports[0].per_category.get(name, {}).get("n", 0),
             *(_percent(r.per_category[name][metric]) if name in r.per_category else "" for r in reports)]
            for name in names]
    return pd.DataFrame(rows, columns=["category", "n", *(f"{metric} ({label})" for label in labels)])


def plots(reports: list[Path]) -> list[Path]:
    """The PNG plots (loss, validation, comparison) saved in the reports' folders."""
    folders = dict.fromkeys(path.parent for path in reports)
    return [png for folder in folders for png in sorted(folder.glob("*.png"))]


def prompts(report: Report, task: Task) -> tuple[dict, str]:
    """The user prompt of each example id of the report's split of `task`, and a note when they cannot be shown."""
    try:
        examples = task.load(report.split)
    except FasttuneError as error:
        return {}, f"Prompts not shown: {error}"
    note = "" if task.VERSION == report.task["version"] else (f"Prompts are formatted by {task.name} "
                                                              f"v{task.VERSION}; the report was made with "
                                                              f"v{report.task['version']}.")
    return {example["id"]: task.format(example).prompt[-1]["content"] for example in examples}, note


def predictions_table(report: Report, shown: str, prompt_of: dict, comparison: Comparison | None = None) -> \
        pd.DataFrame:
    """The predictions whose outcome is `shown` (one of OUTCOMES, or "flipped"), each with prompt, output, parsed
    answer and gold; a comparison shows both reports' outputs and parsed answers, and a row is right, wrong or
    unparsed when either report's answer is."""
    metric = report.primary
    if comparison is None:
        rows = [[str(r["id"]), outcome(r, metric), prompt_of.get(r["id"], ""), r["output"], _text(r["parsed"]),
                 _text(r["gold"]), round(r["scores"][metric], 4)]
                for r in report.records if shown == "all" or outcome(r, metric) == shown]
        return pd.DataFrame(rows, columns=["id", "outcome", "prompt", "output", "parsed", "gold", metric])
    a, b = comparison.labels
    by_id = {r["id"]: r for r in comparison.b.records}
    rows = []
    for ra in comparison.a.records:
        if ra["id"] not in by_id:
            continue
        rb = by_id[ra["id"]]
        outcomes = outcome(ra, metric), outcome(rb, metric)
        flipped = ra["scores"][metric] != rb["scores"][metric]
        if shown == "all" or (shown == "flipped" and flipped) or (shown != "flipped" and shown in outcomes):
            rows.append([str(ra["id"]), " -> ".join(outcomes), prompt_of.get(ra["id"], ""), ra["output"],
                         _text(ra["parsed"]), rb["output"], _text(rb["parsed"]), _text(ra["gold"])])
    return pd.DataFrame(rows, columns=["id", "outcome", "prompt", f"output ({a})", f"parsed ({a})",
                                       f"output ({b})", f"parsed ({b})", "gold"])


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _interval(bounds) -> str:
    return "" if bounds is None else f"{100 * bounds[0]:.1f}-{100 * bounds[1]:.1f}"


def _text(value) -> str:
    return "" if value is None else str(value)
