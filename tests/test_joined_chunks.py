"""Chunks a run streams between two scheduler passes join one message to the tracer
(while it waits, untaken, at the end of the mailbox), and a chunk streamed while the
tracer has nothing to do is delivered by its producer, with no message at all; each
chunk still arrives as its own event, in order, with its own seq."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from attrs import field, frozen

from actors.testing import check_events
from runtime import Performer, Run, open_runtime
from runtime._core import JOIN_LIMIT


@frozen(eq=False)
class Counter(Performer[int, int]):
    """Streams 0..n-1; with ``yield_every`` a scheduler pass every that many chunks."""

    name: str = "counter"
    yield_every: int = 0
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)

    def coerce_input(self, value: Any) -> int:
        return int(value)

    async def perform(self, message: int, run: Run) -> int:
        for i in range(message):
            if self.yield_every and i % self.yield_every == 0:
                await trio.lowlevel.checkpoint()
            await run.emit(i)
        return message


async def _stream(performer: Counter, n: int) -> tuple[list[Any], int]:
    async with open_runtime() as rt:
        mailbox = rt._tracer.mailbox
        before = mailbox.sent
        async with rt.astream_events(performer, n) as stream:
            events = [event async for event in stream]
        return events, mailbox.sent - before


async def test_chunks_between_scheduler_passes_travel_as_one_message() -> None:
    n = 2_000
    events, messages = await _stream(Counter(), n)
    check_events(events)
    chunks = [e for e in events if e.event == "on_chain_stream"]
    assert [e.data.chunk for e in chunks] == list(range(n))
    assert [e.seq for e in chunks] == list(range(1, n + 1))
    # start, end, and the chunks in messages of at most JOIN_LIMIT (two to begin: one
    # alone, then the ones that joined the next)
    assert messages <= 2 + 2 + n // JOIN_LIMIT + 1


async def test_a_chunk_streamed_while_the_tracer_is_idle_needs_no_message() -> None:
    n = 300
    events, messages = await _stream(Counter(yield_every=1), n)
    check_events(events)
    chunks = [e for e in events if e.event == "on_chain_stream"]
    assert [e.data.chunk for e in chunks] == list(range(n))
    assert [e.seq for e in chunks] == list(range(1, n + 1))
    # the run's start and end, and the first chunks, streamed before the tracer had
    # handled the start; from then on it waits on an empty mailbox after each scheduler
    # pass, so each chunk goes from its producer to the stream directly
    assert messages <= 2 + 2


class SlowWatcher:
    """A runtime-wide, lossless watcher that falls behind now and then."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def on_event(self, event: Any) -> None:
        self.events.append(event)
        if len(self.events) % 5 == 0:
            await trio.sleep(0.001)


async def test_a_full_lossless_watcher_sends_chunks_back_through_the_tracer() -> None:
    n = 400
    watcher = SlowWatcher()
    async with open_runtime() as rt:
        mailbox = rt._tracer.mailbox
        await rt.subscribe(watcher, capacity=4)
        before = mailbox.sent
        async with rt.astream_events(Counter(yield_every=1), n) as stream:
            events = [event async for event in stream]
        messages = mailbox.sent - before
    # closed: the watcher has handled every event on its way
    for seen in (events, watcher.events):
        check_events(seen)
        assert [e.data.chunk for e in seen if e.event == "on_chain_stream"] == list(range(n))
    assert [e.seq for e in events] == [e.seq for e in watcher.events]
    assert messages > 2 + 10  # the watcher was full at times: those chunks took the mailbox


async def test_a_stream_that_left_loses_nothing_for_the_others() -> None:
    async with open_runtime() as rt:
        async with rt.astream_events(Counter(yield_every=1), 1_000) as stream:
            async for event in stream:
                if event.seq == 10:
                    break  # leaves mid-run: its run is cancelled, its channel shut
        async with rt.astream_events(Counter(yield_every=1), 50) as stream:
            events = [event async for event in stream]
    check_events(events)
    assert [e.data.chunk for e in events if e.event == "on_chain_stream"] == list(range(50))


async def test_runs_that_stream_at_once_keep_their_own_chunks_in_order() -> None:
    results: dict[int, list[Any]] = {}
    async with open_runtime() as rt:

        async def one(i: int) -> None:
            async with rt.astream_events(Counter(yield_every=7), 100 + i) as stream:
                results[i] = [event async for event in stream]

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(one, i)
    for i, events in results.items():
        check_events(events)
        assert [e.data.chunk for e in events if e.event == "on_chain_stream"] == list(
            range(100 + i)
        )


async def test_the_tracer_is_not_idle_while_a_send_is_under_way() -> None:
    # A producer must never see the mailbox as handled while a message is still on its
    # way in: trio may hand a waiting sender's message to the tracer, which may take it
    # and go idle before the sender runs again.
    from runtime._tracer_mailbox import TracerMailbox

    send, receive = trio.open_memory_channel[Any](0)  # every send waits for the reader
    mailbox = TracerMailbox(send, _Unused())
    mailbox.idle = True  # the tracer waits, and has taken everything counted so far
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send, "a")
        await trio.testing.wait_all_tasks_blocked()
        assert mailbox.sending == 1 and not mailbox.is_idle()
        assert receive.receive_nowait() == "a"
        mailbox.taken += 1  # taken before its sender has run again
        assert mailbox.sent == 0 and not mailbox.is_idle()
    assert mailbox.sent == mailbox.taken == 1 and mailbox.is_idle()
    with trio.move_on_after(0.01):
        await mailbox.send("b")  # nobody reads: cancelled, so it never went in
    assert mailbox.sent == mailbox.taken == 1 and mailbox.is_idle()


async def test_a_send_given_up_does_not_let_a_run_join_a_message_already_taken() -> None:
    from runtime._tracer_mailbox import TracerMailbox

    send, receive = trio.open_memory_channel[Any](1)
    mailbox = TracerMailbox(send, _Unused())
    mailbox.send_nowait("first")  # full now
    async with trio.open_nursery() as nursery:
        nursery.start_soon(mailbox.send, "given up")  # waits for room
        await trio.testing.wait_all_tasks_blocked()
        mailbox.idle = True
        assert not mailbox.is_idle()
        nursery.cancel_scope.cancel()
    assert await receive.receive() == "first"
    mailbox.taken += 1
    mailbox.send_nowait("mine")  # the second in: number 2
    assert mailbox.waits_last(2)  # untaken: chunks may join it
    assert await receive.receive() == "mine"
    mailbox.taken += 1
    assert not mailbox.waits_last(2)  # taken: nothing may join it any more
    assert mailbox.sent == mailbox.taken == 2 and mailbox.is_idle()


class _Unused:
    """A tracer's immediate handling, for a mailbox whose tests never reach it."""

    def deliver_now(self, run_id: str, chunk: Any) -> bool:
        raise AssertionError("not reached")

    def handle_now(self, message: Any) -> bool:
        raise AssertionError("not reached")
