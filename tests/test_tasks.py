import collections

import pytest

import fasttune
from fasttune.errors import FasttuneWarning
from fasttune.task import Sample, Task


def test_registry_lists_the_built_in_tasks():
    assert {"rte", "recipe_mpr", "larger_number"} <= set(fasttune.tasks.list())


def test_unknown_task_name_suggests_the_close_match():
    with pytest.raises(fasttune.FasttuneError, match="Unknown task 'rtee'. Did you mean: rte"):
        fasttune.tasks.get("rtee")


def test_a_user_task_is_a_dozen_lines_and_registers():
    @fasttune.tasks.register
    class Capitals(Task):
        name = "capitals_test"

        def load(self, split):
            return [{"id": 0, "country": "France", "capital": "Paris"}]

        def format(self, example):
            return Sample([{"role": "user", "content": f"Capital of {example['country']}?"}], example["capital"])

        def answer(self, example):
            return example["capital"]

        def parse_answer(self, text, example):
            return text.strip().rstrip(".") or None

    task = fasttune.tasks.get("capitals_test")
    example = task.load("test")[0]
    task.check(example)
    assert task.metric(["Paris", None], ["Paris", "Rome"]) == {"accuracy": 0.5}
    assert "capitals_test" in fasttune.tasks.list()


def test_missing_data_folder_says_how_to_point_at_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(fasttune.FasttuneError, match="No data for task 'rte'.*data_dir="):
        fasttune.tasks.get("rte", data_dir=tmp_path / "nowhere").load("train")


def test_unknown_split_lists_the_available_ones(data_root):
    with pytest.raises(fasttune.FasttuneError, match="no split 'dev'.*Available: train, test"):
        fasttune.tasks.get("rte", data_dir=data_root / "rte").load("dev")


def test_rte_loads_the_real_files_with_yes_no_answers(data_root):
    task = fasttune.tasks.get("rte", data_dir=data_root / "rte")
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == (2490, 277)
    assert collections.Counter(task.answer(e) for e in test) == {"yes": 146, "no": 131}
    task.check(train[0])
    sample = task.format(test[0])
    assert sample.completion == "no" and "Christopher Reeve had an accident." in sample.prompt[0]["content"]


def test_rte_malformed_line_names_the_file_and_line(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}\n{"premise": "a", oops}\n')
    with pytest.raises(fasttune.FasttuneError, match=r"train.jsonl, line 2: malformed JSON"):
        fasttune.tasks.get("rte", data_dir=tmp_path).load("train")


def test_rte_label_outside_the_label_set_names_row_and_field(tmp_path):
    (tmp_path / "val.jsonl").write_text('{"premise": "a", "hypothesis": "b", "label": "contradiction", "idx": 3}\n')
    with pytest.raises(fasttune.FasttuneError, match=r"val.jsonl, row 1: field 'label' is 'contradiction'"):
        fasttune.tasks.get("rte", data_dir=tmp_path).load("test")


def test_rte_missing_field_names_it(tmp_path):
    (tmp_path / "val.jsonl").write_text('{"premise": "a", "label": "entailment", "idx": 3}\n')
    with pytest.raises(fasttune.FasttuneError, match=r"val.jsonl, line 1: missing field 'hypothesis'"):
        fasttune.tasks.get("rte", data_dir=tmp_path).load("test")


def test_recipe_mpr_shuffled_gold_letters_are_near_uniform(data_root):
    task = fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr")
    examples = [e for split in task.splits for e in task.load(split)]
    letters = collections.Counter(task.answer(e) for e in examples)
    assert sum(letters.values()) == 500
    assert all(80 <= letters[letter] <= 120 for letter in "ABCDE"), letters  # raw file: all 500 are the first option


def test_recipe_mpr_splits_are_300_100_100_disjoint_and_deterministic(data_root):
    task = fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr")
    ids = {split: [e["id"] for e in task.load(split)] for split in task.splits}
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [300, 100, 100]
    assert len(set().union(*map(set, ids.values()))) == 500
    assert task.load("test") == fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr").load("test")


def test_recipe_mpr_gold_option_text_follows_its_letter(data_root):
    import json

    raw = json.loads((data_root / "recipe_mpr" / "500QA.json").read_text())
    task = fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr")
    for example in task.load("test"):
        row = raw[example["id"]]
        assert example["options"]["ABCDE".index(task.answer(example))] == row["options"][row["answer"]]
        task.check(example)


def test_recipe_mpr_per_query_type_categories(data_root):
    task = fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr")
    categories = collections.Counter(c for e in task.load("train") + task.load("validation") + task.load("test")
                                     for c in task.categories(e))
    assert categories["Plain"] == 110 and categories["Commonsense"] > 200


def test_larger_number_splits_are_deterministic_and_share_no_pair():
    task = fasttune.tasks.get("larger_number")
    pairs = {split: {frozenset((e["a"], e["b"])) for e in task.load(split)} for split in task.splits}
    assert [len(pairs[s]) for s in ("train", "validation", "test")] == [2000, 200, 200]
    assert not pairs["train"] & pairs["test"] and not pairs["validation"] & pairs["test"]
    assert task.load("test") == fasttune.tasks.get("larger_number").load("test")
    example = task.load("test")[0]
    task.check(example)
    assert task.choices(example) == [str(example["a"]), str(example["b"])]


def test_larger_number_first_and_second_answers_are_balanced():
    task = fasttune.tasks.get("larger_number")
    positions = collections.Counter(task.answer_label(task.answer(e), e) for e in task.load("train"))
    assert abs(positions["first"] - positions["second"]) < 150


SEED_TASKS = {"mnli": (8999, 9815), "nq_open": (2911, 699), "nq_open_oracle": (2151, 504),
              "arxiv_title": (1619, 204), "scitldr": (1991, 619)}


def _task(name, data_root):
    task = fasttune.tasks.get(name)
    task.data_dir = data_root / (task.data_folder or task.name)
    return task


def test_registry_lists_every_seed_workflow():
    assert set(fasttune.tasks.list()) >= {"larger_number", "rte", "recipe_mpr", "mnli", "nq_open", "nq_open_oracle",
                                          "arxiv_title", "scitldr", "shopbench"}


@pytest.mark.parametrize("name", sorted(SEED_TASKS))
def test_seed_task_loads_formats_parses_its_gold_back_and_scores_perfectly(name, data_root):
    task = _task(name, data_root)
    train, test = task.load("train"), task.load("test")
    assert (len(train), len(test)) == SEED_TASKS[name]
    for example in test[:25]:
        task.check(example)
    predictions = [task.parse_answer(task.format(e).completion, e) for e in test[:25]]
    scores = task.metric(predictions, [task.answer(e) for e in test[:25]])
    assert scores[task.primary_metric] == 1.0
    assert task.metric([None] * 25, [task.answer(e) for e in test[:25]])[task.primary_metric] == 0.0


def test_mnli_labels_map_to_yes_maybe_no_and_recall_is_per_gold_label(data_root):
    task = _task("mnli", data_root)
    test = task.load("test")
    assert collections.Counter(task.answer(e) for e in test) == {"yes": 3479, "maybe": 3123, "no": 3213}
    assert task.choices(test[0]) == ["yes", "maybe", "no"]
    scores = task.metric(["yes", "yes", "no", None], ["yes", "maybe", "no", "no"])
    assert scores == {"accuracy": 0.5, "recall_yes": 1.0, "recall_maybe": 0.0, "recall_no": 0.5}


def test_nq_variants_put_each_question_in_the_same_split(data_root):
    closed, oracle = _task("nq_open", data_root), _task("nq_open_oracle", data_root)
    closed_test = {e["question"] for e in closed.load("test")}
    assert {e["question"] for e in oracle.load("test")} <= closed_test
    assert not {e["question"] for e in oracle.load("train")} & closed_test
    example = oracle.load("test")[0]
    assert example["passage"]["title"] in oracle.format(example).prompt[0]["content"]


@pytest.mark.parametrize("reply, expected", [
    ("Wilhelm Conrad Röntgen", {"subem": 1.0, "em": 1.0, "f1": 1.0}),
    ("It was Röntgen, in 1901.\nMore text", {"subem": 0.0, "em": 0.0, "f1": 0.25}),
    ("the first was Wilhelm Conrad Röntgen", {"subem": 1.0, "em": 0.0, "f1": pytest.approx(0.75)}),
    ("", {"subem": 0.0, "em": 0.0, "f1": 0.0}),
    ("Let me think.\nThe first physics prize went to Wilhelm Conrad Röntgen", {"subem": 1.0, "em": 0.0, "f1": 0.0}),
])
def test_nq_replies_score_subem_em_and_token_f1(reply, expected):
    task = fasttune.tasks.get("nq_open")
    assert task.score(task.parse_answer(reply, {}), ("Wilhelm Conrad Röntgen",)) == expected


def test_nq_explanation_first_reply_scores_subem_1_on_the_whole_reply():
    task = fasttune.tasks.get("nq_open")
    reply = "The song topped the charts in 2008, sung by a singer from California.\nSo the answer is Katy Perry."
    assert task.score(task.parse_answer(reply, {}), ("Katy Perry",)) == {"subem": 1.0, "em": 0.0, "f1": 0.0}
    assert task.score(task.parse_answer("Katy Perry\nShe sang it in 2008.", {}), ("Katy Perry",)) == \
        {"subem": 1.0, "em": 1.0, "f1": 1.0}  # em and f1 read the first line


def test_generation_tasks_aggregate_corpus_bleu_beside_mean_rouge(data_root):
    import sacrebleu

    task = _task("scitldr", data_root)
    examples = task.load("test")[:4]
    replies = ["We propose a new method.", "", "A model for graphs.", task.format(examples[3]).completion]
    predictions = [task.parse_answer(r, e) for r, e in zip(replies, examples)]
    references = [task.answer(e) for e in examples]
    scores = task.metric(predictions, references)
    streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(max(map(len, references)))]
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu([r for r in replies], streams).score / 100)
    assert predictions[1] is None and task.score(None, references[1])["rougeL"] == 0.0
    assert 0 < scores["rougeL"] < 1


def test_arxiv_titles_are_whitespace_clean_and_splits_disjoint(data_root):
    task = _task("arxiv_title", data_root)
    ids = {split: {e["id"] for e in task.load(split)} for split in task.splits}
    assert sum(map(len, ids.values())) == 2000 and not ids["train"] & ids["test"]
    assert all("\n" not in e["title"] and "  " not in e["title"] for e in task.load("test"))


def test_shopbench_reads_the_format_and_scores_gold_replies_perfectly(data_root):
    task = _task("shopbench", data_root)
    examples = task.load("test")
    assert len(examples) == 17
    assert {e["task_type"] for e in examples} == {"multiple-choice", "retrieval", "ranking",
                                                  "named_entity_recognition", "generation"}
    for example in examples:
        task.check(example)
    predictions = [task.parse_answer(task.format(e).completion, e) for e in examples]
    scores = task.metric(predictions, [task.answer(e) for e in examples])
    assert scores["overall"] == pytest.approx(1.0) and scores["task:task_rank"] == pytest.approx(1.0)


@pytest.mark.parametrize("task_type, reply, parsed", [
    ("multiple-choice", "2", 2), ("multiple-choice", " 1. foam yoga block", 1), ("multiple-choice", "a", None),
    ("multiple-choice", "", None),
    ("ranking", "1, 2, 3, 4, 5", [1, 2, 3, 4, 5]), ("ranking", "[1, 2, 3, 4, 5]", [1, 2, 3, 4, 5]),
    ("ranking", "1, 2, 2, 3", None), ("ranking", "1, 4, 5, aicrowd, 6", [1, 4, 5]), ("ranking", "none", None),
    ("ranking", "1, 2, 4, aicrowd, 5", [1, 2, 4, 5]), ("ranking", "7, 3, 0, 1, 2, 9, 4", [3, 1, 2, 4]),
    ("retrieval", "100, 200, 300, 400", [100, 200, 300]), ("retrieval", "100, 200, jjhg", [100, 200]),
    ("named_entity_recognition", "['New York', 'Amazon']", ["New York", "Amazon"]),
    ("named_entity_recognition", "New York, Amazon", ["New York", "Amazon"]),
    ("named_entity_recognition", "[New York, Amazon]", ["[New York", "Amazon]"]),
    ("named_entity_recognition", "[4, 1]", ["[4", "1]"]),
    ("generation", "  A fine kettle.\n", "A fine kettle."), ("generation", " \n", ""),
    ("multiple-choice", "²", None), ("multiple-choice", "\n 3", 3), ("ranking", "2², 1", [1]),
    ("named_entity_recognition", "tablette,", ["tablette"]), ("named_entity_recognition", "\n, New York, Amazon",
                                                                ["New York", "Amazon"]),
    ("named_entity_recognition", " ", None), ("retrieval", "\n \n", None), ("multiple-choice", None, None),
    ("generation", None, None), ("ranking", 3, None),
    ("retrieval", "x" * 5000 + "1, 2, 3", None), ("generation", "a" * 6000, "a" * 5000),
])
def test_shopbench_parses_replies_as_the_challenge_parsers_do(task_type, reply, parsed):
    example = {"task_type": task_type, "output_field": [0.0, 1.0, 2.0, 0.0, 1.0]}  # a 5-item ranking's gold
    assert fasttune.tasks.get("shopbench").parse_answer(reply, example) == parsed


def test_shopbench_aggregates_per_task_per_track_and_overall_with_pooled_micro_f1(tmp_path):
    import json

    rows = [("mc", "t1", "multiple-choice", "accuracy", 1, "1"), ("mc", "t1", "multiple-choice", "accuracy", 2, "x"),
            ("ner", "t1", "named_entity_recognition", "micro f1", ["a", "b"], "a"),
            ("ner", "t1", "named_entity_recognition", "micro f1", ["c"], "c, d, e"),
            ("ret", "t2", "retrieval", "hit rate@3", [1, 2, 3], "3, 9, 8")]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(
        {"input_field": "q", "output_field": gold, "task_name": name, "track": track, "task_type": kind,
         "metric": metric, "is_multiple_choice": kind == "multiple-choice"}) for name, track, kind, metric, gold, _ in rows))
    task = fasttune.tasks.get("shopbench", data_dir=tmp_path)
    examples = task.load("test")
    predictions = [task.parse_answer(row[-1], e) for row, e in zip(rows, examples)]
    assert predictions[1] is None  # unparsable: scores 0 and is counted by the report
    scores = task.metric(predictions, [task.answer(e) for e in examples])
    ner = 2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3)  # pooled: tp 2, fp 2, fn 1
    assert scores["task:mc"] == 0.5 and scores["task:ner"] == pytest.approx(ner)
    assert scores["task:ret"] == pytest.approx(1 / 3)
    assert scores["track:t1"] == pytest.approx((0.5 + ner) / 2) and scores["track:t2"] == pytest.approx(1 / 3)
    assert scores["overall"] == pytest.approx((0.5 + ner + 1 / 3) / 3)


def test_shopbench_bad_row_names_file_line_and_field(tmp_path):
    (tmp_path / "dev.jsonl").write_text('{"input_field": "q", "output_field": "x", "task_name": "a", "track": "t", '
                                        '"task_type": "ranking", "metric": "ndcg"}\n')
    with pytest.raises(fasttune.FasttuneError, match=r"dev.jsonl, line 1: field 'output_field' is 'x'"):
        fasttune.tasks.get("shopbench", data_dir=tmp_path).load("test")


def test_recipe_mpr_embedding_baseline_picks_the_closest_option(data_root):
    task = fasttune.tasks.get("recipe_mpr", data_dir=data_root / "recipe_mpr")
    examples = task.load("test")
    letters = task.embedding_baseline(examples)
    accuracy = sum(p == task.answer(e) for p, e in zip(letters, examples)) / len(examples)
    assert set(letters) <= set("ABCDE") and accuracy > 0.3  # chance is 0.2


def test_scitldr_warns_with_the_count_of_training_papers_it_leaves_out(data_root):
    task = _task("scitldr", data_root)
    with pytest.warns(FasttuneWarning, match=r"scitldr left out 1 training paper\(s\) whose abstract is also in the "
                                             r"test split \(scitldr_A_train.jsonl\)"):
        assert len(task.load("train")) == 1991


def _shopbench_rows(tmp_path, rows):
    import json

    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(
        {"input_field": "q", "output_field": gold, "task_name": name, "track": "t", "task_type": kind,
         "metric": metric}) for name, kind, metric, gold in rows))
    task = fasttune.tasks.get("shopbench", data_dir=tmp_path)
    return task, task.load("test")


def test_shopbench_scores_edge_case_replies_as_the_starter_kit_does(tmp_path):
    task, examples = _shopbench_rows(tmp_path, [
        ("rank", "ranking", "ndcg", [3, 2, 1, 0, 0]),
        ("ret", "retrieval", "hit rate@3", [1, 2, 3]),
        ("ner", "named_entity_recognition", "micro f1", ["tablette"]),
        ("ner2", "named_entity_recognition", "micro f1", ["tablette"]),
    ])
    replies = ["1, 9, 2, 8, 3", "x" * 5000 + " 1, 2, 3", "tablette,", "['  TABLETTE ']"]
    scores = [task.score(task.parse_answer(r, e), task.answer(e))["score"] for r, e in zip(replies, examples)]
    # ranking 1, 2, 3 after dropping 9 and 8 (no such items) is the ideal order: NDCG 1 (kept, 9 and 8 gave 0.946)
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == 0.0  # the numbers lie after the first 5,000 characters: not read
    assert scores[2] == 1.0 and scores[3] == 1.0  # the empty entity is dropped; entities compared stripped, lowered


def test_shopbench_embeds_an_empty_reply_for_sentence_similarity_rows_instead_of_scoring_zero(tmp_path):
    from fasttune import metrics

    task, examples = _shopbench_rows(tmp_path, [("gen", "generation", "sent-transformer", "a kettle")])
    expected = max(0.0, float(metrics.embed(["", "a kettle"])[1] @ metrics.embed(["", "a kettle"])[0]))
    assert task.parse_answer("  \n", examples[0]) == ""
    assert task.score(task.parse_answer("  \n", examples[0]), task.answer(examples[0]))["score"] == pytest.approx(expected)


def test_shopbench_report_shows_the_multiple_choice_distribution_and_per_type_scores(tmp_path):
    from fasttune.evaluation import EvalConfig, score_outputs

    task, examples = _shopbench_rows(tmp_path, [("mc", "multiple-choice", "accuracy", 1),
                                                ("mc", "multiple-choice", "accuracy", 2),
                                                ("mc", "multiple-choice", "accuracy", 3),
                                                ("ret", "retrieval", "hit rate@3", [1, 2])])
    report = score_outputs(task, examples, ["1", "1", "b", "1, 2"], model_name="m", engine="e", seconds=1.0,
                           config=EvalConfig(split="test", bootstrap_resamples=100))
    assert report.predicted == {"multiple-choice: 1": 2, "unparsed": 1}
    assert report.gold == {"multiple-choice: 1": 1, "multiple-choice: 2": 1, "multiple-choice: 3": 1}
    assert report.per_category["task_type:multiple-choice"] == {"n": 3, "score": pytest.approx(1 / 3)}
    assert report.per_category["task_type:retrieval"] == {"n": 1, "score": 1.0}
