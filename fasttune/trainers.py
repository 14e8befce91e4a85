"""The pieces of a TRL trainer that every method shares: the training arguments of a device plan, fasttune's
progress bar, and the SFT trainer over tokenized rows (used by sft, rft and the speed benchmark)."""

from __future__ import annotations

from collections import deque
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import transformers
import trl
from datasets import Dataset

from fasttune import backend, distributed
from fasttune.backend import Model
from fasttune.configs import TrainConfig
from fasttune.plan import Plan, plan
from fasttune.progress import new_progress, shown, training_status


def trainer_arguments(config: TrainConfig, output_dir: Path, model: Model, device_plan: Plan) -> dict:
    """TrainingArguments fields every method shares: schedule, batch (as the plan splits it), logging,
    checkpoints, device."""
    return dict(
        output_dir=str(output_dir / "checkpoints"), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=device_plan.micro_batch, gradient_accumulation_steps=device_plan.accumulation,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay, seed=config.seed,
        data_seed=config.seed, logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps, save_total_limit=2,
        logging_nan_inf_filter=False, report_to="none", disable_tqdm=True, optim=device_plan.optimizer,
        # TRL's configs default to True: without this every run would checkpoint, whatever add_lora was told
        gradient_checkpointing=device_plan.gradient_checkpointing,
        ddp_find_unused_parameters=False,  # data-parallel runs: every LoRA weight is used in every forward
        **backend.device_arguments(model))


def sft_trainer(model: Model, rows: list[dict[str, list[int]]], config: TrainConfig, output_dir: Path,
                callbacks: list[transformers.TrainerCallback] = (), device_plan: Plan | None = None):
    """TRL's SFT trainer over tokenized rows (input_ids + completion_mask) for a model that has LoRA weights.

    Without `device_plan` one is made from `rows`, with `config.gradient_checkpointing` taken as what the LoRA
    weights were attached with (None counts as off)."""
    if device_plan is None:
        device_plan = plan(model, rows, replace(config, gradient_checkpointing=bool(config.gradient_checkpointing)))
    backend.for_training(model)
    args = trl.SFTConfig(
        **trainer_arguments(config, output_dir, model, device_plan), padding_free=device_plan.padding_free,
        train_sampling_strategy="random" if device_plan.padding_free else "group_by_length",
        completion_only_loss=True,
        max_length=None if device_plan.padding_free else model.max_seq_length,  # rows were cut to it already
        dataset_num_proc=None, remove_unused_columns=False)
    trainer = with_progress(backend.sft_trainer_class()(
        model=model.model, processing_class=model.tokenizer, train_dataset=Dataset.from_list(rows), args=args,
        callbacks=list(callbacks)))
    counter = CountTokens()
    trainer.data_collator = counter.watch(trainer.data_collator)
    trainer.add_callback(counter)
    return trainer


class CountTokens(transformers.TrainerCallback):
    """Counts the tokens of the rows the model trains on into `state.num_input_tokens_seen`, on the host: the
    wrapped collator records each batch's count from its rows, and every micro-batch trained (one substep or step
    end each) adds the oldest count. (transformers' `include_num_input_tokens_seen` sums the attention mask on
    the device and syncs it every micro-batch.)"""

    def __init__(self):
        self.counts: deque[int] = deque()

    def watch(self, collate):
        def collate_and_count(features):
            self.counts.append(sum(len(feature["input_ids"]) for feature in features))
            return collate(features)

        return collate_and_count

    def on_substep_end(self, args, state, control, **kwargs):
        self._add(state)

    def on_step_end(self, args, state, control, **kwargs):
        self._add(state)

    def _add(self, state) -> None:
        if self.counts:
            state.num_input_tokens_seen += self.counts.popleft()


def with_progress(trainer):
    """`trainer` with fasttune's rich progress bar (on rank 0 of a data-parallel run) in place of transformers'
    printed logs."""
    if distributed.is_main_process():
        trainer.add_callback(RichProgress())
    trainer.remove_callback(transformers.PrinterCallback)
    return trainer


class RichProgress(transformers.TrainerCallback):
    """A rich progress bar over optimizer steps (with ETA), showing the last logged loss, tokens/s and validation
    metric."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.showing = ExitStack()
        self.progress = self.showing.enter_context(shown(new_progress()))
        self.bar = self.progress.add_task("training", total=state.max_steps, completed=state.global_step, status="")

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.bar, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.progress.update(self.bar, status=training_status(logs))

    def on_train_end(self, args, state, control, **kwargs):
        self.showing.close()
