"""`AppConfig`: what `fasttune app` offers (models, reports) and where it listens."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fasttune.errors import raise_problems


@dataclass
class AppConfig:
    """Settings of the local web app (chat, side by side, report)."""

    models: list[str] = field(default_factory=list)
    """Runs or models to offer: a run folder (its adapter/ and saved reports), a base, adapter or merged folder, or a
    .gguf file; the embedded default model is always offered too."""
    reports: list[str] = field(default_factory=list)
    """Saved evaluation reports to open: a <name>.json that Report.save wrote, or a folder holding some."""
    data: str | None = None
    """Folder holding the tasks' data folders (default: $FASTTUNE_DATA), for the prompts of a report's predictions
    and the examples of a task on the side-by-side page."""
    host: str = "127.0.0.1"
    """Address to listen on; 127.0.0.1 keeps the app on this machine."""
    port: int = 7860
    """Port to listen on; one already in use is refused."""

    def __post_init__(self):
        problems = [f"no model or run at {spec} (models={spec})" for spec in self.models
                    if not Path(spec).expanduser().exists()]
        problems += [f"no report at {path} (reports={path})" for path in self.reports if not Path(path).exists()]
        if self.data is not None and not Path(self.data).is_dir():
            problems.append(f"data must be a folder (data={self.data})")
        if not 0 < self.port < 65536:
            problems.append(f"port must be between 1 and 65535 (port={self.port})")
        raise_problems(problems)
