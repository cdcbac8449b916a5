"""The runtime, from asyncio: ``async with open_asyncio_runtime() as rt:``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, TypeVar, Unpack, final

import trio

from protocol import TypedEvent
from runtime import (
    EventStreamOptions,
    LogOptions,
    RunConfig,
    RunLogPatch,
    Runnable,
    RunOptions,
    Runtime,
    StreamOptions,
    positive_int,
    running_loop,
)

from ._host import Mode, TrioHost
from ._streams import DEFAULT_WINDOW, AsyncioStream, call

OutT = TypeVar("OutT")


@final
class AsyncioRuntime:
    """A Troupe runtime for an asyncio program: the same streams and calls as
    :class:`~runtime.Runtime`'s, read with the same ``async with`` / ``async for``.
    Get one from :func:`open_asyncio_runtime`."""

    def __init__(self, host: TrioHost, window: int) -> None:
        self._host = host
        self._window = window

    @property
    def runtime(self) -> Runtime:
        """The trio runtime underneath (for code on trio's side)."""
        assert self._host.runtime is not None
        return self._host.runtime

    @property
    def trio_token(self) -> trio.lowlevel.TrioToken:
        """The trio run's token (to call into trio from another thread, or to watch it
        with ``actors.testing.hang_watchdog``)."""
        return self._host.token

    @property
    def mode(self) -> Mode:
        """Where trio runs: ``"thread"`` or ``"guest"``."""
        return self._host.mode

    def astream_events(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[EventStreamOptions],
    ) -> AsyncioStream[TypedEvent]:
        """Every event of the run's tree (``astream_events``), read from asyncio.

        Raises:
            TypeError, ValueError: bad input, config, options or filters (at the call).
        """
        stream = self.runtime.astream_events(target, input, config, **options)
        return AsyncioStream(self._host, stream, stream.run_id, self._window)

    def astream(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[StreamOptions],
    ) -> AsyncioStream[Any]:
        """The run's own output chunks (``astream``; an agent's steps), from asyncio."""
        stream = self.runtime.astream(target, input, config, **options)
        return AsyncioStream(self._host, stream, stream.run_id, self._window)

    def astream_log(
        self,
        target: Runnable[Any],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[LogOptions],
    ) -> AsyncioStream[RunLogPatch]:
        """The JSON-patch run log (``astream_log``), from asyncio."""
        stream = self.runtime.astream_log(target, input, config, **options)
        return AsyncioStream(self._host, stream, stream.run_id, self._window)

    async def ainvoke(
        self,
        target: Runnable[OutT],
        input: Any,
        config: RunConfig | Mapping[str, Any] | None = None,
        **options: Unpack[RunOptions],
    ) -> OutT:
        """Run to completion and return the output (``ainvoke``), from asyncio. If the
        calling task is cancelled, so is the run (and this returns once it has ended).

        Raises:
            RuntimeClosedError: the runtime is closed.
            Exception: whatever the run raised.
        """
        runtime = self.runtime
        return await call(self._host, lambda: runtime.ainvoke(target, input, config, **options))


@contextlib.asynccontextmanager
async def open_asyncio_runtime(
    *,
    mode: Mode = "thread",
    window: int = DEFAULT_WINDOW,
    tracer_capacity: int | None = None,
    callbacks: Iterable[Any] = (),
    close_grace: float | None = None,
) -> AsyncIterator[AsyncioRuntime]:
    """Open a Troupe runtime for an asyncio program (FastAPI, ``asyncio.run``, a
    notebook's loop): ``async with open_asyncio_runtime() as rt:``, then
    ``async with rt.astream_events(agent, input) as events: async for e in events:``.

    Trio runs the runtime in a thread of its own (``mode="thread"``, the default: it
    measured faster, see ``docs/asyncio.md``) or as a guest on the asyncio loop
    (``mode="guest"``). On exit every run still going is cancelled and ends, and the
    runtime closes as ``open_runtime`` closes it.

    Args:
        mode: ``"thread"`` or ``"guest"``.
        window: items each stream may have handed to asyncio and not yet taken.
        tracer_capacity, callbacks, close_grace: as :func:`~runtime.open_runtime`'s.

    Raises:
        RuntimeError: called under trio (there, use ``open_runtime``) or outside asyncio.
    """
    where = running_loop()
    if where != "asyncio":
        raise RuntimeError(
            f"open_asyncio_runtime() is for asyncio programs, but was called "
            f"{'under ' + where if where else 'outside any event loop'}"
            + (": under trio, use runtime.open_runtime()" if where == "trio" else "")
        )
    positive_int(window, "window")
    options: dict[str, Any] = {"callbacks": tuple(callbacks)}
    if tracer_capacity is not None:
        options["tracer_capacity"] = tracer_capacity
    if close_grace is not None:
        options["close_grace"] = close_grace
    host = TrioHost(mode, options)
    await host.start()
    try:
        yield AsyncioRuntime(host, window)
    finally:
        await host.stop()


@contextlib.asynccontextmanager
async def lifespan(app: object) -> AsyncIterator[dict[str, AsyncioRuntime]]:
    """A lifespan for an ASGI app on asyncio (FastAPI, Starlette:
    ``FastAPI(lifespan=lifespan)``): a runtime open for the app's life, which each request
    finds as ``request.state.troupe``. For settings, write your own around
    :func:`open_asyncio_runtime`."""
    async with open_asyncio_runtime() as rt:
        yield {"troupe": rt}
