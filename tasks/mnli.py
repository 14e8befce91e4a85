"""mnli: MultiNLI 3-way entailment, answered yes (entailment), maybe (neutral) or no (contradiction).

Data: ../shared/data/mnli: train_subset_8999.json (an 8,999-pair MNLI training subset, JSON object of
{text_a, text_b, label}) and dev_matched.jsonl (the 9,815-row dev-matched set, {premise, hypothesis, label}),
which serves as "test". Scored by the log-likelihood of the three words; metrics: accuracy and the recall of each
gold label (accuracy among the examples with that label).
"""

from fasttune.parsing import first_label
from fasttune.reading import TEXT, Field, read_json, read_jsonl
from fasttune.task import Sample, Task

LABELS = {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}
TRAIN_FIELDS = {"text_a": TEXT, "text_b": TEXT, "label": Field(labels=LABELS)}
TEST_FIELDS = {"premise": TEXT, "hypothesis": TEXT, "label": Field(labels=LABELS)}


class MNLI(Task):
    name = "mnli"
    VERSION = 1
    splits = ("train", "test")
    kind = "choices"
    max_new_tokens = 4

    def read(self, data_dir, split):
        if split == "train":
            return [{"id": f"train-{place.key}", "premise": row["text_a"], "hypothesis": row["text_b"],
                     "label": row["label"]}
                    for place, row in read_json(data_dir / "train_subset_8999.json", TRAIN_FIELDS, dict)]
        rows = read_jsonl(data_dir / "dev_matched.jsonl", TEST_FIELDS)
        return [{**row, "id": f"test-{place.row}"} for place, row in rows]

    def format(self, example):
        question = (f"Premise: {example['premise']}\nHypothesis: {example['hypothesis']}\n"
                    "Does the premise entail the hypothesis? Answer yes, no or maybe.")
        return Sample([{"role": "user", "content": question}], self.answer(example))

    def answer(self, example):
        return LABELS[example["label"]]

    def parse_answer(self, text, example):
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
