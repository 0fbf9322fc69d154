"""Text that can be stored and shown: no NUL anywhere, no line breaks where one line is meant."""

from __future__ import annotations

import re
from typing import Any

from pydantic import AfterValidator


def find_nul(value: Any, path: str = "") -> str | None:
    """The path of the first string holding U+0000, if any (Postgres text and jsonb refuse it)."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = find_nul(item, f"{path}.{key}" if path else str(key))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def reject_nul(value: Any) -> Any:
    """A ``field_validator("*", mode="before")`` body: refuse NUL before anything is written.

    Nested models check their own fields (so the error names the innermost key); here
    only strings and lists of them are looked at.
    """
    if isinstance(value, dict):
        return value
    where = find_nul(value)
    if where is not None:
        raise ValueError("text must not contain NUL (\\u0000) characters"
                         + (f" (at {where})" if where != "(value)" else ""))
    return value


# Characters that end or break a line somewhere: C0 and C1 controls, DEL, and the Unicode line
# and paragraph separators (``str.splitlines`` and e-mail headers treat several as line ends).
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def check_single_line(value: str) -> str:
    """An ``AfterValidator`` of single-line text (titles, names, ids, reasons): no control characters.

    A CR/LF accepted here used to end up in e-mail headers and chat notification texts.
    """
    found = _LINE_BREAKERS.search(value)
    if found is not None:
        char = found.group()
        name = {"\n": "a line feed", "\r": "a carriage return", "\t": "a tab", "\u2028": "a line separator",
                "\u2029": "a paragraph separator"}.get(char, "a control character")
        raise ValueError(f"must be a single line: {name} (U+{ord(char):04X}) at position {found.start()}")
    return value


ONE_LINE = AfterValidator(check_single_line)
"""Metadata of a single-line field, after its length constraints (so they keep pydantic's own
messages): ``Annotated[str, Field(max_length=200), ONE_LINE]``."""


def one_line(value: str) -> str:
    """``value`` with every run of whitespace and control characters made one space, trimmed."""
    return " ".join(_LINE_BREAKERS.sub(" ", value).split())
