"""The speed benchmark's parts that need no GPU (benchmarks/speed.py and speed_worker.py): its rows, padding,
figures, loss agreement, table, plot and CLI; and the evaluation speed benchmark."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fasttune
from fasttune.errors import FasttuneError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    """A script of benchmarks/ imported as a module (it is not a package; its __main__ part does not run)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


speed, speed_worker = _script("speed"), _script("speed_worker")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_the_speed_benchmark_says_it_needs_a_cuda_gpu():
    finished = subprocess.run([sys.executable, str(BENCHMARKS / "speed.py"), "--models", "llama-3.2-1b"],
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0
    assert "fasttune: The speed benchmark needs a CUDA GPU (torch.cuda.is_available()=False)" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_unknown_models_and_stacks_are_named_with_suggestions():
    with pytest.raises(FasttuneError, match="Unknown model 'llama-3.2-1bb'. Did you mean: llama-3.2-1b"):
        speed.parse_args(["--models", "llama-3.2-1bb"])
    with pytest.raises(FasttuneError, match="Unknown stack 'unsloth'"):
        speed.parse_args(["--stacks", "unsloth"])


def test_fixed_blocks_are_full_length_seeded_and_trained_on_every_token():
    rows = speed.fixed_blocks(3, 16, 100, seed=1)
    assert [len(row["input_ids"]) for row in rows] == [16] * 3
    assert all(row["completion_mask"] == [1] * 16 and max(row["input_ids"]) < 100 for row in rows)
    assert rows == speed.fixed_blocks(3, 16, 100, seed=1) != speed.fixed_blocks(3, 16, 100, seed=2)


def test_mnli_and_nq_rows_are_the_built_in_tasks_training_rows_with_only_the_answer_trained(data_root, embedded_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    for kind, task_name, folder in (("mnli", "mnli", "mnli"), ("nq", "nq_open_oracle", "nq_open")):
        rows = speed.workload_rows(kind, 4, tokenizer, data_root, block_length=16, vocab_size=100, seed=0)
        task = fasttune.tasks.get(task_name, data_dir=data_root / folder)
        for example, row in zip(task.load("train")[:4], rows, strict=True):
            trained = [t for t, m in zip(row["input_ids"], row["completion_mask"]) if m]
            assert tokenizer.decode(trained) == task.format(example).completion + "<|im_end|>"
    lengths = [len(row["input_ids"]) for row in rows]
    assert len(set(lengths)) == len(lengths) and min(lengths) > 100  # NQ: variable length, passages included
    with pytest.raises(FasttuneError, match="needs 100000"):
        speed.workload_rows("mnli", 100000, tokenizer, data_root, block_length=16, vocab_size=100, seed=0)


def test_padded_batches_pad_on_the_right_and_train_only_on_completions():
    rows = [{"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]}, {"input_ids": [8], "completion_mask": [1]}]
    batch = speed_worker.pad_batch(rows, pad_id=0, device="cpu")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]


def test_figures_count_only_the_timed_steps_tokens():
    rows = [{"input_ids": [1] * n, "completion_mask": [1] * n} for n in (10, 10, 30, 30, 50, 50)]
    measurement = {"losses": [3.0, 2.0, 1.0], "step_ends": [1.0, 2.0, 4.0], "start": 0.0,
                   "peak_memory_bytes": 2**31}
    figures = speed.summarise(measurement, rows, rows_per_step=2, warmup=1, params=1000, peak_tflops=1e-6)
    assert figures["timed_tokens"] == 160 and figures["timed_seconds"] == 3.0
    assert figures["tokens_per_second"] == pytest.approx(160 / 3)
    assert figures["seconds_per_step"] == 2.0 and figures["peak_memory_gib"] == 2.0
    assert figures["mfu"] == pytest.approx(4 * 1000 * 160 / 3 / 1e6)


@pytest.mark.parametrize("padding_free", [True, None], ids=["padding-free", "cpu-default-padded"])
def test_the_fasttune_trainer_and_a_padded_loop_agree_step_by_step_from_the_shared_init(tiny_model_dir, tmp_path,
                                                                                       padding_free):
    """The benchmark's loss check on the CPU: fasttune's trainer, padding-free or with its CPU default (padded,
    length-grouped), and the hand-written padded loop."""
    import fasttune
    from fasttune import backend, configs

    rows = speed.fixed_blocks(8, 24, 1000, seed=0)[:4] + [
        {"input_ids": list(range(100, 100 + n)), "completion_mask": [0] * (n // 2) + [1] * (n - n // 2)}
        for n in (7, 19, 12, 30)]
    spec = {"rows_per_step": 4, "steps": 2, "warmup_lr_steps": 1, "lr": 5e-3, "seed": 3,
            "work": str(tmp_path / "fasttune"), "padding_free": padding_free}
    measurements = {}
    for stack in ("fasttune", "unsloth-padded"):
        model = fasttune.load(tiny_model_dir, dtype=torch.float32)
        backend.add_lora(model, r=4, alpha=4, dropout=0.0, target_modules=configs.ALL_LINEAR, seed=0,
                         gradient_checkpointing=False)
        if stack == "fasttune":
            trainer = speed_worker.fasttune_trainer(model, rows, spec)
            speed_worker.shared_lora_init(model.model, spec["seed"])
            measurement = speed_worker.timed_trainer_run(trainer)
            assert measurement["notes"] == {"padding_free": bool(padding_free), "gradient_checkpointing": False,
                                            "micro_batch": 4, "accumulation": 1}
        else:
            speed_worker.shared_lora_init(model.model, spec["seed"])
            measurement = speed_worker.plain_loop(model.model, rows, spec, model.tokenizer.pad_token_id)
        measurement["peak_memory_bytes"] = 0
        measurements[stack] = measurement

    results = [{"model": "tiny", "data": "mixed", "stack": stack,
                **speed.summarise(m, rows, 4, 1, params=3_000_000, peak_tflops=1.0)}
               for stack, m in measurements.items()]
    speed.add_comparisons(results)
    fasttune_losses, loop_losses = (m["losses"] for m in measurements.values())
    assert len(fasttune_losses) == len(loop_losses) == 2 and fasttune_losses[0] != fasttune_losses[1]
    assert results[1]["loss_max_rel_diff"] < 1e-4 and results[1]["loss_agrees"]
    assert results[0]["timed_tokens"] == results[1]["timed_tokens"] == sum((7, 19, 12, 30))

    from fasttune.tables import render

    summary = {"gpu": "CPU", "matmul_peak_tflops": 1.0, "loss_tolerance": speed.LOSS_TOLERANCE, "results": results}
    text = render(speed.speed_table(summary))
    assert "unsloth-padded" in text and "ok" in text
    assert speed.plot_speed(results, tmp_path / "speed.png", title="tiny").stat().st_size > 10_000


def test_profiling_writes_the_top_operations_of_a_padding_free_and_a_padded_step(tiny_model_dir, tmp_path):
    import fasttune
    from fasttune import backend, configs

    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    backend.add_lora(model, r=4, alpha=4, dropout=0.0, target_modules=configs.ALL_LINEAR, seed=0,
                     gradient_checkpointing=False)
    rows = [{"input_ids": list(range(100, 100 + n)), "completion_mask": [0] * (n - 3) + [1] * 3}
            for n in (7, 19, 12, 30)]
    spec = {"rows_per_step": 2, "lr": 1e-3, "seed": 3, "work": str(tmp_path / "fasttune")}
    speed_worker.profile_steps(model, rows, spec, tmp_path / "profile-tiny-mixed", top=5)
    for name in ("padding-free", "padded"):
        text = (tmp_path / f"profile-tiny-mixed-{name}.txt").read_text()
        assert text.startswith(f"fasttune, {name} batches: step 2 of profile-tiny-mixed (2 rows)")
        assert "Top 5 by self GPU time" in text and "aten::" in text


def test_the_evaluation_speed_benchmark_times_both_engines_on_the_same_rows(tiny_model_dir, data_root, tmp_path):
    import json

    eval_speed = _script("eval_speed")
    eval_speed.main(["--model", str(tiny_model_dir), "--tasks", "rte", "--data-root", str(data_root),
                     "--limit", "6", "--batch-tokens", "600", "--out", str(tmp_path)])

    (row,) = json.loads((tmp_path / "eval_speed.json").read_text())["rows"]
    loglik, one_at_a_time = row["engines"]["loglik"], row["engines"]["generate-one-at-a-time"]
    assert row["task"] == "rte" and row["n"] == 6 and row["metric"] == "accuracy"
    assert row["speedup"] == pytest.approx(one_at_a_time["seconds"] / loglik["seconds"])
    assert row["metric_gap_points"] == pytest.approx(100 * (loglik["value"] - one_at_a_time["value"]))
    assert sum(loglik["predicted"].values()) == 6 and set(loglik["predicted"]) <= {"yes", "no"}
    # the random model's replies rarely parse: each unparsed reply is a miss, and a disagreement with loglik
    assert one_at_a_time["predicted"].get("unparsed", 0) == one_at_a_time["parse_failures"]
    assert row["agreement"] <= 1 - one_at_a_time["parse_failures"] / 6
    generated = [json.loads(line) for line in (tmp_path / "rte-generate.predictions.jsonl").read_text().splitlines()]
    assert len(generated) == 6


def test_a_memory_limit_must_be_positive_and_is_kept_with_the_arguments():
    assert speed.parse_args(["--memory-limit", "8"]).memory_limit == 8.0
    assert speed.parse_args([]).memory_limit is None
    with pytest.raises(FasttuneError, match=r"--memory-limit must be positive \(memory_limit=0.0\)"):
        speed.parse_args(["--memory-limit", "0"])


def test_the_fasttune_worker_checkpoints_when_the_longest_row_of_its_data_would_not_fit(tiny_model_dir, tmp_path,
                                                                                       monkeypatch):
    from transformers import AutoConfig

    from fasttune import memory, plan

    short, long = speed.fixed_blocks(4, 10, 1000, seed=0), speed.fixed_blocks(4, 40, 1000, seed=0)
    per_token = plan.activation_bytes_per_token(AutoConfig.from_pretrained(tiny_model_dir)) * plan.PADDED_SHARE
    free = int(20 * per_token / plan.MEMORY_HEADROOM)  # room for a 20-token row without checkpointing
    seen = []
    monkeypatch.setattr(memory, "free_memory_bytes", lambda max_memory_gib=None: seen.append(max_memory_gib) or free)
    for rows, expected in ((short, False), (short + long, True)):
        model = fasttune.load(tiny_model_dir, dtype=torch.float32, max_memory_gib=1)
        spec = {"rows_per_step": 4, "steps": 1, "warmup_lr_steps": 1, "lr": 1e-3, "seed": 3,
                "work": str(tmp_path / str(expected))}
        trainer = speed_worker.fasttune_trainer(model, rows, spec)  # the first call attaches the LoRA weights
        assert spec["gradient_checkpointing"] is expected and model.model.is_gradient_checkpointing is expected
        assert trainer.args.gradient_checkpointing is expected
        # the worker's later data kinds train the same adapter with the choice made for all of its data
        later = speed_worker.fasttune_trainer(model, short, spec)
        assert later.args.gradient_checkpointing is expected and len(later.train_dataset) == len(short)
    assert seen and set(seen) == {1}  # the cap given to load() is what fasttune plans with
    model = fasttune.load(tiny_model_dir, dtype=torch.float32, max_memory_gib=1)
    spec = {"rows_per_step": 4, "steps": 1, "warmup_lr_steps": 1, "lr": 1e-3, "seed": 3, "work": str(tmp_path / "l"),
            "longest_row": 40}  # the longest row of another data kind of the worker
    assert speed_worker.fasttune_trainer(model, short, spec).args.gradient_checkpointing is True

    summary = {"gpu": "CPU", "matmul_peak_tflops": 1.0, "loss_tolerance": 0.02, "memory_limit_gib": 8, "results": []}
    assert speed.speed_table(summary).title.endswith("| memory cap 8 GiB a stack")
