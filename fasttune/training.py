"""Training: one LoRA run through the TRL trainer of the chosen method (Unsloth-patched on a GPU).

`train` reads setup -> data -> adapter -> fit -> save for every method. SFT lives here; each other method's module
(pretraining, preference, rewards, rejection) gives its config class, `prepare` (the training rows, built from the
task) and `make_trainer`.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import transformers
import trl
from datasets import Dataset

from fasttune import backend, batching, data, guards, memory, splits
from fasttune.backend import Model
from fasttune.errors import FasttuneError, FasttuneWarning, not_positive, raise_problems, unknown_name
from fasttune.plots import plot_losses
from fasttune.progress import new_progress
from fasttune.task import Example, Task

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
Method = Literal["sft", "cpt", "dpo", "orpo", "kto", "grpo", "rft"]
METHODS = {  # method -> (module with prepare/make_trainer, its config class)
    "sft": ("fasttune.training", "TrainConfig"),
    "cpt": ("fasttune.pretraining", "CptConfig"),
    "dpo": ("fasttune.preference", "DpoConfig"),
    "orpo": ("fasttune.preference", "OrpoConfig"),
    "kto": ("fasttune.preference", "KtoConfig"),
    "grpo": ("fasttune.rewards", "GrpoConfig"),
    "rft": ("fasttune.rejection", "RftConfig"),
}


@dataclass
class LoraConfig:
    """The LoRA adapter's shape."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: int = 32
    """Scale numerator: updates are multiplied by alpha / r."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    """Names of the linear layers that get an adapter."""


@dataclass
class TrainConfig:
    """Settings of one training run; this class is the SFT config, and every method's config extends it."""

    method: Method = "sft"
    """Training method; each has its own config class (see METHODS)."""
    epochs: float = 1.0
    """Passes over the training split."""
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    learning_rate: float = 5e-4
    """Peak learning rate of the LoRA weights."""
    batch_size: int = 16
    """Examples per batch (fasttune splits a batch that would not fit in free memory; updates stay the same)."""
    gradient_accumulation: int = 1
    """Batches per optimizer step."""
    padding_free: bool | None = None
    """True packs each batch into one row with no padding (positions restart at every example); False pads the
    rows of a batch to the longest and groups rows of similar length into batches; None picks padding-free only
    where a varlen attention kernel (flash-attn) makes it faster. The run's config.json records the choice."""
    warmup_ratio: float = 0.05
    """Share of steps with linear warmup."""
    lr_scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Learning-rate schedule after warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    split: str = "train"
    """Task split to train on."""
    limit: int | None = None
    """Train on the first `limit` examples only."""
    seed: int = 0
    """Seed of LoRA initialisation and data order."""
    gradient_checkpointing: bool | None = None
    """True recomputes activations in the backward to save memory (about a third more compute); None turns it on
    only when a device step of the longest training row would not fit the free memory without it (within
    `load(max_memory_gib=...)` where set). For DPO, ORPO, KTO and GRPO, whose rows are tokenized by the trainer,
    the longest row is taken as max_seq_length. The run's config.json records the choice."""
    logging_steps: int = 5
    """Record the loss every this many steps."""
    save_steps: int | None = 50
    """Checkpoint (adapter, optimizer, scheduler, RNG, data position) every this many steps; None: only on a signal."""
    output_dir: str | None = None
    """Where the adapter, config, losses and plot go (default: runs/<task>-<time>)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """The adapter's shape."""

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraConfig(**self.lora)
        raise_problems(self.problems())

    def problems(self) -> list[str]:
        """Every problem with these settings (subclasses add their own)."""
        problems = not_positive(self, ("learning_rate", "batch_size", "gradient_accumulation", "logging_steps",
                                       "limit", "save_steps")) + not_positive(self.lora, ("r",), prefix="lora.")
        if self.method != type(self).method:
            expected = METHODS.get(self.method, ("", "an unknown method"))[1]
            problems.append(f"method {self.method!r} does not go with {type(self).__name__} (it takes {expected}; "
                            f"methods: {', '.join(METHODS)})")
        if self.epochs <= 0 and self.max_steps <= 0:
            problems.append(f"set epochs > 0 or max_steps > 0 (epochs={self.epochs}, max_steps={self.max_steps})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1) (warmup_ratio={self.warmup_ratio})")
        return problems

    @property
    def modules_to_save(self) -> list[str] | None:
        """Layers trained in full beside the LoRA weights (none for most methods)."""
        return None


@dataclass
class TrainingData:
    """A method's training rows, built from the task before the adapter is attached."""

    rows: list[dict]
    row_ids: list[str] = field(default_factory=list)
    """The example id of each row, for the non-finite guard; empty where the trainer reshapes rows (preference,
    GRPO)."""
    skipped_too_long: list[str] = field(default_factory=list)
    """Ids of task examples left out for length."""
    summary: dict = field(default_factory=dict)
    """Method-specific counts saved in the card (e.g. pairs built, prompts the model always got right)."""
    examples_used: list[Example] = field(default_factory=list, repr=False)
    """The task examples the rows come from, for methods that judge outputs during training (GRPO)."""


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
    skipped_too_long: int
    config: TrainConfig
    data: dict = field(default_factory=dict)
    """The method's data summary (see TrainingData.summary)."""


def train(model: Model, task: Task, method: Method | None = None, *, config: TrainConfig | None = None,
          resume: bool = False, **overrides) -> Run:
    """Fine-tune `model` on a task with LoRA by `method` (default sft) and save the adapter.

    The LoRA weights are attached to `model` in place: `run.model` is the same object, now tuned; a model that
    already has an adapter (e.g. after method="cpt") trains it further. Keyword arguments override fields of the
    method's config (e.g. `epochs=2`). Checkpoints go to `<output_dir>/checkpoints` every `save_steps` and when
    SIGTERM/SIGINT stops the run; `resume=True` continues from the latest one, with the same settings and output_dir.
    A non-finite loss or gradient stops the run, keeping the last good checkpoint.
    """
    config = resolve_batching(method_config(method, config, overrides), model)
    recipe = importlib.import_module(METHODS[config.method][0])
    output_dir = Path(config.output_dir or f"runs/{task.name}-{datetime.now():%Y%m%d-%H%M%S}")
    checkpoint = (guards.resume_point(output_dir, asdict(config), decided_by_fasttune=("gradient_checkpointing",))
                  if resume else guards.check_fresh_start(output_dir))

    prepared = recipe.prepare(model, task, config)
    if prepared.skipped_too_long:
        ids = prepared.skipped_too_long
        warnings.warn(f"fasttune: skipped {len(ids)} of {len(ids) + len(prepared.rows)} training examples longer "
                      f"than max_seq_length={model.max_seq_length} (ids: {', '.join(ids[:5])}"
                      f"{' ...' if len(ids) > 5 else ''}). "
                      "Raise max_seq_length in load() to keep them.", FasttuneWarning, stacklevel=2)
    if not prepared.rows:
        raise FasttuneError(f"No training rows left for task '{task.name}' (method={config.method}, "
                            f"data={prepared.summary}). See the counts above.")
    longest = longest_row(prepared, model)
    config = resolve_checkpointing(config, model, longest)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))

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
    trainer = recipe.make_trainer(model, task, prepared, config, output_dir,
                                  [stop_on_signal, stop_on_non_finite, guards.StopOnDivergence()])
    if prepared.row_ids:
        trainer.data_collator = stop_on_non_finite.watch(trainer.data_collator)
    started = time.perf_counter()
    with stop_on_signal, guards.out_of_memory_advice(
            "training", trainer.args.per_device_train_batch_size, longest,
            "Lower batch_size (raise gradient_accumulation to keep the effective batch), set "
            "gradient_checkpointing=True, or lower max_seq_length in load()"):
        try:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        finally:
            stop_on_non_finite.remove_hook()
    stop_on_signal.raise_if_stopped(trainer.state, output_dir / "checkpoints")
    seconds = time.perf_counter() - started

    history = trainer.state.log_history
    losses = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    # SFT counts tokens through the Trainer; the preference and RL trainers log their own count.
    tokens = int(trainer.state.num_input_tokens_seen) or int(max(
        (float(entry["num_tokens"]) for entry in history if "num_tokens" in entry), default=0))
    adapter_dir = output_dir / "adapter"
    model.model.save_pretrained(adapter_dir, safe_serialization=True)
    model.tokenizer.save_pretrained(adapter_dir)
    model.adapter_dir = adapter_dir
    model.card = {"base_model": str(model.base_path.resolve()), "task": task.describe(), "method": config.method,
                  "config": asdict(config), "losses": losses, "seconds": seconds, "train_tokens": tokens,
                  "train_examples": len(prepared.rows), "skipped_too_long": prepared.skipped_too_long,
                  "data": prepared.summary, "continued_from": None if new_adapter else str(previous_adapter),
                  "backend": model.backend}
    (adapter_dir / backend.CARD_NAME).write_text(json.dumps(model.card, indent=2, default=str))
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)  # the run is complete: the adapter replaces them
    loss_plot = plot_losses(losses, output_dir / "loss.png",
                            title=f"{config.method} on {task.name} ({model.base_path.name})")
    return Run(model, output_dir, adapter_dir, losses, loss_plot, seconds, tokens, tokens / seconds,
               len(prepared.skipped_too_long), config, prepared.summary)


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
    module, class_name = METHODS[method]
    return getattr(importlib.import_module(module), class_name)(**overrides)


def prepare(model: Model, task: Task, config: TrainConfig) -> TrainingData:
    """SFT rows: the task's prompts and gold completions, tokenized with completion-only masks."""
    examples = splits.training_examples(task, config.split, config.limit)
    encoded = data.encode_for_training(task, examples, model.tokenizer, model.end_of_turn, model.max_seq_length)
    return TrainingData(encoded.rows, encoded.ids, encoded.too_long)


def make_trainer(model: Model, task: Task, prepared: TrainingData, config: TrainConfig, output_dir: Path,
                 callbacks: list[transformers.TrainerCallback]):
    """TRL's SFTTrainer on the tokenized rows, loss on the completion tokens only."""
    return sft_trainer(model, prepared.rows, config, output_dir, callbacks)


def sft_trainer(model: Model, rows: list[dict[str, list[int]]], config: TrainConfig, output_dir: Path,
                callbacks: list[transformers.TrainerCallback] = ()):
    """TRL's SFT trainer over tokenized rows (input_ids + completion_mask) for a model that has LoRA weights.

    `config.gradient_checkpointing` must be what the LoRA weights were attached with (None counts as off); each
    batch is split into device steps that fit the free memory (within the model's `max_memory_gib`)."""
    config = resolve_batching(config, model)
    backend.for_training(model)
    plan = batching.plan_device_steps(
        config.batch_size, config.gradient_accumulation, max(len(row["input_ids"]) for row in rows),
        batching.bytes_per_token(model.model.config, bool(config.gradient_checkpointing)),
        batching.free_for_activations(memory.free_memory_bytes(model.max_memory_gib), trainable_parameters(model)))
    return with_progress(backend.sft_trainer_class()(
        model=model.model, processing_class=model.tokenizer, train_dataset=Dataset.from_list(rows),
        args=_trainer_arguments(config, output_dir, model, plan), callbacks=list(callbacks)))


def with_progress(trainer):
    """`trainer` with fasttune's rich progress bar in place of transformers' printed logs."""
    trainer.add_callback(_RichProgress())
    trainer.remove_callback(transformers.PrinterCallback)
    return trainer


def longest_row(prepared: TrainingData, model: Model) -> int:
    """Tokens in the longest training row; max_seq_length where the trainer tokenizes the rows itself."""
    return max(len(row.get("input_ids", ())) for row in prepared.rows) or model.max_seq_length


def resolve_checkpointing(config: TrainConfig, model: Model, longest: int) -> TrainConfig:
    """`config` with `gradient_checkpointing` decided from the free memory where it was left to fasttune (None):
    on only when one `longest`-token row would not fit without it."""
    if config.gradient_checkpointing is not None:
        return config
    free = memory.free_memory_bytes(model.max_memory_gib)
    return replace(config, gradient_checkpointing=batching.needs_checkpointing(longest, model.model.config, free))


def trainable_parameters(model: Model) -> int:
    return sum(parameter.numel() for parameter in model.model.parameters() if parameter.requires_grad)


def resolve_batching(config: TrainConfig, model: Model) -> TrainConfig:
    """`config` with `padding_free` decided for this machine and model where it was left to fasttune (None)."""
    if config.padding_free is not None:
        return config
    return replace(config, padding_free=backend.varlen_attention(model))


def trainer_arguments(config: TrainConfig, output_dir: Path, model: Model) -> dict:
    """TrainingArguments fields every method shares: schedule, batch, logging, checkpoints, device."""
    return dict(
        output_dir=str(output_dir / "checkpoints"), num_train_epochs=config.epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio, weight_decay=config.weight_decay, seed=config.seed,
        data_seed=config.seed, logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps, save_total_limit=2,
        logging_nan_inf_filter=False, report_to="none", disable_tqdm=True,
        # TRL's configs default to True: without this every run would checkpoint, whatever add_lora was told
        gradient_checkpointing=bool(config.gradient_checkpointing), **backend.device_arguments(model))


def _trainer_arguments(config: TrainConfig, output_dir: Path, model: Model,
                       plan: batching.DevicePlan) -> trl.SFTConfig:
    return trl.SFTConfig(
        **{**trainer_arguments(config, output_dir, model), "per_device_train_batch_size": plan.micro_batch,
           "gradient_accumulation_steps": plan.accumulation},
        padding_free=config.padding_free,
        train_sampling_strategy="random" if config.padding_free else "group_by_length", completion_only_loss=True,
        max_length=None if config.padding_free else model.max_seq_length,  # rows were cut to it already
        include_num_input_tokens_seen="non_padding", dataset_num_proc=None, remove_unused_columns=False)


class _RichProgress(transformers.TrainerCallback):
    """A rich progress bar over optimizer steps, showing the last logged loss."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.progress = new_progress()
        self.bar = self.progress.add_task("training", total=state.max_steps, status="")
        self.progress.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.progress.update(self.bar, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.progress.update(self.bar, status=f"loss {logs['loss']:.4f}")

    def on_train_end(self, args, state, control, **kwargs):
        self.progress.stop()
