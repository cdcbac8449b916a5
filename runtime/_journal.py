"""The run journal: every event of every run, appended to a store as it happens.

With a store, the tracer hands every event of every run to the journal's feed (its
:class:`~runtime._tracer.Recorder`; lossless: a store that falls behind slows the runs,
it never loses their events), which encodes it at once into the batch the next write
holds, by root run's tree, with the compact codec (``protocol.CompactEncoder``: a
run's identity once, then small records): no channel, no subscription's fan-out and
no task switch per event. Each record is kept as its JSON text until written (text the
collector never traces), and a chat model's run of text chunks as the texts alone,
written as records with the batch. One service task writes each batch in one
transaction from a worker thread; while a write is on the disk the next batch
gathers, so a run never waits on a write per event.

Encoding stays on trio's thread: in a worker thread it would hold the GIL as long, and
the events would have to be kept until then (the collector traced every kept event,
its chunk and its data: with 100 runs streaming, a full collection per round of runs),
and an input changed in place after its event would be written as it is then.

A root run's caller waits for more: ``ainvoke`` returns, and a stream yields the run's
terminal event, only once that event is durable (:meth:`Journal.durable`). A run whose
journal cannot be written (the store failed past its retries) is cancelled with a
:class:`JournalError`; its caller hears that error; other runs go on.

The journal also knows which runs are its own (``owner``: this process, with a
heartbeat), and on opening a store ends the runs of processes that died: each open run
of such a tree gets an error event, children first, so every run still ends exactly
once.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from operator import add
from typing import Any, Final, TypeVar, final

import trio

from protocol import (
    DICT_TAG,
    TYPE_KEY,
    CompactDecoder,
    CompactEncoder,
    CompactError,
    RunInfo,
    SerializationError,
    StreamEvent,
    compact_bare_text,
    converter,
    dump_json,
    make_stream_event,
    shown_repr,
    structure_any,
    unstructure_any,
)

from ._checks import positive_int
from ._errors import RunCancelledError, TroupeError, describe_error
from ._reads import LeavableReads
from ._replay import INTERRUPTED, JournaledRun, Replay, read_journal
from ._reply import Reply
from ._store import (
    CANCEL_ASKED,
    EVERY_RUN,
    JOURNAL_CHANGED,
    LEASE_SECONDS,
    OWNER_CAME,
    SCHEMA_VERSION,
    Changes,
    EncodedRecords,
    FencedError,
    JournalGapError,
    Owner,
    RunEnd,
    RunRecord,
    RunState,
    Segment,
    Store,
    StoreError,
    WriteBatch,
    dumps,
    newer_schema,
    presumed_dead,
    storable_json,
    this_host,
)
from ._tracer import Recorder

_T = TypeVar("_T")

logger = logging.getLogger("troupe")

JOURNAL_CAPACITY: Final = 16_384
"""Records the journal holds, not yet written, before the runs wait for the store."""
HEARTBEAT_SECONDS: Final = 5.0
"""How often a journal tells its store that its process is alive."""
WRITE_RETRIES: Final = (0.05, 0.25, 1.0, 2.0)
"""Seconds between the attempts at a write that failed (the store may be restarting)."""
CANCEL_POLL_SECONDS: Final = 0.25
"""How often a journal looks for requests (from other processes) to cancel its runs,
when its store does not tell it (SQLite)."""
FOLLOW_POLL_SECONDS: Final = 0.1
"""How often a join of a run live in another process looks for its new events, when the
store does not tell it (SQLite, or a PostgreSQL listener reconnecting)."""
HEARD_FALLBACK_SECONDS: Final = 2.0
"""How often joins and cancel requests are looked for anyway while the store tells
(a notification cannot be missed while its connection holds; this bounds the
unforeseen)."""
HEAR_RETRIES: Final = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Seconds before listening again after the store's listening connection broke."""
THREADS_KEPT: Final = 256
"""How many threads' messages a journal keeps, structured (the ones used last)."""
UNWRITTEN_KEPT: Final = 256
"""How many root runs whose journal failed before their first write a journal remembers
(the last ones), so that a join of one says why the store has no such run."""
GATHER_SECONDS: Final = 0.05
"""How long a write waits for more records when nobody waits for what it holds (no
run's end or new run's record in it, no room wanted, nothing followed live here):
fewer, larger writes (each tree's records of a write are a row, made and written).
At 100 runs at once, 50 ms instead of 20 makes half the writes and costs 11 % fewer
instructions of the journal's (callgrind); a process that dies loses at most that
much more of its live runs' events, and a reader in another process sees them that
much later (a run's end, or record, is written at once, whatever this says)."""


class UnknownRunError(TroupeError, LookupError):
    """No run with that id is in the store."""


_LIVE_OWNERS: set[str] = set()
"""The owner ids of this process's open journals (two runtimes of one process on one
store must not take each other for dead)."""
# A forked child is another process: its parent's journals are not its own (judged by
# pid and lease, as any other process's).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_LIVE_OWNERS.clear)


class JournalError(RunCancelledError):
    """The run journal could not record a run (its store failed): the run was cancelled,
    or its end could not be made durable."""


_Starting = tuple[
    str | None, dict[str, Any], Reply | None, int | None, dict[int, tuple[Any, Any]] | None
]
"""What a root run about to start left for its journal (see :meth:`Journal.expect`)."""


@final
class _Expected:
    """A root run whose caller waits for its end to be durable."""

    __slots__ = ("done", "error", "messages", "recorded", "released", "thread_id")

    def __init__(
        self, thread_id: str | None, messages: Callable[[Any], Sequence[Any]] | None
    ) -> None:
        self.thread_id = thread_id
        self.messages = messages
        self.done = trio.Event()
        self.recorded = trio.Event()  # its first write is in (or it failed, or never ran)
        self.error: BaseException | None = None
        self.released = False  # its caller is done with it: forgotten once it ended


@final
class _Taking:
    """A root run being made this process's in a worker thread: a resume's claim of its
    paused run, or a take-over of a dead process's run. Its record says "running",
    this process's, in the store before the journal knows whether it holds: a cancel
    asked meanwhile (``asked``) acts once the run is taken up if it holds, and goes to
    whoever holds the run if not (see :meth:`Journal.request_cancel`)."""

    __slots__ = ("asked", "decided", "held", "reply")

    def __init__(self, reply: Reply | None) -> None:
        self.reply = reply  # a claim's run's (abandoned when a cancel is asked)
        self.asked = False
        self.held = False
        self.decided = trio.Event()  # the claim or take-over returned (``held`` says how)

    def ask(self) -> None:
        self.asked = True
        reply = self.reply
        if reply is not None and not reply.settled:
            reply.abandon()

    def decide(self, held: bool) -> None:
        self.held = held
        self.decided.set()


@final
class _Tree:
    """A root run's tree as the journal writes it."""

    __slots__ = (
        "encoder",
        "failed",
        "followers",
        "gathered",
        "position",
        "reply",
        "root_id",
        "texts",
        "written",
    )

    def __init__(
        self, root_id: str, reply: Reply | None, known: dict[int, tuple[Any, Any]] | None = None
    ) -> None:
        self.root_id = root_id
        self.encoder = journal_encoder(known=known)
        self.position = 0  # the next record's
        self.written = 0  # records durable so far
        self.followers: list[trio.MemorySendChannel[Any]] = []
        self.reply = reply  # its caller's, for a run started here
        self.failed = False
        self.gathered: _Gathered | None = None  # its records in the batch gathering
        # The last of them, if a run of texts still open (the feed's hot path appends
        # to it; counted in ``position`` and ``gathered.size`` once closed: see
        # :meth:`Journal._close_texts`).
        self.texts: _Texts | None = None


@final
class Journal:
    """Appends every run's events to ``store`` (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        capacity: int = JOURNAL_CAPACITY,
        heartbeat: float = HEARTBEAT_SECONDS,
        lease: float = LEASE_SECONDS,
    ) -> None:
        self.store = store
        self.reads = LeavableReads()  # a join's reads, which its reader may leave
        positive_int(capacity, "capacity")
        self._capacity = capacity
        self._pending = _Batch()  # what the next write holds, gathered as events come
        self._feed = _Feed(self, capacity)  # (its room: records it takes before a wait)
        # The runs of texts open in the batch, by their chat model run's id (each its
        # tree's ``texts``): the feed's hot path appends a token to one.
        self._texting = self._feed.texting
        self._fed_all = False  # the tracer closed the feed: nothing more comes
        self._shut = False  # the journal stopped: the feed takes nothing more
        self._writer_parked = False
        self._writer_gathering = False  # waiting for more (GATHER_SECONDS)
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._room = trio.lowlevel.ParkingLot()  # the tracer, waiting for room
        self.recorder: Recorder = self._feed
        """What the tracer hands every event to (the runtime gives it to the tracer)."""
        now = time.time()
        self.owner = Owner(uuid.uuid4().hex, this_host(), os.getpid(), now, now)
        self._heartbeat = heartbeat
        self._lease = lease
        self._expected: dict[str, _Expected] = {}
        # Root runs of this process whose journal failed before their first write (no
        # record of them in the store), the last UNWRITTEN_KEPT: a join says why.
        self._unwritten: OrderedDict[str, JournalError] = OrderedDict()
        self._trees: dict[str, _Tree] = {}
        self._starting: dict[str, _Starting] = {}
        self._claiming: dict[str, _Taking] = {}  # resumes claiming their paused runs
        # Dead processes' runs being taken over, or taken, their trees not begun.
        self._recovering: dict[str, _Taking] = {}
        self.recoverer: Callable[[RunRecord, Owner], Awaitable[bool]] | None = None
        """Given an orphaned root run (its process died) and that process, resumes it
        and says so (the runtime's, when it has performers to resume); else the run is
        ended with error events."""
        self._threads: OrderedDict[str, tuple[float, list[Any]]] = OrderedDict()
        self._writer = trio.CapacityLimiter(1)  # the writer never queues behind readers
        # nor the lease behind threads that tools or reads hold (their owner would look dead)
        self._beat_thread = trio.CapacityLimiter(1)
        self._watches: dict[str, set[Watch]] = {}
        self._sweeping = trio.Lock()
        self._heard_owners = 0  # processes heard coming, and listeners (re)opened
        self._schema_seen = SCHEMA_VERSION
        self._stopped_by: StoreError | None = None  # why the journal stopped by itself
        self._services = trio.CancelScope()  # its tasks' (while it serves)
        self._cancel_asked = trio.Event()
        self.hearing = False
        """Whether the store tells this journal of other processes' writes now."""
        self._closed = False
        self.serving = False
        """Whether :meth:`serve` has begun (it closes the store when it ends)."""
        self.failures = 0
        """Writes that failed past their retries."""

    # -- opening and closing ---------------------------------------------------------
    async def open(self) -> None:
        """Open the store and say this process is alive (its runtime then calls
        :meth:`sweep`).

        Raises:
            StoreError: the store cannot be opened (one line naming it and the cause).
        """
        await trio.to_thread.run_sync(self.store.open)
        _LIVE_OWNERS.add(self.owner.owner_id)
        try:
            await trio.to_thread.run_sync(self.store.heartbeat, self.owner)
            # (as opened: a newer store, taken as it is, was said so by its opening)
            self._schema_seen = (await trio.to_thread.run_sync(self.store.schema))[0]
        except BaseException:
            _LIVE_OWNERS.discard(self.owner.owner_id)
            await trio.to_thread.run_sync(self.store.close)
            raise
        try:  # a process alone on the store, not telling its writes, tells them again
            await trio.to_thread.run_sync(self.store.tell, OWNER_CAME, self.owner.owner_id)
        except StoreError as exc:  # its next sweep sees this one's record instead
            logger.warning("journal: cannot tell the store's other processes: %s", exc)

    async def sweep(self) -> int:
        """End, or resume (see :attr:`recoverer`), the runs left open by processes
        that died; how many root runs were ended or resumed. One sweep at a time.

        A sweep acts on what it read a moment before: each take-over (and the dead
        owner's record forgotten last) holds only if the owner has not beaten since it
        was judged dead, so an owner that was late, not dead, keeps its runs."""
        async with self._sweeping:
            return await self._sweep()

    async def _sweep(self) -> int:
        heard = self._heard_owners
        orphans, others = await trio.to_thread.run_sync(self._orphans)
        if others:  # (one whose coming this process did not hear, if it was not telling)
            await self._tell_again()
        elif self.hearing and heard == self._heard_owners:
            # Alone on the store: nobody to tell of this one's writes. (Not if it
            # cannot hear a process come, nor if one came since the owners were read.)
            self.store.telling = False
        done = 0
        for owner, runs in orphans:
            for run in runs:
                recoverer = self.recoverer
                try:
                    if recoverer is not None and await recoverer(run, owner):
                        done += 1
                        continue
                except Exception as exc:  # it cannot be resumed: it is ended instead
                    logger.error("run %s could not be resumed: %s", run.run_id, exc)
                try:
                    if await trio.to_thread.run_sync(self._end_orphan, run, owner, time.time()):
                        done += 1
                        self._wake_watches(run.run_id)
                except Exception as exc:
                    logger.error("run %s could not be ended: %s", run.run_id, exc)
            await trio.to_thread.run_sync(
                partial(self.store.forget_owner, owner.owner_id, seen_at=owner.seen_at)
            )
        return done

    def _running_here(self) -> list[RunRecord]:
        return self.store.list_runs(status="running", owner=self.owner.owner_id, limit=10**9)

    def _orphans(self) -> tuple[list[tuple[Owner, list[RunRecord]]], bool]:
        """The runs of dead owners, by owner; and whether another owner lives."""
        now = time.time()
        owners = self.store.owners()
        dead = {
            owner.owner_id
            for owner in owners
            if owner.owner_id != self.owner.owner_id and self._is_dead(owner, now)
        }
        others = any(o.owner_id not in dead and o.owner_id != self.owner.owner_id for o in owners)
        orphans = [
            (owner, self.store.list_runs(status="running", owner=owner.owner_id, limit=10**9))
            for owner in owners
            if owner.owner_id in dead
        ]
        # Running runs whose owner left no record at all (it was forgotten): orphans
        # too, once they began a lease ago (an owner that a sweep took for dead, late,
        # may start a run before its next beat writes its record again).
        known = {owner.owner_id for owner in owners} | {self.owner.owner_id}
        unowned = [
            run
            for run in self.store.list_runs(status="running", limit=10**9)
            if run.owner not in known
            and run.owner not in _LIVE_OWNERS
            and run.created_at < now - self._lease
        ]
        for owner_id in dict.fromkeys(run.owner for run in unowned):
            gone = Owner(owner_id, "?", 0, 0.0, 0.0)
            orphans.append((gone, [run for run in unowned if run.owner == owner_id]))
        return orphans, others

    async def take_over(self, run: RunRecord, owner: Owner) -> JournaledRun | None:
        """Make the orphaned root run ``run`` (of the dead ``owner``) this process's,
        to resume it: each run of its tree still open but the root gets an error event
        saying it was interrupted (its parent's replay runs it again); the journal
        read back. ``None`` if another process took it first.
        """
        taking = self._recovering[run.run_id] = _Taking(None)  # (its record may be ours)
        taken = False
        try:
            taken = await trio.to_thread.run_sync(
                partial(
                    self.store.take_over,
                    run.run_id,
                    owner.owner_id,
                    self.owner.owner_id,
                    seen_at=owner.seen_at,
                )
            )
        finally:
            if not taken:
                del self._recovering[run.run_id]
            taking.decide(taken)
        if not taken:
            return None
        try:
            return await self._taken(run, owner)
        except Exception as exc:
            # Taken (its record this process's), not to be resumed: it ends as a run
            # no one resumes does (the sweep's ending of orphans takes a run from the
            # dead process first: it would find this one this process's, and leave it
            # running for the process's life).
            self._recovering.pop(run.run_id, None)
            await self.end_unrecovered(
                run.run_id, f"the run could not be resumed: {describe_error(exc)}"
            )
            raise

    async def _taken(self, run: RunRecord, owner: Owner) -> JournaledRun:
        """:meth:`take_over`'s part once the run is this process's: its open runs but
        the root ended, its journal read back."""
        records = await trio.to_thread.run_sync(self.store.read_records, run.run_id)
        decoder = CompactDecoder()
        for record in records:
            decoder.decode(record)
        why = (
            f"{INTERRUPTED}the process running it (pid {owner.pid} on {owner.host}) stopped; "
            "the step runs again"
        )
        ends = [e for e in decoder.abandon(why, time.time()) if e.run_id != run.run_id]
        if ends:
            segment = [[_WHOLE, converter.unstructure(e, StreamEvent)] for e in ends]
            batch = WriteBatch(
                segments=[Segment(run.run_id, len(records), segment)], owner=self.owner.owner_id
            )
            await trio.to_thread.run_sync(self.store.write, batch)
            records = [*records, *segment]
        _, journaled = await self.read_run(run.run_id, records=records)
        return journaled

    def _is_dead(self, owner: Owner, now: float) -> bool:
        if owner.owner_id in _LIVE_OWNERS:
            return False  # another runtime of this process, open
        return presumed_dead(owner, now, self._lease)

    def _end_orphan(self, run: RunRecord, owner: Owner, now: float) -> bool:
        """End every open run of the orphaned root run ``run``'s tree with an error
        event; whether this process did (another may have first). It is taken over
        first: a process that took it meanwhile (to resume it) keeps it."""
        if not self.store.take_over(
            run.run_id, owner.owner_id, self.owner.owner_id, seen_at=owner.seen_at
        ):
            return False
        why = (
            f"the process running it (pid {owner.pid} on {owner.host}) stopped before the run ended"
        )
        return self._end_taken(run.run_id, why, now)

    async def end_unrecovered(self, run_id: str, why: str) -> None:
        """End the root run ``run_id``, taken over by this process (:meth:`take_over`)
        but not resumed after all, as an orphan is ended: every open run of its tree
        with an error event saying ``why``. A cancel point."""
        try:
            if await trio.to_thread.run_sync(self._end_taken, run_id, why, time.time()):
                self._wake_watches(run_id)
        except Exception as exc:
            logger.error("run %s could not be ended: %s", run_id, exc)

    def _end_taken(self, run_id: str, why: str, now: float) -> bool:
        """End every open run of the root run ``run_id``'s tree (this process's) with an
        error event saying ``why``; whether this process did (another may have first)."""
        records = self.store.read_records(run_id)
        decoder = CompactDecoder()
        try:
            for record in records:
                decoder.decode(record)
        except CompactError as exc:
            logger.error("run %s: its journal cannot be read (%s)", run_id, exc)
        events = decoder.abandon(why, now)
        ends = [[_WHOLE, converter.unstructure(event, StreamEvent)] for event in events]
        batch = WriteBatch(
            segments=[Segment(run_id, len(records), ends)] if ends else (),
            ends=[RunEnd(run_id, "error", now, why)],
            owner=self.owner.owner_id,
        )
        try:
            self.store.write(batch)
        except StoreError as exc:  # another process ended it first
            logger.info("run %s: not ended here (%s)", run_id, exc)
            return False
        return True

    def writing(self, run_id: str) -> bool:
        """Whether the root run ``run_id``'s journal is still being written here (also
        once the run ended and its caller let it go, until its end is durable): its id
        is not free for another run until then."""
        return run_id in self._trees

    @property
    def closed(self) -> bool:
        """Whether the journal has stopped (its runtime closed): its store closes, and
        what still reads it (a join) ends."""
        return self._closed

    @property
    def open_trees(self) -> int:
        """Root runs whose journal is being written (a leak check)."""
        return len(self._trees)

    async def close_unserved(self) -> None:
        """Close the store of a journal whose runtime never started it."""
        if not self.serving:
            self.serving = True
            _LIVE_OWNERS.discard(self.owner.owner_id)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.reads.close)
                await trio.to_thread.run_sync(self.store.close)

    async def serve(self) -> None:
        """Write events until the runtime closes (a service task), with the heartbeat
        beside it; then write what is left and close the store."""
        self.serving = True
        try:
            async with trio.open_nursery() as nursery:
                self._services = nursery.cancel_scope
                nursery.start_soon(self._beat)
                nursery.start_soon(self._sweep_every)
                nursery.start_soon(self._take_cancels)
                nursery.start_soon(self._hear)
                try:
                    await self._write_all()
                finally:
                    nursery.cancel_scope.cancel()
            if self._stopped_by is not None:
                raise self._stopped_by
        finally:
            self._closed = True
            self._shut = True  # the tracer's sends fail from now on (BrokenResourceError)
            self._room.unpark_all()
            for expected in self._expected.values():
                expected.recorded.set()
                if not expected.done.is_set():
                    expected.error = JournalError(
                        "the runtime closed before the run's end was journaled"
                    )
                    expected.done.set()
            self._texting.clear()  # the feed's hot path takes nothing more
            for tree in self._trees.values():
                _close_followers(tree)
                tree.texts = None
            _LIVE_OWNERS.discard(self.owner.owner_id)
            with trio.CancelScope(shield=True):
                try:
                    left = await trio.to_thread.run_sync(self._running_here)
                    if not left:  # else the owner stays, for a sweep to end or resume them
                        await trio.to_thread.run_sync(self.store.forget_owner, self.owner.owner_id)
                except StoreError as exc:
                    logger.warning("the journal could not sign off: %s", exc)
                await trio.to_thread.run_sync(self.reads.close)  # (a left join's read)
                await trio.to_thread.run_sync(self.store.close)

    async def _beat(self) -> None:
        """Tell the store this process lives, every ``heartbeat`` seconds: only that, so
        that nothing slow (a sweep, a recovery) can make a live owner look dead."""
        while True:
            await trio.sleep(self._heartbeat)
            self.owner = Owner(
                self.owner.owner_id,
                self.owner.host,
                self.owner.pid,
                self.owner.started_at,
                time.time(),
            )
            try:
                # Left on cancel (a closing runtime does not wait for a beat the database
                # holds up): the store's own call, harmless once the store is closed.
                await trio.to_thread.run_sync(
                    self.store.heartbeat,
                    self.owner,
                    limiter=self._beat_thread,
                    abandon_on_cancel=True,
                )
                version, oldest = await trio.to_thread.run_sync(
                    self.store.schema, limiter=self._beat_thread, abandon_on_cancel=True
                )
            except Exception as exc:  # the journal goes on; the next beat tries again
                logger.warning("journal heartbeat: %s", exc)
                continue
            if version != self._schema_seen:  # a newer Troupe migrated the store
                self._schema_seen = version
                error = newer_schema(self.store.url, version, oldest)
                if error is not None:  # the journal stops (its writes would not be read)
                    logger.error("%s", error)
                    self._stopped_by = error
                    self._services.cancel()
                    return

    async def _sweep_every(self) -> None:
        """Sweep the runs of dead processes every ``heartbeat`` seconds (beside the
        heartbeat, not in its loop)."""
        while True:
            await trio.sleep(self._heartbeat)
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep tries again
                logger.warning("journal sweep: %s", exc)

    # -- the runs' side ---------------------------------------------------------------
    def expect(
        self,
        run_id: str,
        *,
        config: dict[str, Any],
        thread_id: str | None = None,
        messages: Callable[[Any], Sequence[Any]] | None = None,
        reply: Reply | None = None,
        resumed_at: int | None = None,
        known: dict[int, tuple[Any, Any]] | None = None,
    ) -> None:
        """A root run is about to start: keep what its record holds beyond its start
        event (``config``, its thread; written with its first events), and let its
        caller wait for its end (:meth:`durable`). ``messages`` turns the run's output
        into the messages it adds to its thread; through ``reply`` the journal stops
        the run if its journal fails or another process asks to cancel it.
        ``resumed_at``: the run goes on under its own id (its process died), its
        journal from that position. ``known``: the JSON of objects seen before, which
        its journal may reuse (see ``CompactEncoder``)."""
        expected = self._expected[run_id] = _Expected(thread_id, messages)
        self._unwritten.pop(run_id, None)  # (an earlier run of this id that failed)
        if resumed_at is not None:  # its record is in the store (a claim's, a take-over's)
            expected.recorded.set()
        self._starting[run_id] = (thread_id, config, reply, resumed_at, known)

    def forget(self, run_id: str, *, started: bool) -> None:
        """The root run's caller is done with it. Of a run that ``started``, what the
        journal still needs (its record, its thread's messages) is kept until its end
        is written."""
        if not started:
            # (a resume's claim, left before its actor took the run up: its record
            # says it ended, with the next write)
            end = self._unstarted(run_id)
            if end is not None:
                self._end_with_next_write(end)
            return
        expected = self._expected.get(run_id)
        if expected is None:
            return
        if expected.done.is_set():
            del self._expected[run_id]
        else:
            expected.released = True

    async def never_started(self, run_id: str) -> None:
        """A root run told of by :meth:`expect` did not start after all: forget it, and
        end the record a resume's claim wrote for it (else it would stay running, and
        its paused run claimed by nothing)."""
        end = self._unstarted(run_id)
        if end is None:
            return
        try:
            await self._store_write(WriteBatch(ends=[end], owner=self.owner.owner_id))
        except StoreError as exc:
            logger.error("run %s: its claim could not be ended: %s", run_id, exc)
        except trio.Cancelled:  # (before the write: it goes with the next one instead)
            self._end_with_next_write(end)
            raise

    def _end_with_next_write(self, end: RunEnd) -> None:
        """Have the next write end a root run's record (written at once)."""
        self._pending.ends.append(end)
        self._pending.sync = True
        if self._writer_parked:
            self._wake()
        self._hurry()

    def _unstarted(self, run_id: str) -> RunEnd | None:
        """Forget the root run ``run_id`` told of by :meth:`expect`, which did not
        start; the end its record needs if a resume's claim wrote one."""
        started = self._starting.pop(run_id, None)
        # (a dead process's run taken over whose journal is empty, a resume whose
        # process died before its first write, goes on from 0 too: not a claim of
        # this process, its record is ended by whoever did not resume it, once)
        recovered = self._recovering.pop(run_id, None) is not None
        gone = self._expected.pop(run_id, None)
        if gone is not None:
            gone.recorded.set()
        if started is None or started[3] != 0 or recovered:
            return None
        return RunEnd(run_id, "cancelled", time.time(), "the run never started")

    async def recorded(self, run_id: str) -> None:
        """Wait until the root run's record is in the store (every process on it knows
        the run), or it never started. A cancel point.

        Raises:
            JournalError: its journal failed (or the runtime closed) first: no other
                process may know the run.
        """
        expected = self._expected.get(run_id)
        if expected is None:
            await trio.lowlevel.checkpoint()
            unwritten = self._unwritten.get(run_id)
            if unwritten is not None:  # (a new one: one raised again keeps each raise's frames)
                raise JournalError(*unwritten.args)
            return
        await expected.recorded.wait()
        if expected.error is not None:
            raise expected.error

    async def durable(self, run_id: str) -> None:
        """Wait until the root run's terminal event is in the store. A cancel point.

        Raises:
            JournalError: it could not be written.
        """
        expected = self._expected.get(run_id)
        if expected is None:
            await trio.lowlevel.checkpoint()
            return
        await expected.done.wait()
        if expected.error is not None:
            raise expected.error

    async def read_run(
        self, run_id: str, *, records: list[Any] | None = None
    ) -> tuple[RunRecord, JournaledRun]:
        """A root run's record and its journal (``records``: already read), read for a
        replay (a run that resumed a paused one is read after the one it resumed), in
        one worker thread (see :meth:`read_run_now`).

        Raises:
            UnknownRunError: the store holds no such run.
        """
        return await trio.to_thread.run_sync(self.read_run_now, run_id, records)

    def read_run_now(
        self, run_id: str, records: list[Any] | None = None
    ) -> tuple[RunRecord, JournaledRun]:
        """:meth:`read_run`, blocking: for a worker thread (that may go on to claim the
        run in the same hop).

        Raises:
            UnknownRunError: the store holds no such run.
        """
        record = self.store.get_run(run_id)
        if record is None:
            raise UnknownRunError(f"no run {run_id!r} in the store")
        if records is None:
            records = self.store.read_records(run_id)
        earlier = record.config.get("resumes")
        before = self.read_run_now(earlier)[1] if isinstance(earlier, str) else None
        if not records and before is not None:
            # A resume whose process died before its first event: it starts afresh.
            journaled = JournaledRun(before.raw_input, time.time(), Replay(run_id), fresh=True)
        else:
            journaled = read_journal(run_id, records)
            journaled.position = len(records)
        if before is not None:
            journaled.replay = before.replay.then(journaled.replay)
            journaled.decisions = dict(before.decisions)
        given = record.config.get("decisions")
        if isinstance(given, dict):
            journaled.decisions.update(structure_any(given))
        return record, journaled

    async def thread_history(self, thread_id: str) -> list[Any]:
        """The messages of thread ``thread_id`` (protocol objects, oldest first); none
        for a thread not yet made (a run on it makes it).

        The messages of the threads used last are kept, structured: a thread is loaded
        before each of its runs, and only the messages added since (by any process)
        are read and structured again. The store's worker thread reads the thread and
        its messages in one read and structures them (one hop, and trio's thread left
        free meanwhile).
        """
        made, cached = self._threads.pop(thread_id, (None, []))
        now_made, count, added = await trio.to_thread.run_sync(
            self._thread_tail, thread_id, len(cached)
        )
        if made is not None and (now_made != made or count < len(cached)):
            # deleted (and made again) since it was kept: read it whole
            cached = []
            now_made, count, added = await trio.to_thread.run_sync(self._thread_tail, thread_id, 0)
        messages = [*cached, *added] if cached else added
        if now_made is not None:
            self._threads[thread_id] = (now_made, messages)
            while len(self._threads) > THREADS_KEPT:
                self._threads.popitem(last=False)
        return list(messages)

    def forget_thread(self, thread_id: str) -> None:
        """A thread was deleted here: its messages are not kept any more."""
        self._threads.pop(thread_id, None)

    def _thread_tail(self, thread_id: str, start: int) -> tuple[float | None, int, list[Any]]:
        """In a worker thread: when thread ``thread_id`` was made (``None``: it is not),
        how many messages it holds, and its messages from ``start``, structured."""
        thread, values = self.store.read_thread(thread_id, start)
        if thread is None:
            return None, 0, []
        return thread.created_at, thread.messages, [structure_any(value) for value in values]

    def cancel_here(self, run_id: str) -> bool:
        """Cancel the root run ``run_id`` if it runs in this process; whether it does.
        A resume's run is cancelled from its claim on, and a dead process's run from its
        take-over on (its record, running, is in the store before its start reaches the
        journal). While the claim or take-over is being made, the cancel is kept (it acts
        if it holds) but ``False`` is said: not known yet (:meth:`request_cancel` waits
        to say, and asks whoever holds the run if it did not)."""
        tree = self._trees.get(run_id)
        if tree is not None:
            reply = tree.reply
        else:
            taking = self._recovering.get(run_id) or self._claiming.get(run_id)
            if taking is not None:
                # acts if the claim or take-over holds; not known yet while it is made
                # (request_cancel waits to say)
                taking.ask()
                return taking.held
            starting = self._starting.get(run_id)
            claim = starting is not None and starting[3] == 0
            reply = starting[2] if starting is not None and claim else None
        if reply is None or reply.settled:
            return False
        reply.abandon()
        return True

    async def claim(self, run_id: str, reply: Reply, claim: Callable[[], _T]) -> _T:
        """Run ``claim`` (a resume's claim of its paused run for the root run ``run_id``,
        blocking) in a worker thread; a cancel asked meanwhile abandons ``reply``."""
        taking = self._claiming[run_id] = _Taking(reply)
        held = False
        try:
            result = await trio.to_thread.run_sync(claim)
            held = True
            return result
        finally:
            del self._claiming[run_id]
            taking.decide(held)

    async def request_cancel(self, run_id: str) -> bool:
        """Cancel the root run ``run_id``, here or (through the store) in the process
        that runs it; ``False`` if it is not running. A cancel point before it has any
        effect, never after (trio's rule: a call that raises ``Cancelled`` did nothing)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.cancel_here(run_id):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return True
        taking = self._recovering.get(run_id) or self._claiming.get(run_id)
        if taking is not None:
            # Asked (cancel_here) while the run is being claimed or taken over here,
            # which is decided in one store call: the answer waits for it (shielded:
            # the cancel took effect if it holds). If it does not, there was no run to
            # cancel (a claim that failed), or another process holds it (a take-over
            # another made first), asked through the store.
            with trio.CancelScope(shield=True):
                await taking.decided.wait()
            if taking.held:
                return True
        return await trio.to_thread.run_sync(self.store.request_cancel, run_id)

    async def _take_cancels(self) -> None:
        while True:
            with trio.move_on_after(
                HEARD_FALLBACK_SECONDS if self.hearing else CANCEL_POLL_SECONDS
            ):
                await self._cancel_asked.wait()
            self._cancel_asked = trio.Event()
            try:
                asked = await trio.to_thread.run_sync(self.store.take_cancels, self.owner.owner_id)
            except StoreError as exc:
                logger.warning("journal: cannot read cancel requests: %s", exc)
                continue
            for run_id in asked:
                self.cancel_here(run_id)

    # -- hearing other processes ------------------------------------------------------
    def watch(self, root_id: str) -> Watch:
        """Be woken when another process writes ``root_id``'s journal (see
        :class:`Watch`); :meth:`unwatch` it when done."""
        watch = Watch(self)
        self._watches.setdefault(root_id, set()).add(watch)
        return watch

    def _wake_watches(self, root_id: str) -> None:
        """Wake the readers watching ``root_id``'s journal: another process wrote it,
        or this one did (a process alone on the store does not hear its own writes:
        it does not tell them)."""
        for watch in self._watches.get(root_id, ()):
            watch.wake()

    def unwatch(self, root_id: str, watch: Watch) -> None:
        """Stop waking ``watch``."""
        watches = self._watches.get(root_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[root_id]

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()
        self._cancel_asked.set()

    async def _hear(self) -> None:
        """Listen to the store's changes (PostgreSQL's ``NOTIFY``), if it tells them:
        wake the joins of the runs another process wrote, and take this process's
        cancel requests as soon as they are made. A broken connection is opened again
        (with backoff); meanwhile the readers look as without it."""
        failures = 0
        while True:
            try:
                changes = await trio.to_thread.run_sync(self.store.changes)
            except StoreError as exc:
                pause = HEAR_RETRIES[min(failures, len(HEAR_RETRIES) - 1)]
                failures += 1
                logger.warning("journal: cannot hear the store (%s); again in %s s", exc, pause)
                await trio.sleep(pause)
                continue
            if changes is None:
                return  # the store cannot tell: readers look every so often
            try:
                self.hearing = True
                self._heard_owners += 1  # one may have come unheard
                failures = 0
                self._wake_all()  # what was written while nobody listened
                await self._heard(changes)
            except StoreError as exc:
                logger.warning("journal: stopped hearing the store (%s)", exc)
            finally:
                self.hearing = False
                self.store.telling = True  # a process coming would not be heard
                changes.close()
                self._wake_all()
            await trio.sleep(HEAR_RETRIES[0])

    async def _heard(self, changes: Changes) -> None:
        owner_id = self.owner.owner_id
        while True:
            for kind, key in changes.take():
                if kind == CANCEL_ASKED:
                    if key == owner_id:
                        self._cancel_asked.set()
                elif kind == OWNER_CAME:
                    if key != owner_id:
                        await self._another_came()
                elif key == EVERY_RUN:
                    self._wake_all()
                else:
                    self._wake_watches(key)
            await trio.lowlevel.wait_readable(changes.fileno())

    async def _another_came(self) -> None:
        """Another process opened the store: this one's writes tell of their runs
        again (:meth:`_tell_again`)."""
        self._heard_owners += 1
        await self._tell_again()

    async def _tell_again(self) -> None:
        """Another process is on the store (its coming was heard, or a sweep saw it):
        if this one's writes told nobody, they tell of their runs again. A write
        already on its way may not have, nor those made since the other came (unheard):
        once the write in flight is done, every run is told of (the other's joins read
        the store again, rather than wait for their fallback look)."""
        if self.store.telling:
            return
        self.store.telling = True
        async with self._writer:  # the write in flight, if any, is done
            try:
                await trio.to_thread.run_sync(self.store.tell, JOURNAL_CHANGED, EVERY_RUN)
            except StoreError as exc:  # its joins look again within their fallback
                logger.warning("journal: cannot tell the store's other processes: %s", exc)

    @property
    def look_every(self) -> float:
        """Seconds between a follower's looks at the store when nothing wakes it."""
        return HEARD_FALLBACK_SECONDS if self.hearing else FOLLOW_POLL_SECONDS

    def follow(self, root_id: str) -> tuple[int, trio.MemoryReceiveChannel[Any]] | None:
        """Follow a live tree of this process: ``(written, live)``: records
        ``[0, written)`` are in the store, and ``live`` receives every later record as
        soon as it is durable (its end: the tree ended). ``None`` if the tree is not
        live here."""
        tree = self._trees.get(root_id)
        if tree is None or tree.failed or self._closed:
            return None
        send, receive = trio.open_memory_channel[Any](float("inf"))
        tree.followers.append(send)
        self._hurry()
        return tree.written, receive

    # -- feeding: the tracer hands every event over ---------------------------------
    def _take(self, event: StreamEvent) -> None:
        """Encode ``event`` into the batch the next write holds (called by the tracer,
        through :class:`_Feed`, as it delivers the event)."""
        run = event.run
        root_id = run.parent_ids[0] if run.parent_ids else run.run_id
        tree = self._trees.get(root_id)
        if tree is None:
            started = self._starting.pop(root_id, None)
            if started is None and run.parent_ids:
                return  # of a tree begun before the journal opened
            thread_id, config, reply, at, known = started or (None, {}, None, None, None)
            tree = self._trees[root_id] = _Tree(root_id, reply, known)
            if at is None:
                self._pending.runs.append(_record(event, self.owner.owner_id, thread_id, config))
                self._pending.sync = True  # its id is given out: it survives a power cut
                self._hurry()  # its caller may wait for its record (Journal.recorded)
            else:  # it goes on: its record is there, its journal holds ``at`` records
                tree.position = tree.written = at
                tree.encoder = journal_encoder(at, known)  # numbers not yet used
                taking = self._recovering.pop(root_id, None)
                if taking is not None and taking.asked and reply is not None:
                    reply.abandon()  # cancelled as it was taken over
        if tree.failed:
            if event.status is not None and not run.parent_ids:
                del self._trees[root_id]  # its end: nothing more comes
            return
        if tree.texts is not None:
            self._close_texts(tree)
        records: list[Any] = []
        encoder = tree.encoder
        encoder.goes_on_at(tree.position)  # after the texts gathered without it
        try:
            encoder.encode(event, records)
        except Exception as exc:
            self._cannot_encode(root_id, event.event, exc)
            if event.status is not None and not run.parent_ids:
                self._trees.pop(root_id, None)  # its end: nothing more comes (as above)
            return
        if not self._gather(tree, records, event.event):
            if event.status is not None and not run.parent_ids:
                self._trees.pop(root_id, None)  # its end: nothing more comes (as above)
            return
        if event.status is not None:
            if not run.parent_ids:
                self._pending.ends.append(self._end(event))
                self._pending.sync = True
                self._hurry()  # its caller waits for it (Journal.durable)
            elif run.kind not in _NO_EFFECTS:
                # A request replay answers from the journal, which may have acted (a
                # tool's call): its answer survives a power cut, or the act is repeated.
                self._pending.sync = True

    def _gather(self, tree: _Tree, records: list[Any], name: str) -> bool:
        """Add ``records`` (as the encoder made them) to what the next write holds of
        ``tree``, each written as JSON at once: what is kept until the write is text,
        which the collector never looks at (a record's lists and dicts, kept as they
        are, were traced at every collection until then, and promoted). ``False``: a
        record of the event ``name`` has no JSON form, and the tree's journal failed."""
        gathered = tree.gathered
        if gathered is None:
            gathered = self._pending.gather(tree)
        items = gathered.items
        for record in records:
            try:
                # (the encoder's records are their JSON text, but runs of texts' bare
                # records and events written whole)
                items.append(record if type(record) is str else dump_json(record))
            except RecursionError:  # (the writer's thread, its stack fresh, may write it)
                items.append(record)  # else the store's write fails on it
            except (TypeError, ValueError) as exc:
                # No thread writes it (an int of more digits than Python writes): the
                # tree fails alone, now, not the whole batch's write after its retries
                # (every run's end waited 3.5 s on them).
                self._cannot_encode(tree.root_id, name, exc)
                return False
        added = len(records)
        gathered.size += added
        tree.position += added
        self._feed.room -= added
        if self._writer_parked:
            self._wake()
        return True

    def _take_chunk(self, name: str, info: RunInfo, seq: int, chunk: Any) -> None:
        """:meth:`_take` for a stream event not made (the rare cases of
        :meth:`_Feed.take_chunk`)."""
        tree = self._trees.get(info.parent_ids[0] if info.parent_ids else info.run_id)
        if tree is None or tree.failed:  # as :meth:`_take` has them
            self._take(make_stream_event(name, info, seq, None, None, None, chunk))
            return
        if tree.texts is not None:
            self._close_texts(tree)
        records: list[Any] = []
        encoder = tree.encoder
        encoder.goes_on_at(tree.position)  # after the texts gathered without it
        try:  # (a text of a run of them is not written: its run's number comes back)
            number = encoder.encode_chunk(name, info, seq, chunk, records, texts=True)
        except Exception as exc:
            self._cannot_encode(tree.root_id, name, exc)
            return
        if number is not None:  # the first text of a run of them (or of its next batch)
            gathered = tree.gathered
            if gathered is None:
                gathered = self._pending.gather(tree)
            tree.texts = self._texting[info.run_id] = _Texts(info, number, seq, chunk, gathered)
            self._feed.room -= 1
            if self._writer_parked:
                self._wake()
            return
        self._gather(tree, records, name)

    def _close_texts(self, tree: _Tree) -> None:
        """Close ``tree``'s open run of texts (something else of the tree is gathered
        after it, or its batch goes to the store): its texts are counted now, and the
        feed's hot path appends nothing more to it."""
        texts = tree.texts
        assert texts is not None
        tree.texts = None
        del self._texting[texts.info.run_id]
        count = len(texts.texts)
        texts.within.size += count
        tree.position += count

    def _cannot_encode(self, root_id: str, name: str, exc: Exception) -> None:
        """The encoder raised on an event of ``root_id``'s tree (a value it has no way
        to write: a class that cannot be hashed; a payload of no JSON form is written as
        its ``repr``, so this is rare): that run's journal fails, as a store's failure
        fails it, and the runtime and the other runs go on. The encoder may have numbered
        part of the event, so nothing more of the tree is written but its record's end
        (else it said "running" for the process's life)."""
        cause = StoreError(f"cannot encode {name}: {type(exc).__name__}: {exc}")
        written = all(run.run_id != root_id for run in self._pending.runs)
        self._fail(root_id, cause)
        if written:  # (or being written) its record says so, as a store's failure has it
            self._pending.ends.append(RunEnd(root_id, "error", time.time(), str(cause)[:2000]))
            if self._writer_parked:
                self._wake()
            self._hurry()

    def _wake(self) -> None:
        """Wake the writer, parked for want of records (once per batch)."""
        self._writer_parked = False
        self._wake_writer.unpark()

    def _hurry(self) -> None:
        """Somebody waits for what the next write holds: if the writer waits for more
        (:data:`GATHER_SECONDS`), it writes now."""
        if self._writer_gathering:
            self._writer_gathering = False
            self._wake_writer.unpark()

    # -- writing -----------------------------------------------------------------------
    async def _write_all(self) -> None:
        """Write what the tracer handed over, a batch at a time: while one write is on
        the disk, the next batch gathers."""
        while True:
            batch = self._pending
            if not batch:
                if self._fed_all:
                    return
                self._writer_parked = True
                try:
                    await self._wake_writer.park()
                finally:
                    self._writer_parked = False
                continue
            if not (batch.ends or batch.runs or self._fed_all or self._followed()):
                self._writer_gathering = True
                try:
                    with trio.move_on_after(GATHER_SECONDS):
                        await self._wake_writer.park()
                finally:
                    self._writer_gathering = False
                batch = self._pending
            self._pending = _Batch()
            self._feed.room = self._capacity
            for root_id in batch.records:  # the next records gather in the next batch
                tree = self._trees.get(root_id)
                if tree is not None:
                    if tree.texts is not None:  # (it goes on in the next, as a new run)
                        self._close_texts(tree)
                    tree.gathered = None
            self._room.unpark_all()
            await self._write(batch)

    def _followed(self) -> bool:
        """Whether a live tree of this process is followed (its followers read each
        write as it is made)."""
        return any(tree.followers for tree in self._trees.values())

    def _end(self, event: StreamEvent) -> RunEnd:
        run_id = event.run.run_id
        expected = self._expected.get(run_id)
        status: RunState = event.status or "error"
        error = event.data.error if status != "ok" else None
        messages: Sequence[Any] = ()
        thread_id = expected.thread_id if expected is not None else None
        if expected is not None and expected.messages is not None and status == "ok":
            try:
                messages = [json_value(m) for m in expected.messages(event.data.output)]
            except Exception as exc:  # the run's answer stands; its thread misses it
                logger.error("run %s: its thread's messages cannot be kept: %s", run_id, exc)
        return RunEnd(run_id, status, event.end_time or time.time(), error, thread_id, messages)

    async def _write(self, batch: _Batch) -> None:
        write = batch.write_batch(self.owner.owner_id)
        if not write:
            return
        try:
            await self._write_with_retries(write)
        except StoreError:
            self.failures += 1
            # One tree at a time: a tree the store refuses (a reused run id) fails
            # alone; if the store is down, every tree of the batch fails.
            failed: list[RunEnd] = []
            new = {run.run_id for run in batch.runs}
            recorded = {root for root in batch.roots() if root not in new}
            for root_id in batch.roots():
                try:
                    await self._store_write(batch.only(root_id, self.owner.owner_id))
                except StoreError as alone:
                    self._fail(root_id, alone)
                    if root_id in batch.ended:
                        self._trees.pop(root_id, None)  # its end came: nothing more of it
                    # its own record (not one it could not take, nor one taken over)
                    if root_id in recorded and not isinstance(alone, FencedError):
                        failed.append(RunEnd(root_id, "error", time.time(), str(alone)[:2000]))
                else:
                    self._written(root_id, batch)
            if failed:  # their records say so, if the store takes that much (else a sweep)
                with suppress(StoreError):
                    await self._store_write(WriteBatch(ends=failed, owner=self.owner.owner_id))
            return
        for root_id in batch.roots():
            self._written(root_id, batch)

    async def _store_write(self, write: WriteBatch) -> None:
        """One write, from the writer's own thread slot; whatever it raises is a
        :class:`StoreError` (a value the store cannot take fails that write, never the
        journal)."""
        try:
            await trio.to_thread.run_sync(self.store.write, write, limiter=self._writer)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"store {self.store.url!r}: a write failed: {exc}") from exc

    async def _write_with_retries(self, write: WriteBatch) -> None:
        uncertain = False  # an attempt failed, and may have committed all the same
        for pause in (*WRITE_RETRIES, None):
            try:
                await self._store_write(write)
                return
            except StoreError as exc:
                refused = isinstance(exc, FencedError | JournalGapError)
                duplicate = _duplicate(exc)
                if duplicate and uncertain and await self._landed(write):
                    # the attempt before committed; only its answer was lost
                    logger.warning("journal write: an earlier attempt was written (%s)", exc)
                    return
                if pause is None or refused or duplicate:
                    raise
                uncertain = True
                logger.warning("journal write failed (%s); trying again in %s s", exc, pause)
                await trio.sleep(pause)

    async def _landed(self, write: WriteBatch) -> bool:
        """Whether the store holds all of ``write`` (an attempt at it committed though
        it failed: a connection lost after the commit); ``False`` if that cannot be
        read."""
        try:
            return await trio.to_thread.run_sync(self._holds, write, limiter=self._writer)
        except Exception as exc:
            logger.warning("journal: cannot tell whether a write landed: %s", exc)
            return False

    def _holds(self, write: WriteBatch) -> bool:
        store = self.store
        runs: dict[str, RunRecord | None] = {}

        def run(run_id: str) -> RunRecord | None:
            if run_id not in runs:
                runs[run_id] = store.get_run(run_id)
            return runs[run_id]

        for made in write.runs:
            held = run(made.run_id)
            if held is None or held.owner != made.owner or held.created_at != made.created_at:
                return False
        for segment in write.segments:
            held = run(segment.root_id)
            if held is None or held.owner != write.owner:
                return False
            if store.journal_length(segment.root_id) < segment.first + len(segment.records):
                return False
        for end in write.ends:
            held = run(end.run_id)
            if held is None or held.status != end.status or held.ended_at != end.ended_at:
                return False
        return True

    def _written(self, root_id: str, batch: _Batch) -> None:
        tree = self._trees.get(root_id)
        records = batch.records.get(root_id)
        expected = self._expected.get(root_id)
        if expected is not None and not expected.recorded.is_set():
            expected.recorded.set()
        if self._watches:  # (a run taken over here, read by a join that began before)
            self._wake_watches(root_id)
        if tree is not None and records is not None:
            tree.written += records.size
            if tree.followers:  # what they read is durable
                tree.followers = [f for f in tree.followers if _fed(f, records)]
        if root_id in batch.ended:
            if expected is not None:
                expected.done.set()
                if expected.released:
                    del self._expected[root_id]
            if tree is not None:
                _close_followers(tree)
                del self._trees[root_id]

    def _fail(self, root_id: str, cause: StoreError) -> None:
        error = JournalError(f"the run journal failed: {cause}")
        logger.error("run %s: %s", root_id, error)
        tree = self._trees.get(root_id)
        if tree is not None:
            tree.failed = True
            _close_followers(tree)
            if tree.reply is not None:
                tree.reply.fail(error)
            # What the next write gathered of it goes too (nothing more is written).
            if tree.texts is not None:
                self._close_texts(tree)
            dropped, ended = self._pending.drop(root_id)
            tree.gathered = None
            self._feed.room += dropped
            if dropped:  # room made: the tracer may wait for it (the batch may be empty now,
                self._room.unpark_all()  # and the writer parked: nobody else would say so)
            if ended:
                del self._trees[root_id]
        expected = self._expected.get(root_id)
        if expected is not None:
            if not expected.recorded.is_set():  # never written: the store holds nothing
                # (its words: the error, raised to the run's caller, keeps its frames)
                self._unwritten[root_id] = JournalError(*error.args)
                if len(self._unwritten) > UNWRITTEN_KEPT:
                    self._unwritten.popitem(last=False)
            expected.error = error
            expected.recorded.set()
            expected.done.set()
            if expected.released:
                del self._expected[root_id]


_WHOLE: Final = "e"
_NO_EFFECTS: Final = frozenset(("chat_model",))
"""Kinds of runs that act on nothing outside (a model's turn): a write that holds one's
end, and nothing else that must survive a power cut, is not synced (see
``WriteBatch.sync``); after a power cut that lost it, the turn is asked again."""


def journal_encoder(
    first_number: int = 0, known: dict[int, tuple[Any, Any]] | None = None
) -> CompactEncoder:
    """The encoder of a tree's journal records: the compact codec, with inputs sent
    before given by reference (``delta``): a model turn's input names the previous
    turn's messages and holds only the new ones, so a run of n turns journals O(n)
    messages, not O(n^2), and a replay reads them back as fast; each message is written
    once, and linked to after. ``first_number``: that of its first run and its first
    record's position (a journal that goes on numbers both after the earlier ones);
    ``known``: JSON it may reuse (a replay's)."""
    return CompactEncoder(first_number, delta=True, known=known, text=True)


@final
class Watch:
    """A reader's wake-up for one root run's journal (:meth:`Journal.watch`): reset it,
    read the store, then :meth:`wait`; a write heard after the reset (even during the
    read) ends the wait at once, so none is missed."""

    __slots__ = ("_event", "_journal")

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    def reset(self) -> None:
        """Forget the wakes so far (call it before reading the store)."""
        if self._event.is_set():
            self._event = trio.Event()

    async def wait(self) -> None:
        """Until a write of the run is heard (since :meth:`reset`), or
        :attr:`Journal.look_every` seconds. A cancel point."""
        with trio.move_on_after(self._journal.look_every):
            await self._event.wait()
        await trio.lowlevel.checkpoint_if_cancelled()


@final
class _Batch:
    """What one write holds, by tree."""

    __slots__ = ("_ended", "ends", "firsts", "records", "runs", "sync")

    def __init__(self) -> None:
        self._ended: set[str] | None = None
        self.runs: list[RunRecord] = []
        self.records: dict[str, _Gathered] = {}
        self.firsts: dict[str, int] = {}
        self.ends: list[RunEnd] = []
        self.sync = False  # whether it holds what must survive a power cut (WriteBatch.sync)

    def __bool__(self) -> bool:
        return bool(self.records or self.runs or self.ends)

    @property
    def ended(self) -> set[str]:
        """The root runs whose end it holds (computed once it is written)."""
        ended = self._ended
        if ended is None:
            ended = self._ended = {end.run_id for end in self.ends}
        return ended

    def gather(self, tree: _Tree) -> _Gathered:
        """Where ``tree``'s next records go in this batch (made now)."""
        records = _Gathered()
        self.records[tree.root_id] = tree.gathered = records
        self.firsts[tree.root_id] = tree.position
        return records

    def drop(self, root_id: str) -> tuple[int, bool]:
        """Forget what it holds of the tree ``root_id``: how many records, and whether
        that included its end."""
        records = self.records.pop(root_id, ())
        self.firsts.pop(root_id, None)
        self._ended = None
        self.runs = [r for r in self.runs if r.run_id != root_id]
        ends = len(self.ends)
        self.ends = [e for e in self.ends if e.run_id != root_id]
        return len(records), len(self.ends) < ends

    def roots(self) -> list[str]:
        return list({**dict.fromkeys(r.run_id for r in self.runs), **self.records})

    def write_batch(self, owner: str) -> WriteBatch:
        return WriteBatch(
            self.runs,
            [Segment(root, self.firsts[root], records) for root, records in self.records.items()],
            self.ends,
            owner,
            self.sync,
        )

    def only(self, root_id: str, owner: str) -> WriteBatch:
        records = self.records.get(root_id)
        return WriteBatch(
            [r for r in self.runs if r.run_id == root_id],
            [Segment(root_id, self.firsts[root_id], records)] if records else [],
            [e for e in self.ends if e.run_id == root_id],
            owner,
            self.sync,
        )


def _duplicate(exc: StoreError) -> bool:
    """Whether the store refused a write for a row it holds already."""
    text = str(exc)
    return "UNIQUE" in text or "duplicate key" in text


def _fed(follower: trio.MemorySendChannel[Any], records: Sequence[Any]) -> bool:
    """Give ``follower`` ``records``; ``False`` if it stopped following."""
    try:
        for record in records:
            follower.send_nowait(record)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _close_followers(tree: _Tree) -> None:
    for follower in tree.followers:
        follower.close()
    tree.followers.clear()


def _record(
    event: StreamEvent, owner: str, thread_id: str | None, config: dict[str, Any]
) -> RunRecord:
    """The record of a root run, from its start event."""
    run = event.run
    return RunRecord(
        run_id=run.run_id,
        performer=run.name,
        kind=run.kind,
        input=json_value(event.data.input),
        config=config,
        thread_id=thread_id,
        owner=owner,
        created_at=run.start_time,
    )


def _json_key(key: Any) -> str:
    """A dict's key as :func:`json_value` writes it: its ``str``, or its repr if that
    fails (whatever it raises must not reach the tracer)."""
    try:
        return str(key)
    except Exception:
        return shown_repr(key)


JSON_DEPTH: Final = 100
"""How deep :func:`json_value` looks into a value that has no JSON form as a whole; a
part deeper than this is kept as its ``repr`` (each level is a try of the converter,
and Python's stack has room for about a thousand frames)."""


def json_value(value: Any, _within: frozenset[int] = frozenset()) -> Any:
    """``value`` as JSON the store can keep (protocol objects as the converter writes
    them; anything inside without a JSON form as its ``repr``, as is a container
    inside itself, or one more than :data:`JSON_DEPTH` levels down)."""
    try:
        return unstructure_any(value)
    except SerializationError:
        if (
            isinstance(value, dict | list | tuple)
            and id(value) not in _within
            and len(_within) < JSON_DEPTH
        ):
            within = _within | {id(value)}  # (the containers it is inside of)
            if isinstance(value, dict):
                entries = {_json_key(k): json_value(v, within) for k, v in value.items()}
                if TYPE_KEY in value:  # escaped, as unstructure_any writes it
                    return {TYPE_KEY: DICT_TAG, "value": entries}
                return entries
            return [json_value(v, within) for v in value]
        return shown_repr(value)


def json_entries(value: Mapping[str, Any]) -> dict[str, Any]:
    """The dict ``value`` of a position typed ``dict[str, Any]`` (a run's metadata) as
    JSON the store can keep: each value as :func:`json_value` writes it, the dict itself
    never escaped (a ``"$type"`` key in it is kept as it is: its readers take it as a
    dict, and look up their own keys in it)."""
    return {_json_key(k): json_value(v) for k, v in value.items()}


@final
class _Feed:
    """The journal's :class:`Recorder`: the tracer hands it each event, which is
    encoded at once into the batch the next write holds. No channel between them, and
    no task woken per event: the writer is woken once per batch, and the events
    themselves are not kept (only their records, as JSON text, until written).
    Lossless: while :data:`JOURNAL_CAPACITY` records wait for the store, the tracer
    waits (so every run does), as for a runtime-wide watcher.
    """

    __slots__ = ("_journal", "room", "texting")

    def __init__(self, journal: Journal, capacity: int) -> None:
        self._journal = journal
        self.room = capacity  # records the batch gathering has room for (the bound)
        self.texting: dict[str, _Texts] = {}  # (see Journal._texting)

    def takes_now(self) -> bool:
        journal = self._journal
        return self.room > 0 or journal._shut or journal._fed_all

    async def wait(self) -> None:
        journal = self._journal
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.takes_now():
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        journal._hurry()
        await journal._room.park()  # woken when a write takes the batch, or it stops

    def take(self, event: StreamEvent) -> None:
        journal = self._journal
        if not (journal._shut or journal._fed_all):
            journal._take(event)

    def take_chunk(self, name: str, info: RunInfo, seq: int, chunk: Any) -> None:
        # The hot path (a token): a chat model's text that goes on the open run of
        # texts of its run (the last thing its tree gathered, in the batch gathering)
        # is kept as it is, no record made (they are written when the batch is:
        # :meth:`_Texts.json`), and counted in its tree once the run of texts closes;
        # the rest goes through the encoder. (The batch holds that run of texts, so
        # its writer is not parked for want of records.) One lookup and one call: what
        # a chat model's chunk is stays protocol's to say (``compact_bare_text``; the
        # test written out here saved 440 of a token's 3,400 instructions, but runtime/
        # knows nothing of LLMs).
        texts = self.texting.get(info.run_id)
        if texts is not None and texts.next == seq and compact_bare_text(chunk, texts.message_id):
            texts.texts.append(chunk.content)
            texts.next = seq + 1
            self.room -= 1
            return
        journal = self._journal
        if not (journal._shut or journal._fed_all):
            journal._take_chunk(name, info, seq, chunk)

    def take_chunks(self, name: str, info: RunInfo, seq: int, chunks: Sequence[Any]) -> None:
        take = self.take_chunk
        for index, chunk in enumerate(chunks):
            take(name, info, seq + index, chunk)

    def close(self) -> None:
        journal = self._journal
        journal._fed_all = True
        journal._hurry()
        if journal._writer_parked:
            journal._wake()


@final
class _Texts:
    """A chat model run's text chunks in a row, each the record ``[number, seq,
    text]`` once written; until then only their texts are kept."""

    __slots__ = ("info", "message_id", "next", "number", "seq", "texts", "within")

    def __init__(self, info: RunInfo, number: int, seq: int, chunk: Any, within: _Gathered) -> None:
        self.info = info  # its run's
        self.number = number
        self.message_id: str | None = chunk.id  # the message the run's texts are of
        self.seq = seq  # the first one's
        self.next = seq + 1  # the seq the next one in the row has
        self.texts: list[str] = [chunk.content]
        self.within = within  # the batch's records it is one of (appended to them)
        within.items.append(self)

    def json(self) -> str:
        head = f"[{self.number},"
        start = self.seq
        end = start + len(self.texts)
        seqs = _seqs()[start:end] if end <= SEQS_MADE else [f"{i}," for i in range(start, end)]
        # (no bytecode per record: each "seq," made once per process, each text's JSON
        # and the record's concatenation in C; 35 to 45 % less time than an f-string a
        # record, whose int formatting and string building were most of it)
        return f"{head}{f'],{head}'.join(map(add, seqs, map(_text, self.texts)))}]"


_text: Final = json.encoder.encode_basestring
"""A string as JSON (not ASCII-escaped; in C)."""
SEQS_MADE: Final = 4096
"""A run of texts' records' seqs below this are made once per process (see :func:`_seqs`)."""
_SEQS: list[str] | None = None


def _seqs() -> list[str]:
    """Each seq below :data:`SEQS_MADE` as a run of texts writes it (``"7,"``), made at
    the first write of a process that journals (not at import: 0.3 ms); two writers'
    threads making it at once each make the whole list, and either is kept."""
    global _SEQS
    seqs = _SEQS
    if seqs is None:
        seqs = _SEQS = [f"{seq}," for seq in range(SEQS_MADE)]
    return seqs


@final
class _Gathered(EncodedRecords):
    """A tree's records in one batch, as :meth:`Journal._gather` and
    :meth:`Journal._take_chunk` gather them: each record's JSON text, or a run of
    texts (:class:`_Texts`), or a record with no JSON form (the write fails on it)."""

    __slots__ = ("_text", "items", "size")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.size = 0  # records
        self._text: str | None = None

    def __len__(self) -> int:
        return self.size

    def json(self) -> str:
        text = self._text
        if text is None:
            parts = [
                item if type(item) is str else item.json() if type(item) is _Texts else dumps(item)
                for item in self.items
            ]
            text = self._text = storable_json(f"[{','.join(parts)}]")
        return text
