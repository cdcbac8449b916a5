"""A bounded event channel that never blocks its sender: when full it drops the oldest
event that is not a terminal event, and counts what it dropped.

For observing subscribers (dashboards, exporters) that would rather lose a token than
slow the runs down. Terminal events are never dropped: when everything waiting is
terminal, the new event is kept anyway (at most one per run, so still bounded).
"""

from __future__ import annotations

from collections import deque
from typing import final

import trio

from protocol import StreamEvent


@final
class DroppingChannel:
    """Both ends of a drop-oldest channel (sender: the tracer; receiver: a subscriber)."""

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        self._events: deque[StreamEvent] = deque()
        self._waiting = trio.lowlevel.ParkingLot()
        self._send_closed = False
        self._receive_closed = False
        self.dropped = 0
        """How many events were dropped to make room."""

    # -- the tracer's side -------------------------------------------------------------

    def send_nowait(self, event: StreamEvent) -> None:
        """Queue ``event``, dropping the oldest non-terminal event if full.

        Raises:
            trio.BrokenResourceError: the receiver has gone.
            trio.ClosedResourceError: this side was closed.
        """
        if self._send_closed:
            raise trio.ClosedResourceError
        if self._receive_closed:
            raise trio.BrokenResourceError
        events = self._events
        if len(events) >= self._capacity:
            for index, waiting in enumerate(events):
                if waiting.status is None:
                    del events[index]
                    self.dropped += 1
                    break
            else:
                if event.status is None:
                    self.dropped += 1  # all waiting are terminal: drop the new one
                    return
        events.append(event)
        self._waiting.unpark_all()

    async def send(self, event: StreamEvent) -> None:
        """The same as :meth:`send_nowait` (it never needs to wait)."""
        self.send_nowait(event)
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """No more events: the receiver sees the end once it has read what is queued."""
        self._send_closed = True
        self._waiting.unpark_all()

    # -- the subscriber's side ---------------------------------------------------------

    def receive_nowait(self) -> StreamEvent:
        """The oldest queued event.

        Raises:
            trio.WouldBlock: nothing queued yet.
            trio.EndOfChannel: the sender closed and everything was read.
            trio.ClosedResourceError: the receiver closed this channel.
        """
        if self._receive_closed:
            raise trio.ClosedResourceError
        if self._events:
            return self._events.popleft()
        if self._send_closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> StreamEvent:
        """Wait for the oldest queued event (see :meth:`receive_nowait`)."""
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._waiting.park()
                continue
            await trio.lowlevel.checkpoint()
            return event

    def close_receiver(self) -> None:
        """The subscriber stops reading; the tracer forgets it."""
        self._receive_closed = True
        self._events.clear()
