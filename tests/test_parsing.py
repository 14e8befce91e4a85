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
