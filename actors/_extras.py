"""The check each optional edge makes first: is its extra installed?"""

from __future__ import annotations

import importlib


def require_extra(module: str, extra: str, edge: str) -> None:
    """Import ``module`` (the extra's package), or raise an ``ImportError`` that says
    which extra ``edge`` needs and how to install it.

    Raises:
        ImportError: ``module`` is not installed.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{edge} needs the {extra!r} extra: pip install 'trio-troupe[{extra}]' ({exc})"
        ) from exc
