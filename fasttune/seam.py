"""The one declared way into training for code beside the public API: the benchmarks in benchmarks/.

`fasttune.train` builds its rows from a task and runs its trainer to the end. A speed benchmark fixes the rows itself
(the same in every stack it compares) and times the trainer's steps, so it needs the two parts of `train` in between,
exposed here and nowhere else:

- `sft_rows`: task examples tokenized as `train` tokenizes them for SFT;
- `sft_trainer`: the SFT trainer `train` would run on given rows, with LoRA attached as `train` attaches it, not run;
- `training_scope`: the library hooks `train` runs its trainer under, for around `trainer.train()`.

benchmarks/speed.py and benchmarks/cpu_batching.py train through these two and the public API only: when training's
internals change, this module follows them and the benchmarks stay as they are.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fasttune import data
from fasttune.errors import FasttuneError

if TYPE_CHECKING:
    from fasttune.backend import Model
    from fasttune.task import Example, Task
    from fasttune.configs import TrainConfig

Rows = list[dict[str, list[int]]]
"""Tokenized SFT rows: `input_ids`, and `completion_mask` with 1 on the tokens the loss is taken on."""


def sft_rows(task: Task, examples: list[Example], tokenizer, *, end_of_turn: str, max_seq_length: int) -> Rows:
    """One row per example: its chat-rendered prompt and gold completion closed by `end_of_turn`, the loss on the
    completion only. An example longer than `max_seq_length` is an error (a benchmark needs every row it asked for)."""
    encoded = data.encode_for_training(task, examples, tokenizer, end_of_turn, max_seq_length)
    if encoded.too_long:
        raise FasttuneError(f"{len(encoded.too_long)} of {len(examples)} '{task.name}' examples are longer than "
                            f"max_seq_length (max_seq_length={max_seq_length}, ids: "
                            f"{', '.join(encoded.too_long[:5])}). Raise max_seq_length or leave them out.")
    return encoded.rows


def sft_trainer(model: Model, rows: Rows, config: TrainConfig, *, longest_row: int | None = None):
    """The TRL trainer that `fasttune.train(model, task, config=config)` builds for SFT, on `rows`, not yet run
    (without `train`'s stop-on-signal and non-finite guards).

    LoRA of `config.lora` is attached to `model` in place, as `train` attaches it; a model that already has an
    adapter (an earlier call) keeps it and trains it further. Where `config` leaves them to fasttune (None),
    padding-free batching is decided for the machine, and gradient checkpointing from the free memory and the
    longest row the adapter will train on: `longest_row`, default the longest of `rows` (pass the longest of every
    later call's rows when the adapter is reused). Both decisions are in the trainer's `args` (`padding_free`,
    `gradient_checkpointing`), and so is the device-step plan (`per_device_train_batch_size`,
    `gradient_accumulation_steps`). Checkpoints go under `config.output_dir`, which must be set.
    """
    from fasttune import backend, plan, trainers  # here, so that importing this module never imports Unsloth

    if config.output_dir is None:
        raise FasttuneError("The trainer needs a folder for its checkpoints (output_dir=None). Set "
                            "TrainConfig(output_dir=...).")
    longest = longest_row or max(len(row["input_ids"]) for row in rows)
    decided = plan.plan(model, [{"input_ids": range(longest)}, *rows], config)
    backend.add_lora(model, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
                     target_modules=config.lora.target_modules, seed=config.seed,
                     gradient_checkpointing=decided.gradient_checkpointing, modules_to_save=config.modules_to_save)
    return trainers.sft_trainer(model, rows, replace(config, padding_free=decided.padding_free,
                                                     gradient_checkpointing=decided.gradient_checkpointing),
                                Path(config.output_dir), device_plan=decided)


def training_scope():
    """The hooks `fasttune.train` runs its trainer under, restored on exit: torch's varlen attention for Unsloth's
    padding-free batches where Unsloth has none (`hooks.unsloth_varlen_attention`)."""
    from fasttune import hooks

    return hooks.unsloth_varlen_attention()
