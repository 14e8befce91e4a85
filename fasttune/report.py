"""The result of one evaluation, `Report`: saved as a summary JSON and one JSONL line an example, and loaded back.

    report.save("runs/rte", "tuned")                       # runs/rte/tuned.json + tuned.predictions.jsonl
    fasttune.compare(Report.load("runs/rte/base.json"), Report.load("runs/rte/tuned.json"))
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from fasttune.errors import FasttuneError, read_json
from fasttune.reading import Field, read_jsonl

RECORD_FIELDS = {"id": Field((str, int)), "output": Field(str, nonempty=False), "scores": Field(dict, nonempty=False),
                 "categories": Field(list, nonempty=False)}
"""Fields every prediction line must hold, with their types (`parsed` and `gold` take any JSON value)."""


@dataclass
class Report:
    """Everything one evaluation measured. `records` holds one entry per example."""

    task: dict
    model: str
    split: str
    engine: str
    n: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    parse_failures: int
    predicted: dict[str, int]
    gold: dict[str, int]
    per_category: dict[str, dict[str, float]]
    seconds: float
    records: list[dict] = field(repr=False)
    empty_outputs: int | None = None
    """Generation only: replies that were empty after stripping."""
    truncated_outputs: int | None = None
    """Generation only: replies cut off at max_new_tokens before the end-of-turn token."""

    @property
    def primary(self) -> str:
        return self.task.get("primary_metric", next(iter(self.metrics)))

    def to_dict(self) -> dict:
        """The report as JSON values, records included (intervals become lists; a value JSON cannot hold, text)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def save(self, folder: str | Path, name: str = "eval") -> Path:
        """Write `<name>.json` (summary) and `<name>.predictions.jsonl` (every example) to `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        summary = self.to_dict()
        records = summary.pop("records")
        (folder / f"{name}.json").write_text(json.dumps(summary, indent=2))
        with open(_predictions_path(folder / f"{name}.json"), "w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        return folder / f"{name}.json"

    @classmethod
    def load(cls, path: str | Path) -> Report:
        """The report that `save` wrote: `path` is its `<name>.json`, the records come from the
        `<name>.predictions.jsonl` beside it."""
        path = Path(path)
        if not path.is_file():
            raise FasttuneError(f"No saved report at {path} (path={path}). Pass the <name>.json that "
                                "Report.save wrote.")
        summary = read_json(path, "Save the report again")
        names = {f.name for f in fields(cls)} - {"records"}
        required = {f.name for f in fields(cls) if f.default is MISSING} - {"records"}
        keys = set(summary) if isinstance(summary, dict) else set()
        problems = [f"missing field '{name}'" for name in sorted(required - keys)]
        problems += [f"unknown field '{name}'" for name in sorted(keys - names)]
        if problems:
            raise FasttuneError(f"{path} is not a saved fasttune report ({'; '.join(problems)}). Pass the "
                                "<name>.json that Report.save wrote.")
        records = [record.row for record in read_jsonl(_predictions_path(path), RECORD_FIELDS)]
        if len(records) != summary["n"]:
            raise FasttuneError(f"The report's predictions do not match its summary (n={summary['n']}, "
                                f"lines={len(records)}, file={_predictions_path(path)}). Save the report again.")
        summary["intervals"] = {key: tuple(bounds) for key, bounds in summary["intervals"].items()}
        return cls(**summary, records=records)

    def __rich__(self):
        from fasttune.tables import report_table

        return report_table(self)

    def __str__(self) -> str:
        from fasttune.tables import render

        return render(self.__rich__())


def _predictions_path(summary_path: Path) -> Path:
    return summary_path.with_name(summary_path.name.removesuffix(".json") + ".predictions.jsonl")
