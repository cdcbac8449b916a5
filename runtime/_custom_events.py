"""Custom events: ``adispatch_custom_event`` and ``dispatch_custom_event``, as
``langchain_core.callbacks`` has them, attached to the current run."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Generator
from typing import Any, final

import trio

from protocol import CustomEventDispatched

from ._checks import check_custom_event
from ._context import current_run_var, current_runtime_var
from ._core import Supervisor
from ._errors import NoRuntimeError


async def adispatch_custom_event(name: str, data: Any = None) -> None:
    """Dispatch an ``on_custom_event`` attached to the current run, from async code (a
    tool, or any code an actor runs), as ``langchain_core.callbacks`` does. Waits while
    a stream watching the run is behind.

    ``data`` must be JSON-able (JSON values and protocol objects), so that every
    exporter can write it.

    Raises:
        NoRuntimeError: called outside any run.
        TypeError: ``name`` is not a non-empty string, or ``data`` is not JSON-able.
    """
    runtime, event = _custom_event(name, data)
    if event is None:  # streamed before: its replay drops it
        await trio.lowlevel.checkpoint_if_cancelled()
        return
    await _send_custom_event(runtime, event)


def dispatch_custom_event(name: str, data: Any = None) -> CustomEventDispatch:
    """Dispatch an ``on_custom_event`` attached to the current run, from sync code, as
    ``langchain_core.callbacks`` does: a sync tool (which runs in a worker thread) waits
    until the event is on its way. Async code may call it too (the event is sent at
    once, or when the result is awaited if a stream watching the run is behind), but
    :func:`adispatch_custom_event` is the one to await.

    Raises:
        NoRuntimeError: called outside any run.
        TypeError: ``name`` is not a non-empty string, or ``data`` is not JSON-able.
    """
    if _in_trio_thread():
        runtime, event = _custom_event(name, data)
        return CustomEventDispatch(runtime, event)
    try:
        trio.from_thread.run(adispatch_custom_event, name, data)
    except RuntimeError as exc:
        if "this thread wasn't created by Trio" not in str(exc):
            raise
        raise NoRuntimeError(
            "dispatch_custom_event must be called from code working for a run "
            "(a tool, or a thread a tool started with trio.to_thread)"
        ) from None
    return CustomEventDispatch(None, None)


def _in_trio_thread() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def _custom_event(name: str, data: Any) -> tuple[Supervisor, CustomEventDispatched | None]:
    """The event to send; ``None`` if the current run is replayed from its journal and
    streamed it before (it is dropped, as ``Run.dispatch_custom_event`` drops it: sent
    again, it would come twice, and the replay's next chunk would seem out of step).

    Raises:
        ReplayDivergenceError: the journal's next streamed item differs from it.
    """
    check_custom_event(name, data)
    context = current_run_var.get()
    runtime: Supervisor | None = current_runtime_var.get()
    if context is None or runtime is None:
        raise NoRuntimeError("dispatch_custom_event must be called from code working for a run")
    replay = context.replay
    if replay is not None and replay.replaying and replay.replays_emit("custom", (name, data)):
        return runtime, None
    return runtime, CustomEventDispatched(context.run_id, name, data)


async def _send_custom_event(runtime: Supervisor, event: CustomEventDispatched) -> None:
    gate = current_run_var.get().gate  # type: ignore[union-attr]  # checked by _custom_event
    if gate is not None and gate.closed:
        await gate.wait_open()  # a stream watching this run is behind
    await runtime.send_to_tracer(event)


@final
class CustomEventDispatch:
    """What :func:`dispatch_custom_event` returns: the event is already sent, or is sent
    when this is awaited (a stream watching the run was behind). Not awaited and not
    sent, it warns when dropped, so an event is never lost without a word."""

    __slots__ = ("_event", "_runtime")

    def __init__(self, runtime: Supervisor | None, event: CustomEventDispatched | None) -> None:
        self._runtime: Supervisor | None = None
        self._event: CustomEventDispatched | None = None
        if runtime is None or event is None:
            return
        gate = current_run_var.get().gate  # type: ignore[union-attr]  # inside a run
        if gate is None or not gate.closed:
            with contextlib.suppress(trio.WouldBlock):
                runtime.send_to_tracer_nowait(event)  # RuntimeClosedError: raised as is
                return
        self._runtime, self._event = runtime, event  # sent when awaited

    @property
    def sent(self) -> bool:
        """Whether the event is on its way to the tracer."""
        return self._event is None

    def __await__(self) -> Generator[Any, None, None]:
        runtime, event = self._runtime, self._event
        if runtime is None or event is None:
            return None
        self._runtime = self._event = None
        return (yield from _send_custom_event(runtime, event).__await__())

    def __del__(self) -> None:
        if self._event is not None:
            warnings.warn(
                f"custom event {self._event.name!r} was not sent: a stream watching the run "
                "was behind, and the result of dispatch_custom_event was not awaited "
                "(in async code, await adispatch_custom_event(...))",
                RuntimeWarning,
                stacklevel=1,
            )
