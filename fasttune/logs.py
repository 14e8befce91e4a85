"""A run's logs: `log.jsonl` in the run folder (always), and the experiment trackers named in `report_to`.

Every logged step writes one "train" line (loss, learning rate, gradient norm, tokens/s, padding share and peak
memory: the process's peak so far); every validation writes one "validation" line. Trackers get the
same values: TensorBoard event files under `tensorboard/`, W&B in offline mode under `wandb/`, an MLflow file store
under `mlruns/`. On resume from step S the lines after S are dropped before appending, and TensorBoard is told to
purge its events after S, so no step is logged twice.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import time
import warnings
from pathlib import Path

import torch
import transformers

from fasttune import hooks
from fasttune.configs import TrainConfig, config_dict
from fasttune.errors import FasttuneError, FasttuneWarning
from fasttune.memory import GIB

LOG_NAME = "log.jsonl"
TRAIN_KEYS = ("loss", "learning_rate", "grad_norm", "tokens_per_second", "padding_share", "peak_memory_gib")


def read_log(path: Path) -> list[dict]:
    """The lines of a run's log.jsonl; a last line cut off by a crash is left out, with a warning."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise FasttuneError(f"{path} line {number} is not JSON ({error}). Delete the line, or the file "
                                    "to start the log over.") from error
            warnings.warn(f"fasttune: left out the last line of {path} (line {number}), cut off before its end.",
                          FasttuneWarning, stacklevel=2)
    return records


class TensorBoardSink:
    """Scalars in TensorBoard event files (torch's SummaryWriter over the `tensorboard` package)."""

    def __init__(self, folder: Path, config: TrainConfig, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        if resume_step is None:  # a fresh run in a used folder: the earlier run's events would mix in
            shutil.rmtree(folder / "tensorboard", ignore_errors=True)
        # purge_step makes TensorBoard's readers drop events after the checkpoint that an earlier session logged
        self.writer = SummaryWriter(str(folder / "tensorboard"),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run in offline mode (`wandb sync` uploads it later); a resumed run continues the same W&B run."""

    def __init__(self, folder: Path, config: TrainConfig, resume_step: int | None):
        wandb = _optional("wandb")
        id_file = folder / "wandb-run-id"
        run_id = id_file.read_text().strip() if resume_step is not None and id_file.is_file() else wandb.util.generate_id()
        id_file.write_text(run_id)
        self.run = wandb.init(mode="offline", dir=str(folder), project="fasttune", name=folder.name, id=run_id,
                              resume="allow", config=config_dict(config))

    def write(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # stops W&B's service process and takes back the WANDB_SERVICE variable it set


class MlflowSink:
    """An MLflow run in a file store under the run folder, through a client (no global tracking URI is set)."""

    def __init__(self, folder: Path, config: TrainConfig, resume_step: int | None):
        mlflow = _optional("mlflow")
        hooks.allow_mlflow_file_store()
        self.client = mlflow.MlflowClient(tracking_uri=(folder / "mlruns").resolve().as_uri())
        id_file = folder / "mlflow-run-id"
        if resume_step is not None and id_file.is_file():
            self.run_id = id_file.read_text().strip()
        else:
            experiment = self.client.get_experiment_by_name("fasttune")
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment("fasttune")
            self.run_id = self.client.create_run(experiment_id, run_name=folder.name).info.run_id
            for name, value in _flat(config_dict(config)).items():
                self.client.log_param(self.run_id, name, value)
            id_file.write_text(self.run_id)

    def write(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, step) for name, value in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


SINKS = {"tensorboard": TensorBoardSink, "wandb": WandbSink, "mlflow": MlflowSink}
"""The experiment trackers `report_to` can name."""


def _optional(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise FasttuneError(f"report_to names {module}, which is not installed (report_to=['{module}']). "
                            f"Install it (`pip install {module}`), or leave it out of report_to.") from error


def _flat(values: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = str(value)
    return flat


class RunLog(transformers.TrainerCallback):
    """Writes a run's log.jsonl and trackers; counts the tokens and padding of the training forwards itself, so the
    numbers mean the same for every method (rows padded to the longest, padding-free rows, preference pairs)."""

    def __init__(self, folder: Path, config: TrainConfig, resume: bool):
        self.folder, self.config, self.resume = folder, config, resume
        self.path = folder / LOG_NAME
        self.records: list[dict] = []
        self.sinks: list = []
        self.latest_validation: dict[str, float] = {}
        self.validation_seconds = 0.0
        self._hook = None
        self._writer = False
        for name in config.report_to:  # a missing tracker fails before any training
            if name != "tensorboard":
                _optional(name)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._writer = state.is_world_process_zero
        resume_step = state.global_step if self.resume else None
        self.records = [r for r in read_log(self.path) if resume_step is not None and r["step"] <= resume_step]
        for record in self.records:
            if record["kind"] == "validation":
                self.latest_validation = {f"validation/{record['metric']}": record["value"]}
        if self._writer:
            self.path.write_text("".join(json.dumps(record) + "\n" for record in self.records))
            self.sinks = [SINKS[name](self.folder, self.config, resume_step) for name in self.config.report_to]
        self._real, self._total = torch.zeros((), dtype=torch.long), torch.zeros((), dtype=torch.long)
        self._tokens_logged = state.num_input_tokens_seen
        self._window_start = time.perf_counter()
        self._started = self._window_start
        if model is not None:
            self._hook = model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)

    def _count_tokens(self, module, args, kwargs) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return  # scoring, generation and reference-model forwards are not training tokens
        mask = next((value for name, value in kwargs.items() if name.endswith("attention_mask")
                     and isinstance(value, torch.Tensor) and value.dim() == 2), None)
        ids = kwargs.get("input_ids", args[0] if args and isinstance(args[0], torch.Tensor) else None)
        if mask is not None:  # summed on the device: no sync until the next log line
            self._real = self._real.to(mask.device) + mask.sum()
            self._total = self._total.to(mask.device) + mask.numel()
        elif ids is not None:  # padding-free rows
            self._real = self._real.to(ids.device) + ids.numel()
            self._total = self._total.to(ids.device) + ids.numel()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        now = time.perf_counter()
        seconds = max(now - self._window_start - self.validation_seconds, 1e-9)
        real, total = int(self._real), int(self._total)
        seen = int(state.num_input_tokens_seen or logs.get("num_tokens") or 0)
        if total == 0:  # no attention mask reached the model (GRPO's batches): the trainer's own count
            real = seen - self._tokens_logged
        record = {"kind": "train", "step": state.global_step, "epoch": logs.get("epoch"),
                  "loss": logs["loss"], "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                  "tokens_per_second": real / seconds if real else None,
                  "padding_share": 1 - real / total if total else None,
                  "peak_memory_gib": peak_memory_bytes() / GIB, "seconds": now - self._started}
        self._real, self._total = torch.zeros_like(self._real), torch.zeros_like(self._total)
        self._tokens_logged, self._window_start, self.validation_seconds = seen, now, 0.0
        self._write(record, {f"train/{key}": record[key] for key in TRAIN_KEYS})
        logs.update({"tokens_per_second": record["tokens_per_second"], **self.latest_validation})  # for the bar

    def record_validation(self, step: int, metric: str, metrics: dict[str, float], seconds: float) -> None:
        """Log one validation of the task's metrics (`metric` is the primary one) at `step`."""
        self.validation_seconds += seconds
        self.latest_validation = {f"validation/{metric}": metrics[metric]}
        self._write({"kind": "validation", "step": step, "metric": metric, "value": metrics[metric],
                     "metrics": metrics, "seconds": seconds},
                    {f"validation/{name}": value for name, value in metrics.items()})

    def _write(self, record: dict, scalars: dict[str, float | None]) -> None:
        self.records.append(record)
        if not self._writer:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        finite = {name: float(value) for name, value in scalars.items() if value is not None and math.isfinite(value)}
        for sink in self.sinks:
            sink.write(record["step"], finite)

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Remove the token counter and close the trackers (also after a failed run)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for sink in self.sinks:
            sink.close()
        self.sinks = []

    def history(self, kind: str) -> list[dict]:
        return [record for record in self.records if record["kind"] == kind]


def peak_memory_bytes() -> int:
    """The process's peak memory so far (fasttune resets no counter): allocated by torch on the GPU (since the
    caller's last `torch.cuda.reset_peak_memory_stats()`), else resident memory."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
