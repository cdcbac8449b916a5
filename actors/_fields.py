"""Field converters shared by the performers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from runtime import make_config


def tag_tuple(value: Iterable[str]) -> tuple[str, ...]:
    """Tags as an immutable tuple, checked as a run's tags are.

    Raises:
        TypeError: ``value`` is a bare string or holds non-strings.
    """
    return make_config(tags=value).tags


def run_name(value: object) -> str:
    """A performer's name: a non-empty string.

    Raises:
        TypeError: naming the field.
    """
    if not isinstance(value, str) or not value:
        raise TypeError(f"name must be a non-empty string, got {value!r}")
    return value


def metadata_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as a new dict, checked as a run's metadata is.

    Raises:
        TypeError: not a mapping, or a key that is not a string.
    """
    return make_config(metadata=value).metadata
