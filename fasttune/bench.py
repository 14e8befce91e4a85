"""`python -m fasttune.bench`: base eval -> LoRA SFT -> tuned eval, printed side by side and saved to a folder.

Default: the embedded SmolLM2-135M-Instruct on the synthetic larger_number task, minutes on a laptop CPU.
Writes summary.json, base/tuned reports with every prediction, loss.png and comparison.png to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import fasttune
from fasttune.backend import count_4bit_linear_layers
from fasttune.configs import config_dict
from fasttune.machine import describe_machine
from fasttune.progress import console


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fasttune.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="larger_number", help="task name (see fasttune.tasks.list())")
    parser.add_argument("--suite", choices=["seeds"], default=None,
                        help="evaluate every built-in task on --model instead (no training); --data is then the "
                             "data root, e.g. ../shared/data")
    parser.add_argument("--data", default=None, help="the task's data folder, e.g. ../shared/data/rte")
    parser.add_argument("--model", default=None, help="local model folder (default: embedded SmolLM2-135M)")
    parser.add_argument("--limit", type=int, default=200, help="evaluation examples (default 200)")
    parser.add_argument("--train-limit", type=int, default=960, help="training examples (default 960)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--engine", choices=["auto", "loglik", "generate"], default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output folder (default runs/bench-<task>-<time>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted training in --out from its latest checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.suite:
        from fasttune.suite import run_suite

        return run_suite(args.suite, model=args.model, data_root=args.data or "../shared/data", limit=args.limit,
                         engine=args.engine, seed=args.seed,
                         out=args.out or f"runs/suite-{args.suite}-{datetime.now():%Y%m%d-%H%M%S}")
    out = Path(args.out or f"runs/bench-{args.task}-{datetime.now():%Y%m%d-%H%M%S}")
    task = fasttune.tasks.get(args.task, **({"data_dir": args.data} if args.data else {}))
    model = fasttune.load(args.model, max_seq_length=args.max_seq_length)
    eval_config = fasttune.EvalConfig(limit=args.limit, engine=args.engine, seed=args.seed)

    base = fasttune.evaluate(model, task, config=eval_config)
    base.save(out, "base")
    run = fasttune.train(model, task, config=fasttune.TrainConfig(
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.lr,
        limit=args.train_limit, seed=args.seed, output_dir=str(out), lora=fasttune.LoraConfig(r=args.lora_r)),
        resume=args.resume)
    tuned = fasttune.evaluate(run.model, task, config=eval_config)
    tuned.save(out, "tuned")
    comparison = fasttune.compare(base, tuned, labels=("base", "tuned"))
    console.print(comparison)

    from fasttune.plots import plot_comparison

    metric = base.primary
    plot_comparison(["base", "tuned"], [base.metrics[metric], tuned.metrics[metric]],
                    [base.intervals[metric], tuned.intervals[metric]], out / "comparison.png",
                    title=f"{task.name}: base vs LoRA SFT (n={base.n})", ylabel=f"{metric} (%)")
    summary = {
        "date": datetime.now().isoformat(timespec="seconds"), "machine": describe_machine(), "task": task.describe(),
        "model": str(model.base_path), "backend": model.backend, "args": vars(args),
        "linear_layers_4bit": dict(zip(("4bit", "all"), count_4bit_linear_layers(model))),
        "base": {"metrics": base.metrics, "intervals": base.intervals, "seconds": base.seconds},
        "tuned": {"metrics": tuned.metrics, "intervals": tuned.intervals, "seconds": tuned.seconds},
        "comparison": comparison.to_dict(),
        "training": {"seconds": run.seconds, "train_tokens": run.train_tokens,
                     "tokens_per_second": run.tokens_per_second, "losses": run.losses,
                     "config": config_dict(run.config), "adapter": str(run.adapter_dir),
                     "peak_gpu_memory_gib": _peak_gpu_memory_gib()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"base {100 * base.metrics[metric]:.1f} -> tuned {100 * tuned.metrics[metric]:.1f} {metric}; "
                  f"training {run.seconds:.0f}s ({run.tokens_per_second:.0f} tok/s). Results in {out}/")
    return summary


def _peak_gpu_memory_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


if __name__ == "__main__":
    try:
        main()
    except fasttune.FasttuneError as error:
        sys.exit(str(error))
