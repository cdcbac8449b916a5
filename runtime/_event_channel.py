"""The channel from the tracer to one subscriber: bounded, single-sender, single-reader.

Every event goes through one of these, so they are built for the hot path: a deque, a
flag for each side's waiting task, and ``offer`` to hand over a run of events in one
call. The tracer is the only sender and the subscriber the only reader, which is what
keeps it this simple; the semantics are those of a trio memory channel of
``capacity`` events (``send_nowait`` raises ``WouldBlock`` when full, ``send`` waits,
closing either side ends the other's use of it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import trio

from protocol import StreamEvent


class EventChannel:
    """Both ends of a subscriber's event channel (sender: the tracer)."""

    __slots__ = (
        "_capacity",
        "_events",
        "_reader",
        "_reader_waiting",
        "_receive_closed",
        "_send_closed",
        "_shut",
        "_writer",
        "_writer_waiting",
    )

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        self._events: deque[StreamEvent] = deque()
        self._reader = trio.lowlevel.ParkingLot()
        self._writer = trio.lowlevel.ParkingLot()
        self._reader_waiting = False
        self._writer_waiting = False
        self._send_closed = False
        self._receive_closed = False
        self._shut = False  # either side closed: the one flag the hot path checks

    def __len__(self) -> int:
        return len(self._events)

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
        events = self._events
        if len(events) >= self._capacity:
            raise trio.WouldBlock
        events.append(event)
        if self._reader_waiting:
            self._reader.unpark_all()

    def offer(self, events: Sequence[StreamEvent]) -> int:
        """Queue as many of ``events`` as fit, in order; return how many were queued.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: as :meth:`send_nowait`.
        """
        if self._shut:
            self._raise_shut()
        queue = self._events
        room = self._capacity - len(queue)
        if room <= 0:
            return 0
        if room >= len(events):
            queue.extend(events)
            taken = len(events)
        else:
            queue.extend(events[:room])
            taken = room
        if self._reader_waiting:
            self._reader.unpark_all()
        return taken

    async def send(self, event: StreamEvent) -> None:
        """Queue ``event``, waiting while the channel is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(event)
            except trio.WouldBlock:
                self._writer_waiting = True
                await self._writer.park()
                continue
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """No more events: the reader sees the end once it has read what is queued."""
        self._send_closed = self._shut = True
        self._reader.unpark_all()

    def _raise_shut(self) -> None:
        if self._send_closed:
            raise trio.ClosedResourceError
        raise trio.BrokenResourceError

    # -- the subscriber's side ---------------------------------------------------------

    def receive_nowait(self) -> StreamEvent:
        """The oldest queued event.

        Raises:
            trio.WouldBlock: nothing queued yet.
            trio.EndOfChannel: the sender closed and everything was read.
            trio.ClosedResourceError: the reader closed this channel.
        """
        events = self._events
        if events:
            event = events.popleft()
            if self._writer_waiting:
                self._writer_waiting = False
                self._writer.unpark_all()
            return event
        if self._receive_closed:
            raise trio.ClosedResourceError
        if self._send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> StreamEvent:
        """Wait for the oldest queued event (see :meth:`receive_nowait`)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                self._reader_waiting = True
                try:
                    await self._reader.park()
                finally:
                    self._reader_waiting = False
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def close_receiver(self) -> None:
        """The subscriber stops reading: queued events are dropped, the sender is told."""
        self._receive_closed = self._shut = True
        self._events.clear()
        self._writer_waiting = False
        self._writer.unpark_all()
