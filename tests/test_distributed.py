"""Data-parallel training and evaluation: two gloo processes under torchrun (fasttune.distributed.launch) on the tiny
random Llama, against one plain process with the same global batch."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import fasttune
from fasttune import checkpoints, distributed, guards, plan

REPO = Path(__file__).resolve().parents[1]
JOB = Path(__file__).with_name("distributed_job.py")
# 48 rows, 8 optimizer steps of batch 4 x 2 accumulated = 8 rows: each rank takes 2 x 2 of them. Without
# hooks.sample_as_one_device the ranks would group rows by length in mega-batches of 12 rows instead of one device's
# 8, and train on other rows from step 1 on.
SETTINGS = {"max_steps": 8, "batch_size": 4, "gradient_accumulation": 2, "limit": 48, "logging_steps": 1,
            "save_steps": 2}
# Measured: the two-process adapter differs from the one-process one by at most 4e-8 (float32 sums in another
# order); losses agree to 1e-7.
ADAPTER_TOLERANCE = 1e-6
LOSS_TOLERANCE = 1e-5
STEP_SECONDS = 0.5  # each step slowed so that a signal or a kill lands mid-run


def start(tiny_model_dir: Path, output: Path, settings: dict, step_seconds: float = 0.0,
          poisoned_rank: str = "") -> subprocess.Popen:
    """`distributed.launch(2, job ...)` in a process of its own, as `fasttune train --devices 2` runs it."""
    launcher = "import sys; from fasttune import distributed; sys.exit(distributed.launch(2, sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", launcher, str(JOB), str(tiny_model_dir), str(output),
                             json.dumps(settings), str(step_seconds), poisoned_rank],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(child: subprocess.Popen, timeout: float = 300) -> str:
    output = child.communicate(timeout=timeout)[0]
    assert child.returncode == 0, output[-4000:]
    return output


def wait_for_checkpoint(child: subprocess.Popen, checkpoints: Path, timeout: float = 300) -> Path:
    """The first checkpoint both ranks have written completely."""
    deadline = time.monotonic() + timeout
    while (checkpoint := guards.latest_checkpoint(checkpoints, processes=2)) is None:
        assert child.poll() is None, f"the job ended early:\n{child.stdout.read()[-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
    return checkpoint


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def card(run: Path) -> dict:
    return json.loads((run / "adapter" / "fasttune.json").read_text())


def report(output: Path, rank: int, name: str) -> dict:
    summary = json.loads((output / "reports" / str(rank) / f"{name}.json").read_text())
    summary.pop("seconds")
    predictions = (output / "reports" / str(rank) / f"{name}.predictions.jsonl").read_text()
    return {**summary, "predictions": predictions}


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory) -> Path:
    import distributed_job

    output = tmp_path_factory.mktemp("one-process")
    distributed_job.main(str(tiny_model_dir), str(output), json.dumps(SETTINGS), "0")
    return output


@pytest.fixture(scope="module")
def two_processes(tiny_model_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("two-processes")
    finish(start(tiny_model_dir, output, SETTINGS))
    return output


def test_two_processes_follow_the_one_process_loss_curve_to_the_same_adapter(one_process, two_processes):
    one, two = card(one_process / "run"), card(two_processes / "run")
    assert [step for step, _ in two["losses"]] == [step for step, _ in one["losses"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [loss for _, loss in two["losses"]] == pytest.approx([loss for _, loss in one["losses"]],
                                                                rel=LOSS_TOLERANCE)
    single, parallel = adapter(one_process / "run"), adapter(two_processes / "run")
    assert single.keys() == parallel.keys()
    assert max((single[name] - parallel[name]).abs().max().item() for name in single) <= ADAPTER_TOLERANCE
    assert any(tensor.abs().max() > 1e-3 for name, tensor in parallel.items() if "lora_B" in name)  # it trained
    assert two["train_tokens"] == one["train_tokens"]  # the same rows, counted over both ranks


def test_each_rank_takes_its_share_of_the_global_batch_and_rank_0_writes_one_adapter_and_card(two_processes):
    run = two_processes / "run"
    recorded = json.loads((run / "config.json").read_text())
    assert recorded["batch_size"] == 4 and recorded["gradient_accumulation"] == 2
    assert {key: recorded["plan"][key] for key in ("world_size", "micro_batch", "accumulation")} == \
        {"world_size": 2, "micro_batch": 2, "accumulation": 2}
    assert card(run)["plan"] == recorded["plan"]
    assert sorted(path.name for path in run.iterdir()) == [  # one of each, and no checkpoints
        ".fasttune.lock", "adapter", "config.json", "dashboard.png", "inputs.json", "log.jsonl", "loss.png",
        "run.json", "tensorboard"]


@pytest.mark.parametrize("engine", ["loglik", "generate"])
def test_evaluation_split_across_two_processes_gives_the_one_process_report(one_process, two_processes, engine):
    single = report(one_process, 0, engine)
    assert single["n"] == {"loglik": 9, "generate": 5}[engine]  # odd: the ranks score 5 + 4 and 3 + 2 examples
    assert report(two_processes, 0, engine) == single
    assert report(two_processes, 1, engine) == single  # every rank gets the whole report


def test_sigterm_stops_every_rank_after_one_step_a_killed_rank_stops_the_job_and_resume_ends_at_the_same_adapter(
        tiny_model_dir, tmp_path, two_processes):
    child = start(tiny_model_dir, tmp_path, SETTINGS, STEP_SECONDS)
    first = wait_for_checkpoint(child, tmp_path / "run" / "checkpoints")
    child.send_signal(signal.SIGTERM)  # the launcher passes it to torchrun, which passes it to both ranks
    output = child.communicate(timeout=120)[0]
    assert child.returncode != 0
    stops = dict(re.findall(r"\[rank(\d)\]: fasttune\.guards\.TrainingInterrupted: fasttune: Training stopped by "
                            r"SIGTERM at step (\d+) of 8", output))
    assert stops.keys() == {"0", "1"} and stops["0"] == stops["1"], output[-4000:]
    stopped = int(stops["0"])
    assert guards.latest_checkpoint(tmp_path / "run" / "checkpoints", processes=2).name == f"checkpoint-{stopped}"
    assert int(first.name.split("-")[1]) <= stopped < 6

    child = start(tiny_model_dir, tmp_path, {**SETTINGS, "resume": True}, STEP_SECONDS)
    while wait_for_checkpoint(child, tmp_path / "run" / "checkpoints").name == f"checkpoint-{stopped}":
        time.sleep(0.1)  # until the resumed run has saved a checkpoint of its own
    os.kill(int((tmp_path / "pids" / "1").read_text()), signal.SIGKILL)
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 1 and "Signal 9 (SIGKILL) received by PID" in output, output[-4000:]
    assert not (tmp_path / "run" / "adapter").exists()

    finish(start(tiny_model_dir, tmp_path, {**SETTINGS, "resume": True}))
    parallel = adapter(two_processes / "run")
    assert all(torch.equal(tensor, parallel[name]) for name, tensor in adapter(tmp_path / "run").items())
    assert card(tmp_path / "run")["losses"] == card(two_processes / "run")["losses"]


def test_nan_on_one_rank_stops_both_at_the_same_step_naming_the_rows_of_both(tiny_model_dir, tmp_path):
    child = start(tiny_model_dir, tmp_path, {**SETTINGS, "max_steps": 3}, poisoned_rank="1")
    output = child.communicate(timeout=300)[0]
    assert child.returncode == 1
    failures = dict(re.findall(r"\[rank(\d)\]: fasttune\.errors\.FasttuneError: fasttune: Training stopped at step "
                               r"2: non-finite gradient in \d+ tensors \(first: [^)]*\) \(example ids=([^)]*)\)",
                               output))
    assert failures.keys() == {"0", "1"} and failures["0"] == failures["1"], output[-4000:]
    ids = failures["0"].split(", ")
    assert len(set(ids)) == 8 and all(id.startswith("train-") for id in ids)  # the step's 4 + 4 rows
    assert not (tmp_path / "run" / "adapter").exists()


def test_resume_refuses_another_number_of_processes_and_needs_every_ranks_rng_state(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for name in checkpoints.checkpoint_files(processes=2):
        if name != "rng_state_1.pth":
            (checkpoint / name).write_text("{}")
    checkpoints.write_manifest(checkpoint)  # as training marks a checkpoint complete
    (tmp_path / "config.json").write_text(json.dumps({"method": "sft", "seed": 0, "plan": {"world_size": 2}}))
    assert guards.latest_checkpoint(tmp_path / "checkpoints", processes=2) is None  # rank 1's RNG state missing
    (checkpoint / "rng_state_1.pth").write_text("{}")
    checkpoints.write_manifest(checkpoint)
    assert guards.latest_checkpoint(tmp_path / "checkpoints", processes=2) == checkpoint
    with pytest.raises(fasttune.FasttuneError, match=r"holds an interrupted run"):
        guards.check_fresh_start(tmp_path)
    with pytest.raises(fasttune.FasttuneError, match=r"trained in 2 processes, this one has 1 .*--nproc-per-node 2"):
        guards.resume_point(tmp_path, {"seed": 0})


def test_the_rows_of_an_optimizer_step_split_evenly_between_ranks_or_the_run_is_refused():
    assert plan.rank_share(16, 1, 1) == (16, 1)
    assert plan.rank_share(16, 2, 4) == (4, 2)
    assert plan.rank_share(6, 2, 4) == (3, 1)  # 12 rows a step: 3 per rank, in one batch
    with pytest.raises(fasttune.FasttuneError, match=r"The 10 rows of an optimizer step do not split evenly "
                                                     r"between 4 processes \(batch_size=5, gradient_accumulation=2"):
        plan.rank_share(5, 2, 4)


def test_4bit_qlora_under_ddp_is_refused_off_cuda_and_off_the_ranks_own_gpu_naming_what_works():
    plan.check_data_parallel(0, torch.device("cpu"), 0, 2)  # 16-bit weights train data-parallel anywhere
    with pytest.raises(fasttune.FasttuneError, match=r"4-bit QLoRA cannot train data-parallel on cpu .*only on "
                                                     r"CUDA GPUs.*load_in_4bit=False"):
        plan.check_data_parallel(14, torch.device("cpu"), 0, 2)
    with pytest.raises(fasttune.FasttuneError, match=r"on cuda:0, not on its own GPU cuda:1"):
        plan.check_data_parallel(14, torch.device("cuda", 0), 1, 2)
    plan.check_data_parallel(14, torch.device("cuda", 1), 1, 2)


def test_launch_refuses_no_devices_and_a_launch_from_inside_torchrun(monkeypatch):
    with pytest.raises(fasttune.FasttuneError, match=r"devices must be at least 1 \(devices=0\)"):
        distributed.launch(0, ["job.py"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(fasttune.FasttuneError, match=r"Already one of 2 torchrun processes"):
        distributed.launch(2, ["job.py"])
