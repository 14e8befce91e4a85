"""Split hygiene: deterministic hash splits, and the overlap check that keeps test rows out of training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fasttune.configs import TrainConfig
from fasttune.errors import FasttuneError
from fasttune.metrics import normalize_answer
from fasttune.task import Example, Task


def bucket(text: str, buckets: int = 100) -> int:
    """A stable bucket in [0, buckets) for a text (its normalised form), the same on every machine and run."""
    return int(hashlib.sha256(normalize_answer(text).encode()).hexdigest(), 16) % buckets


@dataclass
class Overlap:
    """Rows of one split whose normalised input text also occurs in another split."""

    split: str
    other: str
    ids: list
    checked: int

    def __str__(self) -> str:
        shown = ", ".join(map(str, self.ids[:5])) + (" ..." if len(self.ids) > 5 else "")
        return (f"{len(self.ids)} of {self.checked} '{self.split}' rows repeat a '{self.other}' row"
                + (f" (ids: {shown})" if self.ids else ""))


def overlap(task: Task, examples: list[Example], split: str, other: str) -> Overlap:
    """Which of `examples` (from `split`) have the same normalised `task.text` as a row of split `other`."""
    seen = {normalize_answer(task.text(example)) for example in task.load(other)}
    ids = [example["id"] for example in examples if normalize_answer(task.text(example)) in seen]
    return Overlap(split, other, ids, len(examples))


def refuse_test_rows(task: Task, split: str, examples: list[Example]) -> None:
    """Raise when `split` is the task's test split or when any of `examples` repeats a test row."""
    test = task.test_split
    if test is None:
        return
    if split == test:
        raise FasttuneError(f"Refusing to train task '{task.name}' on its test split (split={split!r}). "
                            f"Train on one of: {', '.join(s for s in task.splits if s != test) or 'none'}.")
    found = overlap(task, examples, split, test)
    if found.ids:
        raise FasttuneError(f"Refusing to train task '{task.name}': {found} (split={split!r}). Remove those rows "
                            "from the training data.")


def training_examples(task: Task, config: TrainConfig) -> list[Example]:
    """The first `config.limit` examples of the training split: never test rows, never the rows held out for
    validation during training, and the first must parse back."""
    examples = task.load(config.split)
    if config.eval_every is not None and validation_source(task, config) == config.split:
        examples = hold_out(task, examples, config.validation_size, config.seed)[0]
    examples = examples[: config.limit]
    refuse_test_rows(task, config.split, examples)
    task.check(examples[0])
    return examples


def validation_source(task: Task, config: TrainConfig) -> str:
    """The split validation rows come from: `config.validation_split`, the task's "validation" split, or (rows
    held out of it) the training split."""
    if config.validation_split is not None:
        if config.validation_split == task.test_split:
            raise FasttuneError(f"Refusing to validate task '{task.name}' on its test split during training "
                                f"(validation_split={config.validation_split!r}): picking the best step on it "
                                "would make the test score optimistic. Leave validation_split unset to hold out "
                                "training rows.")
        task.load(config.validation_split)  # an unknown split fails here, before the model is touched
        return config.validation_split
    if "validation" in task.splits and task.test_split != "validation" and config.split != "validation":
        return "validation"
    return config.split


def validation_examples(task: Task, config: TrainConfig) -> list[Example]:
    """The rows scored during training: the validation split, or `validation_size` rows held out of the training
    split by a seeded hash of their text. Rows whose text also occurs in the training rows are refused."""
    source = validation_source(task, config)
    if source == config.split:
        train, held = hold_out(task, task.load(config.split), config.validation_size, config.seed)
        if not train:
            raise FasttuneError(f"Holding out validation_size={config.validation_size} rows leaves no training rows "
                                f"in split '{config.split}' of task '{task.name}'. Lower validation_size.")
        return held
    held = task.load(source)
    found = overlap(task, held, source, config.split)
    if found.ids:
        raise FasttuneError(f"Refusing to validate task '{task.name}' on rows it trains on: {found} "
                            f"(validation_split={source!r}). Remove them, or leave validation_split unset to hold "
                            "out training rows.")
    return held


def hold_out(task: Task, examples: list[Example], size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Split `examples` into (kept, held out): whole groups of rows with the same normalised text, in the order of a
    seeded hash of that text, are held out until `size` rows are; so no held-out text occurs among the kept rows."""
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(normalize_answer(task.text(example)), []).append(index)
    order = sorted(groups, key=lambda text: hashlib.sha256(f"{seed}\0{text}".encode()).digest())
    held: set[int] = set()
    for text in order:
        if len(held) >= size:
            break
        held.update(groups[text])
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])
