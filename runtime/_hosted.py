"""Reading a run's events, wherever the run is: in this process, on another host (a
Ray actor, ...), or in a store's journal.

:class:`RunReader` is the reading side of every run's stream: the reads, their
checkpoints, the end, the output and the pause. The runtime's own streams
(:class:`EventStream`, :class:`ChunkStream`) read what its tracer sends them; a run
hosted elsewhere is read by a :class:`HostedStream` (or a :class:`HostedChunkStream`)
from a :class:`RunFeed`, which the host's link, the stream's :class:`RunSource`, fills:
it starts the run (or finds it), puts the run's events into the feed as they arrive,
in order, and ends it. A run read back from a store (``Runtime.join``) is one such
source.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, final

import trio

from protocol import Paused, StreamEvent, TypedEvent

from ._checks import require_trio
from ._core import SCHEDULE_LAST, cancel_point, schedule_point
from ._errors import RunPaused, StreamUsageError
from ._event_channel import EventChannel
from ._reply import Reply

if TYPE_CHECKING:
    from ._subscribers import HandlerError

ChunkT = TypeVar("ChunkT")


class RunReader:
    """The reading side of a run's stream: ``async for event in stream``, in order.

    When the run failed, iteration ends by raising the run's own exception (the one
    the performer raised, unwrapped). After iteration :attr:`output` holds the run's
    output, or :attr:`paused` what it waits for.

    Checkpoints, as trio's rule asks: every read (``__anext__``) is a cancel point (a
    reader whose scope is cancelled gets no event; the event stays for its next read)
    and, when events are already waiting, yields to the scheduler once every
    ``SCHEDULE_EVERY`` (64) reads; a read that has to wait for an event yields then.
    Events are read in batches this way because a full checkpoint per event would cost
    several times what the rest of the event's path does (5.2 against 0.93 µs per
    token, reading the cat agent's events; the batched rule costs about 0.3 µs).
    """

    # Slots: one of these is open for every run being watched, thousands at once.
    __slots__ = ("_chunks_only", "_held", "_journaled", "_reply", "_rx", "_to_yield", "run_id")

    _rx: EventChannel | None
    _reply: Reply | None
    _held: StreamEvent | None  # a terminal event ready() kept back
    _journaled: bool  # whether its end must be durable before it is read
    _to_yield: int  # reads left before the next schedule point (a countdown: per token)
    _chunks_only: bool
    run_id: str

    @property
    def output(self) -> Any:
        """The run's output once it has ended well; ``None`` before."""
        return self._reply.value if self._reply is not None else None

    def __aiter__(self) -> RunReader:
        if self._rx is None:
            raise StreamUsageError(
                "enter the stream first: `async with x.astream_events(...) as stream: "
                "async for event in stream: ...`"
            )
        return self

    async def __anext__(self) -> TypedEvent:
        rx = self._rx
        if rx is None:
            raise StreamUsageError("the stream is not open")
        try:
            if rx._count == 0 and self._held is None and not rx._shut:
                # Nothing to read yet (a paced stream's reader comes here for every
                # event): the wait below is the read's checkpoint, a cancel point and a
                # schedule point, and it needs no other before it.
                self._to_yield = SCHEDULE_LAST
                event = None
            else:
                await cancel_point()  # before taking: a cancelled read leaves it queued
                event = rx.take() if self._held is None else self._take_held()
                if event is not None:
                    left = self._to_yield
                    if left:
                        self._to_yield = left - 1
                    else:
                        self._to_yield = SCHEDULE_LAST
                        await schedule_point()
            while event is None:  # rx.receive(), a frame less for each waiting reader
                await rx.parked()
                event = rx.take()
            if event.status is not None and self._journaled and event.run.run_id == self.run_id:
                self._held = event  # a read cancelled while it waits gets it next time
                await self._wait_durable()
                self._held = None
            return event  # type: ignore[return-value]  # each event is one of TypedEvent's
        except trio.EndOfChannel:
            pass
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None
        if self._journaled:
            await self._wait_durable()
        await self._raise_if_failed()
        raise StopAsyncIteration

    def _take_held(self) -> StreamEvent:
        event, self._held = self._held, None
        assert event is not None
        return event

    async def _wait_durable(self) -> None:
        """The run's end is journaled before its reader hears of it (a stream whose
        run journals here says how to wait for that)."""
        await cancel_point()
        self._journaled = False

    def ready(self, limit: int) -> list[StreamEvent]:
        """Up to ``limit`` events already waiting, without waiting for more (for an edge
        that writes several at once); the end of the stream is left for ``__anext__``."""
        rx = self._rx
        if rx is None:
            raise StreamUsageError("the stream is not open")
        events: list[StreamEvent] = []
        if self._held is not None or rx._count == 0:  # (nothing waits: the common case)
            return events
        try:
            while len(events) < limit:
                event = rx.take()
                if event is None:
                    break
                if event.status is not None and self._journaled and event.run_id == self.run_id:
                    self._held = event  # __anext__ yields it once it is durable
                    break
                events.append(event)
        except (trio.EndOfChannel, trio.ClosedResourceError):
            pass
        return events

    async def _raise_if_failed(self) -> None:
        reply = self._reply
        assert reply is not None
        await reply.wait_settled()
        if reply.error is not None and not isinstance(reply.error, RunPaused):
            raise reply.error

    @property
    def paused(self) -> RunPaused | None:
        """If the run paused (its last event has status ``paused``): what it waits for
        (``pending``); resume it with ``Runtime.resume``. Iteration ends without
        raising it (``ainvoke`` raises it)."""
        reply = self._reply
        error = reply.error if reply is not None else None
        return error if isinstance(error, RunPaused) else None


class ChunkReader(RunReader, Generic[ChunkT]):
    """The reading side of a chunk stream (:class:`ChunkStream`,
    :class:`HostedChunkStream`): each read gives the run's next chunk of its own."""

    __slots__ = ()

    def __aiter__(self) -> ChunkReader[ChunkT]:
        super().__aiter__()
        return self

    async def __anext__(self) -> ChunkT:  # type: ignore[override]  # it yields chunks, not events
        event = await super().__anext__()
        return event.chunk  # type: ignore[no-any-return]  # the chunks of ChunkT's runs


@final
class RunFeed(EventChannel):
    """One hosted run's events on their way to its stream's reader, and its end.

    Its host's link calls :meth:`put` for each event, in order, and :meth:`end` once.
    The host bounds what it sends (its credit window), so the feed itself is not
    bounded: a put never waits. A reader's reads are counted (:attr:`consumed`) and
    ``on_read`` is called once every ``every`` of them, for the link to acknowledge;
    the events a chunk stream does not show count as read when they come.

    It waits, wakes and closes as its base does, and keeps its events in a deque of
    its own: they are always whole events, never a run of chunks to make, and with the
    base's queue a Ray driver spent 1.5x what it did before the feed on each event
    read (decoded, queued, read: 3.9 against 2.6 µs, medians of 7, alternating in one
    process), against 1.2x with the deque (the rest is the checkpoint rule's cost).
    """

    __slots__ = (
        "_events",
        "_every",
        "_output",
        "_paused",
        "_told",
        "chunks_only",
        "consumed",
        "on_read",
        "reply",
        "run_id",
    )

    def __init__(self, run_id: str, *, chunks_only: bool = False) -> None:
        super().__init__(sys.maxsize)
        self._events: deque[StreamEvent] = deque()
        self.run_id = run_id
        self.chunks_only = chunks_only
        self.reply = Reply()
        """Settled by :meth:`end`: the run's output, or what it raised (or its pause)."""
        self.consumed = 0
        """Events read (or passed over, in a chunk stream) so far."""
        self.on_read: Callable[[], None] | None = None
        self._every = 1
        self._told = 0
        self._output: Any = None
        self._paused: Paused | None = None

    def acknowledge(self, every: int, on_read: Callable[[], None]) -> None:
        """Call ``on_read`` each time ``every`` more events have been read."""
        self._every = max(1, every)
        self.on_read = on_read

    @property
    def ended(self) -> bool:
        """Whether :meth:`end` was called."""
        return self.reply.settled

    def put(self, event: StreamEvent) -> None:
        """The run's next event (nothing once the reader has left, or after the end)."""
        if event.status is not None and event.run_id == self.run_id:
            self.ends_as(event)
        if self.chunks_only and not (
            event.status is None and event.run_id == self.run_id and event.event.endswith("_stream")
        ):
            self._read_one()  # a chunk stream shows its run's own chunks alone
        elif not self._shut:
            self._events.append(event)
            self._count += 1  # (as the base counts what it queues: readers look at it)
            if self._waiter is not None:
                self._wake()

    def ends_as(self, event: StreamEvent) -> None:
        """Keep what the run's terminal ``event`` says of its end (its output, or what it
        waits for) for :meth:`end`; :meth:`put` does, and a source that leaves the event
        out (one its reader already has) calls this alone."""
        output = event.data.output
        if event.status == "ok":
            self._output = output
        elif event.status == "paused":
            self._paused = output if isinstance(output, Paused) else Paused(())

    def end(self, error: BaseException | None) -> None:
        """The run has ended: with ``error``, or as its last event said (its output, or
        :class:`RunPaused` with what it waits for). Idempotent."""
        reply = self.reply
        if reply.settled:
            return
        if error is not None:
            reply.reject(error)
        elif self._paused is not None:
            reply.reject(RunPaused(self._paused.pending, self.run_id))
        else:
            reply.resolve(self._output)
        self.close()

    async def wait_ended(self) -> None:
        """Wait until :meth:`end` was called (a checkpoint)."""
        await self.reply.wait_settled()

    def take(self) -> StreamEvent | None:
        """As :meth:`EventChannel.take`, counting what the reader reads."""
        events = self._events
        if events:
            self._count -= 1
            # _read_one(), inline: once per event read
            consumed = self.consumed = self.consumed + 1
            if consumed - self._told >= self._every and self.on_read is not None:
                self._told = consumed
                self.on_read()
            return events.popleft()
        return EventChannel.take(self)  # (its queue is empty: it says how the feed ended)

    def close_receiver(self) -> None:
        """The reader has left: what it did not read is dropped."""
        super().close_receiver()
        self._events.clear()

    def _read_one(self) -> None:
        self.consumed += 1
        if self.consumed - self._told >= self._every and self.on_read is not None:
            self._told = self.consumed
            self.on_read()


class RunSource(Protocol):
    """Where a hosted stream's run runs: a host's link."""

    async def open(self, feed: RunFeed) -> None:
        """Start the run, its events and end to go into ``feed``; raise what kept it
        from starting."""

    def cancel(self) -> None:
        """Cancel the run; its last events still come."""

    async def close(self) -> None:
        """The reader has left: cancel the run if it still goes, wait (bounded) for its
        end, and forget it."""


class HostedStream(RunReader):
    """The events of one run on another host, in order, read as every stream's are
    (:class:`RunReader`'s docstring says how each read is a checkpoint): leaving the
    block cancels the run if it still goes and waits, within a bound, for it to end on
    the host; when the run failed, iteration ends by raising its exception;
    :attr:`output` is the run's output once it ended well, :attr:`paused` what it waits
    for if it paused.
    """

    __slots__ = ("_entered", "_source")

    def __init__(self, source: RunSource, run_id: str) -> None:
        self._source = source
        self._entered = False
        self.run_id = run_id
        self._rx = None
        self._reply = None
        self._held = None
        self._journaled = False  # the host journals its run before it sends the end
        self._to_yield = SCHEDULE_LAST
        self._chunks_only = False

    @property
    def buffered(self) -> int:
        """Events received from the host and not yet read."""
        return len(self._rx) if self._rx is not None else 0

    @property
    def handler_errors(self) -> list[HandlerError]:
        """What this run's callback handlers raised here: none (a host's handlers are
        its own)."""
        return []

    async def __aenter__(self) -> HostedStream:
        require_trio("a Troupe stream")
        if self._entered:
            raise StreamUsageError("a stream can be entered only once")
        self._entered = True
        feed = RunFeed(self.run_id, chunks_only=self._chunks_only)
        await self._source.open(feed)
        self._rx, self._reply = feed, feed.reply
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._rx is not None:
            await self._source.close()

    def __aiter__(self) -> HostedStream:
        super().__aiter__()
        return self

    def cancel(self) -> None:
        """Cancel the run and go on reading: its last events arrive, ending with its
        ``cancelled`` terminal event, then iteration raises :class:`RunCancelledError`.
        A run that had not started on its host when the cancel reached it never
        starts: no event at all, then :class:`RunCancelledError`.

        Raises:
            StreamUsageError: the stream was not entered.
        """
        if self._rx is None:
            raise StreamUsageError("enter the stream before cancelling its run")
        if self._reply is not None and not self._reply.settled:
            self._source.cancel()


class HostedChunkStream(HostedStream, ChunkReader[Any]):
    """The run's own output chunks, from another host (``Runtime.astream``'s stream):
    read as :class:`ChunkStream`'s are."""

    __slots__ = ()

    def __init__(self, source: RunSource, run_id: str) -> None:
        super().__init__(source, run_id)
        self._chunks_only = True

    def __aiter__(self) -> HostedChunkStream:
        super().__aiter__()
        return self

    async def __aenter__(self) -> HostedChunkStream:
        await super().__aenter__()
        return self
