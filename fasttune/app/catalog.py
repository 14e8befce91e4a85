"""What the app offers: the models (loaded on first use, then kept) and the saved reports, found from an AppConfig.

A run folder (one holding `adapter/`) offers its adapter, the adapter's base model and the reports saved in it;
an adapter folder offers itself and its base model.
"""

from __future__ import annotations

import threading
from pathlib import Path

from fasttune import embedded, tasks
from fasttune.app import models
from fasttune.app.config import AppConfig
from fasttune.card import resolve_base_model
from fasttune.errors import FasttuneError
from fasttune.report import Report
from fasttune.task import Task

EMBEDDED = "embedded default (SmolLM2-135M-Instruct)"
"""The label of the embedded default model (also of its converted folder, an adapter's usual base)."""


class Catalog:
    """Models by label (spec None is the embedded default) and report files by label."""

    def __init__(self, config: AppConfig):
        self.models: dict[str, str | None] = {}
        self.reports: dict[str, Path] = {}
        for spec in config.models:
            path = Path(spec).expanduser()
            if (path / "adapter").is_dir():
                path = path / "adapter"
                self._add_reports(path.parent)
            if (path / "adapter_config.json").is_file():
                self._add_model(resolve_base_model(path))
            self._add_model(path)
        self.models.setdefault(EMBEDDED, None)
        for report in config.reports:
            self._add_reports(Path(report))
        self.data = config.data
        self._loaded: dict[str, models.TransformersChatModel | models.GgufChatModel] = {}
        self._lock = threading.Lock()

    def _add_model(self, path: Path) -> None:
        if path.resolve() == (embedded.cache_dir() / "models" / embedded.DEFAULT_MODEL).resolve():
            self.models.setdefault(EMBEDDED, None)  # the cached folder of the embedded model: the same weights
        elif str(path) not in self.models.values():
            self.models[str(path)] = str(path)

    def _add_reports(self, path: Path) -> None:
        found = [path] if path.is_file() else sorted(summary for summary in path.glob("*.json")
                                                      if is_saved_report(summary))
        if path.is_dir() and not found and not (path / "adapter").is_dir():
            raise FasttuneError(f"No saved report in {path} (reports={path}). Pass a folder holding a "
                                "<name>.json and <name>.predictions.jsonl that Report.save wrote.")
        for summary in found:
            self.reports[str(summary)] = summary

    @property
    def model_labels(self) -> list[str]:
        return list(self.models)

    def model(self, label: str) -> models.TransformersChatModel | models.GgufChatModel:
        """The model named `label`, loaded the first time it is asked for."""
        if label not in self.models:
            raise FasttuneError(f"Unknown model '{label}'. Available: {', '.join(self.models)}.")
        with self._lock:  # two pages asking for one model at once load it once
            if label not in self._loaded:
                self._loaded[label] = models.load(self.models[label])
            return self._loaded[label]

    def report(self, label: str) -> Report:
        return Report.load(self.reports[label])

    def task(self, name: str) -> Task:
        """Task `name`, reading its files from the config's data folder when it names one (else $FASTTUNE_DATA)."""
        task = tasks.get(name)
        return task if self.data is None else tasks.get(name, data_dir=Path(self.data) / (task.data_folder or name))


def is_saved_report(path: Path) -> bool:
    """Whether `path` is a `<name>.json` with the `<name>.predictions.jsonl` that Report.save writes beside it."""
    return path.with_name(path.name.removesuffix(".json") + ".predictions.jsonl").is_file()
