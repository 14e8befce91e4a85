"""Rich tables for reports and comparisons, and plain-text rendering of them."""

from __future__ import annotations

import io

from rich.console import Console, Group
from rich.table import Table


def render(renderable) -> str:
    """Plain text of a rich renderable (what `print(report)` shows)."""
    buffer = io.StringIO()
    Console(file=buffer, width=110, force_terminal=False).print(renderable)
    return buffer.getvalue()


def _distribution(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    shown = ", ".join(f"{label} {100 * n / total:.0f}%" for label, n in list(counts.items())[:8])
    return shown + (f", ... ({len(counts) - 8} more)" if len(counts) > 8 else "")


def _share(count: int, total: int) -> str:
    return f"{count} ({100 * count / max(total, 1):.0f}%)"


def report_table(report) -> Group:
    """Metrics with intervals, parse failures, answer distributions and per-category scores of one Report."""
    table = Table(title=f"{report.task['name']} v{report.task['version']} | {report.model} | {report.split} "
                        f"(n={report.n}, {report.engine}, {report.seconds:.1f}s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for key, value in report.metrics.items():
        low, high = report.intervals.get(key, (float("nan"), float("nan")))
        table.add_row(key, f"{100 * value:.1f}", f"{100 * low:.1f}-{100 * high:.1f}")
    table.add_row("parse failures", str(report.parse_failures), "counted wrong")
    if report.truncated_outputs is not None:
        table.add_row("empty outputs", _share(report.empty_outputs, report.n), "")
        table.add_row("truncated outputs", _share(report.truncated_outputs, report.n), "hit max_new_tokens")
    parts = [table]
    if report.predicted:
        parts += [f"predicted: {_distribution(report.predicted)}", f"gold:      {_distribution(report.gold)}"]
    if report.per_category:
        categories = Table(title="per category")
        categories.add_column("category")
        categories.add_column("n", justify="right")
        categories.add_column(report.primary, justify="right")
        for name, row in report.per_category.items():
            categories.add_row(name, str(row["n"]), f"{100 * row[report.primary]:.1f}")
        parts.append(categories)
    return Group(*parts)


def suite_table(reports, not_run: dict[str, str], title: str) -> Group:
    """One row per task and metric of a suite run: value, interval, n, parse failures, empty/truncated, time."""
    table = Table(title=title)
    for column, justify in (("task", "left"), ("scored by", "left"), ("metric", "left"), ("value", "right"),
                            ("95% CI", "right"), ("n", "right"), ("parse fail", "right"),
                            ("empty / trunc", "right"), ("s", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for report in reports:
        for index, (key, value) in enumerate(report.metrics.items()):
            low, high = report.intervals.get(key, (float("nan"), float("nan")))
            first = index == 0
            generated = report.truncated_outputs is not None
            table.add_row(
                report.task["name"] if first else "", report.engine if first else "", key, f"{100 * value:.1f}",
                f"{100 * low:.1f}-{100 * high:.1f}", str(report.n) if first else "",
                str(report.parse_failures) if first else "",
                f"{report.empty_outputs} / {report.truncated_outputs}" if first and generated else "",
                f"{report.seconds:.0f}" if first else "", end_section=index == len(report.metrics) - 1)
    parts = [table]
    parts += [f"not run: {name}: {reason}" for name, reason in not_run.items()]
    return Group(*parts)


def comparison_table(comparison) -> Group:
    """Side-by-side metrics, the paired test and example flips of a Comparison."""
    a, b = comparison.a, comparison.b
    label_a, label_b = comparison.labels
    table = Table(title=f"{a.task['name']} | {a.split} | n={comparison.n} paired")
    for column, justify in (("metric", "left"), (label_a, "right"), (label_b, "right"), ("delta", "right"),
                            ("p-value", "right"), ("test", "left")):
        table.add_column(column, justify=justify)
    for row in comparison.rows:
        table.add_row(row.metric, f"{100 * row.a:.1f} ({100 * row.a_ci[0]:.1f}-{100 * row.a_ci[1]:.1f})",
                      f"{100 * row.b:.1f} ({100 * row.b_ci[0]:.1f}-{100 * row.b_ci[1]:.1f})",
                      f"{100 * (row.b - row.a):+.1f}", f"{row.p_value:.3g}", row.test)
    table.add_row("parse failures", str(a.parse_failures), str(b.parse_failures), "", "", "")
    parts = [table]
    for title, flips in (("fixed (wrong -> right)", comparison.fixed), ("broken (right -> wrong)", comparison.broken)):
        if flips:
            examples = Table(title=f"{title}: {len(flips)}, first {min(3, len(flips))}")
            for column in ("id", "gold", label_a, label_b):
                examples.add_column(column, overflow="fold")
            for flip in flips[:3]:
                examples.add_row(str(flip["id"]), str(flip["gold"]), flip["a_output"], flip["b_output"])
            parts.append(examples)
    return Group(*parts)
