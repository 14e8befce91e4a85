"""Weighted adapter merging on the CPU: an RTE adapter and an MNLI adapter of the embedded SmolLM2-135M, merged
50/50, and all three scored on both tasks (log-likelihood of the answer words).

    python benchmarks/merge_rte_mnli.py ../shared/data OUT [--train-limit 160] [--limit 100]

MNLI is read by a small task defined here (yes / maybe / no) until the built-in `mnli` task lands.
Writes OUT/summary.json and prints a markdown table.
"""

import argparse
import json
import platform
from datetime import datetime
from pathlib import Path

import fasttune
from fasttune.parsing import first_label
from fasttune.task import Sample, Task, read_jsonl

MNLI_LABELS = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}


class BenchMNLI(Task):
    """MNLI as yes / maybe / no: train = the 8,999-row subset, test = dev-matched."""

    name = "mnli_bench"
    max_new_tokens = 4

    def read(self, data_dir, split):
        if split == "train":
            rows = json.loads((data_dir / "train_subset_8999.json").read_text()).items()
            return [{"id": f"train-{key}", "premise": row["text_a"], "hypothesis": row["text_b"],
                     "label": row["label"]} for key, row in rows]
        return [{**row, "id": f"test-{number}"} for number, row in
                enumerate(read_jsonl(data_dir / "dev_matched.jsonl", ("premise", "hypothesis", "label")))]

    def format(self, example):
        question = (f"Premise: {example['premise']}\nHypothesis: {example['hypothesis']}\n"
                    "Does the premise entail the hypothesis? Answer yes, maybe or no.")
        return Sample([{"role": "user", "content": question}], self.answer(example))

    def answer(self, example):
        return MNLI_LABELS[example["label"]]

    def parse_answer(self, text):
        return first_label(text, ("yes", "maybe", "no"))

    def choices(self, example):
        return ["yes", "maybe", "no"]


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
             "mnli": BenchMNLI(data_dir=Path(args.data) / "mnli")}
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
