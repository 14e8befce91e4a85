"""Tasks `chat` and `instruction`: the user's own files, read, split, scored, trained and exported with no code."""

import csv
import hashlib
import json
import warnings

import pytest
import torch

import fasttune
from fasttune import conversation, data, splits
from fasttune.errors import FasttuneError, FasttuneWarning
from fasttune.evaluation import EvalConfig
from fasttune.own_data import OwnDataConfig

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def alpaca_rows(count):
    return [{"instruction": f"Is {n} even or odd?", "input": "", "output": "even" if n % 2 == 0 else "odd"}
            for n in range(count)]


def chat_rows(count):
    return [{"messages": [{"role": "user", "content": f"Say the number {n}."}, {"role": "assistant", "content": str(n)},
                          {"role": "user", "content": "And the next one?"},
                          {"role": "assistant", "content": str(n + 1)}]} for n in range(count)]


def instruction(tmp_path, rows, **options):
    return fasttune.tasks.get("instruction", train_file=str(write_jsonl(tmp_path / "rows.jsonl", rows)), **options)


def chat(tmp_path, rows, **options):
    return fasttune.tasks.get("chat", train_file=str(write_jsonl(tmp_path / "chats.jsonl", rows)), **options)


def every_row(task):
    return task.load("train") + task.load("test")


# --- formats ---------------------------------------------------------------------------------------------------------

def test_alpaca_rows_become_a_conversation_with_system_history_and_input_joined_by_a_newline(tmp_path):
    row = {"instruction": "Translate.", "input": "chat", "output": "cat", "system": "You translate French.",
           "history": [["Translate: chien", "dog"]]}
    task = instruction(tmp_path, [row], test_percent=0)

    [example] = task.load("train")

    assert example["messages"] == [
        {"role": "system", "content": "You translate French."}, {"role": "user", "content": "Translate: chien"},
        {"role": "assistant", "content": "dog"}, {"role": "user", "content": "Translate.\nchat"},
        {"role": "assistant", "content": "cat"}]
    assert example["id"] == "rows.jsonl, line 1"
    assert task.format(example).completion == "cat" and task.answer(example) == ("cat",)


def test_sharegpt_conversations_map_human_and_gpt_and_take_the_system_column(tmp_path):
    row = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}],
           "system": "Be kind."}
    [example] = chat(tmp_path, [row], test_percent=0).load("train")
    assert example["messages"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
                                   {"role": "assistant", "content": "Hello!"}]


def test_a_json_array_a_csv_with_own_columns_a_parquet_file_and_a_saved_dataset_read_the_same_rows(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"question": f"Is {n} even or odd?", "answer": "even" if n % 2 == 0 else "odd"} for n in range(30)]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    with open(tmp_path / "rows.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["question", "answer"])
        writer.writeheader()
        writer.writerows(rows)
    Dataset.from_list(rows).to_parquet(tmp_path / "rows.parquet")
    Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    columns = {"prompt": "question", "response": "answer"}

    read = {name: every_row(fasttune.tasks.get("instruction", data_dir=tmp_path, train_file=name, columns=columns))
            for name in ("rows.json", "rows.csv", "rows.parquet", "saved")}

    messages = {name: sorted(json.dumps(example["messages"]) for example in examples)
                for name, examples in read.items()}
    assert len(read["rows.csv"]) == 30 and len({json.dumps(m) for m in messages.values()}) == 1
    assert sorted(example["id"] for example in read["rows.csv"])[:2] == ["rows.csv, row 10", "rows.csv, row 11"]
    DatasetDict({"train": Dataset.from_list(rows[:20]), "test": Dataset.from_list(rows[20:])}).save_to_disk(
        tmp_path / "dict")
    saved = fasttune.tasks.get("instruction", data_dir=tmp_path, train_file="dict", columns=columns)
    assert len(saved.load("train")) == 20 and len(saved.load("test")) == 10


# --- LLaMA-Factory dataset_info.json --------------------------------------------------------------------------------

def dataset_info(tmp_path, entries):
    (tmp_path / "dataset_info.json").write_text(json.dumps(entries))
    return str(tmp_path / "dataset_info.json")


def test_a_llama_factory_alpaca_entry_with_columns_loads_unchanged(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", [{"q": "2+2?", "ctx": "", "a": "4", "sys": "Math."}] * 3)
    info = dataset_info(tmp_path, {"my_qa": {"file_name": "qa.jsonl", "columns": {
        "prompt": "q", "query": "ctx", "response": "a", "system": "sys"}}})

    task = fasttune.tasks.get("instruction", dataset_info=info, dataset="my_qa", test_percent=0)

    assert task.load("train")[0]["messages"] == [{"role": "system", "content": "Math."},
                                                 {"role": "user", "content": "2+2?"},
                                                 {"role": "assistant", "content": "4"}]


def test_a_llama_factory_sharegpt_entry_with_openai_tags_and_an_eval_dataset_loads_unchanged(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(4))
    write_jsonl(tmp_path / "eval.jsonl", chat_rows(2))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    info = dataset_info(tmp_path, {
        "mine": {"file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": tags},
        "mine_eval": {"file_name": "eval.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": tags}})

    task = fasttune.tasks.get("chat", dataset_info=info, dataset="mine", eval_dataset="mine_eval")

    assert len(task.load("train")) == 4 and len(task.load("test")) == 2
    assert task.load("test")[1]["messages"] == chat_rows(2)[1]["messages"]


def test_dataset_info_refusals_name_the_entry_and_say_what_to_do(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", alpaca_rows(3))
    info = dataset_info(tmp_path, {
        "alpaca_en": {"file_name": "qa.jsonl"},
        "from_hub": {"hf_hub_url": "someone/data"},
        "pairs": {"file_name": "qa.jsonl", "ranking": True},
        "sampled": {"file_name": "qa.jsonl", "num_samples": 2},
        "tools": {"file_name": "qa.jsonl", "columns": {"prompt": "instruction", "tools": "tools"}}})
    get = fasttune.tasks.get
    with pytest.raises(FasttuneError, match=r"dataset_info.json: Unknown dataset 'alpaca_em'. Did you mean: alpaca_en"):
        get("instruction", dataset_info=info, dataset="alpaca_em")
    with pytest.raises(FasttuneError, match=r"entry 'from_hub': the dataset is on a hub \(hf_hub_url='someone/data'\)"
                                            r"; fasttune reads local files"):
        get("instruction", dataset_info=info, dataset="from_hub")
    with pytest.raises(FasttuneError, match=r"entry 'pairs': the dataset is a preference dataset"):
        get("instruction", dataset_info=info, dataset="pairs")
    with pytest.raises(FasttuneError, match=r"entry 'sampled': field 'num_samples' is not read by fasttune"):
        get("instruction", dataset_info=info, dataset="sampled")
    with pytest.raises(FasttuneError, match=r"column key 'tools' is not supported"):
        get("instruction", dataset_info=info, dataset="tools")
    with pytest.raises(FasttuneError, match=r"entry 'alpaca_en': the dataset is formatting='alpaca': train it with "
                                            r"task 'instruction'"):
        get("chat", dataset_info=info, dataset="alpaca_en")


def test_a_file_that_changed_since_it_was_registered_is_read_with_a_warning(tmp_path):
    write_jsonl(tmp_path / "qa.jsonl", alpaca_rows(3))
    stale = hashlib.sha1(b"an older file").hexdigest()
    info = dataset_info(tmp_path, {"qa": {"file_name": "qa.jsonl", "file_sha1": stale}})
    with pytest.warns(FasttuneWarning, match=rf"qa.jsonl: its SHA-1 is [0-9a-f]{{40}}, not the file_sha1 {stale}"):
        fasttune.tasks.get("instruction", dataset_info=info, dataset="qa")


# --- splits ----------------------------------------------------------------------------------------------------------

def test_the_hash_split_is_seeded_disjoint_and_keeps_every_row(tmp_path):
    rows = alpaca_rows(200)
    task = instruction(tmp_path, rows, test_percent=20)
    again = instruction(tmp_path, rows, test_percent=20)
    reseeded = instruction(tmp_path, rows, test_percent=20, split_seed=1)

    train, test = task.load("train"), task.load("test")

    assert len(train) + len(test) == 200 and 25 <= len(test) <= 55
    assert {e["id"] for e in train}.isdisjoint(e["id"] for e in test)
    assert [e["id"] for e in again.load("test")] == [e["id"] for e in test]
    assert [e["id"] for e in reseeded.load("test")] != [e["id"] for e in test]
    assert not splits.overlap(task, train, "train", "test").ids


def test_rows_of_the_eval_file_that_repeat_a_training_prompt_are_refused_for_training(tmp_path):
    write_jsonl(tmp_path / "eval.jsonl", alpaca_rows(40)[35:])
    task = instruction(tmp_path, alpaca_rows(40), eval_file=str(tmp_path / "eval.jsonl"))
    assert len(task.load("test")) == 5
    with pytest.raises(FasttuneError, match=r"Refusing to train task 'instruction': 5 of 40 'train' rows repeat a "
                                            r"'test' row \(ids: rows.jsonl, line 36"):
        splits.refuse_test_rows(task, "train", task.load("train"))


# --- scoring ---------------------------------------------------------------------------------------------------------

def test_declared_labels_score_by_log_likelihood_with_accuracy_and_recall_per_label(tmp_path):
    task = instruction(tmp_path, alpaca_rows(20), labels=["even", "odd"])
    example = task.load("train")[0]
    assert task.kind == "choices" and task.primary_metric == "accuracy"
    assert task.choices(example) == ["even", "odd"] and task.has_closed_answer(example)
    assert task.parse_answer("It is Odd.", example) == "odd"
    assert task.metric(["even", "odd", None, "odd"], ["even", "even", "odd", "odd"]) == {
        "accuracy": 0.5, "recall_even": 0.5, "recall_odd": 0.5}


def test_without_labels_replies_are_scored_by_exact_match_f1_rouge_and_bleu_or_the_named_metrics(tmp_path):
    task = chat(tmp_path, chat_rows(3))
    assert task.kind == "generation" and task.choices(task.load("train")[0]) is None
    scores = task.metric(["The Eiffel tower", None], [("the eiffel tower",), ("Rome",)])
    assert list(scores) == ["exact_match", "f1", "rougeL", "bleu"] and task.primary_metric == "exact_match"
    assert scores["exact_match"] == scores["f1"] == scores["rougeL"] == 0.5
    named = chat(tmp_path, chat_rows(3), metrics=["subem", "rouge2"])
    assert named.metric(["it is Rome, Italy", "Paris"], [("Rome",), ("Rome",)]) == {"subem": 0.5, "rouge2": 0.0}
    assert named.primary_metric == "subem"


def test_unknown_metrics_and_labels_with_metrics_are_refused_at_once():
    with pytest.raises(FasttuneError, match=r"Unknown metric 'rogueL'. Did you mean: rougeL"):
        OwnDataConfig(train_file="x.jsonl", metrics=["rogueL"])
    with pytest.raises(FasttuneError, match=r"labels holds 'Yes' twice.*; labels are scored by accuracy"):
        OwnDataConfig(train_file="x.jsonl", labels=["yes", "Yes"], metrics=["f1"])


# --- bad input: file, line and field --------------------------------------------------------------------------------

def test_mixed_formats_in_one_file_are_refused_naming_both_lines(tmp_path):
    sharegpt = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    with pytest.raises(FasttuneError, match=r"chats.jsonl, line 3: mixed formats in one file: this row is a chat "
                                            r"\('conversations' with from/value\), but line 1 is a chat \('messages' "
                                            r"with role/content\)"):
        chat(tmp_path, [*chat_rows(2), sharegpt]).load("train")
    with pytest.raises(FasttuneError, match=r"rows.jsonl, line 2: mixed formats in one file: this row is a chat "
                                            r"\('messages' with role/content\), but line 1 is alpaca"):
        instruction(tmp_path, [*alpaca_rows(1), *chat_rows(1)]).load("train")


def test_an_alpaca_file_given_to_the_chat_task_says_which_task_reads_it(tmp_path):
    with pytest.raises(FasttuneError, match=r"chats.jsonl, line 1: missing field 'messages' \(or 'conversations'\): "
                                            r"an alpaca row. Train alpaca rows with task 'instruction'"):
        chat(tmp_path, alpaca_rows(2)).load("train")


def test_an_empty_assistant_turn_is_refused_naming_file_line_and_field(tmp_path):
    rows = chat_rows(3)
    rows[1]["messages"][3]["content"] = " "
    with pytest.raises(FasttuneError, match=r"chats.jsonl, row 2: the assistant turn is empty \(' '\).*"
                                            r"\(field 'messages\[3\].content'\)"):
        chat(tmp_path, rows).load("train")
    empty_output = alpaca_rows(3)
    empty_output[2]["output"] = ""
    with pytest.raises(FasttuneError, match=r"rows.jsonl, row 3: field 'output' must be non-empty text"):
        instruction(tmp_path, empty_output).load("train")


def test_a_conversation_ending_on_a_user_turn_is_refused_naming_file_line_and_field(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
                               {"from": "human", "value": "Bye"}], "system": "Be kind."}]
    with pytest.raises(FasttuneError, match=r"chats.jsonl, row 1: the conversation ends on a user turn; it must end "
                                            r"on the assistant reply to train on \(field 'conversations\[2\].value'\)"):
        chat(tmp_path, rows).load("train")


def test_unknown_column_keys_and_columns_missing_from_the_file_suggest_close_names(tmp_path):
    with pytest.raises(FasttuneError, match=r"columns \(task 'instruction'\): Unknown column key 'respnse'. "
                                            r"Did you mean: response"):
        instruction(tmp_path, alpaca_rows(3), columns={"respnse": "output"})
    with pytest.raises(FasttuneError, match=r"rows.jsonl \(columns.prompt='instuction'\): Unknown column "
                                            r"'instuction'. Did you mean: instruction\?"):
        instruction(tmp_path, alpaca_rows(3), columns={"prompt": "instuction"}).load("train")
    csv_file = tmp_path / "qa.csv"
    csv_file.write_text("question,answer\nWhat is 2+2?,4\n")
    with pytest.raises(FasttuneError, match=r"qa.csv \(the default column of prompt\): Unknown column 'instruction'.*"
                                            r"Map the file's columns with columns: \{prompt: <column>\}"):
        fasttune.tasks.get("instruction", train_file=str(csv_file)).load("train")


def test_unknown_roles_tool_turns_and_a_label_outside_the_set_are_refused_naming_the_field(tmp_path):
    bot = [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "bot", "value": "Hello"}]}]
    with pytest.raises(FasttuneError, match=r"row 1: field 'conversations\[1\].from' is 'bot', expected one of "
                                            r"\['assistant', 'gpt', 'human', 'system', 'user'\]. Name the role"):
        chat(tmp_path, bot).load("train")
    tool = [{"messages": [{"role": "user", "content": "Weather?"}, {"role": "tool", "content": "{}"}]}]
    with pytest.raises(FasttuneError, match=r"field 'messages\[1\].role' is 'tool'.*Tool turns are not supported"):
        chat(tmp_path, tool).load("train")
    rows = alpaca_rows(4)
    rows[3]["output"] = "evn"
    with pytest.raises(FasttuneError, match=r"rows.jsonl, row 4: field 'output' is 'evn', expected one of the labels "
                                            r"\['even', 'odd'\]"):
        instruction(tmp_path, rows, labels=["even", "odd"]).load("train")


def test_a_malformed_line_and_a_message_that_is_not_an_object_name_the_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(chat_rows(1)[0]) + "\n{\"messages\": [\n")
    with pytest.raises(FasttuneError, match=r"chats.jsonl, line 2: malformed JSON"):
        fasttune.tasks.get("chat", train_file=str(path)).load("train")
    with pytest.raises(FasttuneError, match=r"line 1: field 'messages\[0\]' should be dict, got str"):
        chat(tmp_path, [{"messages": ["Hi", "Hello"]}]).load("train")


def test_config_problems_are_reported_together():
    with pytest.raises(FasttuneError, match=r"give the rows as train_file or as dataset_info.*test_percent must be in "
                                            r"\[0, 100\).*train_on must be 'all' or 'last'"):
        OwnDataConfig(test_percent=100, train_on="first")


# --- training rows ---------------------------------------------------------------------------------------------------

def test_sft_rows_of_a_multi_turn_chat_carry_the_loss_on_every_reply_or_the_last(tmp_path, embedded_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    for train_on, replies in (("all", ["Paris.", "Rome."]), ("last", ["Rome."])):
        task = chat(tmp_path, [{"messages": CHAT}], train_on=train_on, test_percent=0)
        encoded = data.encode_for_training(task, task.load("train"), tokenizer, "<|im_end|>", 512)
        [row] = encoded.rows
        trained = [token for token, mask in zip(row["input_ids"], row["completion_mask"]) if mask]
        assert tokenizer.decode(trained) == "".join(reply + "<|im_end|>" for reply in replies)
        assert row["input_ids"] == conversation.encode(tokenizer, CHAT, "<|im_end|>").input_ids


# --- one run per data case: train a few steps, evaluate, export the adapter ----------------------------------------

def train_evaluate_export(task, tiny_model_dir, tmp_path):
    model = fasttune.load(tiny_model_dir, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FasttuneWarning)  # nothing set aside
        run = fasttune.train(model, task, max_steps=2, batch_size=4, logging_steps=1, output_dir=str(tmp_path / "run"))
    report = fasttune.evaluate(run.model, task, config=EvalConfig(limit=4, max_new_tokens=4, bootstrap_resamples=50))
    out = fasttune.export(run, tmp_path / "export", formats=("adapter",), max_new_tokens=2)
    card = json.loads((out.adapter_dir / "fasttune.json").read_text())
    assert len(run.losses) == 2 and all(loss > 0 for _, loss in run.losses) and run.train_tokens > 0
    assert card["task"]["name"] == task.name and card["task"]["options"] == json.loads(json.dumps(
        task.describe()["options"]))
    return run, report


def test_an_alpaca_jsonl_trains_evaluates_and_exports(tmp_path, tiny_model_dir):
    task = instruction(tmp_path, alpaca_rows(40), labels=["even", "odd"], test_percent=25)
    run, report = train_evaluate_export(task, tiny_model_dir, tmp_path)
    assert report.engine == "loglik" and report.n == 4 and set(report.metrics) >= {"accuracy"}
    assert sum(report.predicted.values()) == 4 and run.data == {}


def test_a_multi_turn_messages_jsonl_trains_evaluates_and_exports(tmp_path, tiny_model_dir):
    task = chat(tmp_path, chat_rows(40), test_percent=25)
    _, report = train_evaluate_export(task, tiny_model_dir, tmp_path)
    assert report.engine == "generate" and report.n == 4
    assert list(report.metrics) == ["exact_match", "f1", "rougeL", "bleu"]


def test_a_csv_with_own_column_names_trains_evaluates_and_exports(tmp_path, tiny_model_dir):
    with open(tmp_path / "qa.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        writer.writerows([f"What comes after {n}?", str(n + 1)] for n in range(40))
    task = fasttune.tasks.get("instruction", data_dir=tmp_path, train_file="qa.csv", test_percent=25,
                              columns={"prompt": "question", "response": "answer"}, metrics=["exact_match", "f1"])
    _, report = train_evaluate_export(task, tiny_model_dir, tmp_path)
    assert list(report.metrics) == ["exact_match", "f1"] and report.n == 4


def test_a_dataset_info_entry_trains_evaluates_and_exports(tmp_path, tiny_model_dir):
    sharegpt = [{"conversations": [{"from": "human", "value": f"Double {n}."}, {"from": "gpt", "value": str(2 * n)}]}
                for n in range(40)]
    (tmp_path / "doubles.json").write_text(json.dumps(sharegpt))
    info = dataset_info(tmp_path, {"doubles": {"file_name": "doubles.json", "formatting": "sharegpt"}})
    task = fasttune.tasks.get("chat", dataset_info=info, dataset="doubles", test_percent=25)
    _, report = train_evaluate_export(task, tiny_model_dir, tmp_path)
    assert report.n == 4 and report.records[0]["id"].startswith("doubles.json, item ")


def test_an_uncached_hub_dataset_id_offline_names_the_id(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FasttuneError, match=r"The dataset hub id 'tatsu-lab/alpaca' is not in the local hub cache"):
        fasttune.tasks.get("instruction", train_file="tatsu-lab/alpaca")


def test_an_unknown_task_option_suggests_the_close_one():
    with pytest.raises(FasttuneError, match=r"Unknown option of task 'chat' 'trian_file'. Did you mean: train_file"):
        fasttune.tasks.get("chat", trian_file="x.jsonl")
