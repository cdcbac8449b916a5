"""Hostile review of hosts-alike (issue 29): joins as hosted streams fed by a task."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from runtime import EventStream, Runtime, RuntimeClosedError, open_runtime
from runtime._reads import LeavableReads
from runtime._sqlite_store import SQLiteStore
from runtime._store import StoreError

from .test_hosted import Slow, _until_journaled


async def test_a_runtime_closing_under_an_open_join_ends_it_at_once(tmp_path: Path) -> None:
    """A join opened in a task that outlives its runtime's block (the run it follows goes
    on in another process): the runtime's close ends the join's task at once and its
    reader hears RuntimeClosedError; it does not wait out the subscribers' grace."""
    url = f"sqlite:///{tmp_path}/runs.db"
    got: list[Any] = []
    async with open_runtime(store=url) as host, host.astream_events(Slow(), 1) as stream:
        async for event in stream:
            if event.chunk == "first":
                break
        async with trio.open_nursery() as outer:
            opened = trio.Event()

            async def read(rt: Any) -> None:
                async with rt.join(stream.run_id) as joined:
                    opened.set()
                    try:
                        got.extend([event async for event in joined])
                    except RuntimeClosedError as exc:
                        got.append(exc)

            async with open_runtime(store=url, close_grace=30) as joiner:
                await _until_journaled(joiner, stream.run_id)
                outer.start_soon(read, joiner)
                await opened.wait()
                closing = trio.current_time()
            took = trio.current_time() - closing
            with trio.fail_after(5):
                while not got or not isinstance(got[-1], BaseException):  # noqa: ASYNC110
                    await trio.sleep(0.01)
        stream.cancel()
    assert isinstance(got[-1], RuntimeClosedError)
    assert took < 5, took


class _SlowReads(SQLiteStore):
    """A store whose reads of a journal take ``delay`` seconds once it is set (a
    database that answers slowly, or a connection being made again)."""

    delay = 0.0

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.slow_read = threading.Event()  # a slow read began

    def read_records(self, root_id: str, start: int = 0) -> list[Any]:
        if self.delay:
            self.slow_read.set()
            time.sleep(self.delay)
        return super().read_records(root_id, start)


@asynccontextmanager
async def _live_elsewhere(
    url: str, joiners: str | SQLiteStore
) -> AsyncIterator[tuple[Runtime, Runtime, EventStream]]:
    """Two runtimes on one store (two processes, as far as the store knows; the second
    on ``joiners``), the first running a ``Slow`` run that has sent its first chunk,
    its record journaled; the run is cancelled when the block is left."""
    async with (
        open_runtime(store=url) as host,
        open_runtime(store=joiners) as joiner,
        host.astream_events(Slow(), 1) as stream,
    ):
        async for event in stream:
            if event.chunk == "first":
                break
        await _until_journaled(joiner, stream.run_id)
        yield host, joiner, stream
        stream.cancel()


class _ClosedUnderRead(_SlowReads):
    """A slow store that notes whether it was closed while a read was under way."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reading = 0
        self.closed_under_read = False

    def read_records(self, root_id: str, start: int = 0) -> list[Any]:
        self.reading += 1
        try:
            return super().read_records(root_id, start)
        finally:
            self.reading -= 1

    def close(self) -> None:
        self.closed_under_read = self.closed_under_read or self.reading > 0
        super().close()


async def test_leaving_a_join_does_not_wait_for_a_slow_read_of_the_store(tmp_path: Path) -> None:
    """A reader that leaves a join (its scope cancelled: a client gone) leaves at once,
    as before joins had a task: it does not wait, shielded, for the join's task to end
    a read of the store that takes long. The read goes on in its worker thread, and
    the runtime's close waits for it before it closes the store."""
    url = f"sqlite:///{tmp_path}/runs.db"
    slow = _ClosedUnderRead(url)
    async with _live_elsewhere(url, slow) as (_, joiner, stream):
        async with joiner.join(stream.run_id) as joined:
            async for event in joined:
                if event.chunk == "first":
                    break
            slow.delay = 3.0  # its task's next look at the store is slow
            assert await trio.to_thread.run_sync(slow.slow_read.wait, 10)
            left = trio.current_time()
            with trio.move_on_after(0.1):
                await joined.__anext__()  # waits for the next event; the client goes
        took = trio.current_time() - left
        assert slow.reading == 1  # left, its read still under way
        slow.delay = 0.0
    assert took < 1.0, took
    assert slow.reading == 0
    assert not slow.closed_under_read


async def test_leavable_reads_refuse_after_close_and_close_waits_for_reads() -> None:
    """The gate's contract: ``close`` waits for the reads under way, and a read that
    comes after it is refused with the store's error, not run on a closed store."""
    reads = LeavableReads()
    began, release = threading.Event(), threading.Event()

    def slow() -> str:
        began.set()
        release.wait(10)
        return "read"

    got: list[str] = []
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            got.append(await reads.read(slow))

        nursery.start_soon(read)
        assert await trio.to_thread.run_sync(began.wait, 10)
        closing = trio.Event()

        async def close() -> None:
            await trio.to_thread.run_sync(reads.close)
            closing.set()

        nursery.start_soon(close)
        await trio.sleep(0.05)
        assert not closing.is_set()  # a read is under way
        release.set()
    assert got == ["read"]
    with pytest.raises(StoreError, match="closed"):
        await reads.read(slow)


async def test_reads_their_readers_left_keep_off_the_default_threads() -> None:
    """Reads left under way (a slow store, clients gone) hold threads of their own pool
    (``READ_THREADS``), not trio's default one that tools and the journal's other calls
    share: with more left reads than the default pool has threads, another thread call
    still runs at once; and a read past the pool's size waits its turn, leavable too."""
    reads = LeavableReads()
    release = threading.Event()
    limiter = trio.to_thread.current_default_thread_limiter()
    with trio.move_on_after(0.3):
        async with trio.open_nursery() as nursery:
            for _ in range(int(limiter.total_tokens) + 10):
                nursery.start_soon(reads.read, release.wait, 30)
    try:
        assert limiter.borrowed_tokens == 0
        with trio.fail_after(5):
            assert await trio.to_thread.run_sync(lambda: "ran") == "ran"
        with trio.move_on_after(0.2) as waited:
            await reads.read(lambda: "read")  # every read thread is held: it waits
        assert waited.cancelled_caught
    finally:
        release.set()
    with trio.fail_after(10):
        assert await reads.read(lambda: "read") == "read"


async def test_joins_cancelled_at_any_point_leave_no_task_nor_watch(tmp_path: Path) -> None:
    """A join's reader cancelled at any point (entering, reading, leaving) leaves
    nothing behind: no task of the join's, no watch on the journal, no follower."""
    url = f"sqlite:///{tmp_path}/runs.db"
    async with _live_elsewhere(url, url) as (host, joiner, stream):
        journal, hosting = joiner.journal, host.journal
        assert journal is not None and hosting is not None
        root = trio.lowlevel.current_root_task()
        assert root is not None

        def tasks() -> int:
            def count(task: trio.lowlevel.Task) -> int:
                return 1 + sum(
                    count(child)
                    for nursery in task.child_nurseries
                    for child in nursery.child_tasks
                )

            return count(root)

        before = tasks()
        for rt in (joiner, host):  # another process's run (polled), and this one's (followed)
            for step in range(40):
                with trio.move_on_after(step * 0.002):
                    async with rt.join(stream.run_id) as joined:
                        async for _ in joined:
                            pass
                await trio.lowlevel.checkpoint()
                now = tasks()
                assert now <= before, step  # none of the join's left
                before = now  # (one of the runtimes' own, ending as the test began: a
                # sweep, the start's look for other processes; 1 run in ~20 in CI)
                assert not journal._watches and not hosting._watches
