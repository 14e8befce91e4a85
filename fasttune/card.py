"""The adapter card, `fasttune.json`: the base model, task, settings and losses saved with every adapter.

The one place that reads and writes cards and finds an adapter's base model. A relative `base_model` is taken
relative to the card's own folder, so an adapter and its base can move together.
"""

from __future__ import annotations

import json
from pathlib import Path

from fasttune import hub
from fasttune.errors import FasttuneError, read_json

CARD_NAME = "fasttune.json"


def read_card(folder: str | Path) -> dict:
    """The card in `folder`, or {} when it has none."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return {}
    card = read_json(path, f"Fix it, or delete it to fall back on the base model named in {path.parent}/"
                            "adapter_config.json")
    if not isinstance(card, dict):
        raise FasttuneError(f"The adapter card is not a JSON object (file={path}, type={type(card).__name__}). "
                            "Write it as an object such as {\"base_model\": \"/path/to/base\"}.")
    return card


def write_card(folder: str | Path, card: dict) -> Path:
    """Write `card` as `folder`/fasttune.json; values JSON cannot hold are written as text."""
    path = Path(folder) / CARD_NAME
    path.write_text(json.dumps(card, indent=2, default=str))
    return path


def resolve_base_model(adapter_dir: str | Path, card: dict | None = None) -> Path:
    """The base model folder of the adapter in `adapter_dir`: the card's `base_model` (of `card`, default: the
    folder's card), else PEFT's `base_model_name_or_path`; a relative path is taken from `adapter_dir`, and a hub id
    in PEFT's (an adapter from the hub) is found through the hub cache."""
    adapter_dir = Path(adapter_dir)
    card_path = adapter_dir / CARD_NAME
    base = (read_card(adapter_dir) if card is None else card).get("base_model")
    if base is not None and not isinstance(base, str):
        raise FasttuneError(f"The adapter card's base_model is not a folder path (base_model={base!r}, "
                            f"file={card_path}). Set 'base_model' to the base model's folder, as a string.")
    config_path = adapter_dir / "adapter_config.json"
    if not base and config_path.is_file():
        config = read_json(config_path, "Save the adapter again with PEFT's save_pretrained")
        base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
        if isinstance(base, str) and not (adapter_dir / base).is_dir() and hub.looks_like_hub_id(base):
            return hub.model_folder(base)  # an adapter from the hub names its base by hub id
    path = Path(base).expanduser() if isinstance(base, str) and base else None
    if path is not None and not path.is_absolute():
        path = (adapter_dir / path).resolve()
    if path is None or not path.is_dir():
        raise FasttuneError(f"The base model of adapter {adapter_dir} is not a local folder (base_model={base}). "
                            f"Edit 'base_model' in {card_path} to point at it (a relative path is taken from "
                            "the adapter folder).")
    return path

