"""Interruptions, numerical faults, out-of-memory and determinism of training on the tiny random Llama (CPU)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import fasttune
from fasttune import checkpoints, guards

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"max_steps": 8, "batch_size": 4, "limit": 40, "logging_steps": 2, "save_steps": 2}
# A real training run in its own process; each step is slowed to a second so that a signal lands mid-run.
CHILD = """
import json, sys, time, torch, fasttune
from fasttune import trainers
step_end = trainers.RichProgress.on_step_end
trainers.RichProgress.on_step_end = lambda self, *a, **k: (time.sleep(1.0), step_end(self, *a, **k))[1]
model = fasttune.load(sys.argv[1], dtype=torch.float32)
fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=sys.argv[2], **json.loads(sys.argv[3]))
"""


def train_tiny(tiny_model_dir, output_dir, **changes):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    return model, fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=str(output_dir),
                                 **{**SETTINGS, **changes})


def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a), "adapters differ"


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory):
    _, run = train_tiny(tiny_model_dir, tmp_path_factory.mktemp("uninterrupted"))
    weights = adapter_weights(run.output_dir)
    assert not (run.output_dir / "checkpoints").exists()  # a finished run keeps its adapter, not its checkpoints
    assert any(name.endswith("lora_B.weight") and tensor.abs().sum() > 0 for name, tensor in weights.items())
    return run, weights


def start_child(tiny_model_dir, output_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_model_dir), str(output_dir), json.dumps(SETTINGS)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(child: subprocess.Popen, folder: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (folder / "trainer_state.json").exists():
        assert child.poll() is None, f"the training process ended early:\n{child.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)


def test_same_seed_gives_the_same_adapter_bitwise(tiny_model_dir, tmp_path, uninterrupted):
    _, run = train_tiny(tiny_model_dir, tmp_path)
    assert_bitwise_equal(adapter_weights(run.output_dir), uninterrupted[1])
    assert run.losses == uninterrupted[0].losses


def test_killed_run_resumes_to_the_same_adapter_as_an_uninterrupted_one(tiny_model_dir, tmp_path, uninterrupted):
    child = start_child(tiny_model_dir, tmp_path)
    wait_for_checkpoint(child, tmp_path / "checkpoints" / "checkpoint-4")
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "adapter").exists()
    _, run = train_tiny(tiny_model_dir, tmp_path, resume=True)
    assert_bitwise_equal(adapter_weights(tmp_path), uninterrupted[1])
    assert run.losses == uninterrupted[0].losses


def test_sigterm_saves_a_checkpoint_stops_and_resumes_to_the_same_adapter(tiny_model_dir, tmp_path, uninterrupted):
    child = start_child(tiny_model_dir, tmp_path)
    wait_for_checkpoint(child, tmp_path / "checkpoints" / "checkpoint-2")
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 1
    stopped = re.search(r"Training stopped by SIGTERM at step (\d+) of 8", output)
    assert stopped, output
    assert 2 < int(stopped[1]) < 8 and "resume=True" in output
    assert guards.latest_checkpoint(tmp_path / "checkpoints").name == f"checkpoint-{stopped[1]}"
    assert not (tmp_path / "adapter").exists()
    train_tiny(tiny_model_dir, tmp_path, resume=True)
    assert_bitwise_equal(adapter_weights(tmp_path), uninterrupted[1])


def write_checkpoint(folder: Path, complete: bool = True) -> None:
    """The files a resume reads back, valid but tiny; marked complete (as training does after saving) or not."""
    folder.mkdir(parents=True)
    for name in ("trainer_state.json", "adapter_config.json"):
        (folder / name).write_text("{}")
    save_file({"weight": torch.zeros(1)}, folder / "adapter_model.safetensors")
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({}, folder / name)
    if complete:
        checkpoints.write_manifest(folder)


def test_resume_refuses_other_settings_and_missing_checkpoints_and_a_fresh_start_refuses_old_ones(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    with pytest.raises(fasttune.FasttuneError, match="No complete checkpoint to resume from"):
        guards.resume_point(tmp_path, {"learning_rate": 5e-4})
    (tmp_path / "config.json").write_text(json.dumps({"learning_rate": 5e-4, "seed": 0}))
    write_checkpoint(checkpoint, complete=False)  # cut off while written: no manifest
    with pytest.raises(fasttune.FasttuneError, match="No complete checkpoint"):
        guards.resume_point(tmp_path, {"learning_rate": 5e-4, "seed": 0})
    shutil.rmtree(tmp_path / "checkpoints")
    write_checkpoint(checkpoint)
    assert guards.resume_point(tmp_path, {"learning_rate": 5e-4, "seed": 0}) == checkpoint
    with pytest.raises(fasttune.FasttuneError, match=r"other settings .*learning_rate: 0.0005 -> 0.001"):
        guards.resume_point(tmp_path, {"learning_rate": 1e-3, "seed": 0})
    with pytest.raises(fasttune.FasttuneError, match=r"holds an interrupted run .*Pass resume=True"):
        guards.check_fresh_start(tmp_path)


def test_resume_lets_fasttune_decide_checkpointing_again_but_not_override_a_users_choice(tmp_path):
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint-2")
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0, "gradient_checkpointing": True}))
    decided = ("gradient_checkpointing",)
    assert guards.resume_point(tmp_path, {"seed": 0, "gradient_checkpointing": None}, decided).name == "checkpoint-2"
    with pytest.raises(fasttune.FasttuneError, match=r"gradient_checkpointing: True -> False"):
        guards.resume_point(tmp_path, {"seed": 0, "gradient_checkpointing": False}, decided)
    with pytest.raises(fasttune.FasttuneError, match=r"gradient_checkpointing: True -> None"):
        guards.resume_point(tmp_path, {"seed": 0, "gradient_checkpointing": None})


def test_nan_loss_stops_at_its_step_naming_the_batch_and_keeping_the_last_checkpoint(tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    batches = []  # token ids of each training forward pass

    def record_batch(module, inputs):
        if module.training:
            batches.append(inputs[0])

    def poison_third_batch(module, inputs, output):
        return output * float("nan") if module.training and len(batches) == 3 else output

    model.model.model.embed_tokens.register_forward_pre_hook(record_batch)
    model.model.lm_head.register_forward_hook(poison_third_batch)
    task = fasttune.tasks.get("larger_number")
    with pytest.raises(fasttune.FasttuneError, match=r"stopped at step 3: non-finite gradient") as raised:
        fasttune.train(model, task, output_dir=str(tmp_path), **SETTINGS)
    message = str(raised.value)
    assert "checkpoint-2" in message and "learning_rate=" in message and "dtype=float32" in message
    ids = re.search(r"example ids=([^)]*)\)", message)[1].split(", ")
    examples = {example["id"]: example for example in task.load("train")}
    text = " ".join(model.tokenizer.decode(row) for row in batches[2])  # padding-free: one row holds the batch
    assert len(set(ids)) == text.count("Which number is larger") == 4
    assert all(f"{examples[i]['a']} or {examples[i]['b']}" in text for i in ids)
    assert guards.latest_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    assert not (tmp_path / "adapter").exists()


def test_evaluation_refuses_to_pick_a_choice_from_nan_log_likelihoods(tiny_model_dir):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    model.model.lm_head.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    with pytest.raises(fasttune.FasttuneError, match=r"non-finite log-likelihoods for 3 of 3 examples "
                                                     r"\(ids=test-0, test-1, test-2\).*dtype=float32"):
        fasttune.evaluate(model, fasttune.tasks.get("larger_number"), limit=3)


def raise_out_of_memory(module, inputs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_in_training_names_batch_size_sequence_length_and_the_fix(tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    model.model.model.embed_tokens.register_forward_pre_hook(raise_out_of_memory)
    with pytest.raises(fasttune.FasttuneError, match=r"Out of memory during training \(batch_size=4, "
                                                     r"sequence_length=\d+\)\. Lower batch_size"):
        fasttune.train(model, fasttune.tasks.get("larger_number"), output_dir=str(tmp_path), **SETTINGS)


@pytest.mark.parametrize("engine,setting", [("loglik", "batch_tokens"), ("generate", "batch_size")])
def test_out_of_memory_in_evaluation_names_batch_size_sequence_length_and_the_fix(tiny_model_dir, engine, setting):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    model.model.model.embed_tokens.register_forward_pre_hook(raise_out_of_memory)
    with pytest.raises(fasttune.FasttuneError, match=r"Out of memory during evaluation \(batch_size=3, "
                                                     rf"sequence_length=\d+\)\. Lower EvalConfig.{setting}"):
        fasttune.evaluate(model, fasttune.tasks.get("larger_number"),
                          config=fasttune.EvalConfig(limit=3, batch_size=3, engine=engine))


def test_learning_rate_1e6_is_refused_naming_learning_rate_instead_of_saving_a_frozen_run(tiny_model_dir, tmp_path):
    with pytest.raises(fasttune.FasttuneError, match=r"Training stopped at step \d+: .*learning_rate"):
        train_tiny(tiny_model_dir, tmp_path / "run", learning_rate=1e6, max_steps=12, logging_steps=1)
    assert not (tmp_path / "run" / "adapter").exists()


def test_a_healthy_tiny_run_logged_every_step_is_not_stopped_by_the_divergence_guard(tiny_model_dir, tmp_path):
    _, run = train_tiny(tiny_model_dir, tmp_path / "run", max_steps=12, logging_steps=1)
    assert (run.output_dir / "adapter" / "adapter_model.safetensors").exists()


class _Args:
    learning_rate, fp16, bf16 = 1e6, False, True


class _State:
    global_step = 0


def feed(guard, logs: list[dict]) -> None:
    for step, entry in enumerate(logs, start=1):
        state = _State()
        state.global_step = step
        guard.on_log(_Args(), state, None, logs=entry)


def test_divergence_guard_stops_on_a_loss_frozen_over_the_window():
    with pytest.raises(fasttune.FasttuneError, match=r"step 5: the loss stayed at 10.8 .*learning_rate=1e\+06"):
        feed(guards.StopOnDivergence(), [{"loss": 10.80}] * 5)


def test_divergence_guard_stops_on_a_float16_sized_loss_naming_dtype():
    with pytest.raises(fasttune.FasttuneError, match=r"step 1: the loss is 3400 .*dtype=bfloat16"):
        feed(guards.StopOnDivergence(), [{"loss": 3400.0}])


def test_divergence_guard_stops_on_a_rising_loss_and_on_zero_or_exploding_gradients():
    with pytest.raises(fasttune.FasttuneError, match="the loss rose from 1 to 2.5 over the last 4 steps"):
        feed(guards.StopOnDivergence(), [{"loss": v} for v in (1.0, 1.2, 1.6, 2.0, 2.5)])
    with pytest.raises(fasttune.FasttuneError, match="gradient norm was 0 at 5 logged steps"):
        feed(guards.StopOnDivergence(), [{"loss": 3.0 - i / 10, "grad_norm": 0.0} for i in range(5)])
    with pytest.raises(fasttune.FasttuneError, match="gradient norm exploded to 2e\\+05"):
        feed(guards.StopOnDivergence(), [{"loss": 3.0, "grad_norm": 2e5}])


def test_divergence_guard_lets_the_cpu_bench_loss_curve_through():
    # benchmarks/results/cpu-bench-2026-11-21/summary.json, training.losses (logged every 5 steps)
    curve = [1.708, 0.2397, 0.1093, 0.1328, 0.0745, 0.0894, 0.0298, 0.0602, 0.0636, 0.0353, 0.0406, 0.0373]
    feed(guards.StopOnDivergence(), [{"loss": v, "grad_norm": 0.5} for v in curve])
