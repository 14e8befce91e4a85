"""Issue 5 benchmark: base vs SFT, DPO, ORPO, KTO, GRPO and RFT of one model on one task (default RTE).

"base" scores the model untouched; each method starts from a fresh copy of the base model, trains LoRA through
`fasttune.train(method=...)`, and is scored on the test split; the table gives the metric with its 95% bootstrap
interval, training time and the whole method's wall time (sampling included). Writes <out>/methods.json (after
each method) and each run's folder.

On a CUDA machine (full scale):
    python benchmarks/gpu_methods.py --gguf <SmolLM2 GGUF> --data <rte folder> --out <folder>
CPU smoke scale:
    python benchmarks/gpu_methods.py --data ../shared/data/rte --limit 40 --train-limit 16 --max-steps 2
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import fasttune
from fasttune import embedded
from fasttune.machine import describe_machine
from fasttune.progress import console
from fasttune.tables import render

METHODS = ("base", "sft", "dpo", "orpo", "kto", "grpo", "rft")
LEARNING_RATES = {"sft": 2e-4, "rft": 2e-4, "dpo": 5e-5, "orpo": 5e-5, "kto": 5e-5, "grpo": 5e-5}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="rte")
    parser.add_argument("--data", default=None, help="the task's data folder")
    parser.add_argument("--model", default=None, help="local model folder (default: embedded SmolLM2-135M)")
    parser.add_argument("--gguf", default=None, help="a SmolLM2 GGUF file to convert and use instead of --model")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--limit", type=int, default=None, help="test examples (default: all)")
    parser.add_argument("--train-limit", type=int, default=1000, help="training prompts (default 1000)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--samples", type=int, default=4, help="sampled answers a prompt (dpo/orpo/kto/rft)")
    parser.add_argument("--sampling-batch-size", type=int, default=32, help="prompts a sampling pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def method_settings(method: str, args) -> dict:
    settings = {"epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
                "limit": args.train_limit, "seed": args.seed, "learning_rate": LEARNING_RATES[method]}
    if method in ("dpo", "orpo", "kto", "rft"):
        settings["sampling"] = {"samples": args.samples, "batch_size": args.sampling_batch_size}
    if method == "grpo":
        settings["num_generations"] = 4
    return settings


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or f"runs/methods-{args.task}-{datetime.now():%Y%m%d-%H%M%S}")
    model_path = embedded.convert_gguf(Path(args.gguf), out / "model") if args.gguf else args.model
    task = fasttune.tasks.get(args.task, **({"data_dir": args.data} if args.data else {}))
    eval_config = fasttune.EvalConfig(limit=args.limit, seed=args.seed)
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": describe_machine(),
               "task": task.describe(), "model": str(model_path or "embedded SmolLM2-135M-Instruct"),
               "args": vars(args), "rows": []}
    for method in args.methods.split(","):
        started = time.perf_counter()
        model = fasttune.load(model_path)
        if method == "base":
            report, run = fasttune.evaluate(model, task, config=eval_config), None
        else:
            try:
                run = fasttune.train(model, task, method, output_dir=str(out / method), **method_settings(method, args))
            except fasttune.FasttuneError as error:  # e.g. rft with no sampled answer right: say so, go on
                summary["rows"].append({"method": method, "error": str(error),
                                        "wall_seconds": time.perf_counter() - started})
                continue
            report = fasttune.evaluate(run.model, task, config=eval_config)
        report.save(out, method)
        summary["rows"].append(_row(method, report, run, time.perf_counter() - started))
        (out / "methods.json").write_text(json.dumps(summary, indent=2, default=str))  # after each: a cap keeps the rest
        del model, run
    console.print(render(_table(summary["rows"], task.primary_metric, summary)))
    return summary


def _row(name, report, run, wall_seconds) -> dict:
    metric = report.primary
    return {"method": name, "metric": metric, "value": report.metrics[metric], "ci": report.intervals[metric],
            "n": report.n, "parse_failures": report.parse_failures, "predicted": report.predicted,
            "train_seconds": run.seconds if run else None, "steps": run.losses[-1][0] if run and run.losses else None,
            "final_loss": run.losses[-1][1] if run and run.losses else None, "data": run.data if run else None,
            "wall_seconds": wall_seconds}


def _table(rows, metric, summary):
    from rich.table import Table

    table = Table(title=f"{summary['task']['name']} on {summary['machine']['device']}, {summary['date'][:10]}")
    for column in ("method", f"{metric} (95% CI)", "n", "train s", "wall s", "data"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row(row["method"], "not trained", "", "", f"{row['wall_seconds']:.0f}", row["error"][:120])
            continue
        low, high = row["ci"]
        data = row["data"] or {}
        note = ", ".join(f"{k} {data[k]}" for k in ("pairs", "always_right", "kept", "desirable", "undesirable",
                                                    "prompts") if k in data)
        table.add_row(row["method"], f"{100 * row['value']:.1f} ({100 * low:.1f}-{100 * high:.1f})", str(row["n"]),
                      "-" if row["train_seconds"] is None else f"{row['train_seconds']:.0f}",
                      f"{row['wall_seconds']:.0f}", note)
    return table


if __name__ == "__main__":
    main()
