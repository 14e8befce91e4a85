"""Training checkpoints that count only when written completely, and are checked before a run resumes from one.

The Trainer writes `checkpoint-<step>` in place; `MarkComplete` then flushes its files to disk and writes a
manifest of their sizes last (`fasttune-checkpoint.json`, itself written through a renamed temporary file). A
checkpoint without a manifest, or whose files no longer have the recorded sizes, was cut off (a kill, a full disk)
and never counts. Before resuming, every file the Trainer reads back is also opened and checked (JSON parses,
safetensors and torch's zip archives read through to the end, without unpickling anything).
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import transformers

from fasttune import atomic, distributed, hooks
from fasttune.errors import FasttuneError, FasttuneWarning

MANIFEST = "fasttune-checkpoint.json"


def checkpoint_files(processes: int = 1) -> tuple[str, ...]:
    """What a resume reads back (the adapter, optimizer, scheduler, RNG and data position) of a run trained in
    `processes` processes: a data-parallel run saves one RNG state per process, rng_state_<rank>.pth."""
    rng_states = ("rng_state.pth",) if processes == 1 else tuple(f"rng_state_{rank}.pth" for rank in range(processes))
    return ("trainer_state.json", "optimizer.pt", "scheduler.pt", *rng_states, "adapter_model.safetensors",
            "adapter_config.json")

SET_ASIDE = "incomplete-"
"""Prefix given to checkpoints a resume skipped; the Trainer's own rotation does not see them."""


LOGGING_WINDOW = "fasttune-logging-window.json"


class MarkComplete(transformers.TrainerCallback):
    """After `trainer` saves a checkpoint, record the loss summed since the last logged step, flush the checkpoint
    and write its manifest: from then on it counts. Resumed from `resumed_from`, it puts that loss back."""

    def __init__(self, trainer, resumed_from: Path | None):
        self.trainer, self.resumed_from = trainer, resumed_from

    def on_train_begin(self, args, state, control, **kwargs):
        saved = self.resumed_from / LOGGING_WINDOW if self.resumed_from else None
        if saved is not None and saved.is_file():
            window = json.loads(saved.read_text())
            hooks.restore_logging_window(self.trainer, window["loss"], window["step"])

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        distributed.barrier()  # every rank has written its RNG state
        if distributed.is_main_process() and folder.is_dir():
            loss, step = hooks.logging_window(self.trainer)
            (folder / LOGGING_WINDOW).write_text(json.dumps({"loss": loss, "step": step}))
            write_manifest(folder)


def write_manifest(folder: Path) -> None:
    """Flush `folder` and record the size of each of its files, making it a complete checkpoint."""
    atomic.fsync_tree(folder)
    sizes = {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*"))
             if path.is_file() and path.name != MANIFEST}
    atomic.write_file(folder / MANIFEST, json.dumps({"files": sizes}, indent=1))


def checkpoint_folders(folder: Path) -> list[Path]:
    """Every `checkpoint-<step>` folder in `folder`, newest first, complete or not."""
    found = [path for path in folder.glob("checkpoint-*") if path.is_dir() and path.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda path: int(path.name.split("-")[-1]), reverse=True)


def incomplete_reason(checkpoint: Path, processes: int = 1) -> str | None:
    """Why `checkpoint` was not written completely (no manifest, a file missing or of another size), or None."""
    try:
        recorded = json.loads((checkpoint / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return "it was cut off while being written (no manifest)"
    except (ValueError, KeyError, TypeError):
        return f"its manifest {MANIFEST} is damaged"
    for name in checkpoint_files(processes):
        if name not in recorded:
            return f"{name} was never written"
    for name, size in recorded.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def unreadable_reason(checkpoint: Path, processes: int = 1) -> str | None:
    """Why a complete-looking `checkpoint` cannot be read back (a damaged file), or None when every file reads."""
    from safetensors import SafetensorError, safe_open

    for name in ("trainer_state.json", "adapter_config.json"):
        try:
            if not isinstance(json.loads((checkpoint / name).read_text(encoding="utf-8")), dict):
                return f"{name} is not a JSON object"
        except (ValueError, UnicodeDecodeError) as error:
            return f"{name} is not valid JSON ({error})"
    try:
        with safe_open(checkpoint / "adapter_model.safetensors", "pt") as weights:
            for key in weights.keys():
                weights.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as error:
        return f"adapter_model.safetensors does not read ({error})"
    for name in [name for name in checkpoint_files(processes) if name.endswith(".pt") or name.endswith(".pth")]:
        try:
            with zipfile.ZipFile(checkpoint / name) as archive:
                broken = archive.testzip()  # reads every member and checks its CRC
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f"{name} does not read ({error})"
        if broken is not None:
            return f"{name} is damaged (member {broken})"
    return None


def latest_checkpoint(folder: Path, processes: int = 1) -> Path | None:
    """The checkpoint with the highest step in `folder` that was written completely by the `processes` processes
    that trained it, or None."""
    return next((path for path in checkpoint_folders(folder) if incomplete_reason(path, processes) is None), None)


def resumable_checkpoint(folder: Path, output_dir: Path, processes: int = 1) -> Path:
    """The newest checkpoint in `folder` that was written completely and reads back.

    Newer ones that do not are renamed `incomplete-checkpoint-<step>` (kept for a look, out of the Trainer's way) and
    a FasttuneWarning names each and why; when none is left, a FasttuneError says how to go on."""
    skipped = []
    for checkpoint in checkpoint_folders(folder):
        reason = incomplete_reason(checkpoint, processes) or unreadable_reason(checkpoint, processes)
        if reason is None:
            if skipped:
                warnings.warn(f"fasttune: resuming from {checkpoint.name}, the newest checkpoint that reads back; "
                              f"skipped {'; '.join(skipped)}.", FasttuneWarning, stacklevel=3)
            return checkpoint
        aside = _set_aside(checkpoint)
        skipped.append(f"{checkpoint.name}: {reason} (kept as {aside.name})")
    found = f" ({'; '.join(skipped)})" if skipped else ""
    raise FasttuneError(f"No complete checkpoint to resume from in {folder}{found} (output_dir={output_dir}). Pass "
                        f"the output_dir of the interrupted run, or delete {folder} and train again with "
                        "resume=False.")


def _set_aside(checkpoint: Path) -> Path:
    aside = checkpoint.with_name(SET_ASIDE + checkpoint.name)
    number = 1
    while aside.exists():
        number += 1
        aside = checkpoint.with_name(f"{SET_ASIDE}{number}-{checkpoint.name}")
    checkpoint.replace(aside)
    return aside
