"""The task as judge: per-sample scores of model outputs, and sampling k judged answers per prompt (the data of
DPO, ORPO, KTO and RFT; GRPO's rewards).

A sampled completion scores what the task's per-example metric gives its parsed answer (`Task.parse_answer`, then
`score`, primary metric); an answer that does not parse scores as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fasttune import data
from fasttune.backend import Model
from fasttune.configs import TrainConfig
from fasttune.errors import not_positive
from fasttune.engines import engine_for
from fasttune.task import Example, Messages, Task


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
    engine = engine_for(model)
    prompts = [engine.prompt_ids(_with_instruction(task.format(example).prompt, config.instruction),
                                 data.where_example(task, example)) for example in examples]
    samples = engine.sample_answers(prompts, samples=config.samples, temperature=config.temperature, seed=seed,
                                    max_new_tokens=config.max_new_tokens or task.max_new_tokens,
                                    batch_size=config.batch_size, description=f"sampling {task.name}")
    return [[judge(task, example, completion.text) for completion in completions]
            for example, completions in zip(examples, samples, strict=True)]


def _with_instruction(prompt: Messages, instruction: str | None) -> Messages:
    if not instruction:
        return prompt
    last = prompt[-1]
    return [*prompt[:-1], {**last, "content": f"{last['content']}\n{instruction}"}]
