"""nq_open: open-domain questions from Natural Questions (NQ-open), answered with a short phrase.

Two variants. `nq_open` is closed book: ../shared/data/nq_open/NQ-open.dev.jsonl (3,610 questions, {question,
answer: [str]}). `nq_open_oracle` puts the gold Wikipedia passage before the question:
nq-open-oracle.jsonl.gz (2,655 of those questions, {question, answers, ctxs: [{title, text}]}). NQ-open's train
file is not in the data, so each variant splits its rows by a hash of the normalised question: bucket < 20 is "test",
the rest "train". A question lands in the same split in both variants, and duplicate questions never straddle splits.
Correct, with SQuAD's normalisation and the best over gold answers: metric `subem` on the WHOLE reply (a normalised
gold answer occurs in the normalised reply, the SubEM definition: "... so the answer is Katy Perry" scores 1), and
metrics `em` (exact match) and `f1` (token F1) on the reply's FIRST LINE, the short phrase the prompt asks for.
"""

import gzip
import json

from fasttune import metrics
from fasttune.errors import FasttuneError
from fasttune.splits import bucket
from fasttune.task import Sample, Task, require_fields

TEST_BUCKETS = 20  # of 100


class NQOpen(Task):
    name = "nq_open"
    VERSION = 2
    splits = ("train", "test")
    primary_metric = "subem"
    max_new_tokens = 24
    data_folder = "nq_open"
    passage = False

    def read(self, data_dir, split):
        if self.passage:
            path, answers = data_dir / "nq-open-oracle.jsonl.gz", "answers"
            opener = gzip.open
        else:
            path, answers = data_dir / "NQ-open.dev.jsonl", "answer"
            opener = open
        if not path.exists():
            raise FasttuneError(f"Data file not found: {path}.")
        examples = []
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                where = f"{path}, line {number}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise FasttuneError(f"{where}: malformed JSON ({error.msg}).") from None
                require_fields(row, ("question", answers) + (("ctxs",) if self.passage else ()), where)
                if not row[answers] or not all(isinstance(a, str) for a in row[answers]):
                    raise FasttuneError(f"{where}: field '{answers}' must be a non-empty list of strings.")
                if (bucket(row["question"]) < TEST_BUCKETS) != (split == "test"):
                    continue
                example = {"id": f"nq-{number}", "question": row["question"], "answers": row[answers]}
                if self.passage:
                    example["passage"] = row["ctxs"][0]
                examples.append(example)
        return examples

    def format(self, example):
        question = example["question"].rstrip("?") + "?"
        if self.passage:
            passage = example["passage"]
            content = (f"Passage (title: {passage['title']}): {passage['text']}\n\n"
                       f"Answer the question using the passage, with a short phrase only.\nQuestion: {question}")
        else:
            content = f"Answer the question with a short phrase only.\nQuestion: {question}"
        return Sample([{"role": "user", "content": content}], example["answers"][0])

    def answer(self, example):
        return tuple(example["answers"])

    def parse_answer(self, text):
        """The whole stripped reply (its first line is what `em` and `f1` score), or None when empty."""
        return text.strip() or None if isinstance(text, str) else None

    def score(self, prediction, reference):
        if prediction is None:
            return {"subem": 0.0, "em": 0.0, "f1": 0.0}
        first_line = prediction.splitlines()[0].strip()
        return {"subem": metrics.substring_match(prediction, reference),
                "em": metrics.exact_match(first_line, reference), "f1": metrics.token_f1(first_line, reference)}


class NQOpenOracle(NQOpen):
    name = "nq_open_oracle"
    passage = True
