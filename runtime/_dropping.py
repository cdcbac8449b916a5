"""A bounded event channel that never blocks its sender: when full it drops the oldest
event that is not a terminal event, and counts what it dropped.

For observing subscribers (dashboards, exporters) that would rather lose a token than
slow the runs down. Terminal events are never dropped: when everything waiting is
terminal, the new event is kept anyway (at most one per run, so still bounded).
"""

from __future__ import annotations

from typing import Any, final

import trio

from protocol import RunInfo, StreamEvent, make_stream_event

from ._event_channel import ChunkEvents, EventChannel


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
        full = self._count >= self._capacity
        if full and not self._drop_oldest() and event.status is None:
            self.dropped += 1  # all waiting are terminal: drop the new one
            return
        self._entries.append(event)
        self._count += 1
        if self._waiter is not None:
            self._wake()
        elif self._pause is not None and event.status is not None and not event.parent_ids:
            self._pause.cancel()  # a root run's end is taken at once

    def put_now(self, event: StreamEvent) -> bool:
        """Queue ``event`` (dropping to make room); ``False`` only when shut."""
        if self._shut:
            return False
        self.send_nowait(event)
        return True

    def put_chunk_now(self, name: str, info: RunInfo, seq: int, chunk: Any) -> bool:
        """As :meth:`put_now`, the event made now: this channel's queue holds whole
        events (and runs of them) only, for :meth:`_drop_oldest` to weigh."""
        return self.put_now(make_stream_event(name, info, seq, None, None, None, chunk))

    def takes_now(self) -> bool:
        """Whether :meth:`send_nowait` takes an event now: always, unless shut."""
        return not self._shut

    def offer(self, events: ChunkEvents) -> int:
        """Queue every one of ``events`` (dropping to make room); return how many."""
        for index in range(len(events)):
            self.send_nowait(events.event(index))
        return len(events)

    async def send(self, event: StreamEvent) -> None:
        """The same as :meth:`send_nowait` (it never needs to wait)."""
        self.send_nowait(event)
        await trio.lowlevel.checkpoint()

    def _drop_oldest(self) -> bool:
        """Drop the oldest queued event that is not terminal; ``False`` if there is none."""
        entries = self._entries
        for index in range(self._head, len(entries)):
            entry = entries[index]
            if type(entry) is ChunkEvents:  # (none of it read: the reader takes it whole)
                if len(entry) > 1:
                    entries[index] = entry.part(1, len(entry))
                else:
                    del entries[index]
            elif entry is not None and entry.status is None:
                del entries[index]
            else:
                continue
            self._count -= 1
            self.dropped += 1
            return True
        return False
