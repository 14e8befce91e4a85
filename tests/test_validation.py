"""Validation during training on the tiny random Llama (CPU): the metric at the right steps, keep="best", early
stopping, held-out rows, the run report and comparing two saved runs."""

import json

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

import fasttune
from fasttune import guards, splits
from fasttune.configs import TrainConfig
from fasttune.engines import engine_for
from fasttune.evaluation import EvalConfig, score_examples
from fasttune.validation import Validation

SETTINGS = {"batch_size": 4, "limit": 40, "logging_steps": 2, "save_steps": None, "learning_rate": 1e-3,
            "validation_split": "train", "validation_size": 16}


def train_tiny(tiny_model_dir, output_dir, **changes):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    return fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=str(output_dir),
                          **{**SETTINGS, **changes})


def script_metric(monkeypatch, values: dict[int, float], snapshots: dict | None = None, die_at: dict | None = None):
    """Make validation at step N report accuracy `values[N]` (the real scoring still runs); with `snapshots`,
    record the LoRA weights each evaluation saw; with `die_at` {"step": N}, the run dies at step N (once)."""
    step = {}
    real_step_end, real_evaluate = Validation.on_step_end, Validation.evaluate

    def on_step_end(self, args, state, control, **kwargs):
        step["now"] = state.global_step
        if die_at and die_at.get("step") == state.global_step:
            del die_at["step"]
            raise guards.TrainingInterrupted("the process died")
        return real_step_end(self, args, state, control, **kwargs)

    def evaluate(self):
        report = real_evaluate(self)
        report.metrics["accuracy"] = values[step["now"]]
        if snapshots is not None:
            snapshots[step["now"]] = {name: t.detach().clone()
                                      for name, t in get_peft_model_state_dict(self.model.model).items()}
        return report

    monkeypatch.setattr(Validation, "on_step_end", on_step_end)
    monkeypatch.setattr(Validation, "evaluate", evaluate)


@pytest.fixture(scope="module")
def validated(tiny_model_dir, tmp_path_factory):
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("validated"), max_steps=7, eval_every=3)


def test_validation_runs_every_eval_every_steps_and_at_the_last_step(validated):
    log = [json.loads(line) for line in (validated.output_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "validation"] == [3, 6, 7]
    assert [r["step"] for r in log if r["kind"] == "train"] == [2, 4, 6]
    card = json.loads((validated.adapter_dir / "fasttune.json").read_text())
    assert [step for step, _ in card["validation"]["history"]] == [3, 6, 7]
    assert card["validation"]["split"] == "train" and card["validation"]["rows"] == 16
    assert card["validation"]["keep"] == "last" and card["validation"]["kept_step"] == 7


def test_the_last_validation_scores_the_saved_adapter_as_evaluate_does(validated):
    final = fasttune.load_run(validated.output_dir).final
    task = fasttune.tasks.get("larger_number")
    again = score_examples(engine_for(validated.model), task, splits.validation_examples(task, validated.config),
                           EvalConfig(split="train"))
    assert final.n == again.n == 16
    assert final.metrics["accuracy"] == again.metrics["accuracy"]
    assert [r["output"] for r in final.records] == [r["output"] for r in again.records]


def test_run_report_and_dashboard_load_back_with_the_logged_values(validated):
    run = fasttune.load_run(validated.output_dir)
    assert run.summary["steps"] == 7 and run.kept_step == 7
    assert run.validation == [tuple(point) for point in validated.validation["history"]]
    assert run.losses == validated.losses
    assert run.dashboard.stat().st_size > 10_000 and (validated.output_dir / "loss.png").is_file()
    assert run.summary["peak_memory_gib"] > 0 and run.summary["median_tokens_per_second"] > 0


def test_keep_best_saves_the_adapter_of_the_best_step_when_a_later_step_is_worse(tiny_model_dir, tmp_path,
                                                                                 monkeypatch, validated):
    snapshots = {}
    script_metric(monkeypatch, {2: 0.50, 4: 0.90, 6: 0.70, 8: 0.60}, snapshots)
    run = train_tiny(tiny_model_dir, tmp_path, max_steps=8, eval_every=2, keep="best")
    saved = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert run.validation["kept_step"] == 4 and run.validation["kept_value"] == 0.90
    assert all(torch.equal(saved[name], snapshots[4][name]) for name in snapshots[4])
    assert not all(torch.equal(saved[name], snapshots[8][name]) for name in snapshots[8])
    card = json.loads((run.adapter_dir / "fasttune.json").read_text())
    assert card["validation"]["kept_step"] == 4 and card["config"]["keep"] == "best"
    assert not (tmp_path / "best").exists()
    # two saved runs' final reports compare on the same 16 validation rows
    comparison = fasttune.compare(fasttune.load_run(validated.output_dir).final, fasttune.load_run(tmp_path).final)
    assert comparison.n == 16


def test_a_resumed_run_keeps_the_best_step_from_before_the_interruption(tiny_model_dir, tmp_path, monkeypatch):
    snapshots, die_at = {}, {"step": 6}  # after the checkpoint of step 4, before the evaluation of step 6
    script_metric(monkeypatch, {2: 0.50, 4: 0.90, 6: 0.70}, snapshots, die_at)
    settings = {"max_steps": 6, "eval_every": 2, "keep": "best", "save_steps": 2}
    with pytest.raises(guards.TrainingInterrupted):
        train_tiny(tiny_model_dir, tmp_path, **settings)
    assert (tmp_path / "checkpoints" / "checkpoint-4" / "fasttune-best" / "best.json").is_file()
    run = train_tiny(tiny_model_dir, tmp_path, resume=True, **settings)
    assert run.validation["kept_step"] == 4 and [s for s, _ in run.validation["history"]] == [2, 4, 6]
    saved = load_file(run.adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(saved[name], snapshots[4][name]) for name in snapshots[4])


def test_early_stopping_stops_after_n_evaluations_without_improvement(tiny_model_dir, tmp_path, monkeypatch):
    script_metric(monkeypatch, {1: 0.5, 2: 0.6, 3: 0.6, 4: 0.55, 5: 0.9, 6: 0.9})
    run = train_tiny(tiny_model_dir, tmp_path, max_steps=6, eval_every=1, early_stopping=2, logging_steps=1)
    assert run.validation["stopped_early_at"] == 4 and run.validation["best_step"] == 2
    assert fasttune.load_run(tmp_path).summary["steps"] == 4
    assert [step for step, _ in run.losses] == [1, 2, 3, 4]


def test_held_out_validation_rows_share_no_text_with_training_and_do_not_depend_on_limit():
    task = fasttune.tasks.get("larger_number")
    config = TrainConfig(eval_every=5, validation_split="train", split="train", validation_size=50, seed=3)
    with pytest.raises(fasttune.FasttuneError, match="test split"):
        splits.validation_source(task, TrainConfig(eval_every=5, validation_split="test"))
    held = splits.validation_examples(task, config)
    trained = splits.training_examples(task, config)
    assert len(held) == 50 and len(trained) == 2000 - 50
    assert not {task.text(e) for e in held} & {task.text(e) for e in trained}
    assert splits.training_examples(task, TrainConfig(eval_every=5, validation_split="train", validation_size=50,
                                                      seed=3, limit=10)) == trained[:10]
    assert [e["id"] for e in splits.validation_examples(task, TrainConfig(eval_every=5, validation_split="train",
                                                                          validation_size=50, seed=4))] != \
        [e["id"] for e in held]


def test_validation_split_that_repeats_training_rows_is_refused(tmp_path):
    task = fasttune.tasks.get("larger_number")
    config = TrainConfig(eval_every=5, split="validation", validation_split="train")
    with pytest.raises(fasttune.FasttuneError, match="rows it trains on"):
        # the two splits share no pair: make them share by training on a split that contains the validation rows
        original = task.load

        def load(split):
            return original("validation") + original("train")[:3] if split == "validation" else original(split)

        task.load = load
        splits.validation_examples(task, config)


def test_keep_best_and_early_stopping_without_eval_every_are_refused():
    with pytest.raises(fasttune.FasttuneError, match="set eval_every"):
        TrainConfig(keep="best")
    with pytest.raises(fasttune.FasttuneError, match="eval_every must be positive"):
        TrainConfig(eval_every=0)
