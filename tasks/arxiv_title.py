"""arxiv_title: write a paper's title from its abstract.

Data: ../shared/data/arxiv/arxiv_metadata_first2000.csv (the first 2,000 records of the arXiv metadata snapshot,
April 2007; columns id, title, abstract, ...). Whitespace in titles and abstracts (line breaks of the source) is
collapsed. Splits by a hash of the normalised abstract: buckets 0-9 "test", 10-19 "validation", the rest "train",
so the two abstracts that occur twice stay in one split. Correct: the title; BLEU-4 (sacrebleu, corpus and
sentence) and ROUGE-1/2/L F (rouge-score, stemmer on).
"""

from fasttune.reading import TEXT, read_csv
from fasttune.splits import bucket
from fasttune.task import Sample
from fasttune.text_task import GenerationTask

SPLIT_OF_BUCKET = [(10, "test"), (20, "validation"), (100, "train")]
FIELDS = {"id": TEXT, "title": TEXT, "abstract": TEXT}


class ArxivTitle(GenerationTask):
    name = "arxiv_title"
    VERSION = 1
    splits = ("train", "validation", "test")
    max_new_tokens = 40
    data_folder = "arxiv"

    def read(self, data_dir, split):
        examples = []
        for _, row in read_csv(data_dir / "arxiv_metadata_first2000.csv", FIELDS):
            abstract = " ".join(row["abstract"].split())
            if next(name for limit, name in SPLIT_OF_BUCKET if bucket(abstract) < limit) == split:
                examples.append({"id": row["id"], "title": " ".join(row["title"].split()), "abstract": abstract})
        return examples

    def format(self, example):
        content = f"Write the title of the paper with this abstract.\nAbstract: {example['abstract']}"
        return Sample([{"role": "user", "content": content}], example["title"])

    def answer(self, example):
        return (example["title"],)
