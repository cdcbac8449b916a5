"""Tests of an optional edge: skipped where its extra is not installed, saying what to
install, unless CI's step for that edge requires them (then the import error fails)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def needs_extra(extra: str, required_by: str) -> Iterator[None]:
    """Around the edge's imports, at the top of a test module: skip the module if they
    fail, unless the environment variable ``required_by`` is set."""
    try:
        yield
    except ImportError as exc:
        if os.environ.get(required_by):
            raise
        pytest.skip(
            f"the {extra!r} extra is not installed ({exc}): pip install 'trio-troupe[{extra}]'",
            allow_module_level=True,
        )
