"""What defines a training run besides its settings: the base model (and any adapter it continues), the task's name
and version, the training rows and the dtype. Recorded as `<output_dir>/inputs.json`; a resume must match it.

Models are identified by content, not by path, so a base model or a run folder that moved still matches: a hash of
config.json and of each safetensors file's size, header and first and last MiB of data (tensors of the same shape
but other values differ there; hashing every byte of a multi-GB model would cost more than the resume saves).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from fasttune import atomic
from fasttune.errors import FasttuneError, FasttuneWarning, read_json

INPUTS_NAME = "inputs.json"
SAMPLE_BYTES = 1 << 20


def folder_fingerprint(folder: Path) -> str:
    """A short hash of a model or adapter folder's weights and configuration (see the module doc)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.safetensors")):
        if path.name in ("fasttune.json", "tokenizer.json", "tokenizer_config.json"):
            continue  # the card and tokenizer files are rewritten without changing the weights
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with open(path, "rb") as file:
            if path.suffix == ".json":
                digest.update(file.read())
                continue
            header = int.from_bytes(file.read(8), "little")
            digest.update(file.read(min(header, 1 << 26)))
            digest.update(file.read(SAMPLE_BYTES))
            file.seek(max(file.tell(), path.stat().st_size - SAMPLE_BYTES))
            digest.update(file.read())
    return digest.hexdigest()[:16]


def rows_fingerprint(rows: list[dict]) -> str:
    """A short hash of the training rows (token ids or chat messages) in their order."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def run_inputs(model, task, rows: list[dict]) -> dict:
    """The inputs of a run of `task` on `model` (a fasttune Model) over training `rows`."""
    return {"base_model": {"fingerprint": folder_fingerprint(model.base_path), "path": str(model.base_path)},
            "adapter": None if model.adapter_dir is None else {"fingerprint": folder_fingerprint(model.adapter_dir),
                                                               "path": str(model.adapter_dir)},
            "task": {"name": task.name, "version": task.VERSION},
            "data": {"fingerprint": rows_fingerprint(rows), "rows": len(rows)},
            "dtype": str(model.model.dtype).removeprefix("torch."), "backend": model.backend}


def record_or_check(output_dir: Path, inputs: dict, resume: bool) -> None:
    """Write `inputs` for a new run; for a resumed one, refuse inputs other than those it started with."""
    path = output_dir / INPUTS_NAME
    if not resume:
        atomic.write_file(path, json.dumps(inputs, indent=2))
        return
    if not path.is_file():
        warnings.warn(f"fasttune: {output_dir} records no inputs ({INPUTS_NAME}: a run of an older fasttune), so "
                      "the resumed run cannot be checked against the base model, task and data it started with.",
                      FasttuneWarning, stacklevel=3)
        atomic.write_file(path, json.dumps(inputs, indent=2))
        return
    saved = read_json(path, f"Restore it, or delete {output_dir} and train again")
    changed = [f"{name}: {_describe(saved.get(name))} -> {_describe(inputs[name])}" for name in inputs
               if _identity(saved.get(name)) != _identity(inputs[name])]
    if changed:
        raise FasttuneError(f"Resuming {output_dir} with other inputs than the interrupted run ({'; '.join(changed)}). "
                            "Resume with the same base model, task, data and dtype, or train into a new output_dir.")


def _identity(value):
    """What must match: fingerprints and names, not the paths things were found at."""
    return {key: item for key, item in value.items() if key != "path"} if isinstance(value, dict) else value


def _describe(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    return repr(value)
