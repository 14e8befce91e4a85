"""Base class of tasks answered with free text and scored against one or more reference texts."""

from __future__ import annotations

from fasttune import metrics
from fasttune.task import Task


class GenerationTask(Task):
    """A generation task: `answer` returns a tuple of reference texts, the reply is the stripped model text.

    Per example: sentence BLEU (sacrebleu) and ROUGE-1/2/L F (rouge-score, stemmer on, best over references).
    Split level: corpus BLEU-4 over all examples as `bleu`, and the means of the per-example scores.
    An empty reply is unparsed and scores 0.
    """

    primary_metric = "rougeL"
    max_new_tokens = 64

    def parse_answer(self, text, example):
        return text.strip() or None if isinstance(text, str) else None

    def score(self, prediction, reference):
        return {"sentence_bleu": metrics.sentence_bleu(prediction or "", reference),
                **metrics.rouge(prediction or "", reference)}

    def aggregate(self, scores, predictions, references):
        return {"bleu": metrics.corpus_bleu([p or "" for p in predictions], references),
                **super().aggregate(scores, predictions, references)}
