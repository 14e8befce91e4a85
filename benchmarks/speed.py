"""`python benchmarks/speed.py`: training speed and memory of fasttune beside raw Unsloth and HF+PEFT (CUDA).

Every stack trains on the same rows, in the same order, from the same LoRA initialisation (r=16, all 7 projections):
- fasttune: fasttune's SFT path (its default batching for the machine, a whole batch in one device step when it
  fits, gradient checkpointing only when one longest row of the run's data would not fit without it);
- unsloth-notebook: TRL's SFTTrainer through Unsloth as its notebooks set it up (batch 2 x accumulation 4, 8-bit
  AdamW, Unsloth gradient checkpointing, its padding-free default);
- unsloth-padded: a hand-written loop over the same Unsloth model with padded batches of the whole batch;
- hf-peft: transformers + PEFT + bitsandbytes nf4 QLoRA with gradient checkpointing, padded batches.
fasttune-8bit, fasttune-padded and fasttune-packed are fasttune with one of its choices forced (8-bit AdamW,
padded or packed batches), and fasttune-before the fasttune package at --before: each lever's before/after.
fasttune's rows also give the median forward+backward, optimizer and remaining seconds of a step.
Each stack runs in its own process (speed_worker.py): Unsloth patches transformers globally and must not touch the
HF stack. fasttune's stack trains through fasttune.seam, the one declared way into fasttune's training.
With --memory-limit every process is capped at that many GiB of GPU memory before it loads anything (CUDA's
per-process cap); fasttune also plans its device steps and checkpointing within it.
Models have random weights of real shapes, built on the GPU from a config (or a local folder, --real-model);
data are fixed-length blocks and tokenised MNLI and NQ-open-with-passage rows. Writes speed.json and speed.png,
and with --profile the top GPU operations of one padding-free and one padded fasttune step (profile-*.txt).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

import fasttune
from fasttune.errors import FasttuneError, unknown_name
from fasttune.seam import sft_rows

WORKER = Path(__file__).with_name("speed_worker.py")

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
FASTTUNE_VARIANTS = {  # fasttune with one of its own choices forced, to measure what that choice gives
    "fasttune-8bit": {"optimizer": "adamw_8bit"},
    "fasttune-padded": {"padding_free": False},
    "fasttune-packed": {"padding_free": True},
}
"""fasttune-before: the fasttune package at --before (e.g. the previous commit), run by the same worker."""
DATASETS = ("blocks", "mnli", "nq")
ROW_TASKS = {"mnli": "mnli", "nq": "nq_open_oracle"}  # built-in tasks whose training rows the benchmark uses
WARMUP_LR_STEPS = 5  # the notebooks' warmup_steps, used by every stack
LOSS_TOLERANCE = 0.02
"""Largest relative difference of a step's loss from fasttune's for two stacks to count as computing the same."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/speed.py", description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,llama-3.2-1b", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--real-model", default=None,
                        help="also measure this local model folder (e.g. the converted SmolLM2-135M-Instruct)")
    parser.add_argument("--data", default=",".join(DATASETS), help=f"comma-separated: {', '.join(DATASETS)}")
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"comma-separated: {', '.join((*STACKS, *FASTTUNE_VARIANTS, 'fasttune-before'))}")
    parser.add_argument("--before", default=None, metavar="FOLDER",
                        help="folder holding an earlier fasttune package: measured as the stack fasttune-before")
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
    stacks = (*STACKS, *FASTTUNE_VARIANTS, *(("fasttune-before",) if args.before else ()))
    for name, known in (("models", SHAPES), ("data", DATASETS), ("stacks", stacks)):
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
    task = fasttune.tasks.get(ROW_TASKS[kind], data_dir=data_root / ("mnli" if kind == "mnli" else "nq_open"))
    examples = task.load("train")[:count]
    if len(examples) < count:
        raise FasttuneError(f"Only {len(examples)} {kind} rows in {data_root}; the benchmark needs {count}.")
    # the embedded tokenizer's eos is its end of turn, <|im_end|>; no MNLI or NQ row comes near 16k tokens
    return sft_rows(task, examples, tokenizer, end_of_turn=tokenizer.eos_token, max_seq_length=16384)


# ---- figures ----

def matmul_params(model) -> int:
    """Weights that take part in a matrix product per token: all but the input embedding (a lookup); a tied
    output head counts once."""
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return model.num_parameters() - (0 if tied else embedding)


def summarise(measurement: dict, rows: list[dict], rows_per_step: int, warmup: int, params: int,
              peak_tflops: float) -> dict:
    """tokens/s over the timed steps (non-padding tokens), median s/step, MFU at 4 x params FLOPs a token, and
    (where the worker timed them) the median seconds of a step's parts: forward and backward, optimizer, and
    everything else (scheduler, callbacks, logging, fetching and collating the next batch)."""
    ends = measurement["step_ends"]
    tokens = sum(len(row["input_ids"]) for row in rows[warmup * rows_per_step: len(ends) * rows_per_step])
    seconds = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - measurement["start"]
    steps = sorted(b - a for a, b in zip(ends[warmup - 1:], ends[warmup:]))
    tokens_per_second = tokens / seconds
    parts = {}
    for part, values in measurement.get("parts", {}).items():
        timed = sorted(values[warmup:])
        parts[f"{part}_seconds"] = timed[len(timed) // 2]
    return {"tokens_per_second": tokens_per_second, "seconds_per_step": steps[len(steps) // 2], **parts,
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
                            "`python benchmarks/speed.py` on a machine with an NVIDIA GPU and "
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
    plot_speed(summary["results"], out / "speed.png", title=f"LoRA r=16 training on {summary['gpu']}")
    console.print(speed_table(summary))
    console.print(step_parts_table(summary))
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
    spec["variant_config"] = FASTTUNE_VARIANTS.get(stack, {})
    spec_path = work / f"{stack}.spec.json"
    spec_path.write_text(json.dumps(spec))
    Path(spec["result"]).unlink(missing_ok=True)
    env = dict(os.environ)
    if stack == "fasttune-before":
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(Path(args.before).resolve()), env.get("PYTHONPATH"))))
    try:
        finished = subprocess.run([sys.executable, str(WORKER), str(spec_path)],
                                  capture_output=True, text=True, timeout=args.worker_timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.worker_timeout} s"}
    measured = json.loads(Path(spec["result"]).read_text()) if Path(spec["result"]).exists() else {}
    if finished.returncode != 0:
        tail = (finished.stdout + finished.stderr).strip().splitlines()[-12:]
        print("\n".join(tail), file=sys.stderr)
        measured["error"] = " | ".join(tail[-3:])[-400:]
    return measured


# ---- the table and the plot ----

def speed_table(summary: dict):
    """One row per model, data and stack of a speed benchmark: throughput, memory, MFU, and fasttune's lead."""
    from rich.table import Table

    cap = summary.get("memory_limit_gib")
    table = Table(title=f"training speed | {summary['gpu']} | matmul peak {summary['matmul_peak_tflops']:.0f} "
                        f"TFLOP/s | loss tolerance {100 * summary['loss_tolerance']:.0f}%"
                        + (f" | memory cap {cap:g} GiB a stack" if cap else ""))
    for column, justify in (("model", "left"), ("data", "left"), ("stack", "left"), ("tok/s", "right"),
                            ("s/step", "right"), ("peak GiB", "right"), ("MFU", "right"),
                            ("fasttune x", "right"), ("loss vs fasttune", "right")):
        table.add_column(column, justify=justify)
    for row in summary["results"]:
        if "error" in row:
            table.add_row(row["model"], row["data"], row["stack"], "failed", "", "", "", "", row["error"][:60])
            continue
        speedup = f"{row['fasttune_speedup']:.2f}" if "fasttune_speedup" in row else ""
        agreement = (f"{100 * row['loss_max_rel_diff']:.2f}% {'ok' if row['loss_agrees'] else 'DIFFERS'}"
                     if "loss_max_rel_diff" in row else "")
        table.add_row(row["model"], row["data"], row["stack"], f"{row['tokens_per_second']:,.0f}",
                      f"{row['seconds_per_step']:.3f}", f"{row['peak_memory_gib']:.1f}",
                      f"{100 * row['mfu']:.1f}%", speedup, agreement)
    return table


STEP_PARTS = ("model", "optimizer", "other")


def step_parts_table(summary: dict):
    """Median milliseconds of each part of a step, for the stacks whose trainer the worker could time part by part:
    forward and backward, the optimizer, and everything else."""
    from rich.table import Table

    table = Table(title="median ms a step: forward+backward / optimizer / everything else")
    for column in ("model", "data", "stack", "s/step", "forward+backward", "optimizer", "other"):
        table.add_column(column, justify="left" if column in ("model", "data", "stack") else "right")
    for row in summary["results"]:
        if all(f"{part}_seconds" in row for part in STEP_PARTS):
            table.add_row(row["model"], row["data"], row["stack"], f"{row['seconds_per_step']:.3f}",
                          *(f"{1e3 * row[f'{part}_seconds']:.0f}" for part in STEP_PARTS))
    return table


def plot_speed(results: list[dict], path: Path, title: str) -> Path:
    """Tokens/s and peak memory of every stack, grouped by model and data (drawn without pyplot, so no backend of
    the process is touched)."""
    from matplotlib.figure import Figure

    groups = list(dict.fromkeys((r["model"], r["data"]) for r in results))
    stacks = list(dict.fromkeys(r["stack"] for r in results))
    found = {(r["model"], r["data"], r["stack"]): r for r in results if "tokens_per_second" in r}
    figure = Figure(figsize=(max(6, 1.4 * len(groups) + 2), 7))
    axes = figure.subplots(2, 1, sharex=True)
    width = 0.8 / max(1, len(stacks))
    for i, stack in enumerate(stacks):
        positions = [g + (i - (len(stacks) - 1) / 2) * width for g in range(len(groups))]
        for axis, key, scale in ((axes[0], "tokens_per_second", 1e-3), (axes[1], "peak_memory_gib", 1)):
            values = [found[(*group, stack)][key] * scale if (*group, stack) in found else 0 for group in groups]
            axis.bar(positions, values, width, label=stack)
    axes[0].set(ylabel="non-padding tokens/s (thousands)", title=title)
    axes[1].set(ylabel="peak GPU memory (GiB)")
    axes[1].set_xticks(range(len(groups)), [f"{model}\n{kind}" for model, kind in groups], fontsize=8)
    axes[0].legend(fontsize=8)
    for axis in axes:
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


if __name__ == "__main__":
    try:
        main()
    except FasttuneError as error:
        sys.exit(str(error))
