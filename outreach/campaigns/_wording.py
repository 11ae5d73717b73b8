"""How campaign problems are worded: every message is `problem; fix` in the words of the file.

The validators in every module of this package raise through `fail`, and `problems.describe`
passes those messages through unchanged (their kind starts with `OWN`); values are shown as the
care team wrote them, so "NO" reads as "NO" and not as Python's False.
"""

from __future__ import annotations

from pydantic_core import PydanticCustomError

OWN = "campaign_"  # prefix of the error kinds raised here, whose messages need no rewording


def fail(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message is already `problem; fix` (no template substitution)."""
    return PydanticCustomError(OWN + kind, message)


def show(value: object) -> str:
    """A value as the user wrote it: text in quotes, true/false in YAML's spelling."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "nothing"
    return str(value).lower() if isinstance(value, bool) else str(value)


def what(value: object) -> str:
    """The kind of a value a care team wrote, for "expected X, got Y"."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the text "{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "keys and values"
    return type(value).__name__
