"""Export parity on the CPU: a short LoRA tune of the embedded SmolLM2-135M on larger_number, exported to merged
16-bit and GGUF, each scored on the same test pairs (log-likelihood of the two numbers).

    python benchmarks/export_parity.py OUT [--train-limit 320] [--limit 200] [--quants q8_0 q4_k_m]

Writes OUT/summary.json and prints a markdown table (accuracy, delta vs merged, answer agreement, McNemar p).
"""

import argparse
import json
import platform
from datetime import datetime
from pathlib import Path

import fasttune
from fasttune.exporting import parity


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--train-limit", type=int, default=320)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--quants", nargs="+", default=["q8_0", "q4_k_m"])
    args = parser.parse_args()
    out = Path(args.out)
    task = fasttune.tasks.get("larger_number")
    run = fasttune.train(fasttune.load(), task, limit=args.train_limit, batch_size=16, output_dir=str(out / "run"))
    exported = fasttune.export(run, out / "export", formats=("adapter", "merged_16bit", "gguf"),
                               gguf_quants=args.quants, overwrite=True)
    merged = fasttune.evaluate(fasttune.load(exported.merged_dir), task, limit=args.limit)
    merged.save(out / "reports", "merged")
    rows = {"merged_16bit (transformers)": {"accuracy": merged.metrics["accuracy"], "seconds": merged.seconds}}
    for quant, path in exported.gguf_files.items():
        report = fasttune.evaluate(path, task, limit=args.limit)
        report.save(out / "reports", f"gguf-{quant}")
        rows[f"GGUF {quant} (llama.cpp)"] = {**parity(merged, report, ("merged", quant)).to_dict(),
                                             "accuracy": report.metrics["accuracy"], "seconds": report.seconds}
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
               "args": vars(args), "training_seconds": run.seconds, "export": exported.to_dict(), "rows": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print("| model | accuracy | delta vs merged | answer agreement | McNemar p | scoring time |\n|---|---|---|---|---|---|")
    for name, row in rows.items():
        extra = (f"{100 * row['delta']:+.1f} | {100 * row['agreement']:.1f}% | {row['p_value']:.3g}"
                 if "delta" in row else " | | ")
        print(f"| {name} | {100 * row['accuracy']:.1f}% | {extra} | {row['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
