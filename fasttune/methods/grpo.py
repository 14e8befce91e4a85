"""GRPO: sample a group of completions per prompt, reward each by the task's judgement, push toward the better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import trl
from datasets import Dataset

from fasttune import backend, splits
from fasttune.backend import Model
from fasttune.configs import TrainConfig, TrainingData
from fasttune.errors import not_positive
from fasttune.plan import Plan
from fasttune.sampling import judge
from fasttune.task import Example, Task
from fasttune.trainers import trainer_arguments, with_progress


def task_reward(task: Task, examples: list[Example]) -> Callable[..., list[float]]:
    """A TRL reward function: the task's score of each completion, for dataset rows holding the example's index."""

    def task_score(prompts, completions, example_index, **_) -> list[float]:
        return [judge(task, examples[index], _text(completion)).score
                for index, completion in zip(example_index, completions, strict=True)]

    return task_score


def format_reward(task: Task, examples: list[Example]) -> Callable[..., list[float]]:
    """A TRL reward function: 1 when the task parses an answer from the completion, else 0."""

    def answer_parses(prompts, completions, example_index, **_) -> list[float]:
        return [float(task.parse_answer(_text(completion), examples[index]) is not None)
                for index, completion in zip(example_index, completions, strict=True)]

    return answer_parses


def _text(completion) -> str:
    return completion[-1]["content"] if isinstance(completion, list) else completion


@dataclass
class GrpoConfig(TrainConfig):
    """GRPO: sample a group of completions per prompt, reward each by the task's judgement, push toward the better."""

    method: ClassVar[str] = "grpo"
    learning_rate: float = 5e-5
    num_generations: int = 4
    """Completions per prompt (the group); batch_size x gradient_accumulation must be a multiple of it."""
    beta: float = 0.0
    """KL penalty toward the model without the adapter (0: no reference model is kept)."""
    max_completion_length: int | None = None
    """Tokens per sampled completion (default: the task's generation length)."""
    temperature: float = 1.0
    """Sampling temperature of the groups."""
    format_reward: float = 0.0
    """Weight of an extra reward of 1 for completions whose answer parses (0: task score only)."""

    def problems(self) -> list[str]:
        problems = super().problems() + not_positive(self, ("max_completion_length", "temperature"))
        if self.num_generations < 2:
            problems.append(f"num_generations must be at least 2 to compare a group (num_generations="
                            f"{self.num_generations})")
        elif (self.batch_size * self.gradient_accumulation) % self.num_generations:
            problems.append(f"batch_size x gradient_accumulation must be a multiple of num_generations (batch_size="
                            f"{self.batch_size}, gradient_accumulation={self.gradient_accumulation}, "
                            f"num_generations={self.num_generations})")
        return problems


class Grpo:
    config = GrpoConfig

    def prepare(self, model: Model, task: Task, config: GrpoConfig) -> TrainingData:
        """The task's prompts, each row holding the index of its example for the reward."""
        examples = splits.training_examples(task, config)
        rows = [{"prompt": task.format(example).prompt, "example_index": index}
                for index, example in enumerate(examples)]
        return TrainingData(rows, summary={"prompts": len(rows)}, examples_used=examples)

    def make_trainer(self, model: Model, task: Task, prepared: TrainingData, config: GrpoConfig,
                     device_plan: Plan, output_dir: Path, callbacks: list):
        """TRL's GRPOTrainer with the task's score (plus the optional format reward) as reward."""
        rewards, weights = [task_reward(task, prepared.examples_used)], [1.0]
        if config.format_reward:
            rewards.append(format_reward(task, prepared.examples_used))
            weights.append(config.format_reward)
        args = trl.GRPOConfig(**trainer_arguments(config, output_dir, model, device_plan),
                              num_generations=config.num_generations, beta=config.beta,
                              max_completion_length=config.max_completion_length or task.max_new_tokens,
                              temperature=config.temperature, reward_weights=weights, remove_unused_columns=False)
        return with_progress(backend.trainer_class("grpo")(
            model=model.model, processing_class=model.tokenizer, reward_funcs=rewards,
            train_dataset=Dataset.from_list(prepared.rows), args=args, callbacks=callbacks))
