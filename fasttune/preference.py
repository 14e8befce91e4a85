"""Preference training (DPO, ORPO, KTO) on pairs built from the task, or on the user's own pairs.

Built from the task: chosen = the gold completion; rejected = the model's own sampled answers that the task judges
wrong (distinct texts, several samples a prompt). A prompt the model always answered right gives no pair and is
counted. KTO gets the same judgement as labels: the gold completion is desirable, each wrong answer undesirable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import trl
from datasets import Dataset

from fasttune import backend, splits, training
from fasttune.backend import Model
from fasttune.errors import not_positive
from fasttune.rewards import Judged, SampledDataConfig, sample_judged
from fasttune.reading import MESSAGE, TEXT, Field, read_rows, same_text
from fasttune.task import Example, Messages, Task
from fasttune.training import TrainingData


@dataclass
class PreferenceConfig(SampledDataConfig):
    """Settings shared by DPO, ORPO and KTO: where the pairs come from and the preference strength."""

    learning_rate: float = 5e-5
    beta: float = 0.1
    """Preference strength (DPO/KTO: the KL temperature; ORPO: the weight of the odds-ratio term)."""
    pairs_file: str | None = None
    """JSONL of the user's pairs (fields prompt, chosen, rejected); default: pairs built from the task by sampling."""

    def problems(self) -> list[str]:
        return super().problems() + not_positive(self, ("beta",))


@dataclass
class DpoConfig(PreferenceConfig):
    """DPO: raise the chosen answer's likelihood over the rejected one's, relative to the model without adapter."""

    method: Literal["dpo"] = "dpo"


@dataclass
class OrpoConfig(PreferenceConfig):
    """ORPO: SFT on the chosen answer plus an odds-ratio penalty on the rejected one; no reference model."""

    method: Literal["orpo"] = "orpo"


@dataclass
class KtoConfig(PreferenceConfig):
    """KTO: single answers labelled desirable or undesirable, no pairing needed."""

    method: Literal["kto"] = "kto"
    desirable_weight: float = 1.0
    """Loss weight of desirable answers."""
    undesirable_weight: float = 1.0
    """Loss weight of undesirable answers (raise it when they outnumber the desirable ones)."""

    def problems(self) -> list[str]:
        return super().problems() + not_positive(self, ("desirable_weight", "undesirable_weight"))


@dataclass
class Pair:
    """A prompt with a preferred and a dispreferred assistant answer."""

    prompt: Messages
    chosen: str
    rejected: str


@dataclass
class Pairs:
    """Pairs built from the task and what the sampled answers looked like."""

    pairs: list[Pair]
    prompts: int
    samples: int
    wrong_samples: int
    always_right: list[str]
    """Ids of the prompts whose every sample the task judged right (they give no pair)."""

    def summary(self) -> dict:
        return {"source": "task", "prompts": self.prompts, "samples": self.samples,
                "wrong_samples": self.wrong_samples, "pairs": len(self.pairs),
                "always_right": len(self.always_right), "always_right_ids": self.always_right[:20]}


def build_pairs(task: Task, examples: list[Example], judged: list[list[Judged]]) -> Pairs:
    """Gold completion vs each distinct sampled answer scored below 1 by the task."""
    pairs, always_right, wrong = [], [], 0
    for example, samples in zip(examples, judged, strict=True):
        sample = task.format(example)
        rejected = [s.text for s in samples if s.score < 1.0]
        wrong += len(rejected)
        if not rejected:
            always_right.append(str(example["id"]))
        pairs += [Pair(sample.prompt, sample.completion, text) for text in dict.fromkeys(rejected)]
    return Pairs(pairs, len(examples), sum(map(len, judged)), wrong, always_right)


PAIR_FIELDS = {"prompt": Field((str, list), items=MESSAGE), "chosen": TEXT, "rejected": TEXT}
"""A pair's prompt is text (one user message) or chat messages."""


def read_pairs(path: str | Path) -> list[Pair]:
    """The user's pairs from a data file (JSONL, JSON, CSV, Parquet): prompt, chosen and rejected answers."""
    pairs = []
    for place, row in read_rows(path, PAIR_FIELDS):
        if same_text(row["chosen"]) == same_text(row["rejected"]):
            raise place.error("'chosen' and 'rejected' are the same text; a pair needs two answers "
                              f"(chosen={row['chosen']!r}). Fix or remove the row.")
        prompt = [{"role": "user", "content": row["prompt"]}] if isinstance(row["prompt"], str) else row["prompt"]
        pairs.append(Pair(prompt, row["chosen"], row["rejected"]))
    return pairs


def kto_rows(pairs: list[Pair]) -> list[dict]:
    """KTO rows from pairs: each distinct chosen answer desirable, each rejected one undesirable."""
    rows, seen = [], set()
    for pair in pairs:
        for text, label in ((pair.chosen, True), (pair.rejected, False)):
            key = (str(pair.prompt), text)
            if key not in seen:
                seen.add(key)
                rows.append({"prompt": pair.prompt, "completion": _assistant(text), "label": label})
    return rows


def prepare(model: Model, task: Task, config: PreferenceConfig) -> TrainingData:
    """Pairs from `config.pairs_file`, or built by sampling the model on the task's training prompts."""
    if config.pairs_file:
        pairs = read_pairs(config.pairs_file)[: config.limit]
        summary = {"source": str(config.pairs_file), "pairs": len(pairs)}
    else:
        examples = splits.training_examples(task, config.split, config.limit)
        samples = sample_judged(model, task, examples, config.sampling, config.seed)
        built = build_pairs(task, examples, samples)
        pairs, summary = built.pairs, built.summary()
    if config.method == "kto":
        rows = kto_rows(pairs)
        summary["desirable"] = sum(row["label"] for row in rows)
        summary["undesirable"] = len(rows) - summary["desirable"]
    else:
        rows = [{"prompt": p.prompt, "chosen": _assistant(p.chosen), "rejected": _assistant(p.rejected)}
                for p in pairs]
    return TrainingData(rows, summary=summary)


def _assistant(text: str) -> Messages:
    return [{"role": "assistant", "content": text}]


def make_trainer(model: Model, task: Task, prepared: TrainingData, config: PreferenceConfig, output_dir: Path,
                 callbacks: list):
    """TRL's DPO, ORPO or KTO trainer on conversational rows (the chat template closes each answer's turn)."""
    shared = {**training.trainer_arguments(config, output_dir, model), "beta": config.beta,
              "max_length": model.max_seq_length}
    if config.method == "dpo":
        args = trl.DPOConfig(**shared)
    elif config.method == "orpo":
        from trl.experimental.orpo import ORPOConfig

        args = ORPOConfig(**shared, remove_unused_columns=False)
    else:
        args = trl.KTOConfig(**shared, desirable_weight=config.desirable_weight,
                             undesirable_weight=config.undesirable_weight)
    return training.with_progress(backend.trainer_class(config.method)(
        model=model.model, processing_class=model.tokenizer, train_dataset=Dataset.from_list(prepared.rows),
        args=args, callbacks=callbacks))
