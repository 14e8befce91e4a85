"""`python -m fasttune.bench`: base eval -> LoRA SFT -> tuned eval, printed side by side and saved to a folder.

Default: the embedded SmolLM2-135M-Instruct on the synthetic larger_number task, minutes on a laptop CPU.
Writes summary.json, base/tuned reports with every prediction, loss.png and comparison.png to --out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import fasttune
from fasttune.backend import count_4bit_linear_layers
from fasttune.configs import config_dict
from fasttune.machine import describe_machine
from fasttune.progress import console


@dataclass
class BenchConfig:
    """Settings of the main job (base eval -> LoRA SFT -> tuned eval), or of a suite run with `suite`."""

    task: str = "larger_number"
    """Task name (see fasttune.tasks.list())."""
    suite: Literal["seeds"] | None = None
    """Evaluate every built-in task on `model` instead (no training); `data` is then the data root, e.g.
    ../shared/data."""
    data: str | None = None
    """The task's data folder, e.g. ../shared/data/rte."""
    model: str | None = None
    """Local model folder (default: the embedded SmolLM2-135M)."""
    limit: int = 200
    """Evaluation examples."""
    train_limit: int = 960
    """Training examples."""
    epochs: float = 1.0
    """Passes over the training examples."""
    max_steps: int = -1
    """Stop training after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = 16
    """Examples per training batch."""
    lr: float = 5e-4
    """Peak learning rate of the LoRA weights."""
    lora_r: int = 16
    """LoRA rank."""
    max_seq_length: int = 1024
    """Longest row in tokens."""
    engine: Literal["auto", "loglik", "generate"] = "auto"
    """loglik: pick the most likely of the task's choices; generate: greedy decoding; auto: loglik when possible."""
    seed: int = 0
    """Seed of training and of the bootstrap."""
    out: str | None = None
    """Output folder (default runs/bench-<task>-<time>)."""
    resume: bool = False
    """Continue the interrupted training in `out` from its latest checkpoint."""


def run_bench(args: BenchConfig) -> dict:
    """Base eval -> LoRA SFT -> tuned eval of `args.task` (or the suite `args.suite`); returns the summary."""
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
        "model": str(model.base_path), "backend": model.backend, "args": asdict(args),
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
