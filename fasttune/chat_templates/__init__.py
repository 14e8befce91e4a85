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
