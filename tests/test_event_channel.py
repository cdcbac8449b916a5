"""The tracer-to-subscriber channel: bounded, ordered, and closed cleanly from either side."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from protocol import RunInfo, StreamEvent
from runtime._event_channel import ChunkEvents, EventChannel

INFO = RunInfo("r", "run", "chain")


def event(seq: int) -> StreamEvent:
    return StreamEvent("on_chain_stream", INFO, seq, chunk=seq)


def events(first: int, count: int) -> ChunkEvents:
    """The events ``first`` .. ``first + count - 1`` as one run of chunks (chunk = seq)."""
    return ChunkEvents("on_chain_stream", INFO, first, tuple(range(first, first + count)))


async def test_a_full_channel_refuses_without_waiting_and_keeps_order() -> None:
    channel = EventChannel(2)
    channel.send_nowait(event(1))
    assert channel.offer(events(2, 2)) == 1  # room for one more only
    with pytest.raises(trio.WouldBlock):
        channel.send_nowait(event(3))
    assert channel.offer(events(3, 1)) == 0
    assert [channel.receive_nowait().seq for _ in range(2)] == [1, 2]
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()


async def test_send_waits_for_room_and_receive_waits_for_an_event() -> None:
    channel = EventChannel(1)
    got: list[int] = []

    async def read(count: int) -> None:
        for _ in range(count):
            received = await channel.receive()
            got.append(received.seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read, 3)
        await trio.testing.wait_all_tasks_blocked()  # the reader waits on an empty channel
        for seq in (1, 2, 3):
            await channel.send(event(seq))  # waits while the reader is behind
    assert got == [1, 2, 3]


async def test_closing_the_sender_ends_the_stream_after_what_is_queued() -> None:
    channel = EventChannel(4)
    channel.offer(events(1, 2))
    channel.close()
    assert (await channel.receive()).seq == 1
    assert channel.receive_nowait().seq == 2
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(event(3))
    with pytest.raises(trio.ClosedResourceError):
        channel.offer(events(3, 1))


async def test_a_reader_that_leaves_breaks_a_waiting_sender() -> None:
    channel = EventChannel(1)
    channel.send_nowait(event(1))

    async def leave() -> None:
        await trio.testing.wait_all_tasks_blocked()
        channel.close_receiver()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave)
        with pytest.raises(trio.BrokenResourceError):
            await channel.send(event(2))
    assert len(channel) == 0  # what was queued is dropped with the reader
    with pytest.raises(trio.ClosedResourceError):
        channel.receive_nowait()
    with pytest.raises(trio.BrokenResourceError):
        channel.offer(events(3, 1))


async def test_waiting_on_either_side_can_be_cancelled() -> None:
    channel = EventChannel(1)
    with trio.move_on_after(0.01) as waited:
        await channel.receive()
    assert waited.cancelled_caught
    channel.send_nowait(event(1))
    with trio.move_on_after(0.01) as waited:
        await channel.send(event(2))
    assert waited.cancelled_caught
    assert channel.receive_nowait().seq == 1  # the cancelled send sent nothing
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()
    channel.send_nowait(event(3))  # and the channel still works
    assert channel.receive_nowait().seq == 3


@pytest.mark.parametrize("capacity", [0, -1, 1.5, True, "2"])
def test_the_capacity_must_be_a_positive_integer(capacity: object) -> None:
    with pytest.raises(ValueError, match="capacity must be a positive integer"):
        EventChannel(capacity)  # type: ignore[arg-type]


async def test_two_readers_waiting_at_once_is_refused_clearly() -> None:
    channel = EventChannel(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError, match="one task at a time"):
            await channel.receive()
        channel.send_nowait(event(1))  # the first reader still gets it
    assert len(channel) == 0


async def test_a_reader_that_falls_behind_releases_what_it_has_read() -> None:
    channel = EventChannel(8)
    channel.offer(events(0, 4))
    assert channel.receive_nowait().seq == 0
    channel.send_nowait(event(4))
    assert [channel.receive_nowait().seq for _ in range(4)] == [1, 2, 3, 4]
    assert len(channel) == 0 and channel.offer(events(5, 9)) == 8  # room is back


async def test_a_run_of_chunks_becomes_the_same_events_as_one_by_one() -> None:
    channel = EventChannel(16)
    run = ChunkEvents("on_chain_stream", INFO, 4, ("a", "b", "c", "d", "e")).part(1, 4)
    assert len(run) == 3 and [run.event(i).chunk for i in range(3)] == ["b", "c", "d"]
    assert channel.take() is None  # nothing queued yet, and no exception
    channel.send_nowait(event(1))
    assert channel.offer(run) == 3
    channel.send_nowait(event(9))
    assert channel.offer(run.part(1, 3)) == 2  # the same run queued again, in part
    assert len(channel) == 7
    got = [channel.receive_nowait() for _ in range(7)]
    assert [(e.seq, e.chunk) for e in got] == [
        (1, 1), (5, "b"), (6, "c"), (7, "d"), (9, 9), (6, "c"), (7, "d")
    ]  # fmt: skip
    made = got[1]
    assert made == StreamEvent("on_chain_stream", INFO, 5, chunk="b")
    assert made.data.chunk == "b" and made.status is None and made.end_time is None
    assert len(channel) == 0 and channel.take() is None


async def test_a_reader_can_stop_halfway_through_a_run_of_chunks() -> None:
    channel = EventChannel(4)
    assert channel.offer(events(1, 6)) == 4  # full after four
    assert [channel.receive_nowait().seq for _ in range(2)] == [1, 2]
    assert channel.offer(events(5, 2)) == 2  # the room read so far is free again
    assert len(channel) == 4
    channel.close_receiver()
    assert len(channel) == 0
    with pytest.raises(trio.ClosedResourceError):
        channel.take()


async def test_a_batching_reader_is_woken_by_a_batch_or_a_root_run_ending() -> None:
    channel = EventChannel(100)
    channel.wake_at = 3
    root = RunInfo("root", "Agent", "chain")
    child = RunInfo("child", "tool", "tool", ("root",))
    woken: list[int] = []

    async def reader() -> None:
        while True:
            try:
                await channel.receive()
            except trio.EndOfChannel:
                return
            woken.append(len(channel))  # how many more were already waiting
            while channel.take() is not None:
                pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        for seq in range(2):
            channel.send_nowait(StreamEvent("on_tool_start", child, seq))
        await trio.testing.wait_all_tasks_blocked()
        assert woken == []  # 2 of 3: not yet
        channel.send_nowait(StreamEvent("on_tool_end", child, 2, status="ok"))  # a child's end
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [2]  # the batch of 3
        channel.send_nowait(StreamEvent("on_chain_end", root, 9, status="ok"))
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [2, 0]  # a root run's end wakes it at once
        channel.close()


class _Steps(trio.abc.Instrument):
    """Counts the steps a task takes."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def _steps_once_woken(
    wait: Callable[[], Awaitable[object]], wake: Callable[[], object]
) -> int:
    """How many steps a task blocked in ``wait()`` takes to finish once ``wake()`` runs."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        (waiting,) = nursery.child_tasks
        steps = _Steps(waiting)
        trio.lowlevel.add_instrument(steps)
        wake()
    trio.lowlevel.remove_instrument(steps)
    return steps.steps


async def test_a_reader_or_sender_that_waited_needs_one_step_once_woken() -> None:
    # The wait is the call's checkpoint: a second pass through the scheduler after it
    # would cost every event of a reader that keeps up one more task switch.
    channel = EventChannel(1)
    got: list[int] = []

    async def read() -> None:
        got.append((await channel.receive()).seq)

    assert await _steps_once_woken(read, lambda: channel.send_nowait(event(1))) == 1
    assert got == [1]
    channel.send_nowait(event(2))  # full now
    assert await _steps_once_woken(lambda: channel.send(event(3)), channel.receive_nowait) == 1
    assert channel.receive_nowait().seq == 3


async def test_a_cancelled_receive_or_send_moves_nothing_even_when_it_need_not_wait() -> None:
    channel = EventChannel(2)
    channel.send_nowait(event(1))
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await channel.receive()
        with pytest.raises(trio.Cancelled):
            await channel.send(event(2))
    assert len(channel) == 1
    assert channel.receive_nowait().seq == 1


def _mixed_queue(channel: EventChannel, other: RunInfo) -> list[tuple[str, int, object]]:
    """Queue bare chunks of two runs among whole events and runs of chunks; what a
    reader must read back: (run id, seq, chunk) in order."""
    name = "on_chain_stream"
    expected: list[tuple[str, int, object]] = []

    def bare(info: RunInfo, seq: int, chunk: object) -> None:
        assert channel.put_chunk_now(name, info, seq, chunk)
        expected.append((info.run_id, seq, chunk))

    bare(INFO, 1, "a")
    bare(INFO, 2, event(99))  # a chunk that is itself an event stays a chunk
    bare(other, 1, "x")  # another run: a head of its own
    bare(INFO, 3, "b")
    channel.send_nowait(event(4))  # a whole event between two chunks of a run
    expected.append(("r", 4, 4))
    bare(INFO, 5, "c")
    bare(INFO, 7, "e")  # a gap in the numbers: a new head
    channel.offer(events(8, 2))
    expected += [("r", 8, 8), ("r", 9, 9)]
    bare(INFO, 10, ChunkEvents(name, INFO, 1, ("z",)))  # nor is a queued entry's type read
    return expected


def _read_back(channel: EventChannel) -> list[tuple[str, int, object]]:
    got = []
    while (received := channel.take()) is not None:
        assert received.event == "on_chain_stream" and received.status is None
        got.append((received.run_id, received.seq, received.chunk))
    return got


async def test_bare_chunks_read_back_as_the_events_they_stand_for() -> None:
    # The tracer queues a chunk alone when it can (put_chunk_now), and its reader makes
    # the event: whatever else is queued between, whatever the chunk is.
    other = RunInfo("o", "other", "chain")
    channel = EventChannel(100)
    expected = _mixed_queue(channel, other)
    assert len(channel) == len(expected)
    assert _read_back(channel) == expected
    assert len(channel) == 0 and channel._entries == []  # emptied once caught up


async def test_bare_chunks_join_a_run_the_reader_is_partway_through() -> None:
    channel = EventChannel(100)
    for seq in (1, 2):
        assert channel.put_chunk_now("on_chain_stream", INFO, seq, seq)
    assert channel.receive_nowait().seq == 1
    assert channel.put_chunk_now("on_chain_stream", INFO, 3, 3)  # joins the same head
    assert [channel.receive_nowait().seq for _ in range(2)] == [2, 3]
    # caught up: the next chunk still continues the run the reader was reading
    assert channel.put_chunk_now("on_chain_stream", INFO, 4, 4)
    got = channel.receive_nowait()
    assert (got.seq, got.chunk, got.run) == (4, 4, INFO)


async def test_a_bare_chunk_is_refused_when_full_or_shut_and_wakes_its_reader() -> None:
    channel = EventChannel(1)
    assert channel.put_chunk_now("on_chain_stream", INFO, 1, "a")
    assert not channel.put_chunk_now("on_chain_stream", INFO, 2, "b")  # full: nothing taken
    assert len(channel) == 1
    got: list[int] = []

    async def read() -> None:
        got.append((await channel.receive()).seq)

    assert channel.receive_nowait().seq == 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        assert channel.put_chunk_now("on_chain_stream", INFO, 2, "b")
    assert got == [2]
    channel.close_receiver()
    assert not channel.put_chunk_now("on_chain_stream", INFO, 3, "c")
