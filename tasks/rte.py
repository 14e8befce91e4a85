"""rte: Recognizing Textual Entailment (GLUE/SuperGLUE), answered yes or no.

Data: SuperGLUE-format JSONL (premise, hypothesis, label entailment|not_entailment, idx), e.g.
../shared/data/rte: train.jsonl (2,490 rows) and val.jsonl (277 rows, GLUE dev; the labelled test set is not
public, so it serves as "test"). Correct = "yes" for entailment, "no" otherwise.
"""

from fasttune.parsing import first_label
from fasttune.reading import TEXT, Field, read_jsonl
from fasttune.task import Sample, Task

FILES = {"train": "train.jsonl", "test": "val.jsonl"}
LABELS = {"entailment": "yes", "not_entailment": "no"}
FIELDS = {"premise": TEXT, "hypothesis": TEXT, "label": Field(labels=LABELS), "idx": Field(int)}


class RTE(Task):
    name = "rte"
    VERSION = 1
    splits = tuple(FILES)
    kind = "choices"
    max_new_tokens = 4
    hub_id = "aps/super_glue"

    def read(self, data_dir, split):
        return [{**row, "id": f"{split}-{row['idx']}"} for _, row in read_jsonl(data_dir / FILES[split], FIELDS)]

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

    def parse_answer(self, text, example):
        return first_label(text, ("yes", "no"))

    def choices(self, example):
        return ["yes", "no"]
