"""The tracer actor: rebuilds the run tree from lifecycle messages and fans complete
events out to subscribers.

Actors tell the tracer only what they know; every event the tracer emits repeats the
run's full identity (name, kind, tags, metadata, parent ids, input, timing). The
tracer also keeps the ordering promises: one start first, exactly one terminal event,
children closed before their parent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import chain
from typing import Any, Final, Protocol, final

import attrs
import trio

from protocol import CUSTOM_EVENT as _CUSTOM
from protocol import (
    CustomEventDispatched,
    EventData,
    LifecycleMessage,
    RunEnded,
    RunFailed,
    RunInfo,
    RunStarted,
    RunStatus,
    RunStreamed,
    RunStreamedMany,
    StreamEvent,
    event_names,
    make_stream_event,
)

from ._event_channel import ChunkEvents, EventChannel, EventSink
from ._filters import EventFilter
from ._tracer_mailbox import TracerMailbox

DEFAULT_TRACER_CAPACITY: Final = 4096
CLOSE_GRACE_SECONDS: Final = 5.0
"""How long a closing runtime waits on a subscriber that has stopped reading."""

_NAMES_CACHE: dict[str, tuple[str, str, str, str]] = {}


@final
class Subscription:
    """One subscriber's channel and what it wants.

    ``run_id`` is the run whose tree it watches (``None``: every run of the runtime);
    ``chunks_only`` subscribers get only that run's own stream events;
    ``first_chunk_only`` ones get every event but stream events, of which they get each
    run's first (an exporter timing the first token, spared a task switch per token).
    A run's subscriptions travel with its request and reach the tracer just before its
    start, so a run that never starts leaves nothing behind in the tracer.
    """

    __slots__ = ("chunks_only", "closed", "filter", "first_chunk_only", "run_id", "tx")

    def __init__(
        self,
        tx: EventSink,
        *,
        run_id: str | None,
        filter: EventFilter | None = None,
        chunks_only: bool = False,
        first_chunk_only: bool = False,
    ) -> None:
        self.tx = tx
        self.run_id = run_id
        self.filter = filter
        self.chunks_only = chunks_only
        self.first_chunk_only = first_chunk_only
        self.closed = False

    def close(self) -> None:
        """Stop delivering; the subscriber sees the end of its stream."""
        self.closed = True
        self.tx.close()


@final
class Subscribe:
    """Tracer mail: start delivering to ``subscription``."""

    __slots__ = ("subscription",)

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription


TracerMail = LifecycleMessage | Subscribe


class Recorder(Protocol):
    """What records every event of every run (the run journal): the tracer hands it
    each event as it delivers it, before the event's subscribers, and without a
    subscription's fan-out (a run of chunks is handed over without its events made).
    Lossless: while it :meth:`takes_now` nothing, the tracer waits (so every run does).
    """

    room: int
    """How many more records it takes now: while above 0 it :meth:`takes_now`, which
    the tracer's per-chunk paths read so, without a call (at 0 or below they ask)."""

    def takes_now(self) -> bool:
        """Whether it takes an event (or a run of chunks) now; ``True`` once it stopped
        recording (it drops what it is handed then)."""

    async def wait(self) -> None:
        """Until it :meth:`takes_now`. A checkpoint."""

    def take(self, event: StreamEvent) -> None:
        """Record ``event``."""

    def take_chunk(self, name: str, info: RunInfo, seq: int, chunk: Any) -> None:
        """Record the stream event ``name`` of run ``info`` numbered ``seq`` with
        ``chunk``, not made."""

    def take_chunks(self, name: str, info: RunInfo, seq: int, chunks: Sequence[Any]) -> None:
        """:meth:`take_chunk` for each of ``chunks``, numbered from ``seq``."""

    def close(self) -> None:
        """Nothing more comes."""


@final
class _Record:
    __slots__ = (
        "channel",
        "children",
        "first_targets",
        "info",
        "input",
        "names",
        "own_subs",
        "parent",
        "quiet",
        "seq",
        "stream_targets",
        "subs",
        "targets",
    )

    def __init__(self, msg: RunStarted, parent: _Record | None) -> None:
        started = time.time() if msg.resumed_start is None else msg.resumed_start
        self.info = RunInfo(
            msg.run_id, msg.name, msg.kind, msg.parent_ids, msg.tags, msg.metadata, started
        )
        self.input = msg.input
        self.parent = parent
        self.seq = 0
        # The sequence numbers of its events that are not stream events (its start's
        # and its custom events'): past it, ``seq`` counts stream events (see _route).
        self.quiet = 0
        # The children still open, made when the first child starts: a list, as a run
        # seldom has more than a few open at once and a set costs four times as much.
        self.children: list[_Record] | None = None
        names = _NAMES_CACHE.get(msg.kind)
        if names is None:
            names = _NAMES_CACHE[msg.kind] = event_names(msg.kind)
        self.names = names
        # Never mutated once set, so records share them: a child has its parent's subs
        # and, when no subscriber filters, the same list as its targets (see _route).
        self.own_subs: Sequence[Subscription] = ()
        self.subs: Sequence[Subscription] = ()
        self.targets: Sequence[Subscription] = ()
        self.stream_targets: Sequence[Subscription] = ()
        self.first_targets: list[Subscription] | None = None  # first chunk only
        # The one channel that takes its stream events, when that is all there is to
        # deliver them to (the common case: one stream watches the run's tree).
        self.channel: EventChannel | None = None

    def event(
        self,
        name: str,
        data: EventData,
        status: RunStatus | None = None,
        end: float | None = None,
        exception: BaseException | None = None,
    ) -> StreamEvent:
        self.seq += 1
        return StreamEvent(name, self.info, self.seq, data, status, end, exception=exception)


@final
class Tracer:
    """The tracer actor. Send it :data:`TracerMail` through :attr:`mailbox`."""

    def __init__(self, capacity: int = DEFAULT_TRACER_CAPACITY) -> None:
        send, self._inbox = trio.open_memory_channel[TracerMail](capacity)
        self.mailbox = TracerMailbox(send, self)
        self._runs: dict[str, _Record] = {}
        self._pending: dict[str, list[Subscription]] = {}
        self._global: list[Subscription] = []
        self._closing = False
        self._grace = CLOSE_GRACE_SECONDS
        self._waiting: trio.CancelScope | None = None  # a wait on a full subscriber
        self.recorder: Recorder | None = None
        """What records every event (the run journal): set before the first run starts."""
        self.protocol_violations = 0
        """Messages that broke the lifecycle rules (unknown run, second start, ...)."""

    @property
    def open_runs(self) -> int:
        """How many runs have started and not ended."""
        return len(self._runs)

    async def serve(self) -> None:
        """The actor loop: drain the mailbox until it is closed, then close every stream."""
        inbox = self._inbox
        mailbox = self.mailbox
        runs = self._runs
        offer = self._offer
        try:
            while True:
                try:
                    msg = inbox.receive_nowait()
                except trio.WouldBlock:
                    msg = None
                except trio.EndOfChannel:
                    break
                if msg is None:
                    mailbox.idle = True  # producers may deliver chunks themselves
                    try:
                        msg = await inbox.receive()
                    except trio.EndOfChannel:
                        break
                    finally:
                        mailbox.idle = False
                mailbox.taken += 1  # from here on its producer adds nothing to it
                chunks: tuple[Any, ...]
                if type(msg) is RunStreamed:
                    chunks = (msg.chunk,)
                elif type(msg) is RunStreamedMany:
                    chunks = msg.chunks
                else:
                    await self._on_other(msg)
                    continue
                # The hot path (a message per token, or per run of tokens), kept inline.
                rec = runs.get(msg.run_id)
                if rec is None:
                    self.protocol_violations += 1
                    continue
                recorder = self.recorder
                if recorder is not None:
                    if recorder.room <= 0 and not recorder.takes_now():
                        await self._wait_for(recorder)
                    if len(chunks) == 1:
                        recorder.take_chunk(rec.names[1], rec.info, rec.seq + 1, chunks[0])
                    else:
                        recorder.take_chunks(rec.names[1], rec.info, rec.seq + 1, chunks)
                targets = rec.stream_targets
                seq = rec.seq
                if rec.first_targets is not None:  # the run's first chunk, for them alone
                    first_targets, rec.first_targets = rec.first_targets, None
                    rec.channel = _lone_channel(rec)
                    first = make_stream_event(
                        rec.names[1], rec.info, seq + 1, None, None, None, chunks[0]
                    )
                    await self._deliver(first_targets, first)
                if not targets:
                    rec.seq = seq + len(chunks)
                    continue
                name = rec.names[1]
                info = rec.info
                if len(chunks) == 1:
                    rec.seq = seq = seq + 1
                    event = make_stream_event(name, info, seq, None, None, None, chunks[0])
                    blocked = offer(targets, event)
                    if blocked:
                        await self._send_slow(blocked, event)
                    continue
                rec.seq = seq + len(chunks)
                events = ChunkEvents(name, info, seq + 1, chunks)
                partly = self._offer_many(targets, events)
                if partly:
                    await self._send_rest(partly, events)
        finally:
            # Whoever still reports to a tracer that has stopped is told at once
            # (BrokenResourceError), never left waiting for room in its mailbox.
            inbox.close()
            for sub in chain(self._global, *self._pending.values()):
                sub.close()
            for rec in self._runs.values():
                for sub in rec.own_subs:
                    sub.close()
            if self.recorder is not None:
                self.recorder.close()

    def deliver_now(self, run_id: str, chunk: Any) -> bool:
        """The hot path of :meth:`serve` for one chunk, run by its producer while the
        tracer is idle (everything sent before it has been delivered, so it keeps its
        place). ``False``, touching nothing, where the tracer's own task is needed: a
        run it does not know, a first chunk for first-chunk-only subscribers, or a
        subscriber that could not take it without a wait."""
        rec = self._runs.get(run_id)
        if rec is None:
            return False
        recorder = self.recorder
        if recorder is not None and recorder.room <= 0 and not recorder.takes_now():
            return False
        channel = rec.channel
        if channel is not None:  # the common case, kept short: this runs per token
            # Its reader makes the event (see put_chunk_now). A closed channel refuses
            # it, and the tracer's task passes over it.
            seq = rec.seq + 1
            if not channel.put_chunk_now(rec.names[1], rec.info, seq, chunk):
                return False
            rec.seq = seq
            if recorder is not None:
                recorder.take_chunk(rec.names[1], rec.info, seq, chunk)
            return True
        if rec.first_targets is not None:
            return False
        targets = rec.stream_targets
        if len(targets) == 1 and not targets[0].closed:  # one stream, not a channel
            seq = rec.seq + 1
            event = make_stream_event(rec.names[1], rec.info, seq, None, None, None, chunk)
            if not targets[0].tx.put_now(event):
                return False
            rec.seq = seq
            if recorder is not None:
                recorder.take_chunk(rec.names[1], rec.info, seq, chunk)
            return True
        for sub in targets:
            if not sub.closed and not sub.tx.takes_now():
                return False
        rec.seq = seq = rec.seq + 1
        if recorder is not None:
            recorder.take_chunk(rec.names[1], rec.info, seq, chunk)
        if targets:
            event = make_stream_event(rec.names[1], rec.info, seq, None, None, None, chunk)
            for sub in targets:
                if sub.closed:
                    continue
                try:
                    sub.tx.send_nowait(event)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    sub.closed = True
        return True

    def begin_closing(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """The runtime is closing: wait at most ``grace`` seconds on a subscriber that
        does not read (then close its stream), including a wait already under way."""
        self._closing = True
        self._grace = grace
        if self._waiting is not None:
            self._waiting.deadline = min(self._waiting.deadline, trio.current_time() + grace)

    # -- handlers --------------------------------------------------------------------

    async def _on_other(self, msg: TracerMail) -> None:
        if isinstance(msg, RunStarted):
            await self._on_started(msg)
        elif isinstance(msg, RunEnded | RunFailed):
            rec = self._runs.get(msg.run_id)
            if rec is None:
                self.protocol_violations += 1
                return
            await self._finish(rec, *_ending(rec, msg))
        elif isinstance(msg, CustomEventDispatched):
            await self._on_custom(msg)
        elif isinstance(msg, Subscribe):
            self._on_subscribe(msg.subscription)
        else:  # pragma: no cover - the mail type is closed
            raise TypeError(f"the tracer got unexpected mail: {msg!r}")

    async def _on_started(self, msg: RunStarted) -> None:
        rec = self._new_record(msg)
        if rec is None:
            self.protocol_violations += 1
            return
        event = self._open(rec, msg)
        if event is not None:
            await self._record(event)
            await self._deliver(rec.targets, event)

    def _new_record(self, msg: RunStarted) -> _Record | None:
        """The record of the run ``msg`` starts, routed; nothing is changed yet (see
        :meth:`_open`). ``None``: a second start of a run."""
        if msg.run_id in self._runs:
            return None
        parent = self._runs.get(msg.parent_ids[-1]) if msg.parent_ids else None
        rec = _Record(msg, parent)
        own = self._pending.get(msg.run_id)
        if own:
            rec.own_subs = own
            rec.subs = [*parent.subs, *own] if parent is not None else own
        elif parent is not None:
            rec.subs = subs = parent.subs
            if parent.targets is subs and not self._global:
                # Routed as its parent was (every subscriber takes every event): the
                # common child, spared _route's test of each subscriber.
                rec.targets = rec.stream_targets = subs
                rec.channel = _lone_channel(rec)
                return rec
        self._route(rec)
        return rec

    def _open(self, rec: _Record, msg: RunStarted) -> StreamEvent | None:
        """Make the run of ``rec`` known; its start event, to deliver next (``None``
        for a run resumed under its own id: its start was journaled long ago)."""
        if rec.own_subs:
            del self._pending[msg.run_id]
        self._runs[msg.run_id] = rec
        parent = rec.parent
        if parent is not None:
            if parent.children is None:
                parent.children = [rec]
            else:
                parent.children.append(rec)
        if msg.resumed_seq is not None:
            rec.seq = rec.quiet = msg.resumed_seq
            return None
        rec.seq = -1  # the start event is seq 0
        return rec.event(rec.names[0], EventData(input=msg.input))

    async def _on_custom(self, msg: CustomEventDispatched) -> None:
        rec = self._runs.get(msg.run_id)
        if rec is None:
            self.protocol_violations += 1
            return
        rec.seq += 1
        rec.quiet += 1
        info = attrs.evolve(rec.info, name=msg.name, kind="custom")
        event = StreamEvent(_CUSTOM, info, rec.seq, EventData(chunk=msg.data))
        # As in LangChain, filters see a custom event's own name as both its name and
        # its type (the run's tags still count).
        targets = [
            sub
            for sub in chain(rec.subs, self._global)
            if not sub.closed
            and not sub.chunks_only
            and (sub.filter is None or sub.filter.accepts(msg.name, msg.name, info.tags))
        ]
        await self._record(event)
        await self._deliver(targets, event)

    async def _finish(
        self,
        rec: _Record,
        data: EventData,
        status: RunStatus,
        exception: BaseException | None = None,
    ) -> None:
        if rec.children:  # (seldom: a sort and its key per run end cost more than a test)
            for child in sorted(rec.children, key=_by_run_id):
                # A child still open when its parent ends was cut off: close it first,
                # so the ordering promise holds even for a performer that leaked a task.
                await self._finish(
                    child,
                    EventData(input=child.input, error=f"parent run {rec.info.run_id} ended first"),
                    "cancelled",
                )
        event = self._close(rec, data, status, exception)
        await self._record(event)
        await self._deliver(rec.targets, event)
        for sub in rec.own_subs:
            sub.close()

    def _close(
        self,
        rec: _Record,
        data: EventData,
        status: RunStatus,
        exception: BaseException | None,
    ) -> StreamEvent:
        """Forget the run of ``rec`` (its children have ended); its terminal event."""
        name = rec.names[2] if status == "ok" or status == "paused" else rec.names[3]
        event = rec.event(name, data, status, time.time(), exception)
        del self._runs[rec.info.run_id]
        parent = rec.parent
        if parent is not None and parent.children is not None and rec in parent.children:
            parent.children.remove(rec)
            if not parent.children:
                parent.children = None
        return event

    def handle_now(self, msg: TracerMail) -> bool:
        """:meth:`serve`'s handling of a run's start or end, or of a subscription, run
        by its sender while the tracer is idle (as :meth:`deliver_now` is for chunks).
        ``False``, touching nothing, where the tracer's own task is needed: a message
        that breaks the lifecycle rules, a run that ends before its children, or a
        subscriber that could not take the event without a wait.

        However many runs are open: handled here, a run's events reach its stream as
        they happen, and the tracer's task, which had been woken once per scheduler
        pass to handle the mail of every run, is not woken at all while no subscriber
        makes it wait. (Up to issue 29 this was done with at most 8 runs open, when
        the tracer's own handling had gathered each stream's events into fewer
        wake-ups of its reader; since the reader makes its events, it no longer does:
        100 and 1,000 cat agent runs at once wake each reader 9.0 times per run either
        way, and a run costs 4.4 % fewer instructions handled here.)"""
        kind = type(msg)
        if kind is RunStarted:
            assert isinstance(msg, RunStarted)
            rec = self._new_record(msg)
            if rec is None or not self._take_now(rec.targets):
                return False
            event = self._open(rec, msg)
            if event is not None:
                if self.recorder is not None:
                    self.recorder.take(event)
                self._offer(rec.targets, event)
            return True
        if kind is RunEnded or kind is RunFailed:
            assert isinstance(msg, RunEnded | RunFailed)
            rec = self._runs.get(msg.run_id)
            if rec is None or rec.children or not self._take_now(rec.targets):
                return False
            event = self._close(rec, *_ending(rec, msg))
            if self.recorder is not None:
                self.recorder.take(event)
            self._offer(rec.targets, event)
            for sub in rec.own_subs:
                sub.close()
            return True
        if kind is Subscribe:
            assert isinstance(msg, Subscribe)
            self._on_subscribe(msg.subscription)
            return True
        return False

    def _on_subscribe(self, sub: Subscription) -> None:
        if sub.run_id is None:
            # Sent again, a runtime-wide subscription is routed afresh (it changed what
            # it takes: see Attachment.stream_events).
            self._global = [s for s in self._global if not s.closed and s is not sub]
            self._global.append(sub)
            for rec in self._runs.values():
                self._route(rec)
        elif sub.run_id in self._runs:
            # Watching a run that has already started: too late for its start event.
            self.protocol_violations += 1
            sub.close()
        else:
            self._pending.setdefault(sub.run_id, []).append(sub)

    # -- delivery --------------------------------------------------------------------

    def _route(self, rec: _Record) -> None:
        subs = rec.subs
        if not self._global:
            for s in subs:  # (a loop: a generator per run start costs more)
                if s.filter is not None or s.chunks_only or s.first_chunk_only:
                    break
            else:
                rec.targets = rec.stream_targets = subs  # every subscriber takes every event
                rec.channel = _lone_channel(rec)
                return
        info = rec.info
        # A run that has streamed already: its first stream event is given only to a
        # subscriber it was not routed to (a new one), never again to one it was (that
        # took it, or every stream event, or changed what it takes).
        routed = rec.targets if rec.seq > rec.quiet else ()
        targets: list[Subscription] = []
        stream_targets: list[Subscription] = []
        first_targets: list[Subscription] = []
        for sub in chain(rec.subs, self._global):
            if sub.closed:
                continue
            if sub.chunks_only:
                if sub.run_id == info.run_id:
                    stream_targets.append(sub)
            elif sub.filter is None or sub.filter.accepts(info.name, info.kind, info.tags):
                targets.append(sub)
                if sub.first_chunk_only:
                    if sub not in routed:
                        first_targets.append(sub)
                else:
                    stream_targets.append(sub)
        rec.targets = targets
        rec.stream_targets = stream_targets
        rec.first_targets = first_targets or None
        rec.channel = _lone_channel(rec)

    def _take_now(self, targets: Sequence[Subscription]) -> bool:
        """Whether the recorder and every open one of ``targets`` take an event without
        a wait."""
        if self.recorder is not None and not self.recorder.takes_now():
            return False
        # (A loop, not all() over a generator: one per run start and end costs more.)
        for sub in targets:  # noqa: SIM110
            if not sub.closed and not sub.tx.takes_now():
                return False
        return True

    async def _record(self, event: StreamEvent) -> None:
        """Hand ``event`` to the recorder, if any (waiting for room)."""
        recorder = self.recorder
        if recorder is not None:
            if not recorder.takes_now():
                await self._wait_for(recorder)
            recorder.take(event)

    async def _wait_for(self, recorder: Recorder) -> None:
        """Until ``recorder`` takes an event; while the runtime closes, at most the
        grace, then it records nothing more (as a subscriber that does not read)."""
        with trio.CancelScope() as waiting:
            if self._closing:
                waiting.deadline = trio.current_time() + self._grace
            self._waiting = waiting
            try:
                while not recorder.takes_now():
                    await recorder.wait()
            finally:
                self._waiting = None
        if waiting.cancelled_caught:
            self.recorder = None
            recorder.close()

    async def _deliver(self, targets: Sequence[Subscription], event: StreamEvent) -> None:
        blocked = self._offer(targets, event)
        if blocked:
            await self._send_slow(blocked, event)

    @staticmethod
    def _offer(targets: Sequence[Subscription], event: StreamEvent) -> list[Subscription] | None:
        """Hand ``event`` to every target that has room; return those that are full."""
        blocked: list[Subscription] | None = None
        for sub in targets:
            if sub.closed:
                continue
            try:
                sub.tx.send_nowait(event)
            except trio.WouldBlock:
                if blocked is None:
                    blocked = []
                blocked.append(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                sub.closed = True
        return blocked

    @staticmethod
    def _offer_many(
        targets: Sequence[Subscription], events: ChunkEvents
    ) -> list[tuple[Subscription, int]] | None:
        """Hand each target as many of ``events`` as it has room for; return those that
        took only some, with how many they took."""
        partly: list[tuple[Subscription, int]] | None = None
        for sub in targets:
            if sub.closed:
                continue
            try:
                taken = sub.tx.offer(events)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                sub.closed = True
                continue
            if taken < len(events):
                if partly is None:
                    partly = []
                partly.append((sub, taken))
        return partly

    async def _send_rest(self, partly: list[tuple[Subscription, int]], events: ChunkEvents) -> None:
        # A subscriber that was full: wait for room for one event, then offer it the
        # rest again (it has usually read a run of them meanwhile), in parts that
        # double while it takes them whole: a part is a copy of its chunks, and the
        # whole rest offered after each wait made a run of n chunks cost n * n /
        # capacity chunks copied (160,000 chunks to a watcher of 16: 7.2 s, not 1.2).
        total = len(events)
        for sub, taken in partly:
            while taken < total and not sub.closed:
                await self._send_slow([sub], events.event(taken))
                taken += 1
                step = 8
                while taken < total and not sub.closed:
                    end = min(total, taken + step)
                    try:
                        taken += sub.tx.offer(events.part(taken, end))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        sub.closed = True
                    if taken < end:
                        break  # full again
                    step *= 2

    async def _send_slow(self, blocked: list[Subscription], event: StreamEvent) -> None:
        # Only a runtime-wide lossless watcher is ever full here (a run's own
        # subscribers close their run's gate instead, see _gate.py): it asked to see
        # every event, so every run waits for it. The next message waits until every
        # subscriber has this event, so each one's events stay in order.
        for sub in blocked:
            try:
                with trio.CancelScope() as waiting:
                    if self._closing:
                        waiting.deadline = trio.current_time() + self._grace
                    self._waiting = waiting
                    await sub.tx.send(event)
                if waiting.cancelled_caught:
                    sub.close()  # closing, and it did not read within the grace
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                sub.closed = True
            finally:
                self._waiting = None


def _by_run_id(rec: _Record) -> str:
    return rec.info.run_id


def _ending(
    rec: _Record, msg: RunEnded | RunFailed
) -> tuple[EventData, RunStatus, BaseException | None]:
    """What a run's end message makes of its terminal event: data, status, exception."""
    if isinstance(msg, RunEnded):
        status: RunStatus = "paused" if msg.paused else "ok"
        return EventData(input=rec.input, output=msg.output, ended=True), status, None
    # A tool run's error names the call it answered (LangChain's on_tool_error does).
    call_id = rec.info.metadata.get("tool_call_id") if rec.info.kind == "tool" else None
    data = EventData(
        input=rec.input,
        error=msg.error,
        tool_call_id=call_id if isinstance(call_id, str) else None,
    )
    return data, msg.status, msg.exception


def _lone_channel(rec: _Record) -> EventChannel | None:
    """The channel of the one subscriber that takes ``rec``'s stream events, if it is an
    :class:`EventChannel` (it takes bare chunks) and no first-chunk-only subscriber
    waits for the run's first chunk; else ``None``."""
    targets = rec.stream_targets
    if rec.first_targets is None and len(targets) == 1:
        tx = targets[0].tx
        if type(tx) is EventChannel:
            return tx
    return None
