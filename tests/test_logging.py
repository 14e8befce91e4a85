"""Run logs on the tiny random Llama (CPU): log.jsonl lines, TensorBoard files read back by tensorboard's own reader,
missing trackers, and a resumed run that continues the logs without a step twice."""

import importlib.util
import math
import os

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import fasttune
from fasttune import guards
from fasttune.logs import read_log
from fasttune.validation import Validation

SETTINGS = {"batch_size": 4, "limit": 40, "logging_steps": 1, "save_steps": 2, "max_steps": 6, "eval_every": 2,
            "validation_split": "train", "validation_size": 16}


def train_tiny(tiny_model_dir, output_dir, **changes):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    return fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=str(output_dir),
                          **{**SETTINGS, **changes})


def scalars(folder, tag):
    events = EventAccumulator(str(folder / "tensorboard"))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def logged(tiny_model_dir, tmp_path_factory):
    return train_tiny(tiny_model_dir, tmp_path_factory.mktemp("logged"))


def test_every_logged_step_writes_loss_lr_grad_norm_tokens_padding_and_memory(logged):
    train = [r for r in read_log(logged.output_dir / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert [(r["step"], r["loss"]) for r in train] == logged.losses
    rates = [r["learning_rate"] for r in train]  # one warmup step from 0, then the linear decay
    assert rates[0] == 0 and rates[1] == pytest.approx(logged.config.learning_rate) and rates[1:] == sorted(rates[1:],
                                                                                                      reverse=True)
    for record in train:
        assert record["learning_rate"] >= 0 and math.isfinite(record["grad_norm"]) and record["grad_norm"] > 0
        assert record["tokens_per_second"] > 0 and record["peak_memory_gib"] > 0
        assert 0 <= record["padding_share"] < 1  # rows of a batch are padded to the longest
    # rows are grouped by length, yet "Which is larger, 12 or 345?" prompts differ by a token or two
    assert any(record["padding_share"] > 0 for record in train)


def test_tensorboard_files_read_back_with_the_logged_values(logged):
    log = read_log(logged.output_dir / "log.jsonl")
    train = [(r["step"], r["loss"]) for r in log if r["kind"] == "train"]
    assert [(step, pytest.approx(value, rel=1e-6)) for step, value in scalars(logged.output_dir, "train/loss")] == train
    validation = [(r["step"], r["value"]) for r in log if r["kind"] == "validation"]
    assert [step for step, _ in validation] == [2, 4, 6]
    assert scalars(logged.output_dir, "validation/accuracy") == [(s, pytest.approx(v)) for s, v in validation]


def test_a_resumed_run_continues_the_logs_without_logging_a_step_twice(tiny_model_dir, tmp_path, monkeypatch, logged):
    real = Validation.on_step_end

    def die_at_step_6(self, args, state, control, **kwargs):
        if state.global_step == 6:  # step 5 is logged, its checkpoint (every 2 steps) is not written
            raise guards.TrainingInterrupted("the process died")
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(Validation, "on_step_end", die_at_step_6)
    with pytest.raises(guards.TrainingInterrupted):
        train_tiny(tiny_model_dir, tmp_path)
    monkeypatch.undo()
    # resume goes back to step 4, and steps 5 and 6 are logged once
    assert guards.latest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-4"
    assert max(r["step"] for r in read_log(tmp_path / "log.jsonl")) == 5
    run = train_tiny(tiny_model_dir, tmp_path, resume=True)
    log = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if r["kind"] == "validation"] == [2, 4, 6]
    assert [step for step, _ in scalars(tmp_path, "train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [step for step, _ in scalars(tmp_path, "validation/accuracy")] == [2, 4, 6]
    assert [step for step, _ in run.validation["history"]] == [2, 4, 6]
    # the resumed run's losses are the uninterrupted run's (same seed, same data order)
    assert [r["loss"] for r in log if r["kind"] == "train"] == pytest.approx([loss for _, loss in logged.losses])


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_that_is_not_installed_is_named_with_its_install_command(tiny_model_dir, tmp_path, tracker):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed")
    with pytest.raises(fasttune.FasttuneError, match=f"pip install {tracker}"):
        train_tiny(tiny_model_dir, tmp_path, report_to=["tensorboard", tracker])


def test_mlflow_file_store_gets_the_metrics_and_a_resumed_run_continues_the_same_mlflow_run(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    from fasttune import hooks
    from fasttune.configs import TrainConfig
    from fasttune.logs import MlflowSink

    with hooks.library_scope():
        first = MlflowSink(tmp_path, TrainConfig(), None)
        first.write(1, {"train/loss": 2.5})
        first.write(2, {"train/loss": 2.0, "validation/accuracy": 0.5})
        first.close()
        resumed = MlflowSink(tmp_path, TrainConfig(), 2)
        resumed.write(3, {"train/loss": 1.5})
        resumed.close()
        client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
        history = [(m.step, m.value) for m in client.get_metric_history(first.run_id, "train/loss")]
        run = client.get_run(first.run_id)
    assert resumed.run_id == first.run_id and history == [(1, 2.5), (2, 2.0), (3, 1.5)]
    assert run.data.params["lora.r"] == "16" and run.info.status == "FINISHED"
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ


def test_wandb_offline_run_resumes_under_the_same_id_and_leaves_the_environment_as_it_was(tmp_path):
    pytest.importorskip("wandb")
    from fasttune import hooks
    from fasttune.configs import TrainConfig
    from fasttune.logs import WandbSink

    before = dict(os.environ)
    with hooks.library_scope():
        first = WandbSink(tmp_path, TrainConfig(), None)
        first.write(1, {"train/loss": 2.5})
        first.close()
        resumed = WandbSink(tmp_path, TrainConfig(), 1)
        resumed.write(2, {"train/loss": 2.0})
        resumed.close()
    assert resumed.run.id == first.run.id and first.run.settings.mode == "offline"
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{first.run.id}"))) == 2  # `wandb sync` joins them
    assert dict(os.environ) == before
