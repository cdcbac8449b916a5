"""The ``troupe`` command (``troupe demo``, ``troupe serve``).

A subpackage of its own: it imports the edges (``actors.serve``, ``actors.ray``), which
import the cast in ``actors``, and the cast never imports it back.
"""

from ._command import main as main

__all__ = ["main"]
