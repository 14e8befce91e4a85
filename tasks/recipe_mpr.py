"""recipe_mpr: Recipe-MPR, 5-way multiple choice of the recipe that satisfies a food query.

Data: 500QA.json from D3Mlab/Recipe-MPR (e.g. ../shared/data/recipe_mpr). In the raw file the correct option is
always listed first, so options are shuffled with a per-query seeded RNG and lettered A-E, making the gold letter
near uniform. Splits: a seeded permutation of the 500 queries, 300 train / 100 validation / 100 test.
Correct = the letter of the option whose id is `answer`. Categories: the query types (a query can have several;
queries with none are "Plain"). `embedding_baseline` is the study's non-LLM baseline: the option whose
all-MiniLM-L6-v2 embedding is closest (cosine) to the query's.
"""

import random

from fasttune import metrics
from fasttune.parsing import option_letter
from fasttune.reading import TEXT, Field, check_unique, read_json
from fasttune.task import Sample, Task

LETTERS = "ABCDE"
SPLITS = {"train": (0, 300), "validation": (300, 400), "test": (400, 500)}
FIELDS = {"query": TEXT, "query_type": Field(dict, items=Field(int, labels=(0, 1)), nonempty=False),
          "options": Field(dict, items=TEXT, size=len(LETTERS), distinct=True), "answer": TEXT}


class RecipeMPR(Task):
    name = "recipe_mpr"
    VERSION = 1
    splits = tuple(SPLITS)
    kind = "choices"
    max_new_tokens = 8

    def read(self, data_dir, split):
        records = read_json(data_dir / "500QA.json", FIELDS)
        for place, row in records:
            if row["answer"] not in row["options"]:
                raise place.error(f"field 'answer' is {row['answer']!r}, not one of the ids in field 'options' "
                                  f"({', '.join(row['options'])}). Name the correct option's id.")
        check_unique(records, "query")  # the split is over queries: a repeated one could land in train and test
        order = list(range(len(records)))
        random.Random("recipe_mpr/split").shuffle(order)
        start, stop = SPLITS[split]
        examples = []
        for index in order[start:stop]:
            row = records[index].row
            option_ids = sorted(row["options"])
            random.Random(f"recipe_mpr/options/{index}").shuffle(option_ids)
            examples.append({"id": index, "query": row["query"], "options": [row["options"][o] for o in option_ids],
                             "gold": LETTERS[option_ids.index(row["answer"])],
                             "query_types": [t for t, flag in row["query_type"].items() if flag]})
        return examples

    def format(self, example):
        options = "\n".join(f"({letter}) {text}" for letter, text in zip(LETTERS, example["options"]))
        question = (f"Query: {example['query']}\nWhich recipe best satisfies the query?\n{options}\n"
                    "Answer with the letter only.")
        return Sample([{"role": "user", "content": question}], example["gold"])

    def answer(self, example):
        return example["gold"]

    def parse_answer(self, text, example):
        return option_letter(text, LETTERS)

    def choices(self, example):
        return list(LETTERS)

    def categories(self, example):
        return example["query_types"] or ["Plain"]

    def embedding_baseline(self, examples):
        """For each example, the letter of the option most cosine-similar to the query (all-MiniLM-L6-v2)."""
        queries = metrics.embed([example["query"] for example in examples])
        options = metrics.embed([option for example in examples for option in example["options"]])
        similarity = (options.reshape(len(examples), len(LETTERS), -1) @ queries[:, :, None])[:, :, 0]
        return [LETTERS[i] for i in similarity.argmax(axis=1)]
