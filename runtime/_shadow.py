"""A user's ``protocol.py`` or ``runtime.py`` beside their script hides Troupe's package
of that name; say so plainly instead of failing later with a baffling ImportError."""

from __future__ import annotations

import importlib.util
import os
import warnings

_HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""Where Troupe's three packages are installed, side by side."""


def shadowing_file(name: str) -> str | None:
    """The file that ``import name`` would load instead of Troupe's package, if any."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or spec.origin in ("built-in", "frozen"):
        return None
    expected = os.path.join(_HOME, name, "__init__.py")
    found = os.path.abspath(spec.origin)
    if os.path.normcase(found) == os.path.normcase(expected):
        return None
    return found


def message(name: str, found: str) -> str:
    """What to tell a user whose ``found`` hides Troupe's package ``name``."""
    return (
        f"{found} hides Troupe's package {name!r} (Python finds it first, because it is "
        f"beside your script or on sys.path): rename that file (and delete any "
        f"__pycache__/{name}.*.pyc next to it)"
    )


def refuse_shadowed(needed: tuple[str, ...], also: tuple[str, ...] = ()) -> None:
    """Raise ImportError if a package in ``needed`` is hidden by another module; warn
    for those in ``also`` (Troupe's packages this one does not import).

    Raises:
        ImportError: naming the file to rename.
    """
    for name in needed:
        found = shadowing_file(name)
        if found is not None:
            raise ImportError(message(name, found))
    for name in also:
        found = shadowing_file(name)
        if found is not None:
            warnings.warn(message(name, found), stacklevel=3)
