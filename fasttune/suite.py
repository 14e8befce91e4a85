"""`python -m fasttune.bench --suite seeds`: every built-in task evaluated on one model, in one table.

Each task reads its files from <data root>/<task data folder> and is scored on its test split; recipe_mpr also gets
the embedding baseline (all-MiniLM-L6-v2 cosine between query and options) beside the model. Writes one report per
task (`<task>.json` + predictions) and `suite.json` to the output folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import fasttune
from fasttune.errors import FasttuneError
from fasttune.evaluation import EvalConfig, evaluate, score_outputs
from fasttune.machine import describe_machine
from fasttune.progress import console
from fasttune.report import Report
from fasttune.tables import suite_table

SUITES = ("seeds",)


@dataclass
class SuiteConfig:
    """Which suite `run_suite` evaluates, on which data, and where its reports go (its arguments, as a config)."""

    name: Literal["seeds"] = "seeds"
    """The suite: seeds is every built-in task."""
    data_root: str = "../shared/data"
    """The folder holding each task's data folder (e.g. ../shared/data)."""
    limit: int | None = None
    """Score only the first `limit` test examples of each task."""
    out: str | None = None
    """Output folder of the reports and suite.json (default runs/suite-<name>-<time>)."""
    engine: Literal["auto", "loglik", "generate"] = "auto"
    """loglik: pick the most likely of the task's choices; generate: greedy decoding; auto: loglik when possible."""
    seed: int = 0
    """Seed of the bootstrap."""

    def __post_init__(self):
        if self.name not in SUITES:
            raise FasttuneError(f"Unknown suite (suite={self.name!r}). Available: {', '.join(SUITES)}.")


def run_suite(name: str, *, model: str | Path | fasttune.Model | None, data_root: str | Path, limit: int | None,
              out: str | Path, engine: str = "auto", seed: int = 0) -> dict:
    """Evaluate `model` (a folder, an adapter folder, a loaded Model, or None for the embedded model) on every task
    of suite `name`; the other arguments are the fields of SuiteConfig."""
    SuiteConfig(name, str(data_root), limit, str(out), engine, seed)
    out, data_root = Path(out), Path(data_root)
    loaded = model if isinstance(model, fasttune.Model) else fasttune.load(model)
    reports: list[Report] = []
    not_run: dict[str, str] = {}
    for task_name in fasttune.tasks.builtin():
        task = fasttune.tasks.get(task_name)
        task.data_dir = data_root / (task.data_folder or task.name)
        config = EvalConfig(split=task.test_split, limit=limit, engine=engine, seed=seed)
        try:
            done = [evaluate(loaded, task, config=config)]
            if task_name == "recipe_mpr":
                done.append(_embedding_baseline(task, config))
        except FasttuneError as error:  # one task's missing data must not hide the others' results
            not_run[task_name] = str(error)
            continue
        for report in done:
            report.save(out, f"{task_name}-{report.engine}")
            console.print(f"{task_name} ({report.engine}): {report.primary} {100 * report.metrics[report.primary]:.1f}"
                          f" on {report.n} examples in {report.seconds:.0f}s")
        reports += done
    console.print(suite_table(reports, not_run, title=f"suite {name} | {loaded.name} | limit {limit}"))
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": describe_machine(), "suite": name,
               "model": loaded.name, "data": str(data_root), "limit": limit, "not_run": not_run,
               "reports": [{"task": r.task, "model": r.model, "engine": r.engine, "n": r.n, "metrics": r.metrics,
                            "intervals": r.intervals, "parse_failures": r.parse_failures,
                            "empty_outputs": r.empty_outputs, "truncated_outputs": r.truncated_outputs,
                            "seconds": r.seconds} for r in reports]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(summary, indent=2))
    console.print(f"Reports in {out}/")
    return summary


def _embedding_baseline(task, config: EvalConfig) -> Report:
    examples = task.load(config.split)[: config.limit]
    started = time.perf_counter()
    outputs = task.embedding_baseline(examples)
    return score_outputs(task, examples, outputs, model_name="all-MiniLM-L6-v2 cosine", engine="embedding",
                         seconds=time.perf_counter() - started, config=config)
