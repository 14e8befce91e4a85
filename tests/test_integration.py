"""The embedded SmolLM2-135M learns the synthetic task: a real base-vs-tuned gain on the CPU (minutes)."""

import pytest

import fasttune


@pytest.mark.slow
def test_smollm2_accuracy_on_larger_number_rises_by_a_wide_margin(tmp_path):
    task = fasttune.tasks.get("larger_number")
    model = fasttune.load()
    base = fasttune.evaluate(model, task, limit=100)
    run = fasttune.train(model, task, limit=640, batch_size=16, output_dir=str(tmp_path))
    tuned = fasttune.evaluate(run.model, task, limit=100)
    comparison = fasttune.compare(base, tuned)
    assert base.metrics["accuracy"] < 0.6
    assert tuned.metrics["accuracy"] - base.metrics["accuracy"] >= 0.25
    assert comparison.rows[0].p_value < 0.001
