"""rte: Recognizing Textual Entailment (GLUE/SuperGLUE), answered yes or no.

Data: SuperGLUE-format JSONL (premise, hypothesis, label entailment|not_entailment, idx), e.g.
../shared/data/rte: train.jsonl (2,490 rows) and val.jsonl (277 rows, GLUE dev; the labelled test set is not
public, so it serves as "test"). Correct = "yes" for entailment, "no" otherwise.
"""

from fasttune.errors import FasttuneError
from fasttune.parsing import first_label
from fasttune.task import Sample, Task, read_jsonl

FILES = {"train": "train.jsonl", "test": "val.jsonl"}
LABELS = {"entailment": "yes", "not_entailment": "no"}


class RTE(Task):
    name = "rte"
    VERSION = 1
    splits = tuple(FILES)
    max_new_tokens = 4
    hub_id = "aps/super_glue"

    def read(self, data_dir, split):
        path = data_dir / FILES[split]
        rows = read_jsonl(path, required={"premise": str, "hypothesis": str, "label": str, "idx": int})
        for number, row in enumerate(rows, start=1):
            if row["label"] not in LABELS:
                raise FasttuneError(f"{path}, row {number}: field 'label' is {row['label']!r}, "
                                    f"expected one of {sorted(LABELS)}.")
            row["id"] = f"{split}-{row['idx']}"
        return rows

    def read_hub(self, split):
        from datasets import load_dataset

        rows = load_dataset(self.hub_id, "rte", split={"train": "train", "test": "validation"}[split])
        names = ("entailment", "not_entailment")
        return [{**row, "label": names[row["label"]], "id": f"{split}-{row['idx']}"} for row in rows]

    def format(self, example):
        question = (f"Premise: {example['premise']}\nHypothesis: {example['hypothesis']}\n"
                    "Does the premise entail the hypothesis? Answer yes or no.")
        return Sample([{"role": "user", "content": question}], self.answer(example))

    def answer(self, example):
        return LABELS[example["label"]]

    def parse_answer(self, text):
        return first_label(text, ("yes", "no"))

    def choices(self, example):
        return ["yes", "no"]
