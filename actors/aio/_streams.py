"""Troupe's streams and calls, read from asyncio: the same ``async with`` / ``async for``.

A stream's run is read on trio's side by a pump task, which hands what it reads to the
asyncio side in batches: an outbox the consumer takes whole, woken only when the outbox
was empty. A run may have at most ``window`` items handed over and not yet taken; past
that the pump waits, so the run's own stream fills and the run slows (backpressure, as
in trio): a stalled asyncio consumer holds its window and never another run. The
consumer acknowledges every half window it takes, in one call to trio.

Cancellation flows both ways: leaving the block (or the asyncio task being cancelled)
cancels the run on trio's side and waits for it to end; a run that fails, or is
cancelled by its runtime closing, raises its exception in the asyncio task.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Generic, TypeVar

import trio

from runtime import RunCancelledError, StreamUsageError

from ._host import TrioHost, reject, resolve

T = TypeVar("T")

DEFAULT_WINDOW: Final = 256
"""Items a stream may have handed to asyncio and not yet taken."""
YIELD_EVERY: Final = 64
"""A read that need not wait checks for cancellation every time and yields to the loop
at least once every this many reads (trio's checkpoint rule, batched as trio's streams
batch it)."""


class _Ended:
    """The last record of a stream: how its run ended."""

    __slots__ = ("error", "output")

    def __init__(self, error: BaseException | None, output: Any) -> None:
        self.error = error
        self.output = output


class AsyncioStream(Generic[T]):
    """A Troupe stream read from asyncio: ``async with rt.astream_events(...) as events:
    async for event in events:``. What a trio stream yields, in the same order.

    Every read checks whether the reading task is being cancelled (a cancel point) and
    yields to the loop at least once every ``YIELD_EVERY`` reads; a read that waits for
    an item yields then.
    """

    def __init__(
        self,
        host: TrioHost,
        stream: AbstractAsyncContextManager[Any],
        run_id: str,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        self._host = host
        self._stream = stream
        self.run_id = run_id
        """The id of the run this stream watches."""
        self._window = window
        self._ack_every = max(1, window // 2)
        self._lock = threading.Lock()
        self._outbox: list[Any] = []
        self._local: deque[Any] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._entered: asyncio.Future[None] | None = None
        self._finished: asyncio.Future[None] | None = None
        self._ended: _Ended | None = None
        self._taken_unacked = 0
        self._unyielded = 0
        self._state = "new"
        # trio's side
        self._scope: trio.CancelScope | None = None
        self._cancelled = False
        self._in_flight = 0
        self._credit: trio.Event | None = None

    @property
    def output(self) -> Any:
        """The run's output once it has ended well; ``None`` before."""
        return self._ended.output if self._ended is not None else None

    # -- asyncio side -------------------------------------------------------------------

    async def __aenter__(self) -> AsyncioStream[T]:
        if self._state != "new":
            raise StreamUsageError("a stream can be entered only once")
        self._state = "open"
        loop = asyncio.get_running_loop()
        self._entered = loop.create_future()
        self._finished = loop.create_future()
        nursery = self._host.nursery
        assert nursery is not None
        self._host.in_trio(nursery.start_soon, self._pump)
        try:
            await self._entered
        except BaseException:
            await self._leave()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._leave()

    async def _leave(self) -> None:
        """Cancel the run if it is still going and wait until it has ended (also when
        this task is cancelled meanwhile: then that is raised once it has)."""
        self._state = "closed"
        finished = self._finished
        assert finished is not None
        if finished.done():
            return
        self._host.in_trio(self._cancel)
        cancelled = False
        while not finished.done():
            try:
                await asyncio.shield(finished)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError

    def cancel(self) -> None:
        """Cancel the run and go on reading: the events still on their way arrive, then
        iteration raises what the trio stream raises (see ``EventStream.cancel``)."""
        if self._state != "open":
            raise StreamUsageError("enter the stream before cancelling its run")
        self._host.in_trio(self._cancel_run)

    def __aiter__(self) -> AsyncioStream[T]:
        if self._state != "open":
            raise StreamUsageError(
                "enter the stream first: `async with rt.astream_events(...) as events: "
                "async for event in events: ...`"
            )
        return self

    async def __anext__(self) -> T:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            await asyncio.sleep(0)  # a cancel point: the pending cancellation strikes here
        local = self._local
        if not local:
            await self._refill()
        elif self._unyielded < YIELD_EVERY - 1:
            self._unyielded += 1
        else:
            self._unyielded = 0
            await asyncio.sleep(0)
        item = local.popleft()
        if isinstance(item, _Ended):
            local.appendleft(item)  # the end stays the end
            self._ended = item
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item  # type: ignore[no-any-return]  # what the trio stream yields: T

    async def _refill(self) -> None:
        while True:
            with self._lock:
                batch, self._outbox = self._outbox, []
                if not batch:
                    wake = self._wake = asyncio.get_running_loop().create_future()
            if batch:
                break
            await wake
        self._unyielded = 0
        self._local.extend(batch)
        self._taken_unacked += len(batch)
        if self._taken_unacked >= self._ack_every:
            taken, self._taken_unacked = self._taken_unacked, 0
            if not self._host.finished:
                self._host.in_trio(self._ack, taken)

    # -- trio side ----------------------------------------------------------------------

    def _post(self, item: Any, *, now: bool = False) -> None:
        """Hand ``item`` over. A reader waiting for it is woken by the host's waker
        within ``WAKE_DELAY`` (so the items of that while go as one batch), or at once
        with ``now`` (the end) or when half the window waits."""
        with self._lock:
            outbox = self._outbox
            outbox.append(item)
            if self._wake is None:
                return
            if not now and len(outbox) < self._ack_every:
                self._host.wake_soon(self)
                return
            wake, self._wake = self._wake, None
        self._host.in_asyncio(resolve, wake, None)

    def wake_now(self) -> None:
        """(trio side.) Wake the reader if it waits for items already handed over."""
        with self._lock:
            if not self._outbox:
                return
            wake, self._wake = self._wake, None
        if wake is not None:
            self._host.in_asyncio(resolve, wake, None)

    def _ack(self, taken: int) -> None:
        self._in_flight -= taken
        credit = self._credit
        if credit is not None and self._in_flight < self._window:
            credit.set()

    def _cancel(self) -> None:
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()
        if self._credit is not None:
            self._credit.set()

    def _cancel_run(self) -> None:
        cancel = getattr(self._stream, "cancel", None)
        if cancel is not None:
            cancel()

    async def _pump(self) -> None:
        host = self._host
        assert self._entered is not None and self._finished is not None
        error: BaseException | None = None
        output: Any = None
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                if self._cancelled:
                    scope.cancel()
                async with self._stream as stream:
                    host.in_asyncio(resolve, self._entered, None)
                    async for item in stream:
                        if self._in_flight >= self._window and not self._cancelled:
                            self._credit = trio.Event()
                            await self._credit.wait()
                            self._credit = None
                        self._in_flight += 1
                        self._post(item)
                    output = getattr(stream, "output", None)
            if scope.cancelled_caught:
                error = RunCancelledError("the stream was left; its run was cancelled")
        except trio.Cancelled:
            error = RunCancelledError("the runtime closed; the run was cancelled")
            raise
        except BaseException as exc:  # the run's own error (an exit too): the reader's
            error = exc
        finally:
            self._post(_Ended(error, output), now=True)
            if error is not None:
                host.in_asyncio(reject, self._entered, error)
            host.in_asyncio(resolve, self._finished, None)


async def call(host: TrioHost, fn: Callable[[], Awaitable[T]]) -> T:
    """``await fn()`` on trio's side, from asyncio: its result, or its exception. If the
    asyncio task is cancelled, so is the call, and this returns once it has ended."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()
    finished: asyncio.Future[None] = loop.create_future()
    scope = trio.CancelScope()

    async def run() -> None:
        try:
            with scope:
                value = await fn()
                host.in_asyncio(resolve, result, value)
            if scope.cancelled_caught:
                host.in_asyncio(reject, result, RunCancelledError("the call was cancelled"))
        except trio.Cancelled:
            host.in_asyncio(reject, result, RunCancelledError("the runtime closed"))
            raise
        except BaseException as exc:  # the run's own error: the caller's
            host.in_asyncio(reject, result, exc)
        finally:
            host.in_asyncio(resolve, finished, None)

    nursery = host.nursery
    assert nursery is not None
    host.in_trio(nursery.start_soon, run)
    try:
        return await asyncio.shield(result)
    except asyncio.CancelledError:
        if not result.done():
            host.in_trio(scope.cancel)
        while not finished.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(finished)
        if result.done() and not result.cancelled():
            result.exception()  # seen: the caller left, and is told it was cancelled
        raise
