"""Rich progress bars for long work (scoring, generation, training)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fasttune import distributed

console = Console(stderr=True)


def new_progress() -> Progress:
    """A progress display with description, bar, count, elapsed and remaining time (shown by rank 0 only in a
    data-parallel run)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    console=console, transient=False, disable=not distributed.is_main_process())


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Show a bar of `total` steps; yields `advance(steps)`."""
    with new_progress() as progress:
        bar = progress.add_task(description, total=total, status="")
        yield lambda steps: progress.advance(bar, steps)
