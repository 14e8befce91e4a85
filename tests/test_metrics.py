import math

import numpy as np
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from fasttune import metrics

HYPOTHESES = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog",
              "Deep learning for protein folding"]
REFERENCES = [["The cat is sitting on the mat."], ["The quick brown fox jumped over a lazy dog"],
              ["Protein structure prediction with deep learning"]]


@pytest.fixture(scope="session")
def minilm():
    return metrics.embedding_model()


def test_corpus_bleu_equals_sacrebleu_and_its_pinned_value():
    reference = sacrebleu.corpus_bleu(HYPOTHESES, [[r[0] for r in REFERENCES]]).score / 100
    assert metrics.corpus_bleu(HYPOTHESES, REFERENCES) == pytest.approx(reference, abs=1e-12)
    assert reference == pytest.approx(0.2288170, abs=1e-6)


def test_corpus_bleu_with_a_different_number_of_references_per_example_equals_sacrebleu():
    hypotheses = ["the cat sat on the mat", "a dog ran"]
    references = [["the cat sat on a mat", "a cat sat on the mat"], ["the dog ran"]]
    streams = [["the cat sat on a mat", "the dog ran"], ["a cat sat on the mat", None]]
    assert metrics.corpus_bleu(hypotheses, references) == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, streams).score / 100, abs=1e-12)


def test_sentence_bleu_equals_sacrebleu_sentence_bleu():
    pinned = [0.4238366, 0.2335690, 0.0874583]
    for hypothesis, references, value in zip(HYPOTHESES, REFERENCES, pinned):
        assert metrics.sentence_bleu(hypothesis, references) == pytest.approx(
            sacrebleu.sentence_bleu(hypothesis, references).score / 100, abs=1e-12)
        assert metrics.sentence_bleu(hypothesis, references) == pytest.approx(value, abs=1e-6)


def test_japanese_bleu_uses_mecab_tokens_like_sacrebleu():
    value = metrics.corpus_bleu(["東京は日本の首都です"], [["東京は日本の首都である"]], tokenize="ja-mecab")
    assert value == pytest.approx(sacrebleu.corpus_bleu(["東京は日本の首都です"], [["東京は日本の首都である"]],
                                                        tokenize="ja-mecab").score / 100, abs=1e-12)
    assert value == pytest.approx(0.6431870, abs=1e-6)
    assert metrics.corpus_bleu(["東京は日本の首都です"], [["東京は日本の首都である"]]) < value  # 13a: one token each


def test_rouge_equals_rouge_score_with_stemming_and_a_hand_count():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for hypothesis, references in zip(HYPOTHESES, REFERENCES):
        expected = {k: v.fmeasure for k, v in scorer.score(references[0], hypothesis).items()}
        assert metrics.rouge(hypothesis, references) == pytest.approx(expected, abs=1e-12)
    # "the cat sat on the mat" vs "the cat is sit(ting) on the mat": 5 shared unigrams, P = 5/6, R = 5/7
    assert metrics.rouge(HYPOTHESES[0], REFERENCES[0])["rouge1"] == pytest.approx(10 / 13)


def test_rouge_takes_the_best_reference():
    assert metrics.rouge("a red apple", ["green pears", "a red apple"])["rougeL"] == 1.0


@pytest.mark.parametrize("text, normalised", [
    ("The Eiffel Tower!", "eiffel tower"), ("  an   Apple, a day ", "apple day"),
    ("theory of the atom", "theory of atom"), ("U.S.A.", "usa"), ("rock-n-roll", "rocknroll"),
    ("A", ""), ("Año 1999", "año 1999"), ("\tthe\nend\n", "end"),
])
def test_squad_normalisation_of_tricky_strings(text, normalised):
    assert metrics.normalize_answer(text) == normalised


def test_qa_scores_take_the_best_gold_answer():
    assert metrics.exact_match("The Beatles", ["beatles!", "Rolling Stones"]) == 1.0
    assert metrics.exact_match("the beatles band", ["beatles"]) == 0.0
    assert metrics.token_f1("the big cat", ["a cat", "dog"]) == pytest.approx(2 / 3)  # P 1/2, R 1
    assert metrics.token_f1("nothing shared", ["cat"]) == 0.0
    assert metrics.substring_match("It was Wilhelm Röntgen.", ["Max Planck", "Röntgen"]) == 1.0
    assert metrics.substring_match("Röntgen", ["Wilhelm Röntgen"]) == 0.0


def test_ndcg_matches_a_hand_computed_value():
    # relevance of items 1..3 is 0, 1, 2; ranked 1, 2, 3: gains 0, 1, 3 against the ideal 3, 1, 0
    expected = (1 / math.log2(3) + 3 / 2) / (3 + 1 / math.log2(3))
    assert metrics.ndcg([1, 2, 3], [0, 1, 2]) == pytest.approx(expected)
    assert metrics.ndcg([3, 2, 1], [0, 1, 2]) == pytest.approx(1.0)
    assert metrics.ndcg([3, 9], [0, 1, 2]) == pytest.approx((3 + 0) / (3 + 1 / math.log2(3)))  # 9: no such item


def test_ndcg_equals_sklearn_when_relevance_is_binary():
    from sklearn.metrics import ndcg_score

    relevance = [1, 0, 1, 0, 0, 1]
    ranking = [2, 1, 5, 3, 6, 4]
    scores = np.zeros(len(relevance))
    scores[np.array(ranking) - 1] = np.arange(len(ranking), 0, -1)  # the first ranked item gets the top score
    assert metrics.ndcg(ranking, relevance) == pytest.approx(ndcg_score([relevance], [scores]))


def test_hit_rate_at_3_counts_gold_items_in_the_first_three():
    assert metrics.hit_rate_at_3([2, 4, 6], [6, 4, 2]) == 1.0
    assert metrics.hit_rate_at_3([2, 5, 7, 4], [2, 4, 6]) == pytest.approx(1 / 3)


def test_micro_f1_pools_counts_like_sklearn():
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    predicted = [["logitech"], ["running shoes", "red"], ["navy blue"], []]
    gold = [["logitech"], ["running shoes", "socks"], ["navy"], ["towel"]]
    counts = [metrics.entity_counts(p, g) for p, g in zip(predicted, gold)]
    assert counts == [(1, 0, 0), (1, 1, 1), (0, 1, 1), (0, 0, 1)]
    binarizer = MultiLabelBinarizer().fit(predicted + gold)
    expected = f1_score(binarizer.transform(gold), binarizer.transform(predicted), average="micro")
    assert metrics.micro_f1(counts) == pytest.approx(expected) == pytest.approx(4 / 9)  # P 2/4, R 2/5


def test_entity_counts_compare_lowercased_and_stripped():
    assert metrics.entity_counts([" Logitech ", "MX"], ["logitech"]) == (1, 1, 0)
    assert metrics.entity_counts(["\tTABLETTE \n"], ["tablette"]) == (1, 0, 0)  # tabs and newlines too


def test_ndcg_of_a_ranking_with_out_of_range_items_after_the_parser_drops_them():
    relevance = [3.0, 2.0, 1.0, 0.0, 0.0]
    kept = (7 + 0 + 3 / 2 + 0 + 1 / math.log2(6)) / (7 + 3 / math.log2(3) + 1 / 2)  # 9 and 8 gain nothing
    assert metrics.ndcg([1, 9, 2, 8, 3], relevance) == pytest.approx(kept) == pytest.approx(0.9461, abs=1e-4)
    assert metrics.ndcg([1, 2, 3], relevance) == pytest.approx(1.0)  # what the parser's [1, 2, 3] scores


def test_embedding_similarity_is_the_cosine_of_minilm_embeddings(minilm):
    from sentence_transformers import util

    a, b = "A French press brews coffee.", "A coffee maker with a plunger."
    expected = float(util.cos_sim(minilm.encode(a), minilm.encode(b)))
    assert metrics.embedding_similarity(a, b) == pytest.approx(expected, abs=1e-5)
    assert metrics.embedding_similarity(a, a) == pytest.approx(1.0, abs=1e-5)
    assert metrics.embedding_similarity(a, [a, b]) == pytest.approx((1 + expected) / 2, abs=1e-5)
    assert metrics.embedding_similarity(a, "quarterly tax filing deadline") < expected
