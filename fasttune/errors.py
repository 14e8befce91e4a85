"""The one exception type fasttune raises for problems a user can fix."""

import difflib
import json
from pathlib import Path


class FasttuneError(Exception):
    """A problem with fasttune's input or setup; the message says what is wrong and how to fix it."""

    def __init__(self, message: str):
        super().__init__(f"fasttune: {message}")


class FasttuneWarning(UserWarning):
    """Something fasttune did that changes a result, e.g. examples set aside; the message says how many and why."""


def unknown_name(kind: str, name: str, known: list[str]) -> FasttuneError:
    """An error for an unknown `name`, suggesting close matches among `known`."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return FasttuneError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(sorted(known))}.")


def not_positive(config, names: tuple[str, ...], prefix: str = "") -> list[str]:
    """A problem line for each field of `config` in `names` that is set (not None) and not above zero.

    `prefix` names a nested config in the message (e.g. "lora." gives "lora.r must be positive").
    """
    return [f"{prefix}{name} must be positive ({prefix}{name}={getattr(config, name)})" for name in names
            if getattr(config, name) is not None and getattr(config, name) <= 0]


def raise_problems(problems: list[str]) -> None:
    """Raise one error listing every problem found in a config, if any."""
    if problems:
        raise FasttuneError("; ".join(problems) + ".")


def read_json(path: Path, fix: str):
    """The JSON value in file `path`; a file that is cut off or not UTF-8 raises an error naming it, ending in `fix`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise FasttuneError(f"{path.name} is not valid JSON, perhaps cut off while it was written (file={path}, "
                            f"line {error.lineno} column {error.colno}: {error.msg}). {fix}.") from None
    except UnicodeDecodeError as error:
        raise FasttuneError(f"{path.name} is not UTF-8 text (file={path}, byte {error.start}). {fix}.") from None
