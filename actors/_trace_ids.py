"""Trace context derived from run ids (W3C trace context), with no OpenTelemetry import.

An actor must name its run's span in the requests it sends (``traceparent``) before any
exporter has seen the run start, so a run's span id is derived from its run id, and a
tree's trace id from the ``traceparent`` it started under or else from its root's run
id. The OpenTelemetry exporter (``actors.otel``) gives its spans the same ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final

TRACEPARENT: Final = "traceparent"
"""The metadata key (and HTTP header) of the W3C trace context a tree started under."""
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

propagating = False
"""Whether requests carry ``traceparent`` (set when an OpenTelemetry exporter exists)."""


def _bits(run_id: str, size: int) -> int:
    digits = run_id.replace("-", "")
    if len(digits) == 32:
        try:
            value = int(digits, 16)  # a UUID (run ids are)
        except ValueError:
            value = _hashed(run_id)
    else:
        value = _hashed(run_id)
    value &= (1 << (8 * size)) - 1
    return value or 1


def _hashed(run_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=16).digest(), "big")


def parse_traceparent(value: object) -> tuple[int, int, int] | None:
    """``(trace id, parent span id, flags)`` of a W3C ``traceparent``, or ``None``."""
    if not isinstance(value, str):
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None:
        return None
    trace_id, span_id, flags = (int(group, 16) for group in match.groups())
    if not trace_id or not span_id:
        return None
    return trace_id, span_id, flags


def span_id_of(run_id: str) -> int:
    """The span id of a run: the low 64 bits of its id."""
    return _bits(run_id, 8)


def trace_id_of(root_id: str, metadata: Mapping[str, Any]) -> int:
    """The trace id of a run tree: the one it started under, or its root's id."""
    parent = parse_traceparent(metadata.get(TRACEPARENT))
    return parent[0] if parent is not None else _bits(root_id, 16)


def traceparent_of(run_id: str, root_id: str, metadata: Mapping[str, Any]) -> str:
    """The ``traceparent`` naming a run's span, for the requests the run sends."""
    return f"00-{trace_id_of(root_id, metadata):032x}-{span_id_of(run_id):016x}-01"
