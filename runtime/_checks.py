"""Argument checks shared by the public API."""

from __future__ import annotations

from collections.abc import Iterable


def string_tuple(value: object, what: str) -> tuple[str, ...]:
    """``value`` (an iterable of strings) as a tuple.

    Raises:
        TypeError: ``value`` is a bare string (a common slip: ``tags="x"``), is not
            iterable, or holds something other than strings; ``what`` names it.
    """
    if isinstance(value, str):
        raise TypeError(f"{what} must be a list of strings, not a string: use [{value!r}]")
    if not isinstance(value, Iterable):
        raise TypeError(f"{what} must be a list of strings, got {value!r}")
    items = tuple(value)
    bad = [item for item in items if not isinstance(item, str)]
    if bad:
        raise TypeError(f"{what} must be strings, got {bad!r}")
    return items
