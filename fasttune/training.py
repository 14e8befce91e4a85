"""Training: one LoRA run through the TRL trainer of the chosen method (Unsloth-patched on a GPU).

`train` reads setup -> data -> plan -> adapter -> fit -> save for every method; each method (fasttune.methods)
gives its config class, `prepare` (the training rows, built from the task) and `make_trainer`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

from fasttune import atomic, backend, checkpoints, distributed, guards, hooks, inputs, runlock, runs
from fasttune.backend import Model
from fasttune.card import write_card
from fasttune.chat_templates import CARD_KEY, card_entry
from fasttune.configs import TrainConfig, config_dict
from fasttune.errors import FasttuneError, FasttuneWarning, unknown_name
from fasttune.logs import RunLog
from fasttune.methods import METHODS
from fasttune.plan import Plan, plan
from fasttune.plots import plot_losses
from fasttune.task import Task
from fasttune.validation import Validation

@dataclass
class Run:
    """What a training run produced: the tuned model, its saved adapter and the measurements."""

    model: Model
    output_dir: Path
    adapter_dir: Path
    losses: list[tuple[int, float]]
    loss_plot: Path
    seconds: float
    train_tokens: int
    tokens_per_second: float
    skipped_too_long: list[str]
    """Ids of the task examples left out for length (see TrainingData.skipped_too_long)."""
    config: TrainConfig
    plan: Plan
    """The device plan the run trained with (also in config.json and the card)."""
    data: dict = field(default_factory=dict)
    """The method's data summary (see TrainingData.summary)."""
    validation: dict = field(default_factory=dict)
    """Validation during training: split, metric, history [(step, value)], the kept step (see Validation.finish)."""
    report: Path | None = None
    """The run report (run.json, beside dashboard.png and log.jsonl): read it back with fasttune.load_run."""


@hooks.library_scope()
def train(model: Model, task: Task, method: str | None = None, *, config: TrainConfig | None = None,
          resume: bool = False, overwrite: bool = False, **overrides) -> Run:
    """Fine-tune `model` on a task with LoRA by `method` (default sft) and save the adapter.

    The LoRA weights are attached to `model` in place: `run.model` is the same object, now tuned; a model that
    already has an adapter (e.g. after method="cpt") trains it further. Keyword arguments override fields of the
    method's config (e.g. `epochs=2`). Checkpoints go to `<output_dir>/checkpoints` every `save_steps` and when
    SIGTERM/SIGINT stops the run; `resume=True` continues from the latest one, with the same settings and output_dir.
    A non-finite loss or gradient stops the run, keeping the last good checkpoint. One run at a time writes to an
    output_dir; a finished run's folder is refused unless `overwrite=True`.

    Under torchrun every process calls `train` alike: each trains on its share of every batch (the optimizer step
    stays batch_size x gradient_accumulation rows), and rank 0 holds the run folder's lock and writes the config,
    logs, validation, adapter, card and plots.
    """
    config = method_config(method, config, overrides)
    output_dir = Path(config.output_dir or f"runs/{task.name}-{datetime.now():%Y%m%d-%H%M%S}")
    if config.eval_every and distributed.world_size() > 1:
        raise FasttuneError(f"Validation during training (eval_every={config.eval_every}) runs in one process, and "
                            f"this run has {distributed.world_size()}. Train without eval_every under torchrun, then "
                            "evaluate the adapter (evaluation splits its examples between the processes).")
    with runlock.RunLock(output_dir) if distributed.is_main_process() else contextlib.nullcontext():
        return _train(model, task, config, output_dir, resume, overwrite)


def _train(model: Model, task: Task, config: TrainConfig, output_dir: Path, resume: bool, overwrite: bool) -> Run:
    recipe = METHODS[config.method]
    checkpoint = (guards.resume_point(output_dir, {**config_dict(config), **run_inputs(model, task)},
                                      decided_by_fasttune=("padding_free", "gradient_checkpointing", "optimizer",
                                                           "plan"))
                  if resume else guards.check_fresh_start(output_dir, overwrite))

    # Methods that sample their data (DPO, KTO, RFT, GRPO) could build other rows on each rank: all train on rank 0's.
    prepared = distributed.from_main_process(recipe.prepare(model, task, config))
    if prepared.skipped_too_long:
        ids = prepared.skipped_too_long
        warnings.warn(f"fasttune: skipped {len(ids)} of {len(ids) + len(prepared.rows)} training examples longer "
                      f"than max_seq_length={model.max_seq_length} (ids: {', '.join(ids[:5])}"
                      f"{' ...' if len(ids) > 5 else ''}). "
                      "Raise max_seq_length in load() to keep them.", FasttuneWarning, stacklevel=2)
    if not prepared.rows:
        raise FasttuneError(f"No training rows left for task '{task.name}' (method={config.method}, "
                            f"data={prepared.summary}). See the counts above.")
    device_plan = plan(model, prepared.rows, config)
    config = replace(config, padding_free=device_plan.padding_free,
                     gradient_checkpointing=device_plan.gradient_checkpointing, optimizer=device_plan.optimizer)
    output_dir.mkdir(parents=True, exist_ok=True)
    writes = distributed.is_main_process()
    if writes:  # config.json written whole at once: the other ranks may be reading the old one
        inputs.record_or_check(output_dir, inputs.run_inputs(model, task, prepared.rows), resume)
        recorded = {**config_dict(config), **run_inputs(model, task), "plan": asdict(device_plan)}
        atomic.write_file(output_dir / "config.json", json.dumps(recorded, indent=2))

    run_log = RunLog(output_dir, config, resume) if writes else None
    validation = Validation(model, task, config, output_dir, run_log) if config.eval_every else None
    previous_adapter = model.adapter_dir
    new_adapter = backend.add_lora(
        model, r=config.lora.r, alpha=config.lora.alpha, dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, seed=config.seed,
        gradient_checkpointing=config.gradient_checkpointing, modules_to_save=config.modules_to_save)
    backend.for_training(model)
    stop_on_signal = guards.StopOnSignal()
    stop_on_non_finite = guards.StopOnNonFinite(prepared.row_ids, output_dir / "checkpoints")
    if prepared.row_ids:  # name the failing step's examples
        prepared = replace(prepared, rows=stop_on_non_finite.tag_rows(prepared.rows))
    trainer = recipe.make_trainer(model, task, prepared, config, device_plan, output_dir,
                                  [stop_on_signal, stop_on_non_finite, guards.StopOnDivergence(),
                                   *(callback for callback in (run_log, validation) if callback)])
    trainer.add_callback(checkpoints.MarkComplete(trainer, checkpoint))
    if prepared.row_ids:
        trainer.data_collator = stop_on_non_finite.watch(trainer.data_collator)
    if device_plan.world_size > 1:
        hooks.sample_as_one_device(trainer, device_plan.world_size)
        hooks.resume_on_cpus(trainer)
    started = time.perf_counter()
    full_disk_fix = (f"Every complete checkpoint in {output_dir / 'checkpoints'} is kept and no adapter is left "
                     "half-written: free space, then call train(..., resume=True)")
    full_disk = atomic.out_of_space_advice(output_dir / "checkpoints", full_disk_fix)
    with stop_on_signal, full_disk, hooks.unsloth_varlen_attention(), guards.out_of_memory_advice(
            "training", device_plan.micro_batch, device_plan.longest_row,
            "Lower batch_size (raise gradient_accumulation to keep the effective batch), set "
            "gradient_checkpointing=True, or lower max_seq_length in load()"):
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            stop_on_non_finite.remove_hook()
            if run_log:
                run_log.close()
    stop_on_signal.raise_if_stopped(trainer.state, output_dir / "checkpoints")
    seconds = time.perf_counter() - started
    kept = validation.finish() if validation else {}

    history = trainer.state.log_history
    losses = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    # SFT counts tokens through the Trainer; the preference and RL trainers log their own count.
    # Each rank counts the tokens of its own share of the rows.
    tokens = distributed.total(int(trainer.state.num_input_tokens_seen)) or int(max(
        (float(entry["num_tokens"]) for entry in history if "num_tokens" in entry), default=0))
    adapter_dir = output_dir / "adapter"
    model.card = {"base_model": str(model.base_path.resolve()), "task": task.describe(), "method": config.method,
                  "config": config_dict(config),
                  "plan": asdict(device_plan), "losses": losses, "seconds": seconds, "train_tokens": tokens,
                  "train_examples": len(prepared.rows), "skipped_too_long": prepared.skipped_too_long,
                  "data": prepared.summary, "continued_from": None if new_adapter else str(previous_adapter),
                  "backend": model.backend, CARD_KEY: card_entry(model.tokenizer, model.card),
                  "validation": kept or None}
    loss_plot, report = output_dir / "loss.png", None
    if writes:
        # a kill or a full disk while saving leaves no adapter folder, and the checkpoints to resume from
        with atomic.out_of_space_advice(adapter_dir, full_disk_fix), atomic.atomic_folder(adapter_dir) as staging:
            model.model.save_pretrained(staging, safe_serialization=True)
            model.tokenizer.save_pretrained(staging)
            write_card(staging, model.card)
        shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)  # the run is complete: the adapter replaces them
        plot_losses(losses, loss_plot, title=f"{config.method} on {task.name} ({model.base_path.name})",
                    validation=kept.get("history", []), metric=kept.get("metric", ""))
        report = runs.write_run_report(output_dir, {
            "task": task.describe(), "method": config.method, "model": model.name,
            "steps": trainer.state.global_step, "seconds": seconds, "train_tokens": tokens,
            "tokens_per_second": tokens / seconds, "validation": kept or None, "adapter": "adapter"},
            title=f"{config.method} on {task.name} ({model.base_path.name})")
    model.adapter_dir = adapter_dir
    distributed.barrier()  # every rank returns once the adapter is on disk
    return Run(model, output_dir, adapter_dir, losses, loss_plot, seconds, tokens, tokens / seconds,
               prepared.skipped_too_long, config, device_plan, prepared.summary, kept, report)


def run_inputs(model: Model, task: Task) -> dict:
    """What config.json records beside the config: the task with its options and the model as `load` read it,
    so that `fasttune train --config config.json` trains the same run again."""
    inputs = {"task": {"name": task.name, **task.constructor_arguments()}}
    if model.load_config is not None:
        inputs["model"] = asdict(model.load_config)
    return inputs


def method_config(method: str | None, config: TrainConfig | None, overrides: dict) -> TrainConfig:
    """The config of a run: `config` as given, or the method's config class built from `overrides`."""
    if config is not None:
        if method is not None and method != config.method:
            raise FasttuneError(f"method={method!r} but the config is a {type(config).__name__} "
                                f"(method={config.method!r}). Pass one or the other.")
        if overrides:
            raise FasttuneError(f"Pass settings in the config or as keywords, not both "
                                f"(keywords: {', '.join(overrides)}).")
        return config
    method = method or "sft"
    if method not in METHODS:
        raise unknown_name("training method", method, list(METHODS))
    return METHODS[method].config(**overrides)
