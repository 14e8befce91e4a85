"""Validation during training: the task's primary metric on a validation split every `eval_every` steps, the best
adapter kept (`keep="best"`), early stopping.

Scoring goes through the task's engine like `fasttune.evaluate`: log-likelihood of the choices for closed-label
tasks (batch by batch, no logits kept across batches), batched greedy generation of the first `eval_limit` rows
otherwise. Each evaluation's report is saved as `validation/step-<N>.json`. The best adapter's LoRA weights live in
`best/` and are copied into every checkpoint, so a resumed run keeps the best of the steps before it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import transformers
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from fasttune import backend, splits
from fasttune.backend import Model
from fasttune.configs import TrainConfig
from fasttune.engines import TransformersEngine
from fasttune.evaluation import EvalConfig, render_prompts, score_examples
from fasttune.logs import RunLog
from fasttune.report import Report
from fasttune.task import Task

BEST_WEIGHTS = "adapter_weights.safetensors"
CHECKPOINT_COPY = "fasttune-best"


class Validation(transformers.TrainerCallback):
    """Scores the model at every `eval_every`-th step and at the last, keeps the best weights, stops early."""

    def __init__(self, model: Model, task: Task, config: TrainConfig, folder: Path, run_log: RunLog):
        self.model, self.task, self.config, self.folder, self.run_log = model, task, config, folder, run_log
        self.examples = splits.validation_examples(task, config)
        self.split = splits.validation_source(task, config)
        if task.kind != "choices":
            self.examples = self.examples[: config.eval_limit]
        self.prompts: list[list[int]] | None = None
        """The examples' prompt ids, rendered at the first evaluation."""
        self.best: dict | None = None
        """{"step", "value"} of the best evaluation so far."""
        self.stopped_early_at: int | None = None
        self.since_best = 0

    @property
    def metric(self) -> str:
        return self.task.primary_metric

    def on_train_begin(self, args, state, control, **kwargs):
        resume_step = state.global_step if self.run_log.resume else 0
        for report in (self.folder / "validation").glob("step-*.json"):
            if int(report.stem.removeprefix("step-")) > resume_step:  # logged after the checkpoint
                report.unlink()
                report.with_name(f"{report.stem}.predictions.jsonl").unlink(missing_ok=True)
        shutil.rmtree(self.folder / "best", ignore_errors=True)
        saved = Path(args.output_dir) / f"checkpoint-{resume_step}" / CHECKPOINT_COPY
        if resume_step and saved.is_dir():
            shutil.copytree(saved, self.folder / "best")
        for record in self.run_log.history("validation"):  # the evaluations before the checkpoint
            self._count(record["step"], record["value"])

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step % self.config.eval_every and step != state.max_steps:
            return
        report = self.evaluate()
        self.run_log.record_validation(step, self.metric, report.metrics, report.seconds)
        if state.is_world_process_zero:
            report.save(self.folder / "validation", f"step-{step}")
        if self._count(step, report.metrics[self.metric]) and state.is_world_process_zero:
            self._save_best()
        if self.config.early_stopping is not None and self.since_best >= self.config.early_stopping:
            self.stopped_early_at = step
            control.should_training_stop = True

    def evaluate(self) -> Report:
        """The validation report of the model as it is now; it goes back to training mode after."""
        try:
            engine = TransformersEngine.for_model(self.model)
            if self.prompts is None:
                self.prompts = render_prompts(engine, self.task, self.examples)
            return score_examples(engine, self.task, self.examples,
                                  EvalConfig(split=self.split, batch_size=self.config.batch_size,
                                             batch_tokens=self.config.eval_batch_tokens), self.prompts)
        finally:
            backend.for_training(self.model)

    def _count(self, step: int, value: float) -> bool:
        """Record an evaluation; True when it is the best so far (ties keep the earlier step)."""
        if self.best is None or value > self.best["value"]:
            self.best = {"step": step, "value": value}
            self.since_best = 0
            return True
        self.since_best += 1
        return False

    def _save_best(self) -> None:
        folder = self.folder / "best"
        folder.mkdir(parents=True, exist_ok=True)
        weights = {name: tensor.detach().cpu().contiguous()
                   for name, tensor in get_peft_model_state_dict(self.model.model).items()}
        save_file(weights, folder / BEST_WEIGHTS)
        (folder / "best.json").write_text(json.dumps(self.best))

    def on_save(self, args, state, control, **kwargs):
        best = self.folder / "best"
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and best.is_dir() and checkpoint.is_dir():
            partial = checkpoint / f"{CHECKPOINT_COPY}.partial"
            shutil.copytree(best, partial, dirs_exist_ok=True)
            partial.rename(checkpoint / CHECKPOINT_COPY)

    def restore_best(self) -> None:
        """Load the best evaluation's LoRA weights back into the model (keep="best")."""
        weights = load_file(self.folder / "best" / BEST_WEIGHTS)
        device = next(self.model.model.parameters()).device
        with torch.no_grad():
            set_peft_model_state_dict(self.model.model, {name: t.to(device) for name, t in weights.items()})

    def finish(self) -> dict:
        """After training: restore the best weights where asked; the summary the card and the run report keep."""
        kept_step = None
        if self.config.keep == "best" and self.best is not None:
            self.restore_best()
            kept_step = self.best["step"]
        history = self.run_log.history("validation")
        kept_step = kept_step or (history[-1]["step"] if history else None)
        shutil.rmtree(self.folder / "best", ignore_errors=True)
        return {"split": self.split, "rows": len(self.examples), "metric": self.metric,
                "history": [[record["step"], record["value"]] for record in history], "keep": self.config.keep,
                "kept_step": kept_step,
                "kept_value": next((r["value"] for r in history if r["step"] == kept_step), None),
                "best_step": None if self.best is None else self.best["step"],
                "stopped_early_at": self.stopped_early_at,
                "report": None if kept_step is None else f"validation/step-{kept_step}.json"}
