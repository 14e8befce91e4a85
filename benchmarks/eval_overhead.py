"""GPU benchmark of issue 14: what validation during training costs on RTE (SmolLM2-135M, Unsloth 4-bit LoRA SFT).

Usage on the GPU machine (see ../shared/gpu/README.md for staging the GGUF):
    python benchmarks/eval_overhead.py <SmolLM2 GGUF file> <RTE data folder> <output folder> [train rows] [epochs]
Trains the same run twice through the public API, without validation and with `eval_every` = 10% of the steps
(200 training rows held out, scored by yes/no log-likelihood), and writes the training wall time and the peak GPU
memory of each to <output folder>/eval_overhead.json. The first run is preceded by a short warm-up run, so that
neither timed run pays for CUDA's and Unsloth's first-call compilation.
"""

import json
import math
import sys
import time
from pathlib import Path

import torch

import fasttune
from fasttune import embedded

gguf, data, out = map(Path, sys.argv[1:4])
rows = int(sys.argv[4]) if len(sys.argv) > 4 else 2290
epochs = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
folder = embedded.convert_gguf(gguf, Path("/tmp/fasttune-smollm2"))
task = fasttune.tasks.get("rte", data_dir=data)
out.mkdir(parents=True, exist_ok=True)
# Both runs hold out the same 200 rows, so they train on the same rows; only eval_every differs.
common = {"limit": rows, "epochs": epochs, "batch_size": 16, "learning_rate": 2e-4, "validation_size": 200,
          "validation_split": "train", "save_steps": None, "logging_steps": 10, "seed": 0}
steps = math.ceil(min(rows, 2490 - 200) / 16 * epochs)  # 200 of RTE's 2,490 training rows are held out


def measure(name: str, **settings) -> dict:
    model = fasttune.load(folder, load_in_4bit=True, max_seq_length=512)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    run = fasttune.train(model, task, output_dir=str(out / name), **common, **settings)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    saved = fasttune.load_run(out / name)
    result = {"run": name, "steps": saved.summary["steps"], "train_seconds": seconds,
              "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
              "evaluations": len(saved.validation), "validation": saved.validation,
              "eval_seconds": sum(r["seconds"] for r in saved.log if r["kind"] == "validation"),
              "each_validation_seconds": [r["seconds"] for r in saved.log if r["kind"] == "validation"],
              "tokens_per_second": run.tokens_per_second, "final_loss": run.losses[-1][1]}
    del model, run
    torch.cuda.empty_cache()
    print(json.dumps(result), flush=True)
    return result


measure("warmup", max_steps=10, eval_every=5)
without = measure("without", eval_every=None)
with_eval = measure("with", eval_every=max(1, round(steps / 10)))
summary = {"machine": torch.cuda.get_device_name(), "date": time.strftime("%Y-%m-%d"), "train_rows": rows,
           "epochs": epochs, "steps": steps, "without": without, "with": with_eval,
           "wall_time_overhead": with_eval["train_seconds"] / without["train_seconds"] - 1,
           "peak_memory_growth": with_eval["peak_memory_gib"] / without["peak_memory_gib"] - 1}
(out / "eval_overhead.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({k: v for k, v in summary.items() if k not in ("without", "with")}, indent=2))
