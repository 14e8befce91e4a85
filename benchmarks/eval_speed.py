"""Issue 6 benchmark: scoring a closed-label task by log-likelihood vs generating one example at a time.

The studies fasttune replaces evaluated with one `generate` call an example, then parsed the reply. fasttune scores
each choice's log-likelihood in batches. Both run here on the same model and test rows; the table gives seconds,
examples/s, accuracy with its interval, parse failures, the speed-up and how often the two pick the same answer.
A warm-up pass of each engine on a few rows runs first, so CUDA start-up is not timed. Writes <out>/eval_speed.json.

    python benchmarks/eval_speed.py --gguf <SmolLM2 GGUF> --tasks rte,mnli --data-root <folder> --out <folder>
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import datetime
from pathlib import Path

import fasttune
from fasttune import embedded
from fasttune.machine import describe_machine
from fasttune.progress import console
from fasttune.tables import render

WARMUP_ROWS = 4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="rte,mnli", help="comma-separated closed-label tasks")
    parser.add_argument("--data-root", default=None, help="folder holding each task's data folder "
                                                           "(default: $FASTTUNE_DATA)")
    parser.add_argument("--model", default=None, help="local model folder (default: embedded SmolLM2-135M)")
    parser.add_argument("--gguf", default=None, help="a SmolLM2 GGUF file to convert and use instead of --model")
    parser.add_argument("--limit", type=int, default=None, help="test examples a task (default: all)")
    parser.add_argument("--batch-tokens", type=int, default=fasttune.EvalConfig.batch_tokens,
                        help="tokens a forward pass for log-likelihood, padding included")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = Path(args.out or f"runs/eval-speed-{datetime.now():%Y%m%d-%H%M%S}")
    model_path = embedded.convert_gguf(Path(args.gguf), out / "model") if args.gguf else args.model
    model = fasttune.load(model_path)
    rows = []
    for name in args.tasks.split(","):
        task = fasttune.tasks.get(name)
        if args.data_root:
            task.data_dir = Path(args.data_root) / (task.data_folder or task.name)
        engines = {"loglik": fasttune.EvalConfig(limit=args.limit, engine="loglik", batch_tokens=args.batch_tokens),
                   "generate, one at a time": fasttune.EvalConfig(limit=args.limit, engine="generate", batch_size=1)}
        for config in engines.values():
            fasttune.evaluate(model, task, config=dataclasses.replace(config, limit=WARMUP_ROWS))
        reports = {engine: fasttune.evaluate(model, task, config=config) for engine, config in engines.items()}
        for engine, report in reports.items():
            report.save(out, f"{name}-{engine.split(',')[0]}")
        rows.append(compare(name, reports["loglik"], reports["generate, one at a time"]))
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": describe_machine(),
               "model": str(model_path or "embedded SmolLM2-135M-Instruct"), "args": vars(args), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_speed.json").write_text(json.dumps(summary, indent=2, default=str))
    console.print(render(_table(rows, summary)))
    return summary


def compare(task_name: str, loglik, one_at_a_time) -> dict:
    """Speed-up, accuracy gap and answer agreement of two reports on the same examples."""
    metric = loglik.primary
    agree = sum(a["parsed"] == b["parsed"] for a, b in zip(loglik.records, one_at_a_time.records, strict=True))
    return {"task": task_name, "metric": metric, "n": loglik.n,
            "engines": {"loglik": _figures(loglik, metric), "generate-one-at-a-time": _figures(one_at_a_time, metric)},
            "speedup": one_at_a_time.seconds / loglik.seconds,
            "metric_gap_points": 100 * (loglik.metrics[metric] - one_at_a_time.metrics[metric]),
            "agreement": agree / loglik.n}


def _figures(report, metric: str) -> dict:
    return {"seconds": report.seconds, "examples_per_second": report.n / report.seconds,
            "value": report.metrics[metric], "ci": report.intervals[metric],
            "parse_failures": report.parse_failures, "predicted": report.predicted}


def _table(rows, summary):
    from rich.table import Table

    table = Table(title=f"Log-likelihood vs one-at-a-time generation on {summary['machine']['device']}, "
                        f"{summary['date'][:10]}")
    for column in ("task", "engine", "n", "seconds", "examples/s", "accuracy (95% CI)", "parse failures",
                   "speed-up", "gap (points)", "same answer"):
        table.add_column(column)
    for row in rows:
        for index, (engine, figures) in enumerate(row["engines"].items()):
            low, high = figures["ci"]
            table.add_row(row["task"] if index == 0 else "", engine, str(row["n"]), f"{figures['seconds']:.2f}",
                          f"{figures['examples_per_second']:.1f}",
                          f"{100 * figures['value']:.1f} ({100 * low:.1f}-{100 * high:.1f})",
                          str(figures["parse_failures"]),
                          f"{row['speedup']:.1f}x" if index == 0 else "",
                          f"{row['metric_gap_points']:+.1f}" if index == 0 else "",
                          f"{100 * row['agreement']:.1f}%" if index == 0 else "")
    return table


if __name__ == "__main__":
    main()
