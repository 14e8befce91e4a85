"""The interface every training method implements (see fasttune.methods for the registry)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

import transformers

from fasttune.backend import Model
from fasttune.configs import TrainConfig, TrainingData
from fasttune.plan import Plan
from fasttune.task import Task


class Method(Protocol):
    """A training method: its config class, the rows it trains on, and the TRL trainer that trains on them."""

    config: ClassVar[type[TrainConfig]]
    """The method's config class; `config.method` is the method's key in METHODS."""

    def prepare(self, model: Model, task: Task, config: TrainConfig) -> TrainingData:
        """The training rows, built from the task (or the config's own file) before the adapter is attached."""
        ...

    def make_trainer(self, model: Model, task: Task, prepared: TrainingData, config: TrainConfig,
                     device_plan: Plan, output_dir: Path,
                     callbacks: list[transformers.TrainerCallback]) -> transformers.Trainer:
        """The trainer over `prepared` for a model whose LoRA weights are attached as `device_plan` says."""
        ...
