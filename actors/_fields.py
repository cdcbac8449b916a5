"""Field converters shared by the performers."""

from __future__ import annotations

from collections.abc import Iterable


def tag_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """Tags as an immutable tuple (a bare string is refused, not split into letters).

    Raises:
        TypeError: ``value`` is a string or holds non-strings.
    """
    if isinstance(value, str):
        raise TypeError(f"tags must be a list of strings, not a string: use [{value!r}]")
    tags = tuple(value)
    bad = [t for t in tags if not isinstance(t, str)]
    if bad:
        raise TypeError(f"tags must be strings, got {bad!r}")
    return tags
