"""Chat templates by name, or from a Jinja file: the text a conversation becomes before it is tokenized.

Each named template here is written from its model family's published prompt format (the turn markers and where a
reply starts and ends); the .jinja files beside this module say which. `fasttune.load(..., chat_template="chatml")`
or `chat_template="my_template.jinja"` puts one on the tokenizer; without it a model keeps its own. The template a
model carries is saved with its adapter (the tokenizer's chat_template.jinja and the card's `chat_template` entry),
the merged export and the GGUF (`tokenizer.chat_template`) and Modelfile, so inference renders prompts as training
did.
"""

from __future__ import annotations

import os
from pathlib import Path

from fasttune.errors import FasttuneError, unknown_name

FOLDER = Path(__file__).resolve().parent
TEMPLATES: dict[str, Path] = {name: FOLDER / f"{name}.jinja" for name in (
    "chatml", "llama-3", "qwen-2.5", "qwen-3", "gemma", "mistral", "phi-3")}
CARD_KEY = "chat_template"
MODEL_OWN = "model"
"""The card's template name when the model's own template was used."""
_PROBE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a colour."},
          {"role": "assistant", "content": "Blue."}]


def template_text(chat_template: str | os.PathLike) -> tuple[str, str]:
    """(name, Jinja text) of a template named in TEMPLATES, or of a .jinja file (its name is its absolute path)."""
    from fasttune.reading import read_text

    given = str(chat_template)
    if given in TEMPLATES:
        return given, TEMPLATES[given].read_text(encoding="utf-8")
    path = Path(given).expanduser()
    if path.suffix == ".jinja" or path.exists() or os.sep in given:
        return str(path.resolve()), read_text(path)
    raise unknown_name("chat template", given, list(TEMPLATES))


def use(tokenizer, chat_template: str | os.PathLike) -> dict:
    """Put the named template (or .jinja file) on `tokenizer` once `check` accepts it there (a refused one leaves the
    tokenizer as it was); returns the card entry {"name", "text"}."""
    name, text = template_text(chat_template)
    previous = tokenizer.chat_template
    tokenizer.chat_template = text
    try:
        check(tokenizer, name)
    except FasttuneError:
        tokenizer.chat_template = previous
        raise
    return {"name": name, "text": text}


def card_entry(tokenizer, card: dict) -> dict | None:
    """The card's record of the template on `tokenizer` (None when it has none), named as `card` names it when
    `card` recorded the same text, else "model" (the model's own)."""
    if tokenizer.chat_template is None:
        return None
    recorded = card.get(CARD_KEY)
    same = isinstance(recorded, dict) and recorded.get("text") == tokenizer.chat_template
    return {"name": recorded.get("name", MODEL_OWN) if same else MODEL_OWN, "text": tokenizer.chat_template}


def from_card(card: dict) -> str | None:
    """The template text a card recorded, or None (cards written before templates were recorded have none)."""
    entry = card.get(CARD_KEY)
    if entry is None:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), (str, dict)):
        raise FasttuneError(f"The card's {CARD_KEY} entry is not {{'name': str, 'text': str}} "
                            f"({CARD_KEY}={str(entry)[:80]!r}). Remove it to use the base model's template.")
    return entry["text"]


def require(tokenizer) -> None:
    """Raise when `tokenizer` has no chat template: fasttune renders every task's prompts as a conversation."""
    if tokenizer.chat_template is None:
        raise FasttuneError(
            f"The model has no chat template (chat_template=None), as base models often do, and fasttune renders "
            f"prompts as conversations. Pick one in load(..., chat_template=...) from {', '.join(TEMPLATES)} or "
            "give a .jinja file.")


def check(tokenizer, name: str) -> None:
    """Raise when the template on `tokenizer` cannot mark where assistant turns start and end: it must render a
    two-turn conversation, set a reply apart from a user turn, and nest as fasttune.conversation needs (each reply
    and its end-of-turn token extend the prompt that asks for it)."""
    from fasttune import backend, conversation

    template = f"chat template {name}"
    try:
        end_of_turn = backend.end_of_turn_token(tokenizer)
        marked = _marks_replies(tokenizer)
    except Exception as error:  # jinja raises many types: syntax errors, raise_exception, undefined names
        line = f", line {error.lineno}" if getattr(error, "lineno", None) else ""
        raise FasttuneError(f"The chat template cannot render a conversation (chat_template={name}{line}: "
                            f"{type(error).__name__}: {error}). Fix the template, or pick one of "
                            f"{', '.join(TEMPLATES)}.") from None
    if not marked:
        raise FasttuneError(f"The {template} cannot mark where assistant turns start and end: a reply is opened by "
                            "the same text as a user turn, so a model could not tell whose turn it is. Give each "
                            f"role its own marker (e.g. chatml's <|im_start|>assistant) or pick one of "
                            f"{', '.join(TEMPLATES)}.")
    conversation.encode(tokenizer, _PROBE, end_of_turn, where="Checking a two-turn conversation", template=template)


def _marks_replies(tokenizer) -> bool:
    """Whether the text between a user message and the reply differs from the text between a reply and the next user
    message (role markers, or mistral's [/INST] and [INST])."""
    marks = [f"\u2063{index}\u2063" for index in range(4)]
    text = tokenizer.apply_chat_template([{"role": ("user", "assistant")[index % 2], "content": mark}
                                          for index, mark in enumerate(marks)], tokenize=False)
    return text.split(marks[0])[1].split(marks[1])[0] != text.split(marks[1])[1].split(marks[2])[0]
