"""Split hygiene: deterministic hash splits, and the overlap check that keeps test rows out of training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

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


def training_examples(task: Task, split: str, limit: int | None) -> list[Example]:
    """The first `limit` examples of `split` for training: never test rows, and the first must parse back."""
    examples = task.load(split)[:limit]
    refuse_test_rows(task, split, examples)
    task.check(examples[0])
    return examples
