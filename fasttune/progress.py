"""Rich progress bars for long work (scoring, generation, training)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fasttune import distributed

console = Console(stderr=True)
_shown: list[Progress] = []
"""The progress display on screen, if any: rich shows one live display at a time, so bars started meanwhile (scoring
during training) join it."""


def new_progress() -> Progress:
    """A progress display with description, bar, count, elapsed and remaining time (shown by rank 0 only in a
    data-parallel run)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, transient=False, disable=not distributed.is_main_process())


@contextmanager
def shown(progress: Progress) -> Iterator[Progress]:
    """Show `progress` while the block runs; bars started inside it are added to it."""
    with progress:
        _shown.append(progress)
        try:
            yield progress
        finally:
            _shown.remove(progress)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bar of `total` steps (below the display already shown, if any, and removed after); yields
    `advance(steps)`."""
    if _shown:
        progress = _shown[-1]
        bar = progress.add_task(description, total=total, status="")
        try:
            yield lambda steps: progress.advance(bar, steps)
        finally:
            progress.remove_task(bar)
        return
    with shown(new_progress()) as progress:
        bar = progress.add_task(description, total=total, status="")
        yield lambda steps: progress.advance(bar, steps)


def training_status(logs: dict) -> str:
    """The training bar's status: the last logged loss, tokens/s and validation metric."""
    parts = [f"loss {logs['loss']:.4f}"]
    if logs.get("tokens_per_second"):
        parts.append(f"{logs['tokens_per_second']:,.0f} tok/s")
    parts += [f"{name.removeprefix('validation/')} {value:.4f}" for name, value in logs.items()
              if name.startswith("validation/")]
    return " · ".join(parts)
