"""Padded or padding-free SFT batches on this machine's CPU: the padding share of MNLI batches, and s/step.

    python benchmarks/cpu_batching.py --data-root ../shared/data --out benchmarks/results/cpu-batching-<date>

1. Padding share: MNLI training rows (chat-rendered, as the speed benchmark builds them) through fasttune's own
   trainer data loader with padded batches, taken in random order and length-grouped (fasttune's padded default).
2. Speed: a model of the embedded SmolLM2-135M's shape (random weights, its first --layers decoder layers: a full
   fp32 step of 8 MNLI rows took ~90 s on the shared 2-core machine) trains the same rows padding-free and padded
   (length-grouped), alternating, from the same LoRA start; non-padding tokens/s and median s/step.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from datetime import datetime
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import fasttune
from fasttune import embedded
from fasttune.seam import sft_trainer
from speed import workload_rows  # siblings in benchmarks/, the folder of the script that runs
from speed_worker import shared_lora_init, timed_trainer_run

LORA = fasttune.LoraConfig(r=16, alpha=16)  # the speed benchmark's adapter


def smollm2_shaped_model(layers: int) -> Path:
    """A folder with SmolLM2-135M's config cut to `layers` decoder layers, random weights, and its tokenizer."""
    config = AutoConfig.from_pretrained(embedded.hf_folder(), num_hidden_layers=layers)
    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix="fasttune-smollm2-shape-"))
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(embedded.hf_folder()).save_pretrained(folder)
    return folder


def padded_batches(model, rows, batch_size: int, order: str, seed: int) -> list[torch.Tensor]:
    """Attention masks of the padded batches fasttune's trainer makes from `rows` in `order`."""
    config = fasttune.TrainConfig(batch_size=batch_size, padding_free=False, gradient_checkpointing=False, seed=seed,
                                  max_steps=1, output_dir="/tmp/fasttune-padding-share", lora=LORA)
    trainer = sft_trainer(model, rows, config)
    trainer.args.train_sampling_strategy = order
    return [batch["attention_mask"] for batch in trainer.get_train_dataloader()]


def padding_share(masks: list[torch.Tensor]) -> float:
    return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--share-rows", type=int, default=4000, help="MNLI rows for the padding share")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps a timed run")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs of each kind, alternating")
    parser.add_argument("--layers", type=int, default=4, help="SmolLM2 decoder layers kept (of 30)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    model = fasttune.load(smollm2_shaped_model(args.layers), dtype=torch.float32)
    rows = workload_rows("mnli", args.share_rows, model.tokenizer, Path(args.data_root), block_length=0,
                         vocab_size=0, seed=0)
    shares = {f"batch {size}, {order}": padding_share(padded_batches(model, rows, size, order, seed=0))
              for size in (8, 16) for order in ("random", "group_by_length")}

    # Exactly one epoch of steps x batch rows: fewer than one length-grouped mega-batch (50 batches), so both kinds
    # see the same rows, padded in length order or packed.
    timed_rows = rows[: args.steps * args.batch_size]
    runs = []
    for round_ in range(args.rounds):
        for padding_free in (False, True):
            config = fasttune.TrainConfig(batch_size=args.batch_size, padding_free=padding_free, epochs=1,
                                          gradient_checkpointing=False, logging_steps=1, learning_rate=2e-4,
                                          output_dir=str(out / "trainer"), lora=LORA)
            trainer = sft_trainer(model, timed_rows, config)
            shared_lora_init(model.model, seed=3407)
            measured = timed_trainer_run(trainer, same_order=False)
            ends = measured["step_ends"]
            steps = sorted(b - a for a, b in zip([measured["start"]] + ends, ends))
            tokens = sum(len(row["input_ids"]) for row in timed_rows)  # non-padding: the same in both kinds
            runs.append({"round": round_, "padding_free": padding_free, "median_s_per_step": steps[len(steps) // 2],
                         "tokens_per_second": tokens / (ends[-1] - measured["start"]), "losses": measured["losses"]})
            print(runs[-1])
    summary = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.platform(),
               "cpus": torch.get_num_threads(), "torch": torch.__version__, "model": f"{embedded.hf_folder().name} shape, {args.layers} layers",
               "mnli_rows": len(rows), "mean_row_tokens": sum(len(r["input_ids"]) for r in rows) / len(rows),
               "padding_share": shares, "timed_rows": len(timed_rows), "runs": runs}
    (out / "cpu-batching.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
