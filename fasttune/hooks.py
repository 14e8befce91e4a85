"""Every hook fasttune sets in other libraries, each undone when the fasttune call that set it returns.

`library_scope()` wraps each public entry point (load, train, evaluate, export, merge_adapters): it snapshots the
state below on entry and restores it on exit, so calling fasttune leaves the host process (a notebook, a server)
as it found it. Inside a scope the code may change that state only through the functions here.

Checked on transformers 5.17.0, trl 1.15.0, peft 0.21.2, datasets 4.8.5, huggingface_hub 1.x, unsloth 2026.10.7,
llama-cpp-python 0.3.36, accelerate 1.16.0, torch 2.11-2.13. The two data-parallel hooks change only the trainer
instance they are given.

What cannot be undone: importing Unsloth (backend.py, only on a CUDA machine with the `gpu` extra) patches
transformers, trl and peft for the rest of the process; it has no off switch. Offline mode needs no hook:
every `from_pretrained` passes `local_files_only=True`, and the one network call left, TRL's telemetry ping
(`BaseTrainer._send_telemetry` -> `huggingface_hub.utils.send_telemetry`), is off while
`huggingface_hub.constants.HF_HUB_DISABLE_TELEMETRY` is True inside the scope.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import os
import sys
import warnings

# Environment variables fasttune sets inside a scope. UNSLOTH_DISABLE_STATISTICS: Unsloth's usage ping, read at
# model load (unsloth 2026.10.7). HF_HUB_DISABLE_TELEMETRY: read by libraries that import huggingface_hub during
# the scope. UNSLOTH_RETURN_LOGITS: read by Unsloth's patched forward at every call (see `return_logits`).
# MLFLOW_ALLOW_FILE_STORE: see `allow_mlflow_file_store`.
_SCOPED_ENV = ("UNSLOTH_DISABLE_STATISTICS", "HF_HUB_DISABLE_TELEMETRY", "UNSLOTH_RETURN_LOGITS",
               "MLFLOW_ALLOW_FILE_STORE")


@contextlib.contextmanager
def restored_environment(names):
    """Put the environment variables `names` back as they were (set or unset) when the scope ends."""
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def gradio_offline():
    """Gradio 6 with its analytics off for the scope: GRADIO_ANALYTICS_ENABLED is read at every analytics call (not
    only by Blocks(analytics_enabled=...)), and gradio sets HF_HUB_DISABLE_TELEMETRY itself whenever analytics are
    off; both are restored when the scope ends."""
    with restored_environment(("GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY")):
        os.environ.update({"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"})
        yield


@contextlib.contextmanager
def library_scope():
    """Offline, quiet library state for one fasttune call; everything is restored on exit. Usable as a decorator."""
    import datasets
    import huggingface_hub.constants as hub_constants
    import transformers
    import trl.trainer.utils as trl_utils

    telemetry = hub_constants.HF_HUB_DISABLE_TELEMETRY
    transformers_bars = transformers.utils.logging.is_progress_bar_enabled()
    datasets_bars_off = datasets.utils.are_progress_bars_disabled()
    chunked_log_probs = trl_utils._ChunkedLogProbFunction
    with restored_environment(_SCOPED_ENV):
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


def logging_window(trainer) -> tuple[float, int]:
    """(loss summed since the last logged step, that step) of a transformers 5.17 Trainer inside `train()`: its
    `_tr_loss` (a device tensor, drained at each log) and `_globalstep_last_logged`. A checkpoint saved between
    logging steps records them so that the resumed run logs the same mean loss as an uninterrupted one."""
    return float(trainer._tr_loss.item()), int(trainer._globalstep_last_logged)


def restore_logging_window(trainer, loss: float, step: int) -> None:
    """Put back a `logging_window` at the start of a resumed `train()` (transformers 5.17 sets both at the start of
    its training loop, before `on_train_begin`); the tensor is changed in place, as the loop holds it."""
    trainer._tr_loss += loss
    trainer._globalstep_last_logged = step


def sample_as_one_device(trainer, world_size: int) -> None:
    """Make a data-parallel trainer's length-grouped sampler group rows as one device would, so that each optimizer
    step takes the same rows as on one device.

    transformers 5.17's `Trainer._get_train_sampler` builds `LengthGroupedSampler(train_batch_size x
    gradient_accumulation_steps)`, sized by the rows one rank takes per step; its mega-batches (min(50, rows / (4 x
    that size)) steps' rows, each sorted by length) and so the order then change with the number of ranks. Sized
    to the whole step, the order is one device's, and accelerate's `BatchSamplerShard` deals consecutive slices of
    it to the ranks, so each step takes the rows one device's step takes."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    build = trainer._get_train_sampler

    def global_sampler(*args, **kwargs):
        sampler = build(*args, **kwargs)
        if isinstance(sampler, LengthGroupedSampler):
            sampler.batch_size *= world_size
        return sampler

    trainer._get_train_sampler = global_sampler


def resume_on_cpus(trainer) -> None:
    """Let a data-parallel trainer on CPUs resume from a checkpoint.

    accelerate 1.16 gives each multi-CPU rank the device `cpu:0` (its local index modulo torch.cpu.device_count(),
    which is 1), and transformers 5.17's `Trainer._load_optimizer_and_scheduler` loads the optimizer state with
    map_location=args.device in distributed runs; torch has no `cpu:0` location, so every resume failed ("don't know
    how to restore data location of torch.storage.UntypedStorage (tagged with cpu:0)"). CPU tensors carry no index,
    so this trainer's arguments (the cached `TrainingArguments._setup_devices`) are given the plain CPU device."""
    import torch

    if trainer.args.device.type == "cpu":
        trainer.args.__dict__["_setup_devices"] = torch.device("cpu")


UNSLOTH_VARLEN_VERSIONS = ("2026.10.7",)
"""Unsloth versions whose attention dispatch (`unsloth.utils.attention_dispatch`) `unsloth_varlen_attention` knows."""


def unsloth_varlen_kernel():
    """torch's variable-length attention in the form Unsloth's dispatch calls it, or None where it cannot run.

    Unsloth 2026.10.7 routes packed (padding-free) SDPA batches through `torch.nn.attention.varlen.varlen_attn`
    only when it takes `enable_gqa` (torch 2.12+); torch 2.11, the GPU image's, has `window_size` (causal is
    (-1, 0)) but no `enable_gqa`, and Unsloth then runs one SDPA call per run of equal lengths, or a dense
    block-diagonal mask. Without `enable_gqa` the kernel here repeats the key/value heads (query head h reads kv
    head h // groups, as Unsloth's own expansion does). None without CUDA, without Unsloth's known version, or
    without a `varlen_attn` that takes `window_size`."""
    import torch

    if not torch.cuda.is_available() or "unsloth" not in sys.modules:
        return None
    if importlib.metadata.version("unsloth") not in UNSLOTH_VARLEN_VERSIONS:
        return None
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    parameters = inspect.signature(varlen_attn).parameters
    if "window_size" not in parameters:
        return None
    if "enable_gqa" in parameters:
        return varlen_attn
    return _with_repeated_kv_heads(varlen_attn)


def _with_repeated_kv_heads(varlen_attn):
    def attend(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1),
               enable_gqa=False):
        if enable_gqa and key.shape[1] != query.shape[1]:  # (tokens, heads, head_dim)
            groups = query.shape[1] // key.shape[1]
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        return varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale, window_size=window_size)

    return attend


@contextlib.contextmanager
def unsloth_varlen_attention():
    """Inside the block, Unsloth's packed SDPA batches run `unsloth_varlen_kernel()`; restored on exit. Does
    nothing where Unsloth already has a varlen kernel or none can run here."""
    kernel = unsloth_varlen_kernel()
    dispatch = sys.modules.get("unsloth.utils.attention_dispatch")
    if kernel is None or dispatch is None or dispatch._TORCH_VARLEN_ATTN is not None:
        yield
        return
    dispatch._TORCH_VARLEN_ATTN = kernel
    try:
        yield
    finally:
        dispatch._TORCH_VARLEN_ATTN = None
