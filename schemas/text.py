"""Text that PostgreSQL can store: no NUL characters anywhere in an input document."""

from __future__ import annotations

from typing import Any


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
