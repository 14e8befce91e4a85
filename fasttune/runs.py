"""A finished run's report, `run.json` with a PNG dashboard, and `load_run` that reads a run folder back.

    run = fasttune.load_run("runs/rte-a")
    run.validation                     # [(step, value), ...] of the task's primary metric
    fasttune.compare(fasttune.load_run("runs/rte-a").final, fasttune.load_run("runs/rte-b").final)

`final` is the validation report of the adapter the run kept (the best step with keep="best", else the last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fasttune.errors import FasttuneError, read_json
from fasttune.logs import LOG_NAME, read_log
from fasttune.plots import plot_dashboard
from fasttune.report import Report

REPORT_NAME = "run.json"
DASHBOARD_NAME = "dashboard.png"


@dataclass
class SavedRun:
    """What `load_run` reads from a run folder."""

    folder: Path
    summary: dict
    """run.json: task, method, model, steps, seconds, tokens/s, peak memory, validation (history and kept step)."""
    log: list[dict]
    """The lines of log.jsonl ("train" and "validation")."""
    final: Report | None
    """The validation report of the kept adapter; None when the run did not validate."""
    dashboard: Path

    @property
    def losses(self) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in self.log if r["kind"] == "train"]

    @property
    def validation(self) -> list[tuple[int, float]]:
        return [(r["step"], r["value"]) for r in self.log if r["kind"] == "validation"]

    @property
    def kept_step(self) -> int | None:
        return (self.summary.get("validation") or {}).get("kept_step")


def write_run_report(folder: Path, summary: dict, title: str) -> Path:
    """Write `folder`/run.json (`summary` plus what log.jsonl measured) and the dashboard PNG beside it."""
    log = read_log(folder / LOG_NAME)
    train = [r for r in log if r["kind"] == "train"]
    validation = summary.get("validation") or {}
    peaks = [r["peak_memory_gib"] for r in train if r.get("peak_memory_gib") is not None]
    speeds = [r["tokens_per_second"] for r in train if r.get("tokens_per_second")]
    report = {**summary, "logged_steps": len(train), "peak_memory_gib": max(peaks, default=None),
              "median_tokens_per_second": sorted(speeds)[len(speeds) // 2] if speeds else None,
              "log": LOG_NAME, "dashboard": DASHBOARD_NAME}
    plot_dashboard(train, [tuple(point) for point in validation.get("history", [])], validation.get("metric", ""),
                   folder / DASHBOARD_NAME, title)
    path = folder / REPORT_NAME
    path.write_text(json.dumps(report, indent=2, default=str))
    return path


def load_run(folder: str | Path) -> SavedRun:
    """The report, log and final validation report of the finished run in `folder` (a train() output_dir)."""
    folder = Path(folder)
    path = folder / REPORT_NAME
    if not path.is_file():
        raise FasttuneError(f"No run report in {folder} (file={path}). Pass the output_dir of a finished "
                            "fasttune.train run.")
    summary = read_json(path, "Train the run again, or pass another run folder")
    if not isinstance(summary, dict):
        raise FasttuneError(f"The run report is not a JSON object (file={path}). Train the run again.")
    final_name = (summary.get("validation") or {}).get("report")
    return SavedRun(folder, summary, read_log(folder / LOG_NAME),
                    Report.load(folder / final_name) if final_name else None, folder / DASHBOARD_NAME)
