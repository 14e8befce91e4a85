import pytest

from fasttune.parsing import first_integer, first_label, option_letter


@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"), ("yes", "yes"), ("YES!", "yes"), ("no, because the premise says otherwise", "no"),
    ("No", "no"), ("The answer is yes", "yes"), ("  no\n", "no"), ("", None), (None, None),
    ("I cannot tell", None), ("nothing here", None), ("not entailed", None), ("yesterday", None),
    ("asdf qwer", None),
])
def test_yes_no_parsing_handles_adversarial_outputs(text, expected):
    assert first_label(text, ("yes", "no")) == expected


@pytest.mark.parametrize("text, expected", [
    ("The answer is (C)", "C"), ("c", "C"), ("C", "C"), ("(b)", "B"), ("E.", "E"),
    ("Answer: d", "D"), ("the answer is b", "B"), ("C) Simple creamy oyster soup", "C"),
    ("B. Salmon roasted", "B"), ("A good choice is (D)", "D"), ("", None), ("I like soup", None),
    ("F", None), ("a recipe with oysters", None), ("(F) none", None),
])
def test_option_letter_parsing_handles_adversarial_outputs(text, expected):
    assert option_letter(text, "ABCDE") == expected


@pytest.mark.parametrize("text, expected", [
    ("512", 512), ("The larger number is 903.", 903), ("1,024 is larger", 1024), ("-7", -7),
    ("", None), ("neither", None), ("To solve this problem, we need to", None),
])
def test_first_integer_parsing(text, expected):
    assert first_integer(text) == expected


ODD_REPLIES = ["", " ", "\n\t \n", "٣", "²", "³, ², ¹", "৩, ٣", "١٢٣", "x" * 100_000, "1" * 100_000,
               "1, " * 30_000, "[" * 100_000, "['" + "a" * 100_000 + "']", "\x00", "🙂 yes", "\u2028no\u0085",
               "-", ",,,", "[1, [2]]", "{'a': 1}", "answer is", None, 7, 3.5, ["yes"], b"yes"]


def _examples_of_every_builtin_task(data_root):
    import fasttune

    for name in fasttune.tasks.builtin():
        task = fasttune.tasks.get(name)
        task.data_dir = data_root / (task.data_folder or task.name)
        examples = task.load(task.splits[-1])
        if name == "shopbench":  # one example of each task type: its parser depends on it
            examples = list({example["task_type"]: example for example in examples}.values())
        for example in examples[:2]:
            yield task, example


def test_every_builtin_parser_is_total_on_odd_replies_and_non_strings_are_unparsed(data_root):
    seen = set()
    for task, example in _examples_of_every_builtin_task(data_root):
        seen.add(task.name)
        for reply in ODD_REPLIES:
            parsed = task.parse_answer(reply, example)  # must not raise
            task.score(parsed, task.answer(example))
            if not isinstance(reply, str):
                assert parsed is None, (task.name, reply)
    assert len(seen) == 9


@pytest.mark.parametrize("reply", ODD_REPLIES)
def test_shared_parsers_never_raise_and_read_unicode_digits_as_python_does(reply):
    first_label(reply, ("yes", "no"))
    option_letter(reply, "ABCDE")
    first_integer(reply)
    assert first_integer("٣ apples") == 3 and first_integer("²") is None and first_integer("1" * 5000) is None
