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


def plot_losses(losses: list[tuple[int, float]], path: Path, title: str) -> Path:
    """Training loss against optimizer step."""
    figure, axis = _subplots(figsize=(6, 4))
    axis.plot([step for step, _ in losses], [loss for _, loss in losses], marker="o", markersize=3)
    axis.set(xlabel="step", ylabel="training loss", title=title)
    axis.grid(alpha=0.3)
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


def plot_speed(results: list[dict], path: Path, title: str) -> Path:
    """Tokens/s and peak memory of every stack, grouped by model and data."""
    groups = list(dict.fromkeys((r["model"], r["data"]) for r in results))
    stacks = list(dict.fromkeys(r["stack"] for r in results))
    found = {(r["model"], r["data"], r["stack"]): r for r in results if "tokens_per_second" in r}
    figure, axes = _subplots(2, 1, figsize=(max(6, 1.4 * len(groups) + 2), 7), sharex=True)
    width = 0.8 / max(1, len(stacks))
    for i, stack in enumerate(stacks):
        positions = [g + (i - (len(stacks) - 1) / 2) * width for g in range(len(groups))]
        for axis, key, scale in ((axes[0], "tokens_per_second", 1e-3), (axes[1], "peak_memory_gib", 1)):
            values = [found[(*group, stack)][key] * scale if (*group, stack) in found else 0 for group in groups]
            axis.bar(positions, values, width, label=stack)
    axes[0].set(ylabel="non-padding tokens/s (thousands)", title=title)
    axes[1].set(ylabel="peak GPU memory (GiB)")
    axes[1].set_xticks(range(len(groups)), [f"{model}\n{kind}" for model, kind in groups], fontsize=8)
    axes[0].legend(fontsize=8)
    for axis in axes:
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path
