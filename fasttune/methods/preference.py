"""What DPO, ORPO and KTO share: pairs built from the task, or the user's own pairs, and the trainer around them.

Built from the task: chosen = the gold completion; rejected = the model's own sampled answers that the task judges
wrong (distinct texts, several samples a prompt). A prompt the model always answered right gives no pair and is
counted. KTO gets the same judgement as labels: the gold completion is desirable, each wrong answer undesirable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from fasttune import backend, data, splits
from fasttune.backend import Model
from fasttune.configs import TrainingData
from fasttune.errors import not_positive
from fasttune.plan import Plan
from fasttune.reading import MESSAGE, TEXT, Field, read_rows, same_text
from fasttune.sampling import Judged, SampledDataConfig, sample_judged
from fasttune.task import Example, Messages, Task
from fasttune.trainers import trainer_arguments, with_progress


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
class Pair:
    """A prompt with a preferred and a dispreferred assistant answer."""

    prompt: Messages
    chosen: str
    rejected: str
    id: str = ""
    """Where the pair came from (the task example's id, or the pairs file's row), for the counts of pairs left out."""


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
        pairs += [Pair(sample.prompt, sample.completion, text, f"{example['id']}/{number}")
                  for number, text in enumerate(dict.fromkeys(rejected))]
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
        pairs.append(Pair(prompt, row["chosen"], row["rejected"], f"{Path(path).name} {place.row_at}"))
    return pairs


class PreferenceMethod(ABC):
    """DPO, ORPO and KTO: the same data; each method's module gives its rows and its TRL arguments."""

    def prepare(self, model: Model, task: Task, config: PreferenceConfig) -> TrainingData:
        """Pairs from `config.pairs_file`, or built by sampling the model on the task's training prompts."""
        if config.pairs_file:
            pairs = read_pairs(config.pairs_file)[: config.limit]
            summary = {"source": str(config.pairs_file), "pairs": len(pairs)}
        else:
            examples = splits.training_examples(task, config)
            samples = sample_judged(model, task, examples, config.sampling, config.seed)
            built = build_pairs(task, examples, samples)
            pairs, summary = built.pairs, built.summary()
        pairs, too_long = fitting_pairs(pairs, model)
        rows = self.rows(pairs)
        return TrainingData(rows, skipped_too_long=too_long,
                            summary={**summary, "too_long": len(too_long), **self.row_summary(rows)})

    def rows(self, pairs: list[Pair]) -> list[dict]:
        """Conversational rows of the pairs (prompt, chosen, rejected)."""
        return [{"prompt": p.prompt, "chosen": assistant(p.chosen), "rejected": assistant(p.rejected)}
                for p in pairs]

    def row_summary(self, rows: list[dict]) -> dict:
        """Counts of the rows for the card, beside those of the pairs."""
        return {}

    @abstractmethod
    def arguments(self, shared: dict, config: PreferenceConfig):
        """The method's TRL arguments from the fields every preference method shares."""

    def make_trainer(self, model: Model, task: Task, prepared: TrainingData, config: PreferenceConfig,
                     device_plan: Plan, output_dir: Path, callbacks: list):
        """TRL's trainer of the method on conversational rows (the chat template closes each answer's turn)."""
        shared = {**trainer_arguments(config, output_dir, model, device_plan), "beta": config.beta,
                  "max_length": model.max_seq_length}
        return with_progress(backend.trainer_class(config.method)(
            model=model.model, processing_class=model.tokenizer, train_dataset=Dataset.from_list(prepared.rows),
            args=self.arguments(shared, config), callbacks=callbacks))


def fitting_pairs(pairs: list[Pair], model: Model) -> tuple[list[Pair], list[str]]:
    """(pairs whose prompt plus chosen and plus rejected answer fit `model.max_seq_length`, ids of those that do
    not): TRL would cut the others' answers off, training on text the pair never held."""
    end, kept, too_long = model.end_of_turn, [], []
    for pair in pairs:
        prompt = len(data.prompt_ids(model.tokenizer, pair.prompt, f"pair {pair.id}"))
        longest = max(len(data.completion_ids(model.tokenizer, text, end)) for text in (pair.chosen, pair.rejected))
        if prompt + longest <= model.max_seq_length:
            kept.append(pair)
        else:
            too_long.append(pair.id)
    return kept, too_long


def assistant(text: str) -> Messages:
    """An assistant turn holding `text`."""
    return [{"role": "assistant", "content": text}]
