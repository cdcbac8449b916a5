"""The channel from the tracer to one subscriber: bounded, single-sender, single-reader.

Every event goes through one of these, so they are built for the hot path: a list,
the one task waiting on it, and ``offer`` to hand over a run of events in one
call. The tracer is the only sender and the subscriber the only reader, which is what
keeps it this simple; the semantics are those of a trio memory channel of
``capacity`` events (``send_nowait`` raises ``WouldBlock`` when full, ``send`` waits,
closing either side ends the other's use of it).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from protocol import StreamEvent


class EventChannel:
    """Both ends of a subscriber's event channel (sender: the tracer).

    At most one task waits on it at a time: the reader when it is empty, or the
    tracer when it is full; so instead of parking lots it keeps that one task.
    """

    __slots__ = (
        "_abort",
        "_capacity",
        "_events",
        "_head",
        "_receive_closed",
        "_send_closed",
        "_shut",
        "_waiter",
    )

    def __init__(self, capacity: int) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        self._capacity = capacity
        # Queued events are _events[_head:]; the list is emptied whenever the reader
        # catches up, so a quiet channel holds no more than an empty list.
        self._events: list[StreamEvent | None] = []
        self._head = 0
        self._waiter: trio.lowlevel.Task | None = None
        self._send_closed = False
        self._receive_closed = False
        self._shut = False  # either side closed: the one flag the hot path checks
        self._abort = self._forget_waiter

    def __len__(self) -> int:
        return len(self._events) - self._head

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
        if len(events) - self._head >= self._capacity:
            raise trio.WouldBlock
        events.append(event)
        if self._waiter is not None:
            self._wake()

    def offer(self, events: Sequence[StreamEvent]) -> int:
        """Queue as many of ``events`` as fit, in order; return how many were queued.

        Raises:
            trio.BrokenResourceError, trio.ClosedResourceError: as :meth:`send_nowait`.
        """
        if self._shut:
            self._raise_shut()
        queue = self._events
        room = self._capacity - len(queue) + self._head
        if room <= 0:
            return 0
        if room >= len(events):
            queue.extend(events)
            taken = len(events)
        else:
            queue.extend(events[:room])
            taken = room
        if self._waiter is not None:
            self._wake()
        return taken

    async def send(self, event: StreamEvent) -> None:
        """Queue ``event``, waiting while the channel is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.send_nowait(event)
            except trio.WouldBlock:
                await self._wait()
                continue
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """No more events: the reader sees the end once it has read what is queued."""
        self._send_closed = self._shut = True
        if self._waiter is not None:
            self._wake()

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
        head = self._head
        if head < len(events):
            event = events[head]
            head += 1
            if head == len(events):
                events.clear()
                self._head = 0
            else:
                events[head - 1] = None  # read: don't keep it alive
                self._head = head
            if self._waiter is not None:
                self._wake()
            assert event is not None
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
                await self._wait()
                continue
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def close_receiver(self) -> None:
        """The subscriber stops reading: queued events are dropped, the sender is told."""
        self._receive_closed = self._shut = True
        self._events.clear()
        self._head = 0
        if self._waiter is not None:
            self._wake()

    # -- waiting ---------------------------------------------------------------------

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise trio.BusyResourceError(
                "another task is already waiting on this event stream; read a stream "
                "from one task at a time"
            )
        self._waiter = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def _wake(self) -> None:
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    def _forget_waiter(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED
