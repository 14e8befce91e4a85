import pytest

import fasttune
from fasttune import splits
from fasttune.task import Sample, Task


class Echo(Task):
    name = "echo_overlap_test"

    def __init__(self, rows):
        super().__init__()
        self.rows = rows

    def load(self, split):
        return self.rows[split]

    def format(self, example):
        return Sample([{"role": "user", "content": example["text"]}], "x")


def test_hash_buckets_are_stable_and_ignore_case_and_punctuation():
    assert splits.bucket("who got the first nobel prize in physics") == 67
    assert splits.bucket("Who got the first Nobel prize in physics?") == 67


def test_train_refuses_the_test_split_and_names_it(tmp_path):
    task = fasttune.tasks.get("larger_number")
    with pytest.raises(fasttune.FasttuneError, match=r"Refusing to train task 'larger_number' on its test split "
                                                     r"\(split='test'\)\. Train on one of: train, validation"):
        fasttune.train(None, task, split="test", output_dir=str(tmp_path))


def test_train_refuses_rows_that_repeat_test_rows_after_normalisation(tmp_path):
    task = Echo({"train": [{"id": 1, "text": "Is the sky blue?"}, {"id": 2, "text": "Fresh row"},
                           {"id": 3, "text": "an apple, A day"}],
                 "test": [{"id": 9, "text": "is sky blue"}, {"id": 8, "text": "Apple day!"}]})
    found = splits.overlap(task, task.load("train"), "train", "test")
    assert found.ids == [1, 3] and str(found) == "2 of 3 'train' rows repeat a 'test' row (ids: 1, 3)"
    with pytest.raises(fasttune.FasttuneError, match=r"Refusing to train task 'echo_overlap_test': 2 of 3 'train' "
                                                     r"rows repeat a 'test' row \(ids: 1, 3\) \(split='train'\)"):
        fasttune.train(None, task, output_dir=str(tmp_path))


@pytest.mark.parametrize("name", ["rte", "mnli", "recipe_mpr", "nq_open", "nq_open_oracle", "arxiv_title", "scitldr",
                                  "larger_number"])
def test_built_in_training_splits_share_no_row_with_the_test_split(name, data_root):
    task = fasttune.tasks.get(name)
    task.data_dir = data_root / (task.data_folder or task.name)
    for split in task.splits:
        if split != task.test_split:
            assert splits.overlap(task, task.load(split), split, task.test_split).ids == []
