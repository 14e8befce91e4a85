"""Rejection-sampling fine-tuning (rft): sample k answers per training prompt, keep those the task scores at or above
a threshold, then SFT on the kept ones. With `sampling.instruction` (e.g. "Think step by step, then answer.") the kept
answers carry their reasoning, and SFT teaches it on the task's own prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fasttune import splits
from fasttune.backend import Model
from fasttune.configs import TrainingData
from fasttune.data import encode_samples
from fasttune.methods.sft import Sft
from fasttune.sampling import Judged, SampledDataConfig, sample_judged
from fasttune.task import Example, Sample, Task


@dataclass
class RftConfig(SampledDataConfig):
    """Settings of rejection-sampling fine-tuning."""

    method: ClassVar[str] = "rft"
    threshold: float = 1.0
    """Keep a sampled answer when the task's per-example primary score is at least this (e.g. 0.9 for token F1)."""


@dataclass
class Kept:
    """The sampled answers chosen for SFT, and the counts behind the choice."""

    samples: list[tuple[Example, Sample]]
    """(example, task prompt + kept answer)."""
    prompts: int
    sampled: int
    none_kept: list[str]
    """Ids of the prompts with no answer at or above the threshold."""

    def summary(self) -> dict:
        return {"prompts": self.prompts, "sampled": self.sampled, "kept": len(self.samples),
                "prompts_with_none_kept": len(self.none_kept), "none_kept_ids": self.none_kept[:20]}


def select_answers(task: Task, examples: list[Example], judged: list[list[Judged]], threshold: float) -> Kept:
    """Each example's distinct sampled answers scoring at least `threshold`, paired with the task's prompt."""
    kept, none_kept = [], []
    for example, samples in zip(examples, judged, strict=True):
        good = list(dict.fromkeys(s.text for s in samples if s.score >= threshold and s.text.strip()))
        if not good:
            none_kept.append(str(example["id"]))
        kept += [(example, Sample(task.format(example).prompt, text)) for text in good]
    return Kept(kept, len(examples), sum(map(len, judged)), none_kept)


class Rft(Sft):
    """The kept answers train by SFT (Sft's make_trainer)."""

    config = RftConfig

    def prepare(self, model: Model, task: Task, config: RftConfig) -> TrainingData:
        """Sample, judge and keep; the kept answers become completion-only SFT rows."""
        examples = splits.training_examples(task, config)
        samples = sample_judged(model, task, examples, config.sampling, config.seed)
        kept = select_answers(task, examples, samples, config.threshold)
        encoded = encode_samples(task, kept.samples, model.tokenizer, model.end_of_turn, model.max_seq_length)
        return TrainingData(encoded.rows, encoded.ids, encoded.too_long, kept.summary())
