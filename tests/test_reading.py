"""Every task reader and method input reads through fasttune.reading: each malformed file is a FasttuneError naming
file, line (or row) and field, or a FasttuneWarning with a count where skipping is right (issue 19's cases)."""

import csv
import gzip
import io
import json

import pytest

import fasttune
from fasttune import reading
from fasttune.errors import FasttuneError, FasttuneWarning
from fasttune.methods.preference import read_pairs
from fasttune.reading import Field, read_documents
from fasttune.task import Sample, Task

# --- rows in the shapes of the real files (../shared/data) --------------------------------------------------------

RTE = {"premise": "No weapons were found in Iraq.", "hypothesis": "Weapons were found in Iraq.",
       "label": "not_entailment", "idx": 0}
MNLI_TEST = {"premise": "The new rights are nice enough", "hypothesis": "Everyone likes the new benefits",
             "label": "neutral"}
MNLI_TRAIN = {"text_a": "Our hearts are heavy this year.", "text_b": "We are sad this year.", "label": "entailment"}
NQ = {"question": "who got the first nobel prize in physics", "answer": ["Wilhelm Conrad Röntgen"]}
NQ_ORACLE = {"question": "who got the first nobel prize in physics", "answers": ["Wilhelm Conrad Röntgen"],
             "ctxs": [{"title": "List of Nobel laureates in Physics", "text": "The first Nobel Prize in Physics was "
                       "awarded in 1901 to Wilhelm Conrad Röntgen.", "hasanswer": True, "isgold": True}]}
SCITLDR = {"source": ["Mixed precision training is practical.", "We propose adaptive loss scaling."],
           "target": ["We devise adaptive loss scaling.", "A method that sets the loss scale automatically."],
           "paper_id": "rJlnfaNYvB", "title": "Adaptive Loss Scaling"}
RECIPE = {"query": "I want to make a warm dish containing oysters",
          "query_type": {"Specific": 0, "Commonsense": 1, "Negated": 0, "Analogical": 0, "Temporal": 0},
          "options": {"08cb462fdf": "Simple creamy oyster soup", "5b9441298f": "Crackers shaped like oysters",
                      "00310c3462": "Creamy clam chowder", "8635ea3d3c": "Tomato mussel soup",
                      "52b83497d8": "Warm vegetable soup"},
          "answer": "08cb462fdf", "correctness_explanation": {"warm dish": "soup"}}
ARXIV_HEADER = ["id", "submitter", "title", "abstract", "update_date"]
ARXIV = ["704.0001", "Pavel Nadolsky", "Calculation of prompt diphoton production",
         "  A fully differential calculation in perturbative\nquantum chromodynamics is presented.", "2008-11-13"]
SHOP_MC = {"input_field": "Which product is used with a yoga mat?\n0. garden hose\n1. foam yoga block\nAnswer: ",
           "output_field": 1, "task_name": "task_mc0", "task_type": "multiple-choice", "metric": "accuracy",
           "is_multiple_choice": True, "track": "amazon-kdd-cup-24-shopping-knowledge-reasoning"}
SHOP_RANK = {**SHOP_MC, "output_field": [1, 0, 0.1, 0.01], "task_name": "task_rank", "task_type": "ranking",
             "metric": "ndcg", "is_multiple_choice": False}
SHOP_GEN = {**SHOP_MC, "output_field": "durable and fast kettle", "task_name": "task_gen", "task_type": "generation",
            "metric": "rougel", "is_multiple_choice": False}
PAIR = {"prompt": "What is 2+2?", "chosen": "It is 4.", "rejected": "It is 5."}


def line(row) -> str:
    return json.dumps(row, ensure_ascii=False)


def write(path, content, compress=None):
    """Write text or bytes, gzip-compressed when the name ends in .gz (unless `compress` says otherwise)."""
    data = content if isinstance(content, bytes) else content.encode()
    path.write_bytes(gzip.compress(data) if (path.suffix == ".gz" if compress is None else compress) else data)
    return path


def jsonl(path, *rows):
    return write(path, "".join((row if isinstance(row, str) else line(row)) + "\n" for row in rows))


def load(name, data_dir, split="train"):
    return fasttune.tasks.get(name, data_dir=data_dir).load(split)


def raises(message):
    return pytest.raises(FasttuneError, match=message)


def refused(name, data_dir, message, split="train"):
    """Loading the task's split fails with a FasttuneError matching `message`."""
    with raises(message):
        load(name, data_dir, split)


def arxiv_csv(path, *rows, header=ARXIV_HEADER):
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    return write(path / "arxiv_metadata_first2000.csv", buffer.getvalue())


def recipe_file(path, *rows):
    return write(path / "500QA.json", json.dumps(list(rows), indent=4))


def question(number):
    return f"{NQ['question']} number {number}"


# --- MNLI ---------------------------------------------------------------------------------------------------------

def test_mnli_test_premise_nan_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev_matched.jsonl", MNLI_TEST, '{"premise": NaN, "hypothesis": "h", "label": "neutral"}')
    refused("mnli", tmp_path, r"dev_matched.jsonl, line 2: field 'premise' is nan \(premise=nan\)", "test")


@pytest.mark.parametrize("premise", [7, ["a", "list"]], ids=["int", "list"])
def test_mnli_test_premise_of_the_wrong_type_is_an_error_naming_line_and_field(tmp_path, premise):
    jsonl(tmp_path / "dev_matched.jsonl", MNLI_TEST, {**MNLI_TEST, "premise": premise})
    refused("mnli", tmp_path,
            rf"dev_matched.jsonl, line 2: field 'premise' should be str, got {type(premise).__name__}", "test")


def test_mnli_whitespace_only_premise_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "dev_matched.jsonl", {**MNLI_TEST, "premise": " \t "})
    refused("mnli", tmp_path, r"dev_matched.jsonl, row 1: field 'premise' must be non-empty text", "test")


def test_mnli_train_file_whose_top_level_is_a_list_is_an_error_naming_the_file(tmp_path):
    write(tmp_path / "train_subset_8999.json", json.dumps([MNLI_TRAIN]))
    refused("mnli", tmp_path, r"train_subset_8999.json: the top level is an array, expected an object of rows")


def test_mnli_train_entry_with_a_nan_premise_names_the_entry_and_field(tmp_path):
    write(tmp_path / "train_subset_8999.json", '{"0": %s, "1": {"text_a": NaN, "text_b": "b", "label": "neutral"}}'
          % line(MNLI_TRAIN))
    refused("mnli", tmp_path, r"train_subset_8999.json, entry '1': field 'text_a' is nan")


def test_mnli_train_label_outside_the_label_set_names_the_entry(tmp_path):
    write(tmp_path / "train_subset_8999.json", json.dumps({"0": {**MNLI_TRAIN, "label": "yes"}}))
    refused("mnli", tmp_path,
            r"train_subset_8999.json, entry '0': field 'label' is 'yes', expected one of \['contradiction'")


def test_mnli_train_json_that_does_not_parse_names_the_line(tmp_path):
    write(tmp_path / "train_subset_8999.json", '{\n  "0": {"text_a": "a",\n  oops}\n}')
    refused("mnli", tmp_path, r"train_subset_8999.json, line 3: malformed JSON")


# --- NQ-open and NQ-open with passages ------------------------------------------------------------------------------

def test_nq_open_answer_given_as_string_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "NQ-open.dev.jsonl", NQ, {**NQ, "answer": "Katy Perry"})
    refused("nq_open", tmp_path,
            r"NQ-open.dev.jsonl, line 2: field 'answer' should be list, got str \(answer='Katy Perry'\)")


def test_nq_open_empty_answer_text_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "NQ-open.dev.jsonl", NQ, {**NQ, "answer": [""]})
    refused("nq_open", tmp_path, r"NQ-open.dev.jsonl, row 2: field 'answer\[0\]' must be non-empty text")


def test_nq_open_empty_answer_list_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "NQ-open.dev.jsonl", {**NQ, "answer": []})
    refused("nq_open", tmp_path, r"NQ-open.dev.jsonl, row 1: field 'answer' must hold at least one item")


def test_nq_open_whitespace_only_question_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "NQ-open.dev.jsonl", NQ, {**NQ, "question": "   "})
    refused("nq_open", tmp_path, r"NQ-open.dev.jsonl, row 2: field 'question' must be non-empty text")


def test_nq_open_non_utf8_bytes_are_an_error_naming_the_line(tmp_path):
    write(tmp_path / "NQ-open.dev.jsonl", line(NQ).encode() + b"\n" + line({**NQ, "question": "caf\xe9"}).encode(
        "latin-1") + b"\n")
    with raises(r"NQ-open.dev.jsonl, line 2: not UTF-8 \(byte b'\\xe9'"):
        load("nq_open", tmp_path)


def test_nq_open_trailing_blank_lines_are_skipped_and_every_row_is_read(tmp_path):
    jsonl(tmp_path / "NQ-open.dev.jsonl", *({**NQ, "question": question(i)} for i in range(40)), "", "  ")
    task = fasttune.tasks.get("nq_open", data_dir=tmp_path)
    assert len(task.load("train")) + len(task.load("test")) == 40


def test_nq_open_line_separator_characters_inside_a_question_do_not_split_the_line(tmp_path):
    odd = [{**NQ, "question": f"who sang{mark}firework {i}"} for i, mark in enumerate("\u2028\u0085\u2029" * 10)]
    jsonl(tmp_path / "NQ-open.dev.jsonl", *odd)
    task = fasttune.tasks.get("nq_open", data_dir=tmp_path)
    questions = {e["question"] for split in task.splits for e in task.load(split)}
    assert questions == {row["question"] for row in odd}


def test_nq_open_oracle_with_empty_contexts_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "nq-open-oracle.jsonl.gz", NQ_ORACLE, {**NQ_ORACLE, "ctxs": []})
    refused("nq_open_oracle", tmp_path, r"nq-open-oracle.jsonl.gz, row 2: field 'ctxs' must hold at least one item")


def test_nq_open_oracle_context_without_text_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "nq-open-oracle.jsonl.gz", {**NQ_ORACLE, "ctxs": [{"title": "Nobel"}]})
    refused("nq_open_oracle", tmp_path, r"nq-open-oracle.jsonl.gz, line 1: missing field 'ctxs\[0\].text'")


@pytest.mark.parametrize("damage, error", [
    (lambda data: data[: len(data) // 2], "EOFError"),
    (lambda data: data[:12] + bytes(b ^ 0xFF for b in data[12:-8]) + data[-8:], "error"),
    (lambda data: b"not compressed at all\n", "BadGzipFile"),
], ids=["truncated", "corrupt", "not gzip"])
def test_nq_open_oracle_broken_gzip_file_is_an_error_naming_the_file(tmp_path, damage, error):
    data = gzip.compress((line(NQ_ORACLE) + "\n").encode() * 50)
    write(tmp_path / "nq-open-oracle.jsonl.gz", damage(data), compress=False)
    with raises(rf"nq-open-oracle.jsonl.gz: not a complete gzip file \({error}"):
        load("nq_open_oracle", tmp_path)


# --- SciTLDR --------------------------------------------------------------------------------------------------------

def scitldr_files(path, train_rows, test_rows=(SCITLDR,)):
    jsonl(path / "scitldr_A_train.jsonl", *train_rows)
    jsonl(path / "scitldr_A_dev.jsonl", *test_rows)


def test_scitldr_source_given_as_string_is_an_error_naming_line_and_field(tmp_path):
    scitldr_files(tmp_path, [], [{**SCITLDR, "source": "Whole abstract"}])
    refused("scitldr", tmp_path, r"scitldr_A_dev.jsonl, line 1: field 'source' should be list, got str", "test")


def test_scitldr_paper_id_that_is_a_list_is_an_error_naming_line_and_field(tmp_path):
    scitldr_files(tmp_path, [], [{**SCITLDR, "paper_id": ["rJlnfaNYvB"]}])
    refused("scitldr", tmp_path, r"scitldr_A_dev.jsonl, line 1: field 'paper_id' should be str, got list", "test")


def test_scitldr_abstract_of_empty_sentences_is_an_error_naming_row_and_field(tmp_path):
    scitldr_files(tmp_path, [], [{**SCITLDR, "source": ["", "  "]}])
    refused("scitldr", tmp_path, r"scitldr_A_dev.jsonl, row 1: field 'source' holds no text", "test")


def test_scitldr_reference_that_is_not_text_names_line_and_field(tmp_path):
    scitldr_files(tmp_path, [], [{**SCITLDR, "target": ["fine", 3]}])
    refused("scitldr", tmp_path, r"scitldr_A_dev.jsonl, line 1: field 'target\[1\]' should be str, got int", "test")


def test_scitldr_training_paper_whose_abstract_is_in_the_test_split_is_skipped_with_a_counted_warning(tmp_path):
    other = {**SCITLDR, "paper_id": "other", "source": ["A different abstract."]}
    scitldr_files(tmp_path, [{**SCITLDR, "paper_id": "copy"}, other])
    with pytest.warns(FasttuneWarning, match=r"scitldr left out 1 training paper\(s\) whose abstract is also in the "
                                             r"test split \(scitldr_A_train.jsonl\)"):
        train = load("scitldr", tmp_path)
    assert [e["id"] for e in train] == ["other"]


# --- ShopBench ------------------------------------------------------------------------------------------------------

def test_shopbench_multiple_choice_gold_given_as_bool_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", SHOP_MC, {**SHOP_MC, "output_field": True})
    refused("shopbench", tmp_path,
            r"dev.jsonl, line 2: field 'output_field' should be int or float or str or list, got bool", "test")


def test_shopbench_multiple_choice_gold_given_as_float_is_not_an_option_index(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_MC, "output_field": 1.5})
    refused("shopbench", tmp_path,
            r"dev.jsonl, line 1: field 'output_field' is 1.5, not a gold answer of a multiple-choice task: "
                r"field 'output_field' should be int, got float", "test")


def test_shopbench_generation_gold_given_as_list_of_ints_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_GEN, "output_field": [1, 2]})
    refused("shopbench", tmp_path,
            r"dev.jsonl, line 1: field 'output_field' is \[1, 2\], not a gold answer of a generation task: "
                r"field 'output_field\[0\]' should be str, got int", "test")


def test_shopbench_nan_input_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", SHOP_MC, line(SHOP_MC).replace(line(SHOP_MC["input_field"]), "NaN"))
    refused("shopbench", tmp_path, r"dev.jsonl, line 2: field 'input_field' is nan", "test")


def test_shopbench_whitespace_only_prompt_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_MC, "input_field": "\n\n"})
    refused("shopbench", tmp_path, r"dev.jsonl, row 1: field 'input_field' must be non-empty text", "test")


def test_shopbench_ranking_gold_with_strings_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_RANK, "output_field": ["1", "0"]})
    refused("shopbench", tmp_path,
            r"dev.jsonl, line 1: field 'output_field' is \['1', '0'\], not a gold answer of a ranking task: "
                r"field 'output_field\[0\]' should be int or float, got str", "test")


def test_shopbench_ranking_gold_with_nan_relevance_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", line(SHOP_RANK).replace("0.01", "NaN"))
    refused("shopbench", tmp_path,
            r"dev.jsonl, line 1: field 'output_field' is \[1, 0, 0.1, nan\], not a gold answer of a ranking "
                r"task: field 'output_field\[3\]' is nan", "test")


def test_shopbench_non_utf8_bytes_are_an_error_naming_the_line(tmp_path):
    write(tmp_path / "dev.jsonl", (line(SHOP_MC) + "\n").encode() + line(
        {**SHOP_GEN, "output_field": "café"}).encode("cp1252") + b"\n")
    refused("shopbench", tmp_path, r"dev.jsonl, line 2: not UTF-8", "test")


def test_shopbench_metric_that_does_not_score_the_task_type_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_MC, "metric": "ndcg"})
    refused("shopbench", tmp_path,
            r"dev.jsonl, row 1: field 'metric' is 'ndcg', which does not score a multiple-choice task "
                r"\(expected accuracy\)", "test")


def test_shopbench_unknown_task_type_names_row_and_field(tmp_path):
    jsonl(tmp_path / "dev.jsonl", {**SHOP_MC, "task_type": "essay"})
    refused("shopbench", tmp_path,
            r"dev.jsonl, row 1: field 'task_type' is 'essay', expected one of \['generation'", "test")


def test_shopbench_folder_without_data_files_says_which_files_it_reads(tmp_path):
    write(tmp_path / "notes.txt", "nothing here")
    refused("shopbench", tmp_path, r"No ShopBench files in .* Put the data in \*.json or \*.jsonl files there", "test")


def test_shopbench_json_file_holding_an_array_of_rows_is_read_like_json_lines(tmp_path):
    write(tmp_path / "dev.json", json.dumps([SHOP_MC, SHOP_RANK, SHOP_GEN]))
    examples = load("shopbench", tmp_path, "test")
    assert [e["id"] for e in examples] == ["dev.json:0", "dev.json:1", "dev.json:2"]
    assert [e["task_type"] for e in examples] == ["multiple-choice", "ranking", "generation"]


# --- Recipe-MPR -----------------------------------------------------------------------------------------------------

def test_recipe_mpr_options_that_are_ints_are_an_error_naming_item_and_field(tmp_path):
    recipe_file(tmp_path, RECIPE, {**RECIPE, "options": {**RECIPE["options"], "5b9441298f": 4}})
    refused("recipe_mpr", tmp_path, r"500QA.json, item 1: field 'options\['5b9441298f'\]' should be str, got int")


def test_recipe_mpr_five_identical_option_texts_are_an_error_naming_item_and_field(tmp_path):
    recipe_file(tmp_path, {**RECIPE, "options": {key: "Oyster soup " for key in RECIPE["options"]}})
    refused("recipe_mpr", tmp_path, r"500QA.json, item 0: field 'options' holds the same item twice \('Oyster soup '\)")


def test_recipe_mpr_duplicated_query_is_an_error_naming_both_items(tmp_path):
    other = {**RECIPE, "query": "Something with chickpeas"}
    recipe_file(tmp_path, RECIPE, other, {**RECIPE, "query": "  i want to make a WARM dish containing oysters"})
    refused("recipe_mpr", tmp_path, r"500QA.json, item 2: field 'query' repeats item 0")


def test_recipe_mpr_four_options_are_an_error_naming_item_and_field(tmp_path):
    recipe_file(tmp_path, {**RECIPE, "options": dict(list(RECIPE["options"].items())[:4])})
    refused("recipe_mpr", tmp_path, r"500QA.json, item 0: field 'options' should hold 5 items, got 4")


def test_recipe_mpr_answer_that_is_not_an_option_id_names_item_and_field(tmp_path):
    recipe_file(tmp_path, {**RECIPE, "answer": "ffffffffff"})
    refused("recipe_mpr", tmp_path,
            r"500QA.json, item 0: field 'answer' is 'ffffffffff', not one of the ids in field 'options'")


def test_recipe_mpr_query_type_flag_outside_0_and_1_names_item_and_field(tmp_path):
    recipe_file(tmp_path, {**RECIPE, "query_type": {**RECIPE["query_type"], "Negated": 2}})
    refused("recipe_mpr", tmp_path,
            r"500QA.json, item 0: field 'query_type\['Negated'\]' is 2, expected one of \[0, 1\]")


# --- arXiv titles (CSV) ---------------------------------------------------------------------------------------------

def test_arxiv_csv_row_with_an_extra_column_is_an_error_naming_the_row(tmp_path):
    arxiv_csv(tmp_path, ARXIV, [*ARXIV[:3], "an abstract, split", "by an unquoted comma", ARXIV[4]])
    refused("arxiv_title", tmp_path, r"arxiv_metadata_first2000.csv, row 3: 6 cells, but the header has 5 columns")


def test_arxiv_csv_row_with_a_missing_cell_is_an_error_naming_the_row(tmp_path):
    arxiv_csv(tmp_path, ARXIV, ARXIV[:4])
    refused("arxiv_title", tmp_path, r"arxiv_metadata_first2000.csv, row 3: 4 cells, but the header has 5 columns")


def test_arxiv_csv_whitespace_only_title_is_an_error_naming_row_and_field(tmp_path):
    arxiv_csv(tmp_path, ARXIV, [ARXIV[0], ARXIV[1], " \n ", *ARXIV[3:]])
    refused("arxiv_title", tmp_path, r"arxiv_metadata_first2000.csv, row 3: field 'title' must be non-empty text")


def test_arxiv_csv_without_the_abstract_column_names_row_and_field(tmp_path):
    arxiv_csv(tmp_path, ARXIV[:3], header=ARXIV_HEADER[:3])
    refused("arxiv_title", tmp_path, r"arxiv_metadata_first2000.csv, row 2: missing field 'abstract'")


def test_arxiv_csv_with_a_byte_order_mark_reads_its_id_column(tmp_path):
    path = arxiv_csv(tmp_path, *([f"{i}.{ARXIV[0]}", ARXIV[1], f"Title {i}", f"Abstract {i}", ARXIV[4]]
                                 for i in range(60)))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    task = fasttune.tasks.get("arxiv_title", data_dir=tmp_path)
    assert sum(len(task.load(split)) for split in task.splits) == 60


# --- RTE and what every JSON-lines reader shares ---------------------------------------------------------------------

def test_rte_whitespace_only_premise_is_an_error_naming_row_and_field(tmp_path):
    jsonl(tmp_path / "train.jsonl", RTE, {**RTE, "premise": " ", "idx": 1})
    refused("rte", tmp_path, r"train.jsonl, row 2: field 'premise' must be non-empty text \(premise=' '\)")


def test_rte_utf8_byte_order_mark_is_dropped_and_the_first_row_reads(tmp_path):
    write(tmp_path / "train.jsonl", b"\xef\xbb\xbf" + (line(RTE) + "\n" + line({**RTE, "idx": 1})).encode())
    rows = load("rte", tmp_path)
    assert [row["premise"] for row in rows] == [RTE["premise"]] * 2 and rows[0]["id"] == "train-0"


def test_rte_windows_line_endings_read_like_unix_ones(tmp_path):
    write(tmp_path / "train.jsonl", "\r\n".join(line({**RTE, "idx": i}) for i in range(3)) + "\r\n")
    assert [row["hypothesis"] for row in load("rte", tmp_path)] == [RTE["hypothesis"]] * 3


def test_rte_byte_order_mark_in_the_middle_of_the_file_names_the_line(tmp_path):
    write(tmp_path / "train.jsonl", line(RTE) + "\n\ufeff" + line({**RTE, "idx": 1}) + "\n")
    refused("rte", tmp_path, r"train.jsonl, line 2: a byte-order mark \(U\+FEFF\) starts the line")


def test_rte_utf16_file_is_an_error_saying_to_save_it_as_utf8(tmp_path):
    write(tmp_path / "train.jsonl", (line(RTE) + "\n").encode("utf-16"))
    refused("rte", tmp_path, r"train.jsonl: the file is UTF-16 \(encoding=utf-16\), not UTF-8. Save it as UTF-8")


def test_rte_data_file_that_is_a_directory_is_an_error_naming_it(tmp_path):
    (tmp_path / "train.jsonl").mkdir()
    refused("rte", tmp_path, r"train.jsonl is a folder, not a data file")


def test_rte_data_dir_that_is_a_file_says_so(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", RTE)
    refused("rte", path, r"Data file not found: .*train.jsonl/train.jsonl \(.*train.jsonl is a file, not a folder\)")


def test_rte_row_that_is_a_json_number_is_an_error_naming_the_line(tmp_path):
    jsonl(tmp_path / "train.jsonl", RTE, "42")
    refused("rte", tmp_path, r"train.jsonl, line 2: expected a JSON object, got a number \(42\)")


def test_rte_row_that_is_a_json_list_is_an_error_naming_the_line(tmp_path):
    jsonl(tmp_path / "train.jsonl", json.dumps([RTE]))
    refused("rte", tmp_path, r"train.jsonl, line 1: expected a JSON object, got an array")


def test_rte_5000_digit_integer_is_an_error_naming_the_line(tmp_path):
    jsonl(tmp_path / "train.jsonl", RTE, line(RTE).replace('"idx": 0', '"idx": ' + "7" * 5000))
    refused("rte", tmp_path, r"train.jsonl, line 2: a number with more than 4300 digits")


def test_rte_100k_deep_nested_array_is_an_error_naming_the_line(tmp_path):
    jsonl(tmp_path / "train.jsonl", line({**RTE, "premise": "DEEP"}).replace('"DEEP"', "[" * 100_000 + "]" * 100_000))
    refused("rte", tmp_path, r"train.jsonl, line 1: JSON nested too deeply to read")


def test_rte_field_given_twice_in_one_row_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "train.jsonl", line(RTE)[:-1] + ', "label": "entailment"}')
    refused("rte", tmp_path, r"train.jsonl, line 1: field 'label' appears twice in one object")


def test_rte_null_premise_is_an_error_naming_line_and_field(tmp_path):
    jsonl(tmp_path / "train.jsonl", {**RTE, "premise": None})
    refused("rte", tmp_path, r"train.jsonl, line 1: field 'premise' is null")


def test_value_problems_name_the_row_and_its_line_where_blank_lines_make_them_differ(tmp_path):
    jsonl(tmp_path / "val.jsonl", RTE, "", {**RTE, "idx": 1, "label": "maybe"})
    refused("rte", tmp_path, r"val.jsonl, row 2 \(line 3\): field 'label' is 'maybe', expected one of \['entailment', "
                r"'not_entailment'\]", "test")


# --- DPO pairs --------------------------------------------------------------------------------------------------------

def test_dpo_pair_whose_chosen_equals_rejected_after_stripping_is_an_error_naming_the_row(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", PAIR, {**PAIR, "chosen": " Paris\n", "rejected": "paris"})
    with raises(r"pairs.jsonl, row 2: 'chosen' and 'rejected' are the same text"):
        read_pairs(path)


def test_dpo_pair_with_an_unknown_role_is_an_error_naming_line_and_field(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", {**PAIR, "prompt": [{"role": "banana", "content": "2+2?"}]})
    with raises(r"pairs.jsonl, row 1: field 'prompt\[0\].role' is 'banana', expected one of \['assistant', "
                r"'system', 'user'\]"):
        read_pairs(path)


@pytest.mark.parametrize("prompt, message", [
    ("  ", r"row 1: field 'prompt' must be non-empty text"),
    ([], r"row 1: field 'prompt' must hold at least one item"),
    ([{"role": "user", "content": ""}], r"row 1: field 'prompt\[0\].content' must be non-empty text"),
    ([{"role": "user"}], r"line 1: missing field 'prompt\[0\].content'"),
], ids=["blank text", "no messages", "empty message", "message without content"])
def test_dpo_pair_with_an_empty_prompt_is_an_error_naming_the_row_and_field(tmp_path, prompt, message):
    path = jsonl(tmp_path / "pairs.jsonl", {**PAIR, "prompt": prompt})
    with raises(rf"pairs.jsonl, {message}"):
        read_pairs(path)


def test_dpo_pairs_file_with_no_rows_is_an_error(tmp_path):
    with raises(r"pairs.jsonl: no rows"):
        read_pairs(write(tmp_path / "pairs.jsonl", "\n"))


def test_dpo_pairs_read_from_a_csv_file(tmp_path):
    path = write(tmp_path / "pairs.csv", "prompt,chosen,rejected\n\"2+2, in words?\",four,five\n")
    pairs = read_pairs(path)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ([{"role": "user", "content": "2+2, in words?"}], "four", "five")]


# --- continued-pretraining documents ---------------------------------------------------------------------------------

def test_cpt_empty_text_file_is_an_error_not_zero_documents(tmp_path):
    with raises(r"a.txt: no documents, the file holds no text \(text_file=.*a.txt\)"):
        read_documents(write(tmp_path / "a.txt", "\n \n\n"))


def test_cpt_jsonl_file_named_json_is_read_row_by_row_not_as_one_text(tmp_path):
    path = jsonl(tmp_path / "abstracts.json", {"text": "First abstract."}, {"text": "Second abstract."})
    assert read_documents(path) == ["First abstract.", "Second abstract."]


def test_cpt_json_array_file_is_read_row_by_row(tmp_path):
    path = write(tmp_path / "abstracts.json", json.dumps([{"abstract": "One."}, {"abstract": "Two."}]))
    assert read_documents(path, "abstract") == ["One.", "Two."]


def test_cpt_utf8_byte_order_mark_is_not_kept_in_the_first_document(tmp_path):
    path = write(tmp_path / "a.txt", b"\xef\xbb\xbfFirst doc\n\nSecond doc\n")
    assert read_documents(path) == ["First doc", "Second doc"]


def test_cpt_windows_line_endings_still_separate_documents(tmp_path):
    path = write(tmp_path / "a.txt", "First doc\r\nline two\r\n\r\nSecond doc\r\n")
    assert read_documents(path) == ["First doc\nline two", "Second doc"]


def test_cpt_non_utf8_text_file_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path / "a.txt", "First doc\n\n".encode() + "Caf\xe9 au lait".encode("latin-1"))
    with raises(r"a.txt, line 3: not UTF-8"):
        read_documents(path)


def test_cpt_text_file_that_is_a_directory_is_an_error_naming_it(tmp_path):
    (tmp_path / "corpus.txt").mkdir()
    with raises(r"corpus.txt is a folder, not a data file"):
        read_documents(tmp_path / "corpus.txt")


def test_cpt_gzip_text_file_is_read(tmp_path):
    assert read_documents(write(tmp_path / "a.txt.gz", "One\n\nTwo\n")) == ["One", "Two"]


def test_cpt_rows_with_empty_text_are_skipped_with_a_counted_warning(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", {"text": "kept"}, {"text": "  "}, {"text": ""}, {"text": "also kept"})
    with pytest.warns(FasttuneWarning, match=r"a.jsonl: skipped 2 of 4 rows \(field 'text' is empty\)"):
        assert read_documents(path) == ["kept", "also kept"]


def test_cpt_data_file_of_only_empty_rows_is_an_error(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", {"text": ""})
    with pytest.warns(FasttuneWarning), raises(r"a.jsonl: no documents"):
        read_documents(path)


# --- every reader against the faults every file can have -------------------------------------------------------------

def task_reader(name, split=None):
    """Read a task's split (or all its splits) from a folder, before Task.load's split-level checks."""
    def read(data_dir):
        task = fasttune.tasks.get(name, data_dir=data_dir)
        return [example for s in ([split] if split else task.splits) for example in task.read(data_dir, s)]
    return read


def lines(*rows):
    return "".join(line(row) + "\n" for row in rows)


def csv_text(*rows):
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([ARXIV_HEADER, *rows])
    return buffer.getvalue()


READERS = {  # file name, a valid file, how it is read, how a single JSON row text becomes a file (JSON readers)
    "rte train": ("train.jsonl", lines(RTE, {**RTE, "idx": 1}), task_reader("rte", "train"), "{}\n"),
    "rte test": ("val.jsonl", lines(RTE), task_reader("rte", "test"), "{}\n"),
    "mnli train": ("train_subset_8999.json", json.dumps({"0": MNLI_TRAIN, "1": MNLI_TRAIN}, indent=4),
                   task_reader("mnli", "train"), '{{"0": {}}}'),
    "mnli test": ("dev_matched.jsonl", lines(MNLI_TEST, MNLI_TEST), task_reader("mnli", "test"), "{}\n"),
    "nq_open": ("NQ-open.dev.jsonl", lines(*({**NQ, "question": question(i)} for i in range(5))),
                task_reader("nq_open"), "{}\n"),
    "nq_open_oracle": ("nq-open-oracle.jsonl.gz", lines(NQ_ORACLE, {**NQ_ORACLE, "question": question(1)}),
                       task_reader("nq_open_oracle"), "{}\n"),
    "scitldr": ("scitldr_A_dev.jsonl", lines(SCITLDR, {**SCITLDR, "paper_id": "other"}), task_reader("scitldr", "test"),
                "{}\n"),
    "recipe_mpr": ("500QA.json", json.dumps([RECIPE, {**RECIPE, "query": "Chickpeas"}], indent=4),
                   task_reader("recipe_mpr"), "[{}]"),
    "arxiv_title": ("arxiv_metadata_first2000.csv", csv_text(ARXIV, [f"{ARXIV[0]}v2", *ARXIV[1:3], "Other.", ARXIV[4]]),
                    task_reader("arxiv_title"), None),
    "shopbench": ("dev.jsonl", lines(SHOP_MC, SHOP_RANK, SHOP_GEN), task_reader("shopbench"), "{}\n"),
    "dpo pairs": ("pairs.jsonl", lines(PAIR, {**PAIR, "prompt": [{"role": "user", "content": "3+3?"}]}),
                  lambda folder: read_pairs(folder / "pairs.jsonl"), "{}\n"),
    "cpt rows": ("docs.jsonl", lines({"text": "One document."}, {"text": "Another one."}),
                 lambda folder: read_documents(folder / "docs.jsonl"), "{}\n"),
    "cpt text": ("docs.txt", "One document,\nover two lines.\n\nAnother one.\n",
                 lambda folder: read_documents(folder / "docs.txt"), None),
}
WHOLE_FILE_JSON = {"mnli train", "recipe_mpr"}


def place_of_the_row(reader):
    return {"mnli train": "entry '0'", "recipe_mpr": "item 0"}.get(reader, "line 1")


@pytest.mark.parametrize("reader", READERS)
def test_every_reader_reads_its_valid_file_the_same_with_a_bom_windows_line_ends_or_trailing_blank_lines(
        tmp_path, reader):
    name, text, read, _ = READERS[reader]
    expected = read(write(tmp_path / name, text).parent)
    assert expected
    for variant in (b"\xef\xbb\xbf" + text.encode(), text.replace("\n", "\r\n"), text + "\n\n  \n"):
        assert read(write(tmp_path / name, variant).parent) == expected


FAULTS = {  # what is written in place of the reader's file, and the error it gives (from its name, text and reader)
    "a non-UTF-8 byte": (lambda text, row_file: text.encode() + "caf\xe9\n".encode("latin-1"),
                         lambda name, text, reader: rf"{name}, line {text.count(chr(10)) + 1}: not UTF-8 \(byte "
                                                    r"b'\\xe9'"),
    "UTF-16": (lambda text, row_file: text.encode("utf-16"),
               lambda name, text, reader: rf"{name}: the file is UTF-16 \(encoding=utf-16\), not UTF-8"),
    "a folder": (None, lambda name, text, reader: rf"{name} is a folder, not a data file"),
    "nothing": (lambda text, row_file: "\n \n", lambda name, text, reader: rf"{name}: " + {
        "arxiv_title": "no header line", "cpt text": "no documents"}.get(reader, r"no rows \(an empty split\)")),
    "a row that is a number": (lambda text, row_file: row_file.format("42"), lambda name, text, reader: (
        rf"{name}, {place_of_the_row(reader)}: expected a JSON object, got a number \(42\)")),
    "100k-deep nesting": (lambda text, row_file: row_file.format('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}"),
                          lambda name, text, reader: rf"{name}{'' if reader in WHOLE_FILE_JSON else ', line 1'}: "
                                                     "JSON nested too deeply to read"),
    "a 5000-digit integer": (lambda text, row_file: row_file.format('{"x": ' + "9" * 5000 + "}"),
                             lambda name, text, reader: rf"{name}{'' if reader in WHOLE_FILE_JSON else ', line 1'}: "
                                                        "a number with more than 4300 digits"),
}
JSON_FAULTS = ("a row that is a number", "100k-deep nesting", "a 5000-digit integer")
JSON_READERS = [reader for reader, (*_, row_file) in READERS.items() if row_file]


@pytest.mark.parametrize("reader, fault", [(reader, fault) for reader in READERS for fault in FAULTS
                                           if reader in JSON_READERS or fault not in JSON_FAULTS])
def test_every_reader_names_file_and_line_of_a_broken_file(tmp_path, reader, fault):
    name, text, read, row_file = READERS[reader]
    content, message = FAULTS[fault]
    if content is None:
        (tmp_path / name).mkdir()
    else:
        write(tmp_path / name, content(text, row_file))
    with raises(message(name, text, reader)):
        read(tmp_path)


@pytest.mark.parametrize("reader", sorted(set(READERS) - {"shopbench"}))  # ShopBench reads any *.json* in the folder
def test_every_reader_names_its_missing_file(tmp_path, reader):
    name, _, read, _ = READERS[reader]
    with raises(rf"Data file not found: .*{name}"):
        read(tmp_path)


def with_separators(value):
    """Every free text (one with a space; labels and ids have none) with U+2028 and U+0085 after its first space."""
    if isinstance(value, dict):
        return {key: with_separators(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_separators(item) for item in value]
    return value.replace(" ", " \u2028\u0085", 1) if isinstance(value, str) else value


@pytest.mark.parametrize("reader", JSON_READERS)
def test_every_json_reader_keeps_line_separators_inside_strings(tmp_path, reader):
    name, text, read, _ = READERS[reader]
    if reader in WHOLE_FILE_JSON:
        odd = json.dumps(with_separators(json.loads(text)), ensure_ascii=False)
    else:
        odd = "".join(line(with_separators(json.loads(row))) + "\n" for row in text.splitlines())
    assert "\u2028" in odd and "\\u2028" not in odd  # written raw, as a JSON writer may
    results = read(write(tmp_path / name, odd).parent)
    assert len(results) == len(read(write(tmp_path / name, text).parent))
    assert "\u2028\u0085" in json.dumps(results, ensure_ascii=False, default=vars)


# --- the layer itself: formats and field rules ------------------------------------------------------------------------

def test_parquet_rows_are_checked_like_json_rows_naming_row_and_field(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    path = tmp_path / "docs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"text": ["one", None, "three"]}), path)
    with raises(r"docs.parquet, row 2: field 'text' is null"):
        reading.read_rows(path, {"text": reading.TEXT})
    pyarrow.parquet.write_table(pyarrow.table({"text": ["one", "two"]}), path)
    assert read_documents(path) == ["one", "two"]


def test_parquet_nan_where_text_belongs_is_an_error_naming_row_and_field(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet

    path = tmp_path / "rows.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"prompt": ["a", "b"], "chosen": [1.0, float("nan")],
                                               "rejected": ["x", "y"]}), path)
    with raises(r"rows.parquet, row 1: field 'chosen' should be str, got float"):
        read_pairs(path)
    with raises(r"rows.parquet, row 2: field 'chosen' is nan"):
        reading.read_rows(path, {"chosen": Field(float)})


def test_file_that_is_not_parquet_is_an_error_naming_it(tmp_path):
    pytest.importorskip("pyarrow")
    with raises(r"x.parquet: not a readable Parquet file"):
        reading.read_rows(write(tmp_path / "x.parquet", "not parquet"), {"text": reading.TEXT})


def test_unknown_data_format_lists_the_known_ones(tmp_path):
    with raises(r"x.xlsx: unknown data format \(suffix='.xlsx'\). Use one of .jsonl, .ndjson, .json, .csv"):
        reading.read_rows(write(tmp_path / "x.xlsx", "x"), {"text": reading.TEXT})


def test_csv_header_naming_a_column_twice_is_an_error(tmp_path):
    with raises(r"x.csv, row 1: column 'text' appears twice in the header"):
        reading.read_csv(write(tmp_path / "x.csv", "text,text\na,b\n"), {"text": reading.TEXT})


def test_csv_cell_longer_than_the_csv_modules_limit_is_an_error_naming_the_line(tmp_path):
    with raises(r"x.csv, line 3: malformed CSV \(field larger than field limit"):
        reading.read_csv(write(tmp_path / "x.csv", "text\nshort\n" + "x" * 200_000 + "\n"), {"text": reading.TEXT})


def test_tsv_rows_are_read_with_tabs(tmp_path):
    records = reading.read_rows(write(tmp_path / "x.tsv", "text\tlabel\nhello, world\tyes\n"),
                                {"text": reading.TEXT, "label": Field(labels=("yes", "no"))})
    assert [record.row for record in records] == [{"text": "hello, world", "label": "yes"}]
    assert str(records[0].place) == f"{tmp_path / 'x.tsv'}, row 2"


@pytest.mark.parametrize("value, rule, expected", [
    (True, Field(int), "field 'x' should be int, got bool (x=True)"),
    (3, Field((int, float)), None),
    (None, Field(optional=True), None),
    ([1, 1], Field(list, items=Field(int), distinct=True), "field 'x' holds the same item twice (1)"),
    ({"a": "A", "b": " a"}, Field(dict, items=reading.TEXT, distinct=True), "field 'x' holds the same item twice"),
    ([[1], [2, "3"]], Field(list, items=Field(list, items=Field(int))), "field 'x[1][1]' should be int, got str"),
    (float("inf"), Field(float), "field 'x' is inf"),
    ("", Field(nonempty=False), None),
    ([], Field(list, nonempty=False), None),
], ids=["bool is no int", "int or float", "optional null", "repeated items", "repeated dict values",
        "nested item", "infinity", "empty text allowed", "empty list allowed"])
def test_field_rules(value, rule, expected):
    found = reading.problem(value, rule, "x")
    assert (found.text[: len(expected)] if found else None) == expected


def test_chat_messages_rule_accepts_a_chat_and_names_the_bad_message():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert reading.problem(chat, reading.MESSAGES, "messages") is None
    assert reading.problem(chat + [{"role": "bot", "content": "Hello"}], reading.MESSAGES, "messages").text.startswith(
        "field 'messages[2].role' is 'bot', expected one of ['assistant', 'system', 'user']")


# --- the task contract: one parse hook, a declared kind (issue 12, item 7) -------------------------------------------

def test_builtin_tasks_declare_their_kind():
    kinds = {name: fasttune.tasks.get(name).kind for name in fasttune.tasks.builtin()}
    assert kinds == {"larger_number": "choices", "rte": "choices", "recipe_mpr": "choices", "mnli": "choices",
                     "nq_open": "generation", "nq_open_oracle": "generation", "arxiv_title": "generation",
                     "scitldr": "generation", "shopbench": "generation"}


def test_task_whose_parse_answer_takes_no_example_is_refused_when_defined():
    with raises(r"Task class OneArgument: parse_answer takes no example; define parse_answer\(self, text, example\)"):
        class OneArgument(Task):
            def parse_answer(self, text):
                return text


def test_task_defining_a_second_parse_hook_is_refused_when_defined():
    with raises(r"Task class TwoHooks: it defines parse\(text, example\); the one parse hook is parse_answer"):
        class TwoHooks(Task):
            def parse_answer(self, text, example):
                return text

            def parse(self, text, example):
                return text


def test_task_kind_must_match_whether_it_has_choices():
    with raises(r"Task class NoChoices: kind is 'choices' but it defines no choices\(example\)"):
        class NoChoices(Task):
            kind = "choices"
    with raises(r"Task class UndeclaredChoices: it defines choices\(example\) but kind is 'generation'; set kind"):
        class UndeclaredChoices(Task):
            def choices(self, example):
                return ["yes", "no"]
    with raises(r"Task class Typo: kind is 'choice', expected 'choices' or 'generation'"):
        class Typo(Task):
            kind = "choice"


class Echo(Task):
    """Answers parsed against the example: right when the reply names the example's own word."""

    name = "echo_kind"
    test_split = None

    def read(self, data_dir, split):
        return [{"id": i, "word": word} for i, word in enumerate(("yes", "no"))]

    def format(self, example):
        return Sample([{"role": "user", "content": f"Say {example['word']}."}], example["word"])

    def answer(self, example):
        return example["word"]

    def parse_answer(self, text, example):
        return example["word"] if example["word"] in text.lower() else None


class EchoChoices(Echo):
    kind = "choices"

    def choices(self, example):
        return ["yes", "no"]


def test_evaluation_engine_follows_the_declared_kind_and_parsing_sees_the_example(tiny_model_dir, tmp_path):
    import torch

    model = fasttune.load(tiny_model_dir, dtype=torch.float32, max_seq_length=64)
    choices = fasttune.evaluate(model, EchoChoices(tmp_path), split="train")
    generated = fasttune.evaluate(model, Echo(tmp_path), split="train",
                                  config=fasttune.EvalConfig(split="train", max_new_tokens=2))
    assert (choices.engine, generated.engine) == ("loglik", "generate")
    assert all(r["parsed"] == (r["gold"] if r["output"] == r["gold"] else None) for r in choices.records)
