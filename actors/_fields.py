"""Field converters shared by the performers."""

from __future__ import annotations

from collections.abc import Iterable

from runtime import make_config


def tag_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """Tags as an immutable tuple, checked as a run's tags are.

    Raises:
        TypeError: ``value`` is a bare string or holds non-strings.
    """
    return make_config(tags=value).tags
