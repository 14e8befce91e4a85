"""Base class of the tasks over a user's own conversations (tasks `chat` and `instruction`).

Each example is a conversation; training puts the loss on its assistant turns (all, or the last: `train_on`),
evaluation asks for its last reply. Scoring follows the options: with `labels`, the log-likelihood of each label
(accuracy, recall per label, the answer distribution); otherwise the generated reply against the reference by the
named metrics (fasttune.scoring; default exact match, token F1, ROUGE-L, corpus BLEU).
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

from fasttune import own_data, scoring
from fasttune.errors import FasttuneError, unknown_name
from fasttune.own_data import OwnDataConfig
from fasttune.parsing import first_label
from fasttune.task import Sample, Task


class ConversationTask(Task):
    """A task read from the user's files by `OwnDataConfig` options; `formatting` says how its rows are written.

    `kind` is set per instance: "choices" when labels are declared, else "generation".
    """

    formatting: own_data.Formatting = "chat"
    VERSION = 1
    kind = "choices"
    splits = ("train", "test")

    def __init__(self, data_dir: str | os.PathLike | None = None, config: OwnDataConfig | None = None, **options):
        """Options are the fields of OwnDataConfig (train_file=, eval_file=, columns=, labels=, ...); relative
        paths are taken from `data_dir` (default: the working folder)."""
        super().__init__(Path(data_dir if data_dir is not None else ".").resolve())
        if config is not None and options:
            raise FasttuneError(f"Pass the options of task '{self.name}' as config= or as keywords, not both "
                                f"(keywords: {', '.join(options)}).")
        known = [option.name for option in fields(OwnDataConfig)]
        for name in options:
            if name not in known:
                raise unknown_name(f"option of task '{self.name}'", name, known)
        self.options = config if config is not None else OwnDataConfig(**options)
        self.sources = own_data.sources(self.options, self.formatting, self.data_dir)
        self.train_on = self.options.train_on
        self.labels = self.options.labels
        self.metrics = list(self.options.metrics or scoring.DEFAULT)
        self.kind = "choices" if self.labels else "generation"
        self.primary_metric = "accuracy" if self.labels else self.metrics[0]
        self.max_new_tokens = self.options.max_new_tokens
        self._loaded: dict[str, list] = {}

    def read(self, data_dir, split):
        if split not in self._loaded:
            self._loaded[split] = own_data.load_split(self.options, *self.sources, split)
        return self._loaded[split]

    def conversation(self, example):
        return example["messages"]

    def format(self, example):
        return Sample(example["messages"][:-1], example["messages"][-1]["content"])

    def answer(self, example):
        reply = example["messages"][-1]["content"].strip()
        return reply.lower() if self.labels else (reply,)

    def parse_answer(self, text, example):
        if self.labels:
            return first_label(text, tuple(label.strip() for label in self.labels))
        return text.strip() or None if isinstance(text, str) else None

    def choices(self, example):
        return [label.strip() for label in self.labels] if self.labels else None

    def score(self, prediction, reference):
        if self.labels:
            return super().score(prediction, reference)
        return scoring.score(prediction, reference, self.metrics)

    def aggregate(self, scores, predictions, references):
        if not self.labels:
            return scoring.aggregate(scores, predictions, references, self.metrics)
        recalls = {}
        for label in (label.strip().lower() for label in self.labels):
            hits = [p == label for p, r in zip(predictions, references) if r == label]
            if hits:
                recalls[f"recall_{label}"] = sum(hits) / len(hits)
        return {**super().aggregate(scores, predictions, references), **recalls}

    def describe(self):
        return {**super().describe(), "options": own_data.describe(self.options)}

    def constructor_arguments(self):
        return {"data_dir": str(self.data_dir), **asdict(self.options)}
