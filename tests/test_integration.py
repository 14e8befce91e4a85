"""The embedded SmolLM2-135M learns the synthetic task: a real base-vs-tuned gain on the CPU (minutes)."""

import json
import random

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


@pytest.mark.slow
def test_smollm2_learns_a_multi_turn_messages_file_with_loss_on_every_assistant_turn(tmp_path):
    # Turn 2's answer needs turn 1: which of the two numbers, given in two turns, is larger.
    numbers = random.Random(0)
    pairs = [numbers.sample(range(100, 1000), 2) for _ in range(800)]
    rows = [{"messages": [{"role": "user", "content": f"The first number is {a}."},
                          {"role": "assistant", "content": f"Noted: {a}."},
                          {"role": "user", "content": f"The second number is {b}. Which one is larger?"},
                          {"role": "assistant", "content": "the first" if a > b else "the second"}]}
            for a, b in pairs]
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = fasttune.tasks.get("chat", train_file=str(tmp_path / "chats.jsonl"), labels=["the first", "the second"],
                              test_percent=15)
    model = fasttune.load()
    base = fasttune.evaluate(model, task, limit=100)
    run = fasttune.train(model, task, limit=640, batch_size=16, output_dir=str(tmp_path / "run"))
    tuned = fasttune.evaluate(run.model, task, limit=100)
    assert base.metrics["accuracy"] < 0.7
    assert tuned.metrics["accuracy"] - base.metrics["accuracy"] >= 0.2
    assert fasttune.compare(base, tuned).rows[0].p_value < 0.01
