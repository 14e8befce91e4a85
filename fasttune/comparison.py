"""Paired comparison of two evaluations of the same task split: McNemar for 0/1 scores, else a permutation test."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from fasttune.errors import FasttuneError
from fasttune.report import Report


@dataclass
class MetricRow:
    """One metric of both reports on the paired examples, and the test of their difference."""

    metric: str
    a: float
    b: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    p_value: float
    test: str


@dataclass
class Comparison:
    """Result of `compare(a, b)`: per-metric rows and the examples that flipped."""

    a: Report
    b: Report
    labels: tuple[str, str]
    n: int
    rows: list[MetricRow]
    fixed: list[dict]
    broken: list[dict]

    def __rich__(self):
        from fasttune.tables import comparison_table

        return comparison_table(self)

    def __str__(self) -> str:
        from fasttune.tables import render

        return render(self.__rich__())

    def to_dict(self) -> dict:
        return {"n": self.n, "a": self.labels[0], "b": self.labels[1], "rows": [vars(row) for row in self.rows],
                "fixed": len(self.fixed), "broken": len(self.broken)}


def compare(a: Report, b: Report, labels: tuple[str, str] | None = None, resamples: int = 10000,
            seed: int = 0) -> Comparison:
    """Compare report `b` against `a` (e.g. tuned against base) on the examples both scored.

    `labels` name the two columns (default: the models' names).
    """
    if a.task["name"] != b.task["name"] or a.split != b.split:
        raise FasttuneError(f"Reports differ in task or split ({a.task['name']}/{a.split} vs "
                            f"{b.task['name']}/{b.split}); compare evaluations of the same split.")
    records_b = {record["id"]: record for record in b.records}
    pairs = [(record, records_b[record["id"]]) for record in a.records if record["id"] in records_b]
    if len(pairs) < 2:
        raise FasttuneError(f"The reports share {len(pairs)} example ids; a paired test needs at least 2.")
    rows = []
    for metric in a.records[0]["scores"]:
        x = np.array([ra["scores"][metric] for ra, _ in pairs], dtype=float)
        y = np.array([rb["scores"][metric] for _, rb in pairs], dtype=float)
        p_value, test = _paired_test(x, y, resamples, seed)
        rows.append(MetricRow(metric, float(x.mean()), float(y.mean()), a.intervals.get(metric, (np.nan,) * 2),
                              b.intervals.get(metric, (np.nan,) * 2), p_value, test))
    primary = a.primary
    flips = [{"id": ra["id"], "gold": ra["gold"], "a_output": ra["output"], "b_output": rb["output"],
              "delta": rb["scores"][primary] - ra["scores"][primary]} for ra, rb in pairs]
    return Comparison(a, b, labels or (a.model, b.model), len(pairs), rows, fixed=[f for f in flips if f["delta"] > 0],
                      broken=[f for f in flips if f["delta"] < 0])


def _paired_test(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> tuple[float, str]:
    if set(np.unique(np.concatenate([x, y]))) <= {0.0, 1.0}:
        only_a, only_b = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
        if only_a + only_b == 0:
            return 1.0, "McNemar exact"
        return float(stats.binomtest(only_b, only_a + only_b, 0.5).pvalue), "McNemar exact"
    if np.all(x == y):
        return 1.0, "paired permutation"
    result = stats.permutation_test((x, y), lambda u, v: np.mean(v - u), permutation_type="samples",
                                    n_resamples=resamples, rng=np.random.default_rng(seed))
    return float(result.pvalue), "paired permutation"
