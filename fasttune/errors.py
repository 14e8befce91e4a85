"""The one exception type fasttune raises for problems a user can fix."""

import difflib


class FasttuneError(ValueError):
    """A problem with fasttune's input or setup; the message says what is wrong and how to fix it."""

    def __init__(self, message: str):
        super().__init__(f"fasttune: {message}")


def unknown_name(kind: str, name: str, known: list[str]) -> FasttuneError:
    """An error for an unknown `name`, suggesting close matches among `known`."""
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return FasttuneError(f"Unknown {kind} '{name}'.{hint} Available: {', '.join(sorted(known))}.")
