"""What a runtime with a store can read back: threads (conversations) and the journal
of any root run, finished or live, in this process or another on the same store (a
:class:`HostedStream` whose host is the store)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, final

import trio
from attrs import frozen

from protocol import CompactDecoder, structure_any

from ._context import check_thread_id, metadata_dict
from ._errors import RuntimeClosedError, StreamUsageError, TroupeError
from ._hosted import HostedStream, RunFeed
from ._journal import Journal, JournalError, UnknownRunError, Watch
from ._store import RunRecord, ThreadRecord

logger = logging.getLogger("troupe")


class UnknownThreadError(TroupeError, LookupError):
    """No thread with that id is in the store."""


@frozen
class ThreadHistory:
    """A thread's conversation: its messages (protocol objects, oldest first), the id
    of the run that added each, and its runs (newest first)."""

    thread: ThreadRecord
    messages: list[Any]
    added_by: list[str]
    runs: list[RunRecord]


@final
class Threads:
    """A runtime's threads: ``rt.threads``. Each method is a cancel point and reads or
    writes the store from a worker thread; a cancelled read returns at once."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._store = journal.store
        self._reads = journal.reads

    async def create(
        self, thread_id: str | None = None, *, metadata: dict[str, Any] | None = None
    ) -> ThreadRecord:
        """Make a thread (a new id unless ``thread_id`` is given).

        Raises:
            ValueError: ``thread_id`` is taken, or is not 1-256 printable characters.
            TypeError: ``metadata`` is not a dict with string keys.
        """
        thread_id = check_thread_id(thread_id) if thread_id is not None else uuid.uuid4().hex
        meta = metadata_dict(metadata, "metadata") if metadata is not None else {}
        now = time.time()
        record = ThreadRecord(thread_id, now, now, meta)
        if not await trio.to_thread.run_sync(self._store.create_thread, record):
            raise ValueError(f"thread {thread_id!r} already exists")
        return record

    async def get(self, thread_id: str) -> ThreadRecord:
        """The thread ``thread_id``.

        Raises:
            UnknownThreadError: there is none.
        """
        check_thread_id(thread_id)
        thread = await self._reads.read(self._store.get_thread, thread_id)
        if thread is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        return thread

    async def list(self, *, limit: int = 100) -> list[ThreadRecord]:
        """Threads, most recently updated first."""
        return await self._reads.read(lambda: self._store.list_threads(limit=limit))

    async def history(self, thread_id: str, *, runs: int = 100) -> ThreadHistory:
        """The thread's messages and its last ``runs`` runs.

        Raises:
            UnknownThreadError: there is no such thread.
        """
        check_thread_id(thread_id)
        thread, rows, records = await self._reads.read(self._store.thread_history, thread_id, runs)
        if thread is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        return ThreadHistory(
            thread,
            [structure_any(message) for _, message in rows],
            [run_id for run_id, _ in rows],
            records,
        )

    async def delete(self, thread_id: str) -> None:
        """Delete the thread, its messages, and its ended runs with their journals (but
        the paused runs a running resume replays, kept until it ends).

        Raises:
            UnknownThreadError: there is no such thread.
        """
        check_thread_id(thread_id)
        self._journal.forget_thread(thread_id)
        if not await trio.to_thread.run_sync(self._store.delete_thread, thread_id):
            raise UnknownThreadError(f"no thread {thread_id!r}")


READ_AHEAD: Final = 256
"""Events a join decodes ahead of its reader before it waits for the reader to read."""


@final
class JoinedStream(HostedStream):
    """The events of a root run read back from the journal, from any process on the
    store: ``async with rt.join(run_id) as events: async for event in events``.

    A :class:`HostedStream` whose host is the store: a task reads the run's journal
    into its feed (at most ``READ_AHEAD`` events ahead of the reader). A finished run's
    events come from the store; a live one's are followed to its end (in this process,
    as the journal writes them; in another, as each write commits when the store tells
    of them (PostgreSQL's ``NOTIFY``), else by looking at the store every 0.1 s).
    ``after`` skips the first events (a client that saw ``after`` of them).
    :attr:`position` is the position (from 1) of the last event read.

    Reads are checkpoints as every stream's are. Iteration ends after the run's
    terminal event, whatever it says (a run that failed is not raised here: its last
    event says how it ended), with :attr:`output` or :attr:`paused` set as for any
    stream; it raises :class:`JournalError` if the journal ends before the run did,
    and what the store raised if it could not be read. Leaving the block leaves the
    run alone; :meth:`cancel` cancels it, whichever process runs it.
    """

    __slots__ = ("_after", "_stored")

    def __init__(
        self, journal: Journal, start: Callable[..., None], run_id: str, *, after: int = 0
    ) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be a whole number, got {after!r}")
        self._stored = StoredRun(journal, start, run_id, after)
        self._after = after
        super().__init__(self._stored, run_id)

    @property
    def position(self) -> int:
        """The position (from 1) of the last event read (``after`` before the first)."""
        rx = self._rx
        return self._after + (rx.consumed if isinstance(rx, RunFeed) else 0)

    @property
    def record(self) -> RunRecord | None:
        """The run's record, as it was when the stream was entered."""
        return self._stored.record

    async def __aenter__(self) -> JoinedStream:
        await super().__aenter__()
        return self

    def __aiter__(self) -> JoinedStream:
        if self._rx is None:
            raise StreamUsageError("enter the stream first: `async with rt.join(run_id) as s:`")
        return self


def _closed_under() -> RuntimeClosedError:
    return RuntimeClosedError("the runtime closed while the run was joined")


@final
class StoredRun:
    """A joined run's source (a :class:`RunSource`): a task that reads the run's
    journal from the store into its stream's feed, decoding as it goes, following a
    live run to its end."""

    __slots__ = (
        "_after",
        "_decoder",
        "_done",
        "_feed",
        "_journal",
        "_live",
        "_position",
        "_read",
        "_scope",
        "_start",
        "_wanted",
        "_watch",
        "record",
        "run_id",
    )

    def __init__(
        self, journal: Journal, start: Callable[..., None], run_id: str, after: int
    ) -> None:
        self._journal = journal
        self._start = start
        self.run_id = run_id
        self._after = after
        self.record: RunRecord | None = None
        self._decoder = CompactDecoder()
        self._feed: RunFeed | None = None
        self._read = 0  # records decoded
        self._position = 0  # events decoded
        self._live: trio.MemoryReceiveChannel[Any] | None = None
        self._watch: Watch | None = None
        self._wanted = trio.Event()  # the reader read (half the read-ahead)
        self._scope = trio.CancelScope()  # the task's: the reader has left
        self._done = trio.Event()  # the task has ended

    async def open(self, feed: RunFeed) -> None:
        """Find the run and read what its journal holds; start the task that puts it
        into ``feed``.

        Raises:
            UnknownRunError: the store holds no such run.
        """
        store, read = self._journal.store, self._journal.reads.read
        # A run of this process is in the store only after its first write, which
        # comes after its stream's first events: wait for it (a checkpoint otherwise).
        unwritten: JournalError | None = None
        try:
            await self._journal.recorded(self.run_id)
        except JournalError as exc:  # (never written, it may be: no such run, below)
            unwritten = exc
        self.record = await read(store.get_run, self.run_id)
        if self.record is None:
            why = f" (it ran here, and {unwritten} before its first write)" if unwritten else ""
            raise UnknownRunError(f"no run {self.run_id!r} in the store{why}")
        followed = self._journal.follow(self.run_id)
        try:
            stored = await read(store.read_records, self.run_id)
            if followed is not None:
                written, self._live = followed
                stored = stored[:written]
            feed.acknowledge(READ_AHEAD // 2, self._read_more)
            self._feed = feed
            self._start(self._fill, stored)
        except BaseException:
            if followed is not None:
                followed[1].close()
            raise

    def cancel(self) -> None:
        """Cancel the run, whichever process runs it (its end comes as it is written)."""
        if not self._journal.cancel_here(self.run_id):
            self._start(self._request_cancel)

    async def close(self) -> None:
        """The reader has left: stop reading (the run goes on)."""
        self._scope.cancel()
        with trio.CancelScope(shield=True):
            await self._done.wait()
        assert self._feed is not None
        self._feed.close_receiver()

    def _read_more(self) -> None:
        self._wanted.set()

    async def _request_cancel(self) -> None:
        try:
            await self._journal.request_cancel(self.run_id)
        except Exception as exc:  # (a task of the runtime's: it must not fail)
            logger.warning("cannot cancel run %r through the store: %s", self.run_id, exc)

    async def _fill(self, stored: list[Any]) -> None:
        feed = self._feed
        assert feed is not None
        try:
            with self._scope:
                error: BaseException | None = None
                try:
                    await self._follow(stored)
                except Exception as exc:  # the store failed: its reader hears of it
                    # (unless the runtime closed, and its journal the store, under it)
                    error = _closed_under() if self._journal.closed else exc
                feed.end(error)
        finally:
            if self._live is not None:
                self._live.close()
            self.unwatch()
            # (the reader left, or the runtime closed under it: its task was cancelled)
            feed.end(None if self._scope.cancel_called else _closed_under())
            self._done.set()

    async def _follow(self, records: list[Any]) -> None:
        """Put ``records``, then the rest of the journal, into the feed, up to the
        run's terminal event."""
        while not await self._put(records):
            live = self._live
            if live is None:
                records = await self._poll()
                continue
            try:
                records = [await live.receive()]
            except trio.EndOfChannel:
                self._live = None  # the tree ended, or its journal failed
                records = []
                continue
            while True:  # (what came meanwhile: one put)
                try:
                    records.append(live.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):  # (its end: the next receive)
                    break

    async def _put(self, records: list[Any]) -> bool:
        """Decode ``records`` into the feed, waiting while the reader is
        ``READ_AHEAD`` events behind; whether the run's end was among them."""
        feed = self._feed
        assert feed is not None
        decode = self._decoder.decode
        put = feed.put
        run_id = self.run_id
        after = self._after
        self._read += len(records)  # (read on from there, unless the run ends among them)
        room = READ_AHEAD - len(feed)
        for record in records:
            event = decode(record)
            if event is None:
                continue
            self._position += 1
            if self._position > after:
                if room <= 0:
                    self._wanted = trio.Event()
                    await self._wanted.wait()  # until the reader has read half of them
                    room = READ_AHEAD - len(feed)
                put(event)
                room -= 1
            elif event.status is not None and event.run_id == run_id:
                feed.ends_as(event)  # (the reader had every event: it is told how it ended)
            elif self._position % READ_AHEAD == 0:
                await trio.lowlevel.checkpoint()  # (skipping a long journal's start)
            if event.status is not None and event.run_id == run_id:
                return True
        return False

    def unwatch(self) -> None:
        """Stop hearing of other processes' writes."""
        if self._watch is not None:
            self._journal.unwatch(self.run_id, self._watch)
            self._watch = None

    async def _poll(self) -> list[Any]:
        """The journal's next records, written by another process (or before this
        process's journal stopped following the run)."""
        store, read = self._journal.store, self._journal.reads.read
        run_id = self.run_id
        if self._watch is None:  # woken by the writes other processes make from now on
            self._watch = self._journal.watch(run_id)
        while True:
            self._watch.reset()
            records = await read(store.read_records, run_id, self._read)
            if records:
                return records
            record = await read(store.get_run, run_id)
            if record is None or record.status != "running":
                # It ended (or went) with no more of its journal to come: a journal
                # that failed, or a run deleted meanwhile. Read once more, then stop.
                records = await read(store.read_records, run_id, self._read)
                if records:
                    return records
                raise JournalError(
                    f"the journal of run {run_id!r} ends before the run did"
                    + (f" (it is {record.status})" if record is not None else " (deleted)")
                    + (f": {record.error}" if record is not None and record.error else "")
                )
            # live in another process (or taken over by one): until it writes again
            await self._watch.wait()
