"""Trio beside an asyncio loop: a runtime in a trio run of its own, in a thread of its
own (the default) or as a guest on the asyncio loop (``trio.lowlevel.start_guest_run``).

Either way the two sides talk the same way: asyncio hands work to trio through the trio
token (``run_sync_soon``, thread-safe), and trio hands results back with the loop's
``call_soon_threadsafe``. In guest mode trio's code runs on the loop's own thread, so
only trio's wait for I/O sits in a worker thread; in thread mode trio runs as it does
anywhere else, and each side wakes the other across threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, Final, Literal

import trio

from runtime import Runtime, RuntimeClosedError, open_runtime

Mode = Literal["thread", "guest"]
MODES: Final = ("thread", "guest")
WAKE_DELAY: Final = 0.001
"""Seconds a reader waiting on asyncio's side may be left before items handed over to
it wake it: the items of that while go in one wake (measured: see docs/asyncio.md)."""


class TrioHost:
    """A trio run holding one runtime, for code on an asyncio loop. Start it with
    :meth:`start` (on the loop), stop it with :meth:`stop`."""

    def __init__(
        self,
        mode: Mode,
        runtime_options: dict[str, Any],
        on_finished: Callable[[BaseException | None], object] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode: Mode = mode
        self._options = runtime_options
        self._on_finished = on_finished
        """Called on the loop when the trio run has ended, with what it raised."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.runtime: Runtime | None = None
        self.nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready: asyncio.Future[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._stop = trio.Event()
        self.finished = False
        self._due: dict[Any, None] = {}  # streams whose reader is to be woken (in order)
        self._waker = trio.Event()

    # -- the asyncio side -------------------------------------------------------------

    async def start(self) -> None:
        """Start trio and its runtime; return once the runtime is open."""
        loop = self.loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._done = loop.create_future()
        if self.mode == "thread":
            threading.Thread(target=self._run_thread, name="troupe (trio)", daemon=True).start()
        else:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=loop.call_soon,
                done_callback=self._guest_done,
                host_uses_signal_set_wakeup_fd=True,
            )
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the runtime (its runs are cancelled and end) and end the trio run. Waits
        for that even when the waiting task is cancelled (closing is bounded: see
        ``open_runtime``), then raises what the runtime's closing raised."""
        assert self._done is not None
        self.in_trio(self._stop.set)
        cancelled = False
        while not self._done.done():
            try:
                await asyncio.shield(self._done)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError
        self._done.result()

    def in_trio(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon in trio's thread (from any thread).

        Raises:
            RuntimeClosedError: the trio run has ended.
        """
        token = self._token
        if token is None or self.finished:
            raise RuntimeClosedError("the runtime is closed (its trio run has ended)")
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            raise RuntimeClosedError("the runtime is closed (its trio run has ended)") from None

    @property
    def token(self) -> trio.lowlevel.TrioToken:
        """The trio run's token, once it has started."""
        if self._token is None:
            raise RuntimeClosedError("the runtime has not started")
        return self._token

    # -- the trio side ------------------------------------------------------------------

    def in_asyncio(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` soon on the asyncio loop (from trio's side). Nothing, if the
        loop has closed: nobody is there to be told."""
        assert self.loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self.loop.call_soon_threadsafe(fn, *args)

    async def _main(self) -> None:
        async with open_runtime(**self._options) as runtime, trio.open_nursery() as nursery:
            self.runtime = runtime
            self.nursery = nursery
            self._token = trio.lowlevel.current_trio_token()
            assert self._ready is not None
            self.in_asyncio(resolve, self._ready, None)
            nursery.start_soon(self._wake_readers)
            await self._stop.wait()
            nursery.cancel_scope.cancel()  # every stream's pump: their runs are cancelled

    def wake_soon(self, stream: Any) -> None:
        """(trio side.) Wake ``stream``'s reader within ``WAKE_DELAY``."""
        if not self._due:
            self._waker.set()
        self._due[stream] = None

    async def _wake_readers(self) -> None:
        """Wake the readers of the streams that have items for them, every
        ``WAKE_DELAY`` at most: one wake (a call across threads) per batch of items
        rather than one per item."""
        while True:
            if not self._due:
                await self._waker.wait()
                self._waker = trio.Event()
            await trio.sleep(WAKE_DELAY)
            due, self._due = self._due, {}
            for stream in due:
                stream.wake_now()

    def _run_thread(self) -> None:
        try:
            trio.run(self._main)
            error: BaseException | None = None
        except BaseException as exc:  # told to the loop, which owns the runtime
            error = exc
        self._finish(error)

    def _guest_done(self, outcome: Any) -> None:
        try:
            outcome.unwrap()
            error: BaseException | None = None
        except BaseException as exc:  # told to the loop, which owns the runtime
            error = exc
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        self.finished = True

        def done() -> None:
            assert self._ready is not None and self._done is not None
            failure = error or RuntimeClosedError("the runtime's trio run ended")
            if not self._ready.done():
                self._ready.set_exception(failure)
            if not self._done.done():
                if error is None:
                    self._done.set_result(None)
                else:
                    self._done.set_exception(error)
            if self._on_finished is not None:
                self._on_finished(error)

        self.in_asyncio(done)


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    """(asyncio side.) Complete ``future`` unless its waiter has gone."""
    if not future.done():
        future.set_result(value)


def reject(future: asyncio.Future[Any], error: BaseException) -> None:
    """(asyncio side.) Fail ``future`` unless its waiter has gone."""
    if not future.done():
        future.set_exception(error)
