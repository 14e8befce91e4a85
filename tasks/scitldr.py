"""scitldr: a one-sentence summary (TLDR) of a paper's abstract, scored against several references.

Data: SciTLDR-A, ../shared/data/arxiv: scitldr_A_train.jsonl (1,992 papers) as "train" and scitldr_A_dev.jsonl
(619) as "test" (the labelled test file is not in the data); fields source (abstract sentences), target (the author
TLDR first, then peer-review TLDRs), paper_id. One training paper whose abstract is also a test paper's is left out
of "train" (the task says so when it reads the file). Correct: any reference; BLEU-4 (sacrebleu, corpus and sentence,
all references) and ROUGE-1/2/L F (rouge-score, stemmer on, best reference). The training completion is the author
TLDR.
"""

import warnings

from fasttune.errors import FasttuneWarning
from fasttune.metrics import normalize_answer
from fasttune.reading import TEXT, Field, read_jsonl
from fasttune.task import Sample
from fasttune.text_task import GenerationTask

FILES = {"train": "scitldr_A_train.jsonl", "test": "scitldr_A_dev.jsonl"}
FIELDS = {"source": Field(list, items=Field(nonempty=False)), "target": Field(list, items=TEXT), "paper_id": TEXT}
"""One training abstract holds an empty sentence, so sentences may be empty; the abstract as a whole may not."""


class SciTLDR(GenerationTask):
    name = "scitldr"
    VERSION = 1
    splits = tuple(FILES)
    max_new_tokens = 80
    data_folder = "arxiv"

    def read(self, data_dir, split):
        path = data_dir / FILES[split]
        examples = []
        for place, row in read_jsonl(path, FIELDS):
            abstract = " ".join(row["source"])
            if not abstract.strip():
                raise place.error(f"field 'source' holds no text (source={row['source']!r}). Give the abstract's "
                                  "sentences, or leave the paper out.")
            examples.append({"id": row["paper_id"], "abstract": abstract,
                             "references": [" ".join(t.split()) for t in row["target"]]})
        if split == "train":
            test = {normalize_answer(e["abstract"]) for e in self.read(data_dir, "test")}
            kept = [e for e in examples if normalize_answer(e["abstract"]) not in test]
            if len(kept) < len(examples):
                warnings.warn(f"fasttune: scitldr left out {len(examples) - len(kept)} training paper(s) whose "
                              f"abstract is also in the test split ({path.name}).", FasttuneWarning, stacklevel=2)
            examples = kept
        return examples

    def format(self, example):
        content = f"Summarize this abstract in one sentence.\nAbstract: {example['abstract']}"
        return Sample([{"role": "user", "content": content}], example["references"][0])

    def answer(self, example):
        return tuple(example["references"])
