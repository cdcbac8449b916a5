"""The channel from the tracer to one subscriber: bounded, single-sender, single-reader.

Every event goes through one of these, so they are built for the hot path: a list,
the one task waiting on it, and ``offer`` to hand over a run of chunk events in one
call. The tracer is the only sender and the subscriber the only reader, which is what
keeps it this simple; the semantics are those of a trio memory channel of
``capacity`` events (``send_nowait`` raises ``WouldBlock`` when full, ``send`` waits,
closing either side ends the other's use of it).

A run of chunks waits in the channel as one :class:`ChunkEvents`, and each of its
events is made when the subscriber reads it: chunks queued for a reader that has not
run yet cost a reference each, not an event object each, and the events a reader
takes die young (the cyclic GC never has to look at them twice). A chunk its producer
hands over itself (``put_chunk_now``, while the tracer is idle) waits bare in the
same way, in a run that the run's next chunks join. The reader takes a run off the
queue whole and reads on from it, the queue untouched until the run is read.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Final, NoReturn, Protocol, final

import trio

from protocol import RunInfo, StreamEvent, make_stream_event

from ._checks import positive_int
from ._gate import Gate


@final
class ChunkEvents:
    """The ``on_*_stream`` events of ``chunks`` of one run, numbered from ``seq``
    (to ``next``, past the last), not made yet. Immutable: the tracer queues the same
    one for every subscriber of the run."""

    __slots__ = ("chunks", "info", "name", "next", "seq")

    def __init__(self, name: str, info: RunInfo, seq: int, chunks: tuple[Any, ...]) -> None:
        self.name = name
        self.info = info
        self.seq = seq
        self.chunks = chunks
        self.next = seq + len(chunks)

    def __len__(self) -> int:
        return self.next - self.seq

    def event(self, index: int) -> StreamEvent:
        """The ``index``-th event (0 is the one numbered ``seq``)."""
        chunk = self.chunks[index]
        return make_stream_event(self.name, self.info, self.seq + index, None, None, None, chunk)

    def part(self, begin: int, end: int) -> ChunkEvents:
        """The events ``begin`` to ``end`` (exclusive) as a run of their own (the
        slow path of a channel with room for part of a run: its chunks copied, so that
        a reader reads every run from its first chunk)."""
        return ChunkEvents(self.name, self.info, self.seq + begin, self.chunks[begin:end])


@final
class _Head:
    """In a channel's queue: the stream events of ``chunks`` (bare chunks its
    producers handed over, see ``put_chunk_now``) of the run of ``info``, numbered from
    ``seq`` to ``next`` (past the last). Read as a :class:`ChunkEvents` is; while it is
    the last entry of the queue, the run's next chunks join it (``next`` grows), and
    its reader lets go of those it read (see :data:`HEAD_KEEPS`)."""

    __slots__ = ("chunks", "info", "name", "next", "seq")

    def __init__(self, name: str, info: RunInfo, seq: int, chunk: Any) -> None:
        self.name = name
        self.info = info
        self.seq = seq
        self.chunks = [chunk]
        self.next = seq + 1

    def forget(self, read: int) -> None:
        """Let go of its first ``read`` chunks, read (it goes on from the next one)."""
        del self.chunks[:read]
        self.seq += read


HEAD_KEEPS: Final = 64
"""How many chunks of a :class:`_Head` its reader has read that it keeps before it lets
them go: the run's next chunks join it as long as nothing else is queued after them,
which a reader that keeps up (or a run that streams alone) may make the whole run."""


class EventSink(Protocol):
    """What the tracer needs of a subscriber's channel: an :class:`EventChannel`, or
    the run journal's feed, which takes each event as the tracer hands it over (see
    ``runtime._journal``)."""

    gate: Gate | None
    """The gate of the run tree it watches, if any (see :class:`EventChannel`)."""

    def send_nowait(self, event: StreamEvent) -> None:
        """Take ``event``; ``trio.WouldBlock`` when full, ``trio.BrokenResourceError``
        or ``trio.ClosedResourceError`` once either side closed."""

    def put_now(self, event: StreamEvent) -> bool:
        """Take ``event`` if that needs no wait; ``False``, taking nothing, if not."""

    def takes_now(self) -> bool:
        """Whether :meth:`send_nowait` would take an event now."""

    def offer(self, events: ChunkEvents) -> int:
        """Take as many of ``events`` as fit, in order; how many."""

    async def send(self, event: StreamEvent) -> None:
        """Take ``event``, waiting while full."""

    def close(self) -> None:
        """No more events."""


class EventChannel:
    """Both ends of a subscriber's event channel (sender: the tracer).

    At most one task waits on it at a time: the reader when it is empty, or the
    tracer when it is full; so instead of parking lots it keeps that one task. (A
    reader of paced tokens waits once per event: a wait-and-wake took 7.4 µs with
    ``wait_task_rescheduled`` against 8.7-9.1 with a ParkingLot and 8.1-8.7 with a
    fresh trio.Event, three objects per wait; ``python -m benchmarks._parking``.)

    A channel given a :class:`Gate` (that of the run tree it watches) never makes the
    tracer wait: when full it still takes the event and closes the gate, so the run's
    producers wait instead; it opens the gate again once the reader has read it down to
    half its capacity, or has left.
    """

    __slots__ = (
        "_abort",
        "_at",
        "_at_read",
        "_capacity",
        "_count",
        "_entries",
        "_head",
        "_over",
        "_pause",
        "_receive_closed",
        "_send_closed",
        "_shut",
        "_tail",
        "_waiter",
        "gate",
        "wake_at",
    )

    def __init__(self, capacity: int) -> None:
        positive_int(capacity, "capacity")
        self._capacity = capacity
        # Queued are the events of _at past its first _at_read, then those of
        # _entries[_head:]; _count events in all. An entry is an event or a run of
        # chunk events (a ChunkEvents, or a _Head of bare chunks). The reader takes a
        # run off the list whole (_at) and reads its events from there, so that reading
        # a run's next event touches no list (the per-token path). The list is emptied
        # whenever the reader has taken its last entry, so a quiet channel holds no more
        # than an empty list.
        self._entries: list[Any] = []
        self._head = 0
        # The _Head of the last entry (or of _at, with nothing queued after it) that the
        # next chunk of its run may join (the tracer's side); the run of chunk events
        # the reader is at and how many of them it has read (the reader's side).
        self._tail: _Head | None = None
        self._at: _Head | ChunkEvents | None = None
        self._at_read = 0
        self._count = 0
        self._waiter: trio.lowlevel.Task | None = None
        self._send_closed = False
        self._receive_closed = False
        self._shut = False  # either side closed: the one flag the hot path checks
        # Kept, not made per wait (a bound method is an object each time); it ties the
        # channel to itself, a cycle close_receiver undoes (see there).
        self._abort: Callable[[object], trio.lowlevel.Abort] = self._forget_waiter
        self._pause: trio.CancelScope | None = None
        self.gate: Gate | None = None
        """The gate of the run tree this channel watches (set when the run starts)."""
        self._over = False  # holding the gate closed
        self.wake_at = 1
        """Wake a waiting reader once this many events are queued (or a root run has
        ended, or the channel closed): more than 1 lets a reader that is in no hurry,
        such as an exporter, take its events in batches."""

    def __len__(self) -> int:
        """How many events are queued."""
        return self._count

    # -- the tracer's side -------------------------------------------------------------

    def send_nowait(self, event: StreamEvent) -> None:
        """Queue ``event``.

        Raises:
            trio.WouldBlock: the channel is full.
            trio.BrokenResourceError: the reader has gone.
            trio.ClosedResourceError: this side was closed.
        """
        if self._shut:
            self._raise_shut()
        if self._count >= self._capacity:
            if self.gate is None:
                raise trio.WouldBlock
            self._hold_gate()
        self._entries.append(event)
        self._tail = None  # the next bare chunk needs a head of its own
        self._count += 1
        if self._waiter is not None and (
            self._count >= self.wake_at or (event.status is not None and not event.parent_ids)
        ):
            self._wake()
        elif self._pause is not None and event.status is not None and not event.parent_ids:
            self._pause.cancel()  # a root run's end is taken at once

    def put_now(self, event: StreamEvent) -> bool:
        """Queue ``event`` if that needs no wait (see :meth:`takes_now`); ``False``,
        queueing nothing, if it would (or the channel is shut)."""
        if not self._room_now():
            return False
        self._entries.append(event)
        self._tail = None
        self._count += 1
        if self._waiter is not None and self._count >= self.wake_at:
            self._wake()  # (a stream event: never a root's terminal event)
        return True

    def put_chunk_now(self, name: str, info: RunInfo, seq: int, chunk: Any) -> bool:
        """:meth:`put_now` for the stream event ``make_stream_event(name, info, seq,
        chunk=chunk)``, queueing the chunk alone: the reader makes the event when it
        reads it. An event made by its producer lives until its reader runs, and with
        thousands of runs at once each scheduler pass lasts long enough for the cyclic
        collector to promote it (and trace it again in a full collection); one made by
        its reader dies young. Consecutive chunks of a run share one :class:`_Head`."""
        if (self._shut or self._count >= self._capacity) and not self._room_now():
            return False  # (the common case, room and not shut, costs no call: per token)
        tail = self._tail
        if tail is not None and tail.info is info and tail.next == seq:
            tail.chunks.append(chunk)
            tail.next = seq + 1
        else:
            self._tail = _Head(name, info, seq, chunk)
            self._entries.append(self._tail)
        self._count += 1
        if self._waiter is not None and self._count >= self.wake_at:
            self._wake()  # (a stream event: never a root's terminal event)
        return True

    def takes_now(self) -> bool:
        """Whether :meth:`send_nowait` would queue an event now (when full, a gated
        channel still takes it and closes its gate); ``False`` also when shut."""
        return not self._shut and (self._count < self._capacity or self.gate is not None)

    def offer(self, events: ChunkEvents) -> int:
        """Queue as many of ``events`` as fit, in order; return how many were queued.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: as :meth:`send_nowait`.
        """
        if self._shut:
            self._raise_shut()
        room = self._capacity - self._count
        taken = len(events)
        if room < taken and self.gate is not None:
            self._hold_gate()
            room = taken
        if room <= 0:
            return 0
        if room >= taken:
            self._entries.append(events)
        else:
            self._entries.append(events.part(0, room))
            taken = room
        self._tail = None
        self._count += taken
        if self._waiter is not None and self._count >= self.wake_at:
            self._wake()
        return taken

    async def send(self, event: StreamEvent) -> None:
        """Queue ``event``, waiting while the channel is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._count < self._capacity or self._shut:
            self.send_nowait(event)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        while self._count >= self._capacity and not self._shut:
            await self.parked()  # the checkpoint, as in receive
        self.send_nowait(event)

    def close(self) -> None:
        """No more events: the reader sees the end once it has read what is queued."""
        self._send_closed = self._shut = True
        if self._waiter is not None:
            self._wake()
        if self._pause is not None:
            self._pause.cancel()

    def _room_now(self) -> bool:
        """Whether an event may be queued without a wait (a gated channel takes it
        when full, closing its gate)."""
        if self._shut:
            return False
        if self._count >= self._capacity:
            if self.gate is None:
                return False
            self._hold_gate()
        return True

    def _hold_gate(self) -> None:
        if not self._over and self.gate is not None:
            self._over = True
            self.gate.close()

    def _release_gate(self) -> None:
        if self._over and self.gate is not None:
            self._over = False
            self.gate.open()

    def _raise_shut(self) -> None:
        if self._send_closed:
            raise trio.ClosedResourceError
        raise trio.BrokenResourceError

    # -- the subscriber's side ---------------------------------------------------------

    def take(self) -> StreamEvent | None:
        """The oldest queued event, or ``None`` when none is queued yet.

        Raises:
            trio.EndOfChannel: the sender closed and everything was read.
            trio.ClosedResourceError: the reader closed this channel.
        """
        at = self._at
        if at is not None:
            read = self._at_read
            seq = at.seq + read
            if seq < at.next:  # the run's next event: the per-token path
                self._at_read = read + 1
                self._count -= 1
                if self._over and self._count <= self._capacity >> 1:
                    self._release_gate()
                if self._waiter is not None:
                    self._wake()
                event = make_stream_event(at.name, at.info, seq, None, None, None, at.chunks[read])
                if read >= HEAD_KEEPS and type(at) is _Head:
                    at.forget(read + 1)
                    self._at_read = 0
                return event
            self._at = None  # read to its end
            if at is self._tail:
                self._tail = None  # the run's next chunk starts a new one
        entries = self._entries
        head = self._head
        if head < len(entries):
            entry = entries[head]
            head += 1
            if head == len(entries):
                entries.clear()
                self._head = 0
            else:
                entries[head - 1] = None  # taken: the list does not keep it alive
                self._head = head
            kind = type(entry)
            if kind is _Head or kind is ChunkEvents:
                self._at = entry
                self._at_read = 1
                event = make_stream_event(
                    entry.name, entry.info, entry.seq, None, None, None, entry.chunks[0]
                )
            else:
                event = entry
            self._count -= 1
            if self._over and self._count <= self._capacity >> 1:
                self._release_gate()
            if self._waiter is not None:
                self._wake()
            return event
        if self._receive_closed:
            raise trio.ClosedResourceError
        if self._send_closed:
            raise trio.EndOfChannel
        return None

    def receive_nowait(self) -> StreamEvent:
        """The oldest queued event.

        Raises:
            trio.WouldBlock: nothing queued yet.
            trio.EndOfChannel: the sender closed and everything was read.
            trio.ClosedResourceError: the reader closed this channel.
        """
        event = self.take()
        if event is None:
            raise trio.WouldBlock
        return event

    async def receive(self) -> StreamEvent:
        """Wait for the oldest queued event (see :meth:`receive_nowait`)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        event = self.take()
        if event is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event
        while True:
            # The wait is this call's checkpoint (as in trio's own channels): no
            # second pass through the scheduler once woken, which would cost every
            # event a waiting reader gets one more task switch.
            await self.parked()
            event = self.take()
            if event is not None:
                return event

    def close_receiver(self) -> None:
        """The subscriber stops reading: queued events are dropped, the sender is told."""
        self._receive_closed = self._shut = True
        self._entries.clear()
        self._head = self._count = 0
        self._tail = self._at = None
        # Nothing waits on a shut channel, so its kept abort (a bound method: a
        # reference cycle) can go: then a stream's channel is freed as its stream is,
        # not left, with its queue and gate, for the cyclic collector to find.
        self._abort = _abort_nothing
        self._release_gate()
        if self._waiter is not None:
            self._wake()
        if self._pause is not None:
            self._pause.cancel()

    async def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds`` without waiting on the channel: what is sent
        meanwhile is queued and wakes no one. Ends early once either side closes, or
        a root run's terminal event is queued."""
        with trio.move_on_after(seconds) as self._pause:
            if not self._shut:
                await trio.sleep_forever()
        self._pause = None

    # -- waiting ---------------------------------------------------------------------

    def parked(self) -> Coroutine[Any, Any, object]:
        """Park the calling task until it is woken: an event queued (or, for the
        tracer, room made), either side closed. A checkpoint; the caller then looks
        again (:meth:`take`), as it may be woken with nothing for it.

        A plain function handing back trio's own wait: the waiting task's stack is one
        coroutine shorter, and with thousands of readers waiting at once, each frame
        kept alive across a scheduler pass is one more object for the cyclic collector
        to trace (it promotes whatever lives that long).

        Raises:
            trio.BusyResourceError: another task already waits on this channel.
        """
        if self._waiter is not None:
            self._raise_busy()
        self._waiter = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105  # the caller awaits it

    @staticmethod
    def _raise_busy() -> NoReturn:
        raise trio.BusyResourceError(
            "another task is already waiting on this event stream; read a stream "
            "from one task at a time"
        )

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    def _forget_waiter(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


def _abort_nothing(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.SUCCEEDED
