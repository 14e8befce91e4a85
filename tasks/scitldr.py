"""scitldr: a one-sentence summary (TLDR) of a paper's abstract, scored against several references.

Data: SciTLDR-A, ../shared/data/arxiv: scitldr_A_train.jsonl (1,992 papers) as "train" and scitldr_A_dev.jsonl
(619) as "test" (the labelled test file is not in the data); fields source (abstract sentences), target (the author
TLDR first, then peer-review TLDRs), paper_id. One training paper whose abstract is also a test paper's is left out
of "train" (the task says so when it reads the file). Correct: any reference; BLEU-4 (sacrebleu, corpus and sentence,
all references) and ROUGE-1/2/L F (rouge-score, stemmer on, best reference). The training completion is the author
TLDR.
"""

import warnings

from fasttune.errors import FasttuneError, FasttuneWarning
from fasttune.metrics import normalize_answer
from fasttune.task import Sample, read_jsonl
from fasttune.text_task import GenerationTask

FILES = {"train": "scitldr_A_train.jsonl", "test": "scitldr_A_dev.jsonl"}


class SciTLDR(GenerationTask):
    name = "scitldr"
    VERSION = 1
    splits = tuple(FILES)
    max_new_tokens = 80
    data_folder = "arxiv"

    def read(self, data_dir, split):
        path = data_dir / FILES[split]
        examples = []
        for number, row in enumerate(read_jsonl(path, required=("source", "target", "paper_id")), start=1):
            if not row["target"] or not all(isinstance(t, str) and t.strip() for t in row["target"]):
                raise FasttuneError(f"{path}, row {number}: field 'target' must be a non-empty list of texts.")
            examples.append({"id": row["paper_id"], "abstract": " ".join(row["source"]),
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
