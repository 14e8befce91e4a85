"""Supervised fine-tuning (sft): the task's prompts and gold completions, loss on the completion tokens only."""

from __future__ import annotations

from pathlib import Path

from fasttune import data, splits
from fasttune.backend import Model
from fasttune.configs import TrainConfig, TrainingData
from fasttune.plan import Plan
from fasttune.task import Task
from fasttune.trainers import sft_trainer


class Sft:
    config = TrainConfig

    def prepare(self, model: Model, task: Task, config: TrainConfig) -> TrainingData:
        """SFT rows: the task's prompts and gold completions, tokenized with completion-only masks."""
        examples = splits.training_examples(task, config)
        encoded = data.encode_for_training(task, examples, model.tokenizer, model.end_of_turn, model.max_seq_length)
        return TrainingData(encoded.rows, encoded.ids, encoded.too_long)

    def make_trainer(self, model: Model, task: Task, prepared: TrainingData, config: TrainConfig,
                     device_plan: Plan, output_dir: Path, callbacks: list):
        """TRL's SFTTrainer on the tokenized rows, loss on the completion tokens only."""
        return sft_trainer(model, prepared.rows, config, output_dir, callbacks, device_plan)
