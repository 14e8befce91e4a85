import collections

import pytest

import fasttune
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

        def parse_answer(self, text):
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
