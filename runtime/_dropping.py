"""A bounded event channel that never blocks its sender: when full it drops the oldest
event that is not a terminal event, and counts what it dropped.

For observing subscribers (dashboards, exporters) that would rather lose a token than
slow the runs down. Terminal events are never dropped: when everything waiting is
terminal, the new event is kept anyway (at most one per run, so still bounded).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import final

import trio

from protocol import StreamEvent

from ._event_channel import EventChannel


@final
class DroppingChannel(EventChannel):
    """Both ends of a drop-oldest channel (sender: the tracer; receiver: a subscriber)."""

    __slots__ = ("dropped",)

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.dropped = 0
        """How many events were dropped to make room."""

    def send_nowait(self, event: StreamEvent) -> None:
        """Queue ``event``, dropping the oldest non-terminal event if full.

        Raises:
            trio.BrokenResourceError: the receiver has gone.
            trio.ClosedResourceError: this side was closed.
        """
        if self._shut:
            self._raise_shut()
        events = self._events
        if len(events) - self._head >= self._capacity:
            for index in range(self._head, len(events)):
                waiting = events[index]
                if waiting is not None and waiting.status is None:
                    del events[index]
                    self.dropped += 1
                    break
            else:
                if event.status is None:
                    self.dropped += 1  # all waiting are terminal: drop the new one
                    return
        events.append(event)
        if self._waiter is not None:
            self._wake()

    def offer(self, events: Sequence[StreamEvent]) -> int:
        """Queue every one of ``events`` (dropping to make room); return how many."""
        for event in events:
            self.send_nowait(event)
        return len(events)

    async def send(self, event: StreamEvent) -> None:
        """The same as :meth:`send_nowait` (it never needs to wait)."""
        self.send_nowait(event)
        await trio.lowlevel.checkpoint()
