"""A run's shared state: what changed in it, as data."""

from __future__ import annotations

from typing import Any, Final

from attrs import field, frozen

STATE_EVENT: Final = "state"
"""The name of the custom event that carries a :class:`StateDelta`."""


def _ops(value: Any) -> tuple[dict[str, Any], ...]:
    return tuple(value)


@frozen
class StateDelta:
    """A change of the shared state of a run's tree (see ``runtime.SharedState``): RFC
    6902 JSON-patch operations, applied in order to the state as it was (the state the
    root run was given, and every delta before this one). It travels as the data of a
    custom event named ``state`` (:data:`STATE_EVENT`), so it is journaled, traced and
    streamed like any event; AG-UI's edge sends it as ``STATE_DELTA``.

    Attributes:
        patch: the operations (``{"op": "add", "path": "/items/-", "value": ...}``).
    """

    patch: tuple[dict[str, Any], ...] = field(converter=_ops)
