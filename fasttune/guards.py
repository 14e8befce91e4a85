"""Guards around a training run: stop cleanly on a signal, stop on a non-finite or diverging loss, explain
out-of-memory.

Each guard keeps the last good checkpoint intact and says how to go on; `train` wires them in.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
from pathlib import Path

import torch
import transformers

from fasttune import distributed
from fasttune.checkpoints import checkpoint_folders, latest_checkpoint, resumable_checkpoint
from fasttune.errors import FasttuneError, read_json


class TrainingInterrupted(FasttuneError):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; `train(..., resume=True)` continues it."""


def recorded_processes(output_dir: Path) -> int:
    """The number of processes the run in `output_dir` trained with (its config.json's plan; 1 if none)."""
    path = output_dir / "config.json"
    saved = read_json(path, f"Restore it, or delete {output_dir} and train again") if path.is_file() else {}
    return saved.get("plan", {}).get("world_size", 1) if isinstance(saved, dict) else 1


def check_fresh_start(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse to start over a run that was interrupted (its checkpoints would be overwritten or mixed in), over a
    finished run unless `overwrite`, and in a folder whose config.json is not a fasttune run's (e.g. a model's)."""
    found = checkpoint_folders(output_dir / "checkpoints")
    if found:
        checkpoint = latest_checkpoint(output_dir / "checkpoints", recorded_processes(output_dir)) or found[0]
        raise FasttuneError(f"{output_dir} holds an interrupted run (checkpoint={checkpoint}). Pass resume=True to "
                            "continue it, or train into a new output_dir.")
    if (output_dir / "adapter").exists() and not overwrite:
        raise FasttuneError(f"{output_dir} holds a finished run (adapter={output_dir / 'adapter'}). Train into a new "
                            "output_dir, or pass overwrite=True to replace that adapter when this run finishes.")
    config = output_dir / "config.json"
    saved = read_json(config, "Train into a new output_dir") if config.is_file() else {"method": None}
    if not isinstance(saved, dict) or "method" not in saved:
        raise FasttuneError(f"{output_dir} is not a fasttune run folder ({config} is not a run's config). Train "
                            "into a new output_dir; fasttune writes config.json there.")


def resume_point(output_dir: Path, config: dict, decided_by_fasttune: tuple[str, ...] = ()) -> Path:
    """The checkpoint to resume a run in `output_dir` from, after checking that the settings are the same.

    Settings named in `decided_by_fasttune` that `config` leaves to fasttune (None) match any saved choice: they
    are decided again for the resumed run (e.g. gradient checkpointing, from the memory free now). `output_dir`
    itself may differ: a run folder can be moved. The newest checkpoint that reads back is used (see
    `checkpoints.resumable_checkpoint`). A data-parallel run resumes in as many processes as it trained in (each
    restores its own RNG state and share of the data)."""
    if not checkpoint_folders(output_dir / "checkpoints"):
        raise FasttuneError(f"No complete checkpoint to resume from in {output_dir / 'checkpoints'} "
                            f"(output_dir={output_dir}). Pass the output_dir of the interrupted run, or resume=False.")
    if not (output_dir / "config.json").is_file():
        raise FasttuneError(f"{output_dir} holds checkpoints but no config.json, so its settings are unknown "
                            f"(output_dir={output_dir}). Restore config.json, or delete {output_dir} and train again.")
    processes = recorded_processes(output_dir)
    if processes != distributed.world_size():
        raise FasttuneError(f"The run in {output_dir} trained in {processes} processes, this one has "
                            f"{distributed.world_size()} (processes={distributed.world_size()}). Resume it with "
                            f"{processes} (torchrun --nproc-per-node {processes}).")
    saved = read_json(output_dir / "config.json", f"Restore it, or delete {output_dir} and train again")
    current = json.loads(json.dumps(config))
    changed = [f"{key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in sorted({*saved, *current})
               if saved.get(key) != current.get(key) and key != "output_dir"
               and not (key in decided_by_fasttune and current.get(key) is None)]
    if changed:
        raise FasttuneError(f"Resuming {output_dir} with other settings than the interrupted run "
                            f"({'; '.join(changed)}). Resume with the same settings, or train into a new output_dir.")
    return resumable_checkpoint(output_dir / "checkpoints", output_dir, processes)


class StopOnSignal(transformers.TrainerCallback):
    """On SIGTERM or SIGINT, finish the current step, save a checkpoint and stop; a second signal acts at once.

    Use as a context manager around `trainer.train()` (handlers are installed only in the main thread), then call
    `raise_if_stopped`. In a data-parallel run the ranks agree after every step, so a signal to any of them stops
    all of them after the same step, with one checkpoint.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, number, frame) -> None:
        if self.received is not None:  # asked twice: stop now, the way the process would without fasttune
            self.__exit__()
            signal.raise_signal(number)
            return
        self.received = signal.Signals(number).name

    def on_step_end(self, args, state, control, **kwargs):
        signalled = distributed.largest(signal.Signals[self.received].value if self.received else 0)
        if signalled and self.received is None:  # another rank was signalled
            self.received = signal.Signals(signalled).name
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def raise_if_stopped(self, state, checkpoint_dir: Path) -> None:
        """Raise TrainingInterrupted when a signal stopped the run."""
        if self.received is not None:
            checkpoint = latest_checkpoint(checkpoint_dir, distributed.world_size())
            raise TrainingInterrupted(
                f"Training stopped by {self.received} at step {state.global_step} of {state.max_steps} "
                f"(checkpoint={checkpoint}). Call train(..., resume=True) with the same output_dir to continue.")


class StopOnNonFinite(transformers.TrainerCallback):
    """Stop before the optimizer applies a non-finite gradient, naming the step, its example ids and likely causes.

    `tag_rows` adds a "row" column; the wrapped collator takes it off (so no collator or model sees it) and records
    each batch's rows, and a forward hook counts the micro-batches the model has seen, so the rows of the failing
    step are known exactly. In a data-parallel run the gradients are averaged before the check, so every rank stops
    at the same step, and the message names the rows of all ranks.
    """

    def __init__(self, row_ids: list[str], checkpoint_dir: Path):
        self.row_ids = row_ids
        self.checkpoint_dir = checkpoint_dir
        self.batches: list[list[int]] = []
        self.forwards = 0
        self.trainable: dict[str, torch.nn.Parameter] = {}
        self._hook = None

    @staticmethod
    def tag_rows(rows: list[dict]) -> list[dict]:
        return [{**row, "row": index} for index, row in enumerate(rows)]

    def watch(self, collate):
        """Wrap a data collator so that each batch's rows are recorded."""
        def collate_and_record(features):
            self.batches.append([feature.pop("row") for feature in features])
            return collate(features)

        return collate_and_record

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._hook = model.register_forward_pre_hook(self._count_forward)
        self.trainable = {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}

    def _count_forward(self, module, inputs) -> None:
        if module.training:
            self.forwards += 1

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        # One number, one device sync: the norm over every gradient is finite exactly when each gradient is.
        grads = [p.grad for p in self.trainable.values() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            bad = _non_finite({name: p.grad for name, p in self.trainable.items() if p.grad is not None})
            what = (f"non-finite gradient in {len(bad)} tensors (first: {bad[0]})" if bad
                    else "the gradient norm overflows float32")
            self._fail(args, state, model, optimizer, what)

    def on_log(self, args, state, control, logs=None, model=None, optimizer=None, **kwargs):
        # A backstop for training loops that skip on_pre_optimizer_step, from numbers already on the host.
        for key in ("loss", "grad_norm"):
            if logs and isinstance(logs.get(key), float) and not math.isfinite(logs[key]):
                self._fail(args, state, model, optimizer, f"{key.replace('_', ' ')} {logs[key]}",
                           step=state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        self.remove_hook()

    def remove_hook(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _fail(self, args, state, model, optimizer, what: str, step: int | None = None) -> None:
        self.remove_hook()
        micro = args.gradient_accumulation_steps
        rows = distributed.gather([row for batch in self.batches[max(0, self.forwards - micro):self.forwards]
                                   for row in batch])
        ids = ", ".join(self.row_ids[row] for row in rows)
        rate = optimizer.param_groups[0]["lr"] if optimizer is not None else args.learning_rate
        dtype = next(model.parameters()).dtype
        checkpoint = latest_checkpoint(self.checkpoint_dir, distributed.world_size())
        raise FasttuneError(
            f"Training stopped at step {step or state.global_step + 1}: {what} (example ids={ids}). The last good "
            f"checkpoint is kept (checkpoint={checkpoint}); no adapter was saved. "
            f"Lower learning_rate (learning_rate={rate:.3g}), check those examples, or train in a wider dtype "
            f"(dtype={str(dtype).removeprefix('torch.')}; float16 overflows where bfloat16 or float32 does not).")


class StopOnDivergence(transformers.TrainerCallback):
    """Stop a run that is finite but not learning: a loss frozen or climbing over `window` logged steps, a huge loss
    (float16 overflow shows as losses in the thousands before it shows as inf), or a gradient norm that is zero or
    explodes. The message names the setting to change; no adapter is saved.

    The thresholds sit far from healthy runs: the CPU bench's SmolLM2 curve (1.71 -> 0.04 in 60 steps, logged every 5)
    is never monotone over 5 logs, a cross-entropy loss starts near ln(vocab) (10.8 for SmolLM2) and LoRA's gradient
    norm stays in 1e-3..1e2.
    """

    def __init__(self, window: int = 5, max_loss: float = 100.0, max_grad_norm: float = 1e4):
        self.window, self.max_loss, self.max_grad_norm = window, max_loss, max_grad_norm
        self.losses: list[tuple[int, float]] = []
        self.zero_grad_logs = 0
        self.dtype = "float32"

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if not logs or "loss" not in logs or not math.isfinite(logs["loss"]):
            return  # a non-finite loss is StopOnNonFinite's
        step, loss = state.global_step, float(logs["loss"])
        self.dtype = "float16" if args.fp16 else str(next(model.parameters()).dtype).removeprefix("torch.") \
            if model is not None else "bfloat16" if args.bf16 else "float32"
        self.losses.append((step, loss))
        grad_norm = logs.get("grad_norm")
        if loss > self.max_loss:
            self._fail(step, args, f"the loss is {loss:.4g} (over {self.max_loss:g}: activations overflow or the "
                                   "updates are far too large)")
        if grad_norm is not None and math.isfinite(grad_norm):
            self.zero_grad_logs = self.zero_grad_logs + 1 if grad_norm == 0 else 0
            if grad_norm > self.max_grad_norm:
                self._fail(step, args, f"the gradient norm exploded to {grad_norm:.4g} (over {self.max_grad_norm:g})")
            if self.zero_grad_logs >= self.window:
                self._fail(step, args, f"the gradient norm was 0 at {self.zero_grad_logs} logged steps in a row "
                                       "(nothing trains)")
        recent = [value for _, value in self.losses[-self.window:]]
        if len(recent) < self.window:
            return
        first, steps = recent[0], self.losses[-1][0] - self.losses[-self.window][0]
        if max(recent) - min(recent) <= 1e-4 * abs(first):
            self._fail(step, args, f"the loss stayed at {first:.4g} over the last {steps} steps (frozen)")
        if all(b >= a for a, b in zip(recent, recent[1:])) and recent[-1] >= 2 * first:
            self._fail(step, args, f"the loss rose from {first:.4g} to {recent[-1]:.4g} over the last {steps} steps")

    def _fail(self, step: int, args, what: str) -> None:
        raise FasttuneError(
            f"Training stopped at step {step}: {what} (learning_rate={args.learning_rate:g}, "
            f"dtype={self.dtype}); no adapter was saved. "
            "Lower learning_rate (1e-4..5e-4 suits LoRA), or train in bfloat16/float32 where float16 overflows.")


def _non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors holding NaN or inf, checked with one device sync."""
    if not tensors:
        return []
    finite = torch.stack([torch.isfinite(tensor).all() for tensor in tensors.values()])
    return [] if finite.all() else [name for name, ok in zip(tensors, finite.tolist()) if not ok]


@contextlib.contextmanager
def out_of_memory_advice(what: str, batch_size: int, sequence_length: int, setting: str):
    """Turn an accelerator out-of-memory error inside the block into a FasttuneError naming the sizes in use."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise FasttuneError(
            f"Out of memory during {what} (batch_size={batch_size}, sequence_length={sequence_length}). "
            f"{setting}. ({str(error).splitlines()[0] if str(error) else 'no details'})") from error
