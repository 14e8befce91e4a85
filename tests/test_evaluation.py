from math import comb

import numpy as np
import pytest

import fasttune
from fasttune.evaluation import Report, bootstrap_interval


def _report(scores, model="m", outputs=None):
    records = [{"id": i, "output": (outputs or [""] * len(scores))[i], "parsed": None, "gold": "g",
                "scores": {"accuracy": s}, "categories": []} for i, s in enumerate(scores)]
    mean = sum(scores) / len(scores)
    return Report(task={"name": "t", "version": 1, "primary_metric": "accuracy"}, model=model, split="test",
                  engine="loglik", n=len(scores), metrics={"accuracy": mean}, intervals={"accuracy": (mean, mean)},
                  parse_failures=0, predicted={}, gold={}, per_category={}, seconds=0.0, records=records)


def test_mcnemar_exact_p_value_matches_the_binomial_by_hand():
    # 2 examples only base got right, 10 only tuned got right, 8 both right, 5 both wrong
    a = [1] * 2 + [0] * 10 + [1] * 8 + [0] * 5
    b = [0] * 2 + [1] * 10 + [1] * 8 + [0] * 5
    comparison = fasttune.compare(_report(a), _report(b))
    expected = 2 * sum(comb(12, k) for k in range(3)) / 2**12  # two-sided exact binomial, p=0.5
    row = comparison.rows[0]
    assert row.test == "McNemar exact"
    assert row.p_value == pytest.approx(expected) == pytest.approx(0.0385742, abs=1e-6)
    assert (len(comparison.fixed), len(comparison.broken), comparison.n) == (10, 2, 25)


def test_identical_reports_are_not_significant():
    scores = [1, 0, 1, 1, 0]
    assert fasttune.compare(_report(scores), _report(scores)).rows[0].p_value == 1.0


def test_continuous_scores_use_a_paired_permutation_test():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 40).tolist()
    clearly_better = [min(1.0, x + 0.3) for x in a]
    row = fasttune.compare(_report(a), _report(clearly_better)).rows[0]
    assert row.test == "paired permutation" and row.p_value < 0.001


def test_bootstrap_interval_brackets_the_mean_and_has_binomial_width():
    values = [1.0] * 60 + [0.0] * 40
    low, high = bootstrap_interval(values, resamples=2000, seed=0)
    assert low < 0.6 < high
    assert high - low == pytest.approx(2 * 1.96 * (0.6 * 0.4 / 100) ** 0.5, abs=0.03)  # normal approximation
    assert bootstrap_interval([1.0] * 10, 100, 0) == (1.0, 1.0)


def test_comparing_different_tasks_is_refused():
    other = _report([1, 0])
    other.task = {"name": "other", "version": 1}
    with pytest.raises(fasttune.FasttuneError, match="Reports differ in task or split"):
        fasttune.compare(_report([1, 0]), other)


def test_comparison_prints_as_a_table_with_labels_and_flips():
    text = str(fasttune.compare(_report([0, 1, 1]), _report([1, 1, 1], outputs=["X", "Y", "Z"]),
                                labels=("base", "tuned")))
    assert "base" in text and "tuned" in text and "+33.3" in text and "fixed (wrong -> right): 1" in text
