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

from fasttune import metrics
from fasttune.reading import TEXT, Field, read_jsonl
from fasttune.splits import bucket
from fasttune.task import Sample, Task

TEST_BUCKETS = 20  # of 100
ANSWERS = Field(list, items=TEXT)
FIELDS = {"question": TEXT, "answer": ANSWERS}
ORACLE_FIELDS = {"question": TEXT, "answers": ANSWERS,
                 "ctxs": Field(list, items=Field(dict, fields={"title": TEXT, "text": TEXT}))}


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
            records = read_jsonl(data_dir / "nq-open-oracle.jsonl.gz", ORACLE_FIELDS)
        else:
            records = read_jsonl(data_dir / "NQ-open.dev.jsonl", FIELDS)
        examples = []
        for place, row in records:
            if (bucket(row["question"]) < TEST_BUCKETS) == (split == "test"):
                example = {"id": f"nq-{place.row}", "question": row["question"],
                           "answers": row["answers" if self.passage else "answer"]}
                examples.append({**example, "passage": row["ctxs"][0]} if self.passage else example)
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

    def parse_answer(self, text, example):
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
