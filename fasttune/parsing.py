"""Answer extraction shared by tasks: label words, option letters, numbers. Never raises on model output: a reply
that is not a string (None, a number) has no answer."""

from __future__ import annotations

import re


def first_label(text: str, labels: tuple[str, ...]) -> str | None:
    """The first of `labels` that appears as a whole word in `text` (case-insensitive), else None."""
    if not isinstance(text, str):
        return None
    pattern = r"\b(" + "|".join(re.escape(label) for label in labels) + r")\b"
    match = re.search(pattern, text, flags=re.IGNORECASE)
    return match.group(1).lower() if match else None


def option_letter(text: str, letters: str) -> str | None:
    """The option letter that `text` picks among `letters` ("(C)", "answer is C", "C) ...", "c"), else None."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    upper, either = f"[{letters}]", f"[{letters}{letters.lower()}]"
    patterns = (
        (rf"^\(?({either})\)?[.:]?$", 0),                                  # the whole reply: "c", "(C)", "C."
        (rf"\(({upper})\)", 0),                                            # "(C)" anywhere
        (rf"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?({either})\b", re.IGNORECASE),  # "The answer is c"
        (rf"^({upper})(?:[).:]|\s|$)", 0),                                   # leading capital: "C) Simple soup"
    )
    for pattern, flags in patterns:
        match = re.search(pattern, text, flags=flags)
        if match:
            return match.group(1).upper()
    return None


def first_integer(text: str) -> int | None:
    """The first integer written in `text` (digits, optional minus sign, thousands commas), else None."""
    match = re.search(r"-?\d[\d,]*", text) if isinstance(text, str) else None
    if not match:
        return None
    try:  # int() refuses numbers of more than 4,300 digits (sys.get_int_max_str_digits)
        return int(match.group(0).replace(",", ""))
    except ValueError:
        return None
