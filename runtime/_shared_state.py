"""The handle through which code working for a run reads and changes its tree's shared
state (see :mod:`runtime._state`); each change is told as a ``state`` custom event."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, final

import jsonpatch
import jsonpointer

from protocol import STATE_EVENT, StateDelta

from ._context import current_run_var
from ._custom_events import _custom_event, _send_custom_event
from ._errors import NoRuntimeError
from ._state import StateCell, StateError, checked_state


@final
class SharedState:
    """The shared state of a run's tree: a JSON object the root run was given
    (``RunConfig.state``; over HTTP, AG-UI's ``state``), read by every run of the tree
    and changed by its tools.

    A tool gets it as a parameter annotated ``SharedState`` (hidden from the model's
    schema); any code working for a run gets it from :func:`current_state`. Each change
    is an RFC 6902 patch, applied at once and told as a ``state`` custom event whose
    data is a :class:`protocol.StateDelta` (journaled, traced, and sent to every stream:
    AG-UI's as ``STATE_DELTA``). Changes are made one at a time, in the order they are
    asked for, so each delta applies to the state the one before left. A change that
    cannot be made raises :class:`StateError` and changes nothing.

    The methods are async (a sync tool, in its worker thread, calls them through
    ``trio.from_thread.run(state.patch, ops)``); each is a cancel point.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell: StateCell | None = None) -> None:
        # (a run's own is ``run.context.state``; without one, a new, empty state)
        self._cell = cell if cell is not None else StateCell()

    @property
    def value(self) -> dict[str, Any]:
        """The state now: a deep copy (changing it changes nothing; call
        :meth:`patch`, :meth:`update` or :meth:`replace`). Of a large state, read what
        you need with :meth:`get`: a copy costs the size of what is copied."""
        return self._cell.snapshot()

    def get(self, key: str, default: Any = None) -> Any:
        """The state's top-level ``key`` now (a deep copy), or ``default``."""
        return copy.deepcopy(self._cell.value.get(key, default))

    async def patch(self, ops: Any) -> None:
        """Apply RFC 6902 operations (``[{"op": "add", "path": "/items/-", "value":
        "milk"}]``) to the state, all or none. An empty patch changes nothing and tells
        nothing. What the patch does not touch is shared with the state before, not
        copied: a change costs the depth of its paths, whatever the state's size.

        Raises:
            StateError: an operation does not apply (a failing ``test``, a missing
                path), is not RFC 6902, is not JSON, or leaves no object.
            NoRuntimeError: called outside any run.
        """
        await self._change(lambda value: ops)

    async def _change(self, make_ops: Callable[[dict[str, Any]], Any]) -> None:
        """Apply the patch ``make_ops`` makes of the state as it is, one change at a
        time."""
        cell = self._cell
        async with cell.lock:
            checked, new = cell.patched(make_ops(cell.value))
            if checked:
                runtime, event = _custom_event(STATE_EVENT, StateDelta(checked))
                # Set before it is told: a change asked for while this one waits on a
                # slow stream applies to this one's state.
                cell.value = new
                if event is not None:  # (else a replay dropped it: streamed before)
                    await _send_custom_event(runtime, event)

    async def update(self, changes: Mapping[str, Any]) -> None:
        """Set the state's top-level keys to ``changes``' values (the others stay).

        Raises:
            StateError: ``changes`` is not a JSON object.
        """
        ops = [
            {"op": "add", "path": "/" + jsonpointer.escape(key), "value": value}
            for key, value in _object(changes, "changes").items()
        ]
        await self.patch(ops)

    async def replace(self, value: Mapping[str, Any]) -> None:
        """Make the state ``value`` (told as the patch from the state before to it: its
        cost grows with the state's size).

        Raises:
            StateError: ``value`` is not a JSON object.
        """
        new = _object(value, "the new state")
        await self._change(lambda now: jsonpatch.make_patch(now, new).patch)

    def __repr__(self) -> str:
        return f"SharedState({self._cell.value!r:.200})"


def _object(value: Any, what: str) -> dict[str, Any]:
    try:
        return checked_state(value, what)
    except TypeError as exc:
        raise StateError(str(exc)) from None


def current_state() -> SharedState:
    """The shared state of the run tree the calling code works for (a performer reads
    its state with ``current_state().value``).

    Raises:
        NoRuntimeError: called outside any run.
    """
    context = current_run_var.get()
    if context is None:
        raise NoRuntimeError("current_state() must be called from code working for a run")
    return SharedState(context.state)
