"""Every hook fasttune sets in other libraries, each undone when the fasttune call that set it returns.

`library_scope()` wraps each public entry point (load, train, evaluate, export, merge_adapters): it snapshots the
state below on entry and restores it on exit, so calling fasttune leaves the host process (a notebook, a server)
as it found it. Inside a scope the code may change that state only through the functions here.

Checked on transformers 5.17.0, trl 1.15.0, peft 0.21.2, datasets 4.8.5, huggingface_hub 1.x, unsloth 2026.10.7,
llama-cpp-python 0.3.36.

What cannot be undone: importing Unsloth (backend.py, only on a CUDA machine with the `gpu` extra) patches
transformers, trl and peft for the rest of the process; it has no off switch. Offline mode needs no hook:
every `from_pretrained` passes `local_files_only=True`, and the one network call left, TRL's telemetry ping
(`BaseTrainer._send_telemetry` -> `huggingface_hub.utils.send_telemetry`), is off while
`huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY` is True inside the scope.
"""

from __future__ import annotations

import contextlib
import os
import warnings

# Environment variables fasttune sets inside a scope. UNSLOTH_DISABLE_STATISTICS: Unsloth's usage ping, read at
# model load (unsloth 2026.10.7). HF_HUB_DISABLE_TELEMETRY: read by libraries that import huggingface_hub during
# the scope. UNSLOTH_RETURN_LOGITS: read by Unsloth's patched forward at every call (see `return_logits`).
# MLFLOW_ALLOW_FILE_STORE: see `allow_mlflow_file_store`.
_SCOPED_ENV = ("UNSLOTH_DISABLE_STATISTICS", "HF_HUB_DISABLE_TELEMETRY", "UNSLOTH_RETURN_LOGITS",
               "MLFLOW_ALLOW_FILE_STORE")


@contextlib.contextmanager
def library_scope():
    """Offline, quiet library state for one fasttune call; everything is restored on exit. Usable as a decorator."""
    import datasets
    import huggingface_hub.constants as hub_constants
    import transformers
    import trl.trainer.utils as trl_utils

    env = {name: os.environ.get(name) for name in _SCOPED_ENV}
    telemetry = hub_constants.HF_HUB_DISABLE_TELEMETRY
    transformers_bars = transformers.utils.logging.is_progress_bar_enabled()
    datasets_bars_off = datasets.utils.are_progress_bars_disabled()
    chunked_log_probs = trl_utils._ChunkedLogProbFunction
    os.environ.setdefault("UNSLOTH_DISABLE_STATISTICS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # huggingface_hub reads the variable once at its import, which may have come first (hub 1.x constants.py).
    hub_constants.HF_HUB_DISABLE_TELEMETRY = True
    # fasttune shows its own rich progress (transformers.utils.logging._tqdm_active; datasets.utils.tqdm).
    transformers.utils.logging.disable_progress_bar()
    _set_datasets_progress_bars(False)
    try:
        yield
    finally:
        trl_utils._ChunkedLogProbFunction = chunked_log_probs
        if transformers_bars:
            transformers.utils.logging.enable_progress_bar()
        if not datasets_bars_off:
            _set_datasets_progress_bars(True)
        hub_constants.HF_HUB_DISABLE_TELEMETRY = telemetry
        for name, value in env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _set_datasets_progress_bars(on: bool) -> None:
    import datasets

    # datasets warns, and changes nothing, when HF_DATASETS_DISABLE_PROGRESS_BARS is set.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets.enable_progress_bars() if on else datasets.disable_progress_bars()


def allow_mlflow_file_store() -> None:
    """MLflow 3.x refuses a file store (`file:` tracking URI) unless MLFLOW_ALLOW_FILE_STORE=true, read when the
    store is opened (mlflow 3.18, mlflow/store/tracking/file_store.py). Restored by `library_scope`."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"


def return_logits(on: bool) -> None:
    """Unsloth's train/inference flag (unsloth 2026.10.7): its patched forward computes logits only when
    UNSLOTH_RETURN_LOGITS=1; its training loss skips them (and keeps padding-free batching and the fused loss).
    Restored by `library_scope`."""
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1" if on else "0"


def install_cpu_log_probs(stand_in: type) -> None:
    """Put `stand_in` where trl 1.15's fused LM head (`trl.trainer.utils.add_fused_lm_head`) looks for its Triton
    kernel `_ChunkedLogProbFunction`, which is None without Triton (a CPU). Restored by `library_scope`."""
    import trl.trainer.utils as trl_utils

    if trl_utils._ChunkedLogProbFunction is None:
        trl_utils._ChunkedLogProbFunction = stand_in
