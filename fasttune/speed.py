"""`python -m fasttune.bench speed`: training speed and memory of fasttune beside raw Unsloth and HF+PEFT (CUDA).

Every stack trains on the same rows, in the same order, from the same LoRA initialisation (r=16, all 7 projections):
- fasttune: fasttune's SFT path (its default batching for the machine, a whole batch in one device step when it
  fits, gradient checkpointing only when one longest row of the run's data would not fit without it);
- unsloth-notebook: TRL's SFTTrainer through Unsloth as its notebooks set it up (batch 2 x accumulation 4, 8-bit
  AdamW, Unsloth gradient checkpointing, its padding-free default);
- unsloth-padded: a hand-written loop over the same Unsloth model with padded batches of the whole batch;
- hf-peft: transformers + PEFT + bitsandbytes nf4 QLoRA with gradient checkpointing, padded batches.
Each stack runs in its own process: Unsloth patches transformers globally and must not touch the HF stack.
With --memory-limit every process is capped at that many GiB of GPU memory before it loads anything (CUDA's
per-process cap); fasttune also plans its device steps and checkpointing within it.
Models have random weights of real shapes, built on the GPU from a config (or a local folder, --real-model);
data are fixed-length blocks and tokenised MNLI and NQ-open-with-passage rows. Writes speed.json and speed.png,
and with --profile the top GPU operations of one padding-free and one padded fasttune step (profile-*.txt).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import datetime
from pathlib import Path

import torch

from fasttune import data, tasks
from fasttune.errors import FasttuneError, unknown_name

SHAPES = {  # public configs of these models; rope scaling is left out (it costs nothing)
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   tie_word_embeddings=True)),
    "llama-3.2-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   tie_word_embeddings=True)),
    "llama-3.2-3b": ("llama", dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                                   num_attention_heads=24, num_key_value_heads=8, vocab_size=128256,
                                   tie_word_embeddings=True)),
    "qwen2.5-3b": ("qwen2", dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                 num_attention_heads=16, num_key_value_heads=2, vocab_size=151936,
                                 tie_word_embeddings=True)),
    "llama-3.1-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                   tie_word_embeddings=False)),
}
STACKS = ("fasttune", "unsloth-notebook", "unsloth-padded", "hf-peft")
DATASETS = ("blocks", "mnli", "nq")
ROW_TASKS = {"mnli": "mnli", "nq": "nq_open_oracle"}  # built-in tasks whose training rows the benchmark uses
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WARMUP_LR_STEPS = 5  # the notebooks' warmup_steps, used by every stack
WEIGHT_DECAY = 0.001  # the notebooks' value, used by every stack
LOSS_TOLERANCE = 0.02
"""Largest relative difference of a step's loss from fasttune's for two stacks to count as computing the same."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fasttune.bench speed", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,llama-3.2-1b", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--real-model", default=None,
                        help="also measure this local model folder (e.g. the converted SmolLM2-135M-Instruct)")
    parser.add_argument("--data", default=",".join(DATASETS), help=f"comma-separated: {', '.join(DATASETS)}")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"comma-separated: {', '.join(STACKS)}")
    parser.add_argument("--data-root", default="../shared/data", help="folder holding mnli/ and nq_open/")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the embedded SmolLM2's)")
    parser.add_argument("--rows-per-step", type=int, default=8, help="rows per optimizer step (notebooks: 2 x 4)")
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    parser.add_argument("--block-length", type=int, default=1024, help="tokens a fixed-length block (8B: doubled)")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--seed", type=int, default=3407)
    parser.add_argument("--memory-limit", type=float, default=None, metavar="GIB",
                        help="cap every stack's process at this much GPU memory (e.g. 8: a smaller GPU)")
    parser.add_argument("--worker-timeout", type=int, default=600, help="seconds one stack may take on one model")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one padding-free and one padded fasttune step on each data kind")
    parser.add_argument("--out", default=None, help="output folder (default runs/speed-<time>)")
    args = parser.parse_args(argv)
    for name, known in (("models", SHAPES), ("data", DATASETS), ("stacks", STACKS)):
        setattr(args, name, [item for item in getattr(args, name).split(",") if item])
        for item in getattr(args, name):
            if item not in known:
                raise unknown_name(name.rstrip("s") if name != "data" else "data kind", item, list(known))
    if args.memory_limit is not None and not args.memory_limit > 0:
        raise FasttuneError(f"--memory-limit must be positive (memory_limit={args.memory_limit}). Pass the GiB each "
                            "stack may use, or leave it out to use the whole GPU.")
    if args.warmup >= args.steps:
        raise FasttuneError(f"--warmup must be below --steps (warmup={args.warmup}, steps={args.steps}).")
    return args


# ---- data: the same rows for every stack ----

def fixed_blocks(count: int, length: int, vocab_size: int, seed: int) -> list[dict[str, list[int]]]:
    """Rows of `length` random token ids, every token trained on (continued-pretraining style)."""
    generator = random.Random(seed)
    return [{"input_ids": [generator.randrange(vocab_size) for _ in range(length)], "completion_mask": [1] * length}
            for _ in range(count)]


def workload_rows(kind: str, count: int, tokenizer, data_root: Path, block_length: int, vocab_size: int,
                  seed: int) -> list[dict[str, list[int]]]:
    if kind == "blocks":
        return fixed_blocks(count, block_length, min(vocab_size, len(tokenizer)), seed)
    task = tasks.get(ROW_TASKS[kind], data_dir=data_root / ("mnli" if kind == "mnli" else "nq_open"))
    examples = task.load("train")[:count]
    if len(examples) < count:
        raise FasttuneError(f"Only {len(examples)} {kind} rows in {data_root}; the benchmark needs {count}.")
    # the embedded tokenizer's eos is its end of turn, <|im_end|>; no MNLI or NQ row comes near 16k tokens
    return data.encode_for_training(task, examples, tokenizer, tokenizer.eos_token, max_seq_length=16384).rows


def pad_batch(rows: list[dict[str, list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Rows padded on the right to the longest, loss on completion tokens only (what hand-written loops do)."""
    width = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        ids = torch.tensor(row["input_ids"])
        input_ids[i, : len(ids)], attention[i, : len(ids)] = ids, 1
        labels[i, : len(ids)] = torch.where(torch.tensor(row["completion_mask"]) == 1, ids, -100)
    return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device), "labels": labels.to(device)}


# ---- figures ----

def matmul_params(model) -> int:
    """Weights that take part in a matrix product per token: all but the input embedding (a lookup); a tied
    output head counts once."""
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model.num_parameters() - (0 if tied else embedding)


def summarise(measurement: dict, rows: list[dict], rows_per_step: int, warmup: int, params: int,
              peak_tflops: float) -> dict:
    """tokens/s over the timed steps (non-padding tokens), median s/step, MFU at 4 x params FLOPs a token."""
    ends = measurement["step_ends"]
    tokens = sum(len(row["input_ids"]) for row in rows[warmup * rows_per_step: len(ends) * rows_per_step])
    seconds = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - measurement["start"]
    steps = sorted(b - a for a, b in zip(ends[warmup - 1:], ends[warmup:]))
    tokens_per_second = tokens / seconds
    return {"tokens_per_second": tokens_per_second, "seconds_per_step": steps[len(steps) // 2],
            "peak_memory_gib": measurement["peak_memory_bytes"] / 2**30,
            "mfu": 4 * params * tokens_per_second / (peak_tflops * 1e12), "losses": measurement["losses"],
            "timed_tokens": tokens, "timed_seconds": seconds, **measurement.get("notes", {})}


def loss_agreement(reference: list[float], other: list[float]) -> float:
    """Largest relative difference between two loss curves over their common steps."""
    return max(abs(a - b) / abs(a) for a, b in zip(reference, other))


def add_comparisons(results: list[dict]) -> None:
    """Speed ratio and loss difference of fasttune against every other stack measured on the same workload."""
    by_key = {(r["model"], r["data"], r["stack"]): r for r in results if "tokens_per_second" in r}
    for result in results:
        ours = by_key.get((result["model"], result["data"], "fasttune"))
        if ours and "tokens_per_second" in result and result["stack"] != "fasttune":
            result["fasttune_speedup"] = ours["tokens_per_second"] / result["tokens_per_second"]
            result["loss_max_rel_diff"] = loss_agreement(ours["losses"], result["losses"])
            result["loss_agrees"] = result["loss_max_rel_diff"] <= LOSS_TOLERANCE


def measure_matmul_peak() -> float:
    """bf16 TFLOP/s of an 8192^3 matrix product on random data (median of 20, after warm-up)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b)
        end.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end) / 1e3)
    return 2 * 8192**3 / sorted(times)[len(times) // 2] / 1e12


def versions() -> dict:
    found = {}
    for name in ("torch", "transformers", "trl", "peft", "unsloth", "unsloth_zoo", "bitsandbytes", "datasets"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


# ---- the driver: models, rows, one process per stack ----

def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise FasttuneError("The speed benchmark needs a CUDA GPU (torch.cuda.is_available()=False). Run "
                            "`python -m fasttune.bench speed` on a machine with an NVIDIA GPU and "
                            "`pip install 'fasttune[gpu]'`.")
    from transformers import AutoTokenizer

    from fasttune import embedded
    from fasttune.progress import console

    out = Path(args.out or f"runs/speed-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fasttune-speed-"))  # model folders and rows: large, not results
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or embedded.hf_folder())
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "gpu": torch.cuda.get_device_name(0),
               "platform": platform.platform(), "versions": versions(), "args": vars(args),
               "matmul_peak_tflops": measure_matmul_peak(), "loss_tolerance": LOSS_TOLERANCE,
               "memory_limit_gib": args.memory_limit, "results": []}
    console.print(f"{summary['gpu']}: bf16 matmul peak {summary['matmul_peak_tflops']:.0f} TFLOP/s")
    models = [(name, None) for name in args.models] + ([("real:" + Path(args.real_model).name, args.real_model)]
                                                      if args.real_model else [])
    for name, folder in models:
        model_dir, params, vocab_size = _prepare_model(name, folder, tokenizer, work)
        block_length = args.block_length * (2 if params > 5e9 else 1)
        rows = {kind: workload_rows(kind, args.rows_per_step * args.steps, tokenizer, Path(args.data_root),
                                    block_length, vocab_size, args.seed) for kind in args.data}
        for kind, kind_rows in rows.items():
            (work / f"{kind}.json").write_text(json.dumps(kind_rows))
        for stack in args.stacks:
            console.print(f"[bold]{name} | {stack}")
            measurements = _run_worker(stack, model_dir, work, out, args)
            for kind, kind_rows in rows.items():
                result = {"model": name, "data": kind, "stack": stack, "params": params,
                          "mean_row_tokens": sum(len(r["input_ids"]) for r in kind_rows) / len(kind_rows)}
                measurement = measurements.get(kind, {"error": measurements.get("error", "not measured")})
                if "error" in measurement:
                    result["error"] = measurement["error"]
                else:
                    result.update(summarise(measurement, kind_rows, args.rows_per_step, args.warmup, params,
                                            summary["matmul_peak_tflops"]))
                summary["results"].append(result)
            add_comparisons(summary["results"])
            (out / "speed.json").write_text(json.dumps(summary, indent=2))
        if folder is None:
            shutil.rmtree(model_dir, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    from fasttune.plots import plot_speed
    from fasttune.tables import speed_table

    plot_speed(summary["results"], out / "speed.png", title=f"LoRA r=16 training on {summary['gpu']}")
    console.print(speed_table(summary))
    console.print(f"Results in {out}/ (speed.json, speed.png)")
    return summary


def _prepare_model(name: str, folder: str | None, tokenizer, work: Path) -> tuple[Path, int, int]:
    """A model folder for the workers and its matmul parameter count: random weights of `name`'s shape, built on
    the GPU and saved with the tokenizer, or the given folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if folder is not None:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map={"": 0})
        counted = matmul_params(model), model.config.vocab_size
        del model
        torch.cuda.empty_cache()
        return Path(folder), *counted
    kind, shape = SHAPES[name]
    end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    config = AutoConfig.for_model(kind, **shape, max_position_embeddings=8192, eos_token_id=end, pad_token_id=end,
                                  bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model_dir = work / name
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    params = matmul_params(model)
    del model
    torch.cuda.empty_cache()
    return model_dir, params, shape["vocab_size"]


def _run_worker(stack: str, model_dir: Path, work: Path, out: Path, args: argparse.Namespace) -> dict:
    """Measurements of one stack on every data kind, by data kind (or {"error": ...})."""
    spec = {"stack": stack, "model_dir": str(model_dir), "rows": {kind: str(work / f"{kind}.json") for kind in args.data},
            "rows_per_step": args.rows_per_step, "steps": args.steps, "warmup_lr_steps": WARMUP_LR_STEPS,
            "lr": args.lr, "seed": args.seed, "result": str(work / f"{stack}.result.json"), "work": str(work / stack),
            "profile_dir": str(out) if args.profile else None, "memory_limit_gib": args.memory_limit}
    spec_path = work / f"{stack}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    try:
        finished = subprocess.run([sys.executable, "-m", "fasttune.speed", "worker", str(spec_path)],
                                  capture_output=True, text=True, timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.worker_timeout} s"}
    measured = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() else {}
    if finished.returncode != 0:
        tail = (finished.stdout + finished.stderr).strip().splitlines()[-12:]
        print("\n".join(tail), file=sys.stderr)
        measured["error"] = " | ".join(tail[-3:])[-400:]
    return measured


# ---- the worker: one stack, one model, one workload, in its own process ----

def _worker(spec_path: str) -> None:
    from fasttune import memory

    spec = json.loads(Path(spec_path).read_text())
    stack = spec["stack"]
    memory.limit_memory(spec["memory_limit_gib"])  # before any weights are on the GPU
    if stack == "hf-peft":
        model, pad_id = _hf_peft_model(spec)
    elif stack == "fasttune":
        model, pad_id = _fasttune_model(spec)
    else:
        model, pad_id = _unsloth_model(spec)
    measurements = {}
    for kind, rows_path in spec["rows"].items():
        rows = json.loads(Path(rows_path).read_text())
        shared_lora_init(model.model if stack == "fasttune" else model, spec["seed"])
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        try:
            if stack in ("unsloth-padded", "hf-peft"):
                measurement = plain_loop(model, rows, spec, pad_id)
            else:
                trainer = (fasttune_trainer(model, rows, spec) if stack == "fasttune"
                           else _notebook_trainer(model, rows, spec))
                measurement = timed_trainer_run(trainer)
                del trainer
        except torch.OutOfMemoryError as error:
            measurement = {"error": f"out of GPU memory: {str(error)[:200]}"}
        measurement["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        measurements[kind] = measurement
        Path(spec["result"]).write_text(json.dumps(measurements))
        if stack == "fasttune" and spec["profile_dir"]:
            prefix = Path(spec["profile_dir"], f"profile-{Path(spec['model_dir']).name}-{kind}")
            profile_steps(model, rows, spec, prefix)


def shared_lora_init(model, seed: int) -> None:
    """The same LoRA starting point in every stack: A uniform in +-1/sqrt(fan-in), drawn from a generator seeded by
    the layer's name; B zero."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name:
                key = name[name.find("layers."):]
                generator = torch.Generator().manual_seed(seed + zlib.crc32(key.encode()))
                bound = parameter.shape[1] ** -0.5
                parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * bound)
            elif "lora_B" in name:
                parameter.zero_()


def plain_loop(model, rows: list[dict], spec: dict, pad_id: int) -> dict:
    """A hand-written training loop: padded batches of `rows_per_step`, AdamW, linear warmup and decay, gradients
    clipped at norm 1."""
    import transformers

    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec["lr"], weight_decay=WEIGHT_DECAY, fused=device.type == "cuda")
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, spec["warmup_lr_steps"], spec["steps"])
    model.train()
    per_step = spec["rows_per_step"]
    losses, ends, start = [], [], _now()
    for step in range(spec["steps"]):
        batch = pad_batch(rows[step * per_step: (step + 1) * per_step], pad_id, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # as Trainer's bf16
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # Trainer's default max_grad_norm
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        ends.append(_now())
    return {"losses": losses, "step_ends": ends, "start": start}


def _now() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def timed_trainer_run(trainer, same_order: bool = True) -> dict:
    """Per-step end times and losses of a trainer's run; with `same_order` the rows are taken in dataset order."""
    import transformers

    ends = []

    class StepClock(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(_now())

    trainer.add_callback(StepClock())
    if same_order:
        trainer.args.train_sampling_strategy = "sequential"  # every stack takes the rows in the same order
    start = _now()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    notes = {"padding_free": bool(getattr(trainer.args, "padding_free", False)),
             "gradient_checkpointing": trainer.args.gradient_checkpointing,
             "micro_batch": trainer.args.per_device_train_batch_size,
             "accumulation": trainer.args.gradient_accumulation_steps}
    return {"losses": losses, "step_ends": ends, "start": start, "notes": notes}


def _fasttune_model(spec: dict):
    from fasttune import backend

    model = backend.load(spec["model_dir"], max_seq_length=8192, max_memory_gib=spec["memory_limit_gib"])
    rows = [row for path in spec["rows"].values() for row in json.loads(Path(path).read_text())]
    add_fasttune_lora(model, rows, spec)
    return model, model.tokenizer.pad_token_id


def add_fasttune_lora(model, rows: list[dict], spec: dict) -> None:
    """LoRA on the model as fasttune's train() attaches it: gradient checkpointing decided from the longest of
    `rows` and the free memory (within the model's cap), the choice kept in `spec` for the trainer."""
    from fasttune import backend, configs, plan

    spec["gradient_checkpointing"] = plan.plan(model, rows, configs.TrainConfig()).gradient_checkpointing
    backend.add_lora(model, r=16, alpha=16, dropout=0.0, target_modules=configs.ALL_LINEAR, seed=spec["seed"],
                     gradient_checkpointing=spec["gradient_checkpointing"])


def fasttune_trainer(model, rows: list[dict], spec: dict):
    from fasttune import configs, trainers

    config = configs.TrainConfig(
        max_steps=spec["steps"], batch_size=spec["rows_per_step"], learning_rate=spec["lr"],
        padding_free=spec.get("padding_free"), gradient_checkpointing=spec.get("gradient_checkpointing"),
        warmup_ratio=(spec["warmup_lr_steps"] - 0.5) / spec["steps"],  # transformers takes ceil(ratio * steps)
        weight_decay=WEIGHT_DECAY, logging_steps=1, seed=spec["seed"], save_steps=None,  # no checkpoint in timing
        output_dir=spec["work"])
    return trainers.sft_trainer(model, rows, config, Path(spec["work"]))


def profile_steps(model, rows: list[dict], spec: dict, prefix: Path, top: int = 25) -> None:
    """Profile the second step of a short fasttune run, padding-free and padded, and write its wall time and the
    top operations by total and by self GPU time to `<prefix>-padding-free.txt` and `<prefix>-padded.txt`."""
    import transformers
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])

    class OneStep(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:
                self.profiler = profile(activities=activities)
                self.start = _now()
                self.profiler.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                self.seconds = _now() - self.start
                self.profiler.__exit__(None, None, None)

    for padding_free, name in ((True, "padding-free"), (False, "padded")):
        shared_lora_init(model.model, spec["seed"])
        trainer = fasttune_trainer(model, rows, {**spec, "steps": 2, "warmup_lr_steps": 1,
                                                 "padding_free": padding_free, "work": spec["work"] + "-profile"})
        trainer.args.train_sampling_strategy = "sequential"
        step = OneStep()
        trainer.add_callback(step)
        trainer.train()
        events = step.profiler.key_averages()
        Path(f"{prefix}-{name}.txt").write_text(
            f"fasttune, {name} batches: step 2 of {prefix.name} ({spec['rows_per_step']} rows), "
            f"{step.seconds:.3f} s under torch.profiler\n\nTop {top} by total GPU time\n"
            f"{events.table(sort_by='cuda_time_total', row_limit=top)}\n\nTop {top} by self GPU time\n"
            f"{events.table(sort_by='self_cuda_time_total', row_limit=top)}\n")
        del trainer


def _unsloth_model(spec: dict):
    import unsloth  # noqa: F401  (before transformers, as its notebooks do)
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec["model_dir"], max_seq_length=8192, load_in_4bit=True, dtype=None, local_files_only=True)
    model = FastLanguageModel.get_peft_model(
        model, r=16, target_modules=PROJECTIONS, lora_alpha=16, lora_dropout=0, bias="none",
        use_gradient_checkpointing="unsloth", random_state=spec["seed"])
    model._speed_tokenizer = tokenizer
    return model, tokenizer.pad_token_id


def _notebook_trainer(model, rows: list[dict], spec: dict):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    return SFTTrainer(
        model=model, processing_class=model._speed_tokenizer, train_dataset=Dataset.from_list(rows),
        args=SFTConfig(per_device_train_batch_size=2, gradient_accumulation_steps=4, warmup_steps=spec["warmup_lr_steps"],
                       max_steps=spec["steps"], learning_rate=spec["lr"], logging_steps=1, optim="adamw_8bit",
                       weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", seed=spec["seed"],
                       output_dir=spec["work"], report_to="none", completion_only_loss=True,
                       max_length=None, dataset_num_proc=None, save_strategy="no"))


def _hf_peft_model(spec: dict):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], quantization_config=quantization,
                                                 dtype=torch.bfloat16, device_map={"": 0}, attn_implementation="sdpa")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, target_modules=PROJECTIONS,
                                             task_type="CAUSAL_LM"))
    return model, AutoTokenizer.from_pretrained(spec["model_dir"]).pad_token_id


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _worker(sys.argv[2])
