"""Weighted adapter merging on the CPU: an RTE adapter and an MNLI adapter of the embedded SmolLM2-135M, merged
50/50, and all three scored on both tasks (log-likelihood of the answer words).

    python benchmarks/merge_rte_mnli.py ../shared/data OUT [--train-limit 160] [--limit 100]

Writes OUT/summary.json and prints a markdown table.
"""

import argparse
import json
import platform
from datetime import datetime
from pathlib import Path

import fasttune


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--train-limit", type=int, default=160)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()
    out = Path(args.out)
    tasks = {"rte": fasttune.tasks.get("rte", data_dir=Path(args.data) / "rte"),
             "mnli": fasttune.tasks.get("mnli", data_dir=Path(args.data) / "mnli")}
    adapters, training = {}, {}
    for name, task in tasks.items():
        run = fasttune.train(fasttune.load(), task, limit=args.train_limit, batch_size=16, learning_rate=args.lr,
                             output_dir=str(out / name))
        adapters[name] = run.adapter_dir
        training[name] = {"seconds": run.seconds, "steps": run.losses[-1][0], "last_loss": run.losses[-1][1]}
    adapters["merged 50/50"] = fasttune.merge_adapters([adapters["rte"], adapters["mnli"]], weights=[0.5, 0.5],
                                                       method="linear", out_dir=out / "merged")
    scores = {}
    for model_name in ("base", *adapters):
        model = fasttune.load(adapters.get(model_name))
        for task_name, task in tasks.items():
            report = fasttune.evaluate(model, task, limit=args.limit)
            report.save(out / "reports", f"{model_name.split()[0]}-{task_name}")
            scores.setdefault(model_name, {})[task_name] = {
                "accuracy": report.metrics["accuracy"], "interval": report.intervals["accuracy"],
                "predicted": report.predicted}
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
               "args": vars(args), "training": training, "scores": scores}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("| model | RTE accuracy (95% CI) | MNLI accuracy (95% CI) |\n|---|---|---|")
    for model_name, row in scores.items():
        cells = [f"{100 * row[t]['accuracy']:.1f}% ({100 * row[t]['interval'][0]:.1f}-{100 * row[t]['interval'][1]:.1f})"
                 for t in tasks]
        print(f"| {model_name} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
