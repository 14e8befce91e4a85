"""Bad input never passes silently: each case is an error naming file, row and field, or a counted warning."""

import json

import pytest
import torch

import fasttune
from fasttune import data
from fasttune.errors import FasttuneWarning
from fasttune.task import Sample, Task

RTE_ROW = {"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}


def rte_line(**changes) -> str:
    return json.dumps({**RTE_ROW, **changes}, ensure_ascii=False)


RTE_CASES = {
    "malformed JSON line": ("train.jsonl", rte_line() + '\n{"premise": "a", oops}\n',
                            r"train.jsonl, line 2: malformed JSON"),
    "missing field": ("train.jsonl", '{"premise": "a", "label": "entailment", "idx": 3}\n',
                      r"train.jsonl, line 1: missing field 'hypothesis'"),
    "wrong type": ("train.jsonl", rte_line() + "\n" + rte_line(premise=5, idx=1) + "\n",
                   r"train.jsonl, line 2: field 'premise' should be str, got int \(premise=5\)"),
    "index that is a boolean": ("train.jsonl", rte_line(idx=True) + "\n",
                                r"train.jsonl, line 1: field 'idx' should be int, got bool"),
    "empty split": ("train.jsonl", "\n\n", r"train.jsonl: no rows \(an empty split\)"),
    "duplicate ids": ("train.jsonl", rte_line() + "\n" + rte_line(premise="c") + "\n",
                      r"split 'train' \(.*\): duplicate id in rows 1 and 2 \(id='train-0'\)"),
    "label outside the label set": ("val.jsonl", rte_line(label="contradiction") + "\n",
                                    r"val.jsonl, row 1: field 'label' is 'contradiction'"),
    "non-UTF-8 bytes": ("train.jsonl",
                        rte_line().encode() + b"\n" + rte_line(premise="caf\xe9", idx=1).encode("latin-1"),
                        r"train.jsonl, line 2: not UTF-8"),
}


@pytest.mark.parametrize("case", RTE_CASES)
def test_bad_rte_file_is_an_error_naming_file_row_and_field(case, tmp_path):
    name, content, message = RTE_CASES[case]
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(fasttune.FasttuneError, match=message):
        fasttune.tasks.get("rte", data_dir=tmp_path).load("train" if name == "train.jsonl" else "test")


def test_recipe_mpr_field_of_the_wrong_type_names_the_item(tmp_path):
    rows = [{"query": "q", "query_type": {"Specific": 1}, "options": dict(zip("abcde", "vwxyz")), "answer": "a"}] * 500
    rows[7] = {**rows[7], "options": ["x", "y"]}
    (tmp_path / "500QA.json").write_text(json.dumps(rows))
    task = fasttune.tasks.get("recipe_mpr", data_dir=tmp_path)
    with pytest.raises(fasttune.FasttuneError, match=r"500QA.json, item 7: field 'options' should be dict, got list"):
        [task.load(split) for split in task.splits]


class ListTask(Task):
    """A task over rows given in code; `read` returns them, so Task.load's checks apply."""

    name = "list_task"
    kind = "choices"
    test_split = None  # every split holds the same rows: no held-out split to protect

    def __init__(self, rows, data_dir):
        super().__init__(data_dir)
        self.rows = rows

    def read(self, data_dir, split):
        return [dict(row) for row in self.rows]

    def format(self, example):
        return Sample([{"role": "user", "content": example["question"]}], example["answer"])

    def answer(self, example):
        return example["answer"]

    def parse_answer(self, text, example):
        return text.strip() or None

    def choices(self, example):
        return ["yes", "no"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return fasttune.load(tiny_model_dir, dtype=torch.float32, max_seq_length=64)


def test_empty_completion_names_the_example_and_field(tiny, tmp_path):
    task = ListTask([{"id": 1, "question": "q?", "answer": "yes"}, {"id": 2, "question": "q?", "answer": "  "}],
                    tmp_path)
    with pytest.raises(fasttune.FasttuneError, match=r"list_task' \(.*\), example id=2: field 'completion' is empty"):
        data.encode_for_training(task, task.load("train"), tiny.tokenizer, tiny.end_of_turn, 64)


def test_prompt_the_chat_template_cannot_render_names_the_example_in_training_and_evaluation(tiny, tmp_path):
    task = ListTask([{"id": "ok", "question": "q?", "answer": "yes"}, {"id": "bad", "question": 42, "answer": "no"}],
                    tmp_path)
    message = r"example id=bad: the chat template cannot render field 'prompt' \(TypeError"
    with pytest.raises(fasttune.FasttuneError, match=message):
        data.encode_for_training(task, task.load("train"), tiny.tokenizer, tiny.end_of_turn, 64)
    with pytest.raises(fasttune.FasttuneError, match=message):
        fasttune.evaluate(tiny, task, split="train")


def test_rows_longer_than_max_seq_length_are_skipped_with_a_warning_and_counted_in_the_record(tiny, tmp_path):
    long_question = "Is this long? " * 40  # far over max_seq_length=64 tokens
    rows = [{"id": i, "question": long_question if i in (2, 5) else "Short?", "answer": "yes"} for i in range(8)]
    task = ListTask(rows, tmp_path / "data")
    (tmp_path / "data").mkdir()
    with pytest.warns(FasttuneWarning, match=r"skipped 2 of 8 training examples longer than max_seq_length=64 "
                                             r"\(ids: 2, 5\)"):
        run = fasttune.train(tiny, task, max_steps=1, batch_size=4, output_dir=str(tmp_path / "run"))
    card = json.loads((run.adapter_dir / "fasttune.json").read_text())
    assert run.skipped_too_long == ["2", "5"]  # the ids, as in TrainingData and the card
    assert card["skipped_too_long"] == ["2", "5"] and card["train_examples"] == 6
