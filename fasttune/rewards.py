"""The task as judge: per-sample scores of model outputs, sampling k answers per prompt, and GRPO on those rewards.

A sampled completion scores what the task's per-example metric gives its parsed answer (`Task.parse`, then
`score`, primary metric); an answer that does not parse scores as wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import trl
from datasets import Dataset

from fasttune import backend, data, splits, training
from fasttune.backend import Model
from fasttune.errors import not_positive
from fasttune.evaluation import generate
from fasttune.task import Example, Messages, Task
from fasttune.training import TrainConfig, TrainingData


@dataclass
class SamplingConfig:
    """How the model's own answers are sampled for preference pairs and rejection sampling."""

    samples: int = 4
    """Completions sampled per training prompt."""
    temperature: float = 1.0
    """Sampling temperature (0: greedy, which gives one distinct answer)."""
    max_new_tokens: int | None = None
    """Length of a sampled completion (default: the task's generation length)."""
    batch_size: int = 8
    """Prompts per generation call (each with `samples` completions)."""
    instruction: str | None = None
    """Text added to the prompt's last message while sampling only, e.g. "Think step by step, then answer."."""

    def problems(self) -> list[str]:
        """Problems with these settings, named as fields of the enclosing config's `sampling`."""
        problems = not_positive(self, ("samples", "max_new_tokens", "batch_size"), prefix="sampling.")
        if self.temperature < 0:
            problems.append(f"sampling.temperature must be >= 0 (sampling.temperature={self.temperature})")
        return problems


@dataclass
class SampledDataConfig(TrainConfig):
    """A method config whose training data comes from the model's own sampled answers (preference, rft)."""

    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the model's own answers are sampled."""

    def __post_init__(self):
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig(**self.sampling)
        super().__post_init__()

    def problems(self) -> list[str]:
        return super().problems() + self.sampling.problems()


@dataclass
class Judged:
    """One sampled completion and the task's judgement of it."""

    text: str
    answer: object
    score: float


def judge(task: Task, example: Example, text: str) -> Judged:
    """The task's per-example primary score of a model output (0 for the metric when nothing parses)."""
    answer = task.parse_answer(text, example)
    return Judged(text, answer, task.score(answer, task.answer(example))[task.primary_metric])


def sample_judged(model: Model, task: Task, examples: list[Example], config: SamplingConfig,
                  seed: int) -> list[list[Judged]]:
    """`config.samples` sampled completions of each example's prompt, each judged by the task; the same seed
    gives the same samples."""
    torch.manual_seed(seed)
    prompts = [data.prompt_ids(model.tokenizer, _with_instruction(task.format(example).prompt, config.instruction),
                               data.where_example(task, example)) for example in examples]
    backend.for_inference(model)
    with torch.inference_mode():
        samples = generate(model, prompts, max_new_tokens=config.max_new_tokens or task.max_new_tokens,
                           batch_size=config.batch_size, num_samples=config.samples, temperature=config.temperature,
                           description=f"sampling {task.name}")
    return [[judge(task, example, completion.text) for completion in completions]
            for example, completions in zip(examples, samples, strict=True)]


def _with_instruction(prompt: Messages, instruction: str | None) -> Messages:
    if not instruction:
        return prompt
    last = prompt[-1]
    return [*prompt[:-1], {**last, "content": f"{last['content']}\n{instruction}"}]


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

    method: Literal["grpo"] = "grpo"
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


def prepare(model: Model, task: Task, config: GrpoConfig) -> TrainingData:
    """The task's prompts, each row holding the index of its example for the reward."""
    examples = splits.training_examples(task, config.split, config.limit)
    rows = [{"prompt": task.format(example).prompt, "example_index": index} for index, example in enumerate(examples)]
    return TrainingData(rows, summary={"prompts": len(rows)}, examples_used=examples)


def make_trainer(model: Model, task: Task, prepared: TrainingData, config: GrpoConfig, output_dir: Path,
                 callbacks: list):
    """TRL's GRPOTrainer with the task's score (plus the optional format reward) as reward."""
    rewards, weights = [task_reward(task, prepared.examples_used)], [1.0]
    if config.format_reward:
        rewards.append(format_reward(task, prepared.examples_used))
        weights.append(config.format_reward)
    args = trl.GRPOConfig(**training.trainer_arguments(config, output_dir, model), num_generations=config.num_generations, beta=config.beta,
                          max_completion_length=config.max_completion_length or task.max_new_tokens,
                          temperature=config.temperature, reward_weights=weights, remove_unused_columns=False)
    return training.with_progress(backend.trainer_class("grpo")(
        model=model.model, processing_class=model.tokenizer, reward_funcs=rewards,
        train_dataset=Dataset.from_list(prepared.rows), args=args, callbacks=callbacks))
