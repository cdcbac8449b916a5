"""Store reads that their reader may leave: the read goes on in its worker thread, and
the store closes once every read has finished, or after :data:`CLOSE_WAIT` seconds.

A join's task reads the store in a worker thread. When its reader leaves (a client
gone), the task must end at once, not after a slow read (a database answering slowly,
a connection being made again). trio can abandon the thread on cancel
(``abandon_on_cancel=True``); this gate keeps the thread from starting against a closed
store: the journal closes the gate before it closes the store, which refuses new reads
and waits for those under way, :data:`CLOSE_WAIT` seconds at most (closing is bounded
even when the database holds a read up). A read still under way then ends against the
closed store, harmlessly: the PostgreSQL store's pool, closed, closes the connection the
read gives back, and its answer or error goes to nobody.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import trio

from ._store import StoreError

__all__ = ["CLOSE_WAIT", "READ_THREADS", "LeavableReads"]

T = TypeVar("T")

READ_THREADS = 16
"""Worker threads a store's leavable reads use at most, apart from trio's default pool:
more reads wait their turn (and can still be left while they wait)."""
CLOSE_WAIT = 5.0
"""Seconds closing waits for the reads under way (closing is bounded even when the
database holds a read up: PostgreSQL's ``statement_timeout`` ends it later)."""


class LeavableReads:
    """Reads of one store that their callers may leave (see the module's docstring)."""

    __slots__ = ("_closed", "_idle", "_threads", "_under_way")

    def __init__(self) -> None:
        self._idle = threading.Condition()
        self._under_way = 0
        self._closed = False
        # A read its reader left keeps its thread, and its limiter's token, until the
        # store answers; on trio's default limiter, slow reads left by clients would
        # hold the threads that tools and the journal's other calls share.
        self._threads = trio.CapacityLimiter(READ_THREADS)

    async def read(self, read: Callable[..., T], *args: object) -> T:
        """``read(*args)`` in a worker thread; a cancel leaves it at once.

        Raises:
            StoreError: the store is closed (or closing).
        """
        return await trio.to_thread.run_sync(
            self._run, read, *args, abandon_on_cancel=True, limiter=self._threads
        )

    def _run(self, read: Callable[..., T], *args: object) -> T:
        with self._idle:
            if self._closed:
                raise StoreError("store is closed")
            self._under_way += 1
        try:
            return read(*args)
        finally:
            with self._idle:
                self._under_way -= 1
                if not self._under_way:
                    self._idle.notify_all()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Refuse new reads and wait for those under way, ``wait`` seconds at most (in a
        worker thread: it blocks). A read still under way then (a statement the database
        holds up) ends later against the closed store: its answer, or the store's error,
        goes to nobody (its reader left)."""
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: not self._under_way, timeout=wait)
