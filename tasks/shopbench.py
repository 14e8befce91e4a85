"""shopbench: the Amazon KDD Cup 2024 "Multi-Task Online Shopping Challenge" (ShopBench) format and scoring.

Data: any JSON-lines file in the ShopBench format (../shared/data/shopbench_format/README.md states it), or a folder
of them (*.json, *.jsonl): input_field (the whole prompt), output_field (gold), task_name, task_type, metric, track.
All rows form the "test" split (the challenge publishes no training data).
Replies are parsed and scored as the challenge's starter kit does (Amazon KDD Cup 2024 starter kit, parsers.py
VERSION 0.1.1 and metrics.py, e.g. github.com/Keita18/amazon-kdd-cup-2024-starter-kit): only the first 5,000
characters of a reply are read (an answer after them is not seen); multiple-choice = the first character as an index;
retrieval = the first 3 numbers; ranking = the first 5 numbers among the options (1..number of items; others are
dropped), unparsed when one repeats; NER = a Python list of strings, else the comma-separated entities without the
empty ones; generation = the stripped text, an empty one included (sent-transformer rows embed it, as the kit does).
Unparsable replies are counted and score the metric's worst value, 0. Metrics: accuracy, hit rate@3, ndcg (gain
2^rel - 1), micro f1 (pooled over a task_name; entities lower-cased and stripped), rougel, bleu and jp-bleu (sacrebleu
on the reply's first line, lowercased; ja-mecab tokens), sent-transformer and multilingual-sent-transformer (cosine
floored at 0). Aggregation as the challenge's local evaluation: the mean per task_name (micro f1 pooled), a track's
score the mean of its task scores, overall the mean of all task scores. The report shows the predicted-vs-gold
distribution of the multiple-choice rows and per-category scores by task_type and task_name.
Where fasttune deviates from the kit, and why: a reply that is not a string is unparsed (the kit asserts, crashing
the run); a digit character int() refuses ("²") is no number (the kit's multiple-choice parser gives -1, its ranking
parser skips it; both score the same here); ranking item 0 is dropped (the kit keeps it and its NDCG reads it as the
last item through a negative index); entities are stripped of all whitespace, not only spaces (a tab or newline is
never part of an entity); retrieval indices are not range-checked (a row does not say how many items it lists; an
index outside them is never gold, so it only takes a place among the first 3, as in the kit).
"""

import ast
from dataclasses import dataclass
from typing import Any

from fasttune import metrics
from fasttune.errors import FasttuneError
from fasttune.reading import TEXT, Field, Place, problem, read_rows, shown
from fasttune.task import Sample, Task

GOLD = {"multiple-choice": Field(int), "retrieval": Field(list, items=Field(int)),
        "ranking": Field(list, items=Field((int, float))), "named_entity_recognition": Field(list, items=TEXT),
        "generation": Field((str, list), items=TEXT)}
"""The gold answer (output_field) of each task type: an option index, the right indices, each listed product's
relevance, the entities, the reference text(s)."""
METRICS_OF_TYPE = {"multiple-choice": ("accuracy",), "retrieval": ("hit rate@3",), "ranking": ("ndcg",),
                   "named_entity_recognition": ("micro f1",),
                   "generation": ("rougel", "bleu", "jp-bleu", "sent-transformer", "multilingual-sent-transformer")}
METRICS = tuple(metric for names in METRICS_OF_TYPE.values() for metric in names)
FIELDS = {"input_field": TEXT, "output_field": Field((int, float, str, list)), "task_name": TEXT,
          "task_type": Field(labels=GOLD), "metric": Field(labels=METRICS), "track": TEXT,
          "is_multiple_choice": Field(bool, optional=True)}
MULTILINGUAL = "paraphrase-multilingual-MiniLM-L12-v2"
MAX_REPLY_CHARACTERS = 5000  # the kit's MAX_RESPONSE_CHARACTERS


@dataclass(frozen=True)
class Gold:
    """A row's gold answer and how it is scored."""

    truth: Any
    metric: str
    task_name: str
    track: str


class ShopBench(Task):
    name = "shopbench"
    VERSION = 2
    splits = ("test",)
    primary_metric = "score"
    max_new_tokens = 64
    data_folder = "shopbench_format"

    def read(self, data_dir, split):
        files = sorted(p for p in data_dir.iterdir() if p.suffix in (".json", ".jsonl")) if data_dir.is_dir() \
            else [data_dir]
        if not files:
            raise FasttuneError(f"No ShopBench files in {data_dir} (data_dir={data_dir}). Put the data in *.json or "
                                "*.jsonl files there.")
        return [_example(place, row) for path in files for place, row in read_rows(path, FIELDS)]

    def format(self, example):
        truth, kind = example["output_field"], example["task_type"]
        if kind == "ranking":  # the ideal order: items by falling relevance
            truth = sorted(range(1, len(truth) + 1), key=lambda item: -truth[item - 1])
        if isinstance(truth, list) and kind != "generation":
            truth = ", ".join(map(str, truth))
        elif isinstance(truth, list):
            truth = truth[0]
        return Sample([{"role": "user", "content": example["input_field"]}], str(truth))

    def answer(self, example):
        return Gold(example["output_field"], example["metric"], example["task_name"], example["track"])

    def parse_answer(self, text, example):
        if not isinstance(text, str):
            return None
        text, kind = text[:MAX_REPLY_CHARACTERS].strip(), example["task_type"]
        if kind == "generation":
            return text
        if not text:
            return None
        if kind == "multiple-choice":
            return _integer(text[0])
        if kind in ("retrieval", "ranking"):
            kept = "".join(c for c in text if c.isnumeric() or c in ", ")
            numbers = [n for n in map(_integer, kept.split(",")) if n is not None]
            if kind == "retrieval":
                return numbers[:3] or None
            numbers = [n for n in numbers if 1 <= n <= len(example["output_field"])][:5]
            return numbers if numbers and len(set(numbers)) == len(numbers) else None
        try:
            entities = ast.literal_eval(text)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):  # never raise on replies
            entities = None
        if isinstance(entities, list) and all(isinstance(e, str) for e in entities):
            return entities
        return [entity.strip() for entity in text.split(",") if entity.strip()]

    def has_closed_answer(self, example):
        return example["task_type"] == "multiple-choice"

    def answer_label(self, answer, example):
        return f"{example['task_type']}: {answer.truth if isinstance(answer, Gold) else answer}"

    def categories(self, example):
        return [f"task_type:{example['task_type']}", f"task_name:{example['task_name']}"]

    def score(self, prediction, reference):
        return {"score": 0.0 if prediction is None else _metric(prediction, reference)}

    def aggregate(self, scores, predictions, references):
        groups: dict[str, list[int]] = {}
        for index, reference in enumerate(references):
            groups.setdefault(reference.task_name, []).append(index)
        task_scores, tracks = {}, {}
        for task_name, indices in groups.items():
            if references[indices[0]].metric == "micro f1":
                task_scores[task_name] = metrics.micro_f1([_entity_counts(predictions[i], references[i])
                                                           for i in indices])
            else:
                task_scores[task_name] = sum(scores[i]["score"] for i in indices) / len(indices)
            tracks.setdefault(references[indices[0]].track, []).append(task_scores[task_name])
        return {"overall": sum(task_scores.values()) / len(task_scores),
                **{f"track:{track}": sum(values) / len(values) for track, values in sorted(tracks.items())},
                **{f"task:{name}": value for name, value in sorted(task_scores.items())},
                "score": sum(row["score"] for row in scores) / len(scores)}

    def check(self, example):
        best = self.score(self.parse_answer(self.format(example).completion, example), self.answer(example))["score"]
        if best < 1 - 1e-6:
            raise FasttuneError(f"Task '{self.name}' can never be right: the gold completion of example "
                                f"id={example['id']} scores {best:.3f}, not 1.")


def _example(place: Place, row: dict) -> dict:
    kind, gold = row["task_type"], row["output_field"]
    found = problem(gold, GOLD[kind], "output_field")
    if found:
        raise place.error(f"field 'output_field' is {shown(gold)}, not a gold answer of a {kind} task: "
                          f"{found.text}.", shape=True)
    if row["metric"] not in METRICS_OF_TYPE[kind]:
        raise place.error(f"field 'metric' is {row['metric']!r}, which does not score a {kind} task (expected "
                          f"{' or '.join(METRICS_OF_TYPE[kind])}).")
    return {**row, "id": f"{place.path.name}:{place.key}"}


def _integer(text: str) -> int | None:
    """int(text), or None where Python refuses it (letters, "²", "1 2")."""
    try:
        return int(text)
    except ValueError:
        return None


def _entity_counts(prediction, reference: Gold) -> tuple[int, int, int]:
    return (0, 0, len(reference.truth)) if prediction is None else metrics.entity_counts(prediction, reference.truth)


def _metric(prediction, gold: Gold) -> float:
    truth = gold.truth
    if gold.metric == "accuracy":
        return float(prediction == truth)
    if gold.metric == "hit rate@3":
        return metrics.hit_rate_at_3(prediction, truth)
    if gold.metric == "ndcg":
        return metrics.ndcg(prediction, truth)
    if gold.metric == "micro f1":  # per example for display; the task score pools the counts
        return metrics.micro_f1([metrics.entity_counts(prediction, truth)])
    if gold.metric == "rougel":
        return metrics.rouge(prediction, [truth], ("rougeL",))["rougeL"]
    if gold.metric in ("bleu", "jp-bleu"):
        first_line = prediction.strip("\n").split("\n")[0]
        return metrics.corpus_bleu([first_line], [[truth]], tokenize="ja-mecab" if gold.metric == "jp-bleu"
                                   else "13a", lowercase=True)
    model = metrics.MINILM if gold.metric == "sent-transformer" else MULTILINGUAL
    return metrics.embedding_similarity(prediction, truth, model)
