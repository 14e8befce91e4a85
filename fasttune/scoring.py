"""Metrics a user names for generated answers, each scored against the reference texts by fasttune.metrics.

Per-example metrics are averaged over a split; `bleu` is sacrebleu's corpus BLEU-4 over the whole split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fasttune import metrics
from fasttune.errors import unknown_name


def _rouge(kind: str) -> Callable[[str, Sequence[str]], float]:
    return lambda prediction, references: metrics.rouge(prediction, references, (kind,))[kind]


PER_EXAMPLE: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": metrics.exact_match,
    "f1": metrics.token_f1,
    "subem": metrics.substring_match,
    "rouge1": _rouge("rouge1"),
    "rouge2": _rouge("rouge2"),
    "rougeL": _rouge("rougeL"),
    "sentence_bleu": metrics.sentence_bleu,
    "embedding_similarity": metrics.embedding_similarity,
}
CORPUS: dict[str, Callable[[Sequence[str], Sequence[Sequence[str]]], float]] = {"bleu": metrics.corpus_bleu}
NAMES = [*PER_EXAMPLE, *CORPUS]
DEFAULT = ("exact_match", "f1", "rougeL", "bleu")
"""Exact match and token F1 after SQuAD normalisation, ROUGE-L F, corpus BLEU-4."""


def check_names(names: Sequence[str]) -> None:
    """Raise for an unknown metric name, suggesting close ones."""
    for name in names:
        if name not in NAMES:
            raise unknown_name("metric", name, NAMES)


def score(prediction: str | None, references: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """The per-example metrics among `names` of one answer (None, an unparsed answer, scores 0)."""
    return {name: PER_EXAMPLE[name](prediction, references) if prediction is not None else 0.0
            for name in names if name in PER_EXAMPLE}


def aggregate(scores: list[dict[str, float]], predictions: list[str | None], references: list[Sequence[str]],
              names: Sequence[str]) -> dict[str, float]:
    """Split-level metrics in the order of `names`: means of the per-example ones, corpus BLEU over all answers."""
    result = {}
    for name in names:
        if name in CORPUS:
            result[name] = CORPUS[name]([p or "" for p in predictions], references)
        else:
            result[name] = sum(row[name] for row in scores) / len(scores)
    return result
