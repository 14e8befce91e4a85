"""PNG plots: training loss curves and base-vs-tuned metric bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _subplots(*grid: int, figsize: tuple[float, float], **options):
    """A figure on its own Agg canvas: no pyplot, so the host's matplotlib backend and figures stay as they are."""
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure, figure.subplots(*grid, **options)


def plot_losses(losses: list[tuple[int, float]], path: Path, title: str,
                validation: list[tuple[int, float]] = (), metric: str = "") -> Path:
    """Training loss against optimizer step; with `validation`, the validation `metric` on a second axis."""
    figure, axis = _subplots(figsize=(6, 4))
    axis.plot([step for step, _ in losses], [loss for _, loss in losses], marker="o", markersize=3)
    axis.set(xlabel="step", ylabel="training loss", title=title)
    axis.grid(alpha=0.3)
    if validation:
        second = axis.twinx()
        second.plot([step for step, _ in validation], [value for _, value in validation], marker="s", markersize=4,
                    color="#dd8452")
        second.set_ylabel(f"validation {metric}", color="#dd8452")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_comparison(labels: list[str], values: list[float], intervals: list[tuple[float, float]], path: Path,
                    title: str, ylabel: str) -> Path:
    """One bar per evaluation with its 95% interval as an error bar."""
    figure, axis = _subplots(figsize=(5, 4))
    errors = [[v - low for v, (low, _) in zip(values, intervals)], [high - v for v, (_, high) in zip(values, intervals)]]
    bars = axis.bar(labels, [100 * v for v in values], yerr=[[100 * e for e in side] for side in errors], capsize=6,
                    color=["#9aa5b1", "#2f7ed8"][: len(values)] + ["#55a868"] * max(0, len(values) - 2))
    axis.bar_label(bars, labels=[f"{100 * v:.1f}" for v in values], label_type="center", color="white")
    axis.set(ylabel=ylabel, title=title, ylim=(0, 100))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_dashboard(train: list[dict], validation: list[tuple[int, float]], metric: str, path: Path,
                   title: str) -> Path:
    """A run at a glance: loss, learning rate, validation metric and tokens/s against step (`train`: log lines)."""
    figure, axes = _subplots(2, 2, figsize=(10, 7))
    panels = [("loss", "training loss"), ("learning_rate", "learning rate"), (None, f"validation {metric}"),
              ("tokens_per_second", "tokens/s")]
    for axis, (key, label) in zip(axes.flat, panels):
        points = validation if key is None else [(r["step"], r[key]) for r in train if r.get(key) is not None]
        axis.plot([step for step, _ in points], [value for _, value in points], marker="o", markersize=3)
        axis.set(xlabel="step", ylabel=label)
        axis.grid(alpha=0.3)
        if not points:
            axis.text(0.5, 0.5, "not measured", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
