"""Trio's checkpoint rule on every stream: each read is a cancel point (a reader whose
scope is cancelled never gets another event, and the event stays for the next read) and
a schedule point at least once every ``SCHEDULE_EVERY`` reads, also when the events
are already waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from attrs import field, frozen

from runtime import (
    SCHEDULE_EVERY,
    Performer,
    Run,
    Runtime,
    adispatch_custom_event,
    invoke,
    open_runtime,
    stream,
    stream_events,
    stream_log,
)

CHUNKS = 3 * SCHEDULE_EVERY


@frozen(eq=False)
class Chunks(Performer[int, int]):
    """Streams ``n`` chunks at once (with ``pace``, one every ``pace`` seconds), then
    returns ``n``."""

    name: str = "chunks"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    pace: float = 0.0

    def coerce_input(self, value: Any) -> int:
        return int(value)

    async def perform(self, message: int, run: Run) -> int:
        if not self.pace:
            await run.emit_many(list(range(message)))
            return message
        for chunk in range(message):
            await trio.sleep(self.pace)
            await run.emit(chunk)
        return message


Opener = Callable[[Runtime], AbstractAsyncContextManager[Any]]


class _UntilRootEnd:
    """A watch stream's events up to the end of the first root run (a watch stream
    itself ends only when its runtime closes)."""

    def __init__(self, events: Any) -> None:
        self._events = events
        self._over = False

    def __aiter__(self) -> _UntilRootEnd:
        return self

    async def __anext__(self) -> Any:
        if self._over:
            await trio.lowlevel.checkpoint()  # the end, read as a checkpoint too
            raise StopAsyncIteration
        event = await self._events.__anext__()
        self._over = event.event.endswith("_end") and not event.parent_ids
        return event


@asynccontextmanager
async def _watching(rt: Runtime) -> AsyncIterator[Any]:
    async with rt.watch() as events:
        await rt.ainvoke(Chunks(), CHUNKS)
        yield _UntilRootEnd(events)


STREAMS: dict[str, Opener] = {
    "astream_events": lambda rt: Chunks().astream_events(CHUNKS),
    "astream": lambda rt: Chunks().astream(CHUNKS),
    "astream_log": lambda rt: Chunks().astream_log(CHUNKS),
    "Runtime.astream_events": lambda rt: rt.astream_events(Chunks(), CHUNKS),
    "stream_events": lambda rt: stream_events(Chunks(), CHUNKS),
    "stream": lambda rt: stream(Chunks(), CHUNKS),
    "stream_log": lambda rt: stream_log(Chunks(), CHUNKS),
    "Runtime.watch": _watching,
}


async def read_each_after_a_cancelled_read(items: Any) -> list[Any]:
    """Read ``items`` to its end, each read after one in a cancelled scope, which must
    raise ``Cancelled`` and take nothing (the event stays for the next read)."""
    got: list[Any] = []
    while True:
        with trio.CancelScope() as scope:
            scope.cancel()
            item = await items.__anext__()
            pytest.fail(f"a read in a cancelled scope returned {item!r}")
        assert scope.cancelled_caught
        try:
            got.append(await items.__anext__())
        except StopAsyncIteration:
            return got


async def read_checking_every_so_many(items: Any) -> list[Any]:
    """Read ``items`` to its end, asserting a schedule point within every
    ``SCHEDULE_EVERY`` reads."""
    got: list[Any] = []
    while True:
        with trio.testing.assert_checkpoints():
            for _ in range(SCHEDULE_EVERY):
                try:
                    got.append(await items.__anext__())
                except StopAsyncIteration:
                    return got


async def _read_all(opener: Opener) -> list[Any]:
    async with open_runtime() as rt, opener(rt) as items:
        return [item async for item in items]


@pytest.mark.parametrize("kind", list(STREAMS))
async def test_a_cancelled_reader_gets_no_event(kind: str) -> None:
    expected = await _read_all(STREAMS[kind])
    got: list[Any] = []
    async with open_runtime() as rt, STREAMS[kind](rt) as items:
        got.append(await items.__anext__())
        await trio.testing.wait_all_tasks_blocked()  # the rest is waiting, to be taken
        got += await read_each_after_a_cancelled_read(items)
    assert len(got) == len(expected) > CHUNKS // 2


@pytest.mark.parametrize("kind", list(STREAMS))
async def test_a_reader_yields_at_least_every_so_many_events(kind: str) -> None:
    async with open_runtime() as rt, STREAMS[kind](rt) as items:
        await items.__anext__()
        await trio.testing.wait_all_tasks_blocked()  # the rest is waiting, to be taken
        await read_checking_every_so_many(items)


async def test_a_read_that_waits_is_its_own_checkpoint(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A paced stream's reader waits for every event, and the wait is the read's
    # checkpoint (no other before it): a read cancelled before or while it waits raises
    # Cancelled and takes nothing; the event it waited for goes to the next read.
    got: list[Any] = []
    waited = 0
    async with open_runtime() as rt, rt.astream_events(Chunks(pace=1.0), 5) as events:
        while not got or got[-1].status is None or got[-1].parent_ids:
            with trio.CancelScope() as scope:
                scope.cancel()
                await events.__anext__()
                pytest.fail("a read in a cancelled scope returned an event")
            with trio.move_on_after(0.5) as waiting:
                got.append(await events.__anext__())
            waited += waiting.cancelled_caught
            if waiting.cancelled_caught:
                got.append(await events.__anext__())
    chunks = [e.chunk for e in got if e.event.endswith("_stream")]
    assert chunks == list(range(5)) and waited == 5


async def test_public_calls_are_cancel_points() -> None:
    async with open_runtime() as rt:
        with trio.CancelScope() as scope:
            scope.cancel()
            await invoke(Chunks(), 1)
        assert scope.cancelled_caught
        with trio.CancelScope() as scope:
            scope.cancel()
            await rt.ainvoke(Chunks(), 1)
        assert scope.cancelled_caught


async def test_a_custom_event_is_a_checkpoint() -> None:
    @frozen(eq=False)
    class Dispatches(Chunks):
        async def perform(self, message: int, run: Run) -> int:
            for _ in range(message):
                with trio.testing.assert_checkpoints():
                    await adispatch_custom_event("tick", {"n": 1})
            return message

    async with open_runtime() as rt:
        assert await rt.ainvoke(Dispatches(), 3) == 3


async def test_emit_is_a_cancel_point_and_yields_every_so_often() -> None:
    @frozen(eq=False)
    class Emits(Chunks):
        async def perform(self, message: int, run: Run) -> int:
            with trio.CancelScope() as scope:
                scope.cancel()
                await run.emit("lost")
            assert scope.cancelled_caught
            for _ in range(3):
                with trio.testing.assert_checkpoints():
                    for i in range(SCHEDULE_EVERY):
                        await run.emit(i)
            return message

    async with open_runtime() as rt, rt.astream(Emits(), 0) as chunks:
        got = [chunk async for chunk in chunks]
    assert got == list(range(SCHEDULE_EVERY)) * 3
