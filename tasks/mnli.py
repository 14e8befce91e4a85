"""mnli: MultiNLI 3-way entailment, answered yes (entailment), maybe (neutral) or no (contradiction).

Data: ../shared/data/mnli: train_subset_8999.json (an 8,999-pair MNLI training subset, JSON object of
{text_a, text_b, label}) and dev_matched.jsonl (the 9,815-row dev-matched set, {premise, hypothesis, label}),
which serves as "test". Scored by the log-likelihood of the three words; metrics: accuracy and the recall of each
gold label (accuracy among the examples with that label).
"""

import json

from fasttune.errors import FasttuneError
from fasttune.parsing import first_label
from fasttune.task import Sample, Task, read_jsonl, require_fields

LABELS = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}


class MNLI(Task):
    name = "mnli"
    VERSION = 1
    splits = ("train", "test")
    max_new_tokens = 4

    def read(self, data_dir, split):
        if split == "train":
            path = data_dir / "train_subset_8999.json"
            try:
                table = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise FasttuneError(f"Cannot read {path}: {error}.") from None
            rows = []
            for key, row in table.items():
                require_fields(row, ("text_a", "text_b", "label"), f"{path}, entry {key!r}")
                rows.append({"id": f"train-{key}", "premise": row["text_a"], "hypothesis": row["text_b"],
                             "label": row["label"]})
        else:
            path = data_dir / "dev_matched.jsonl"
            rows = [{**row, "id": f"test-{number}"} for number, row in
                    enumerate(read_jsonl(path, required=("premise", "hypothesis", "label")), start=1)]
        for row in rows:
            if row["label"] not in LABELS:
                raise FasttuneError(f"{path}, row {row['id']}: field 'label' is {row['label']!r}, "
                                    f"expected one of {sorted(LABELS)}.")
        return rows

    def format(self, example):
        question = (f"Premise: {example['premise']}\nHypothesis: {example['hypothesis']}\n"
                    "Does the premise entail the hypothesis? Answer yes, no or maybe.")
        return Sample([{"role": "user", "content": question}], self.answer(example))

    def answer(self, example):
        return LABELS[example["label"]]

    def parse_answer(self, text):
        return first_label(text, ("yes", "maybe", "no"))

    def choices(self, example):
        return ["yes", "maybe", "no"]

    def aggregate(self, scores, predictions, references):
        recalls = {}
        for label in ("yes", "maybe", "no"):
            hits = [p == label for p, r in zip(predictions, references) if r == label]
            if hits:
                recalls[f"recall_{label}"] = sum(hits) / len(hits)
        return {**super().aggregate(scores, predictions, references), **recalls}
