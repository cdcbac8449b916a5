"""What a runtime with a store can read back: threads (conversations) and the journal
of any root run, finished or live, in this process or another on the same store."""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Any, final

import trio
from attrs import frozen

from protocol import CompactDecoder, StreamEvent, structure_any

from ._context import check_thread_id, metadata_dict
from ._core import SCHEDULE_EVERY
from ._errors import StreamUsageError, TroupeError
from ._journal import Journal, JournalError, UnknownRunError, Watch
from ._store import RunRecord, ThreadRecord


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
    writes the store from a worker thread."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._store = journal.store

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
        thread = await trio.to_thread.run_sync(self._store.get_thread, thread_id)
        if thread is None:
            raise UnknownThreadError(f"no thread {thread_id!r}")
        return thread

    async def list(self, *, limit: int = 100) -> list[ThreadRecord]:
        """Threads, most recently updated first."""
        return await trio.to_thread.run_sync(lambda: self._store.list_threads(limit=limit))

    async def history(self, thread_id: str, *, runs: int = 100) -> ThreadHistory:
        """The thread's messages and its last ``runs`` runs.

        Raises:
            UnknownThreadError: there is no such thread.
        """
        thread = await self.get(thread_id)
        rows = await trio.to_thread.run_sync(self._store.thread_messages, thread_id)
        records = await trio.to_thread.run_sync(
            lambda: self._store.list_runs(thread_id=thread_id, limit=runs)
        )
        return ThreadHistory(
            thread,
            [structure_any(message) for _, message in rows],
            [run_id for run_id, _ in rows],
            records,
        )

    async def delete(self, thread_id: str) -> None:
        """Delete the thread, its messages, and its ended runs with their journals.

        Raises:
            UnknownThreadError: there is no such thread.
        """
        check_thread_id(thread_id)
        self._journal.forget_thread(thread_id)
        if not await trio.to_thread.run_sync(self._store.delete_thread, thread_id):
            raise UnknownThreadError(f"no thread {thread_id!r}")


@final
class JoinedStream:
    """The events of a root run read back from the journal, from any process on the
    store: ``async with rt.join(run_id) as events: async for event in events``.

    A finished run's events come from the store; a live one's are followed to its end
    (in this process, as the journal writes them; in another, as each write commits
    when the store tells of them (PostgreSQL's ``NOTIFY``), else by looking at the
    store every 0.1 s). ``after`` skips the first events (a client that saw
    ``after`` of them). :attr:`position` is the position (from 1) of the last event
    read. Every read is a cancel point.
    """

    def __init__(self, journal: Journal, run_id: str, *, after: int = 0) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError(f"after must be a whole number, got {after!r}")
        self._journal = journal
        self.run_id = run_id
        self._after = after
        self.position = 0
        """The position (from 1) of the last event read."""
        self.record: RunRecord | None = None
        """The run's record, as it was when the stream was entered."""
        self._decoder = CompactDecoder()
        self._read = 0  # records decoded
        self._pending: deque[Any] = deque()
        self._live: trio.MemoryReceiveChannel[Any] | None = None
        self._ended = False
        self._entered = False
        self._unyielded = 0  # reads since the last schedule point
        self._watch: Watch | None = None

    async def __aenter__(self) -> JoinedStream:
        if self._entered:
            raise StreamUsageError("a stream can be entered only once")
        self._entered = True
        store = self._journal.store
        self.record = await trio.to_thread.run_sync(store.get_run, self.run_id)
        if self.record is None:
            raise UnknownRunError(f"no run {self.run_id!r} in the store")
        followed = self._journal.follow(self.run_id)
        if followed is not None:
            written, self._live = followed
            stored = await trio.to_thread.run_sync(store.read_records, self.run_id)
            self._pending = deque(stored[:written])
        else:
            self._pending = deque(await trio.to_thread.run_sync(store.read_records, self.run_id))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.close()
        if self._watch is not None:
            self._journal.unwatch(self.run_id, self._watch)
            self._watch = None
        await trio.lowlevel.checkpoint()

    def __aiter__(self) -> JoinedStream:
        if not self._entered:
            raise StreamUsageError("enter the stream first: `async with rt.join(run_id) as s:`")
        return self

    async def __anext__(self) -> StreamEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            event = self._next_read()
            if event is not None:
                self._unyielded += 1
                if self._unyielded >= SCHEDULE_EVERY:  # a long stored journal: let others run
                    self._unyielded = 0
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return event
            if self._ended:
                raise StopAsyncIteration
            await self._more()

    def ready(self, limit: int) -> list[StreamEvent]:
        """Up to ``limit`` events already read from the store, without waiting (an
        edge writes them together); the last one's position is :attr:`position`."""
        events: list[StreamEvent] = []
        while len(events) < limit:
            event = self._next_read()
            if event is None:
                break
            events.append(event)
        return events

    def _next_read(self) -> StreamEvent | None:
        pending = self._pending
        while pending:
            record = pending.popleft()
            self._read += 1
            event = self._decoder.decode(record)
            if event is None:
                continue
            if event.status is not None and event.run_id == self.run_id:
                self._ended = True
            self.position += 1
            if self.position > self._after:
                return event
        return None

    async def _more(self) -> None:
        live = self._live
        if live is not None:
            try:
                self._pending.append(await live.receive())
            except trio.EndOfChannel:
                self._live = None  # the tree ended, or its journal failed
                if not self._ended:
                    await self._poll()
            return
        await self._poll()

    async def _poll(self) -> None:
        store = self._journal.store
        if self._watch is None:  # woken by the writes other processes make from now on
            self._watch = self._journal.watch(self.run_id)
        while True:
            self._watch.reset()
            records = await trio.to_thread.run_sync(store.read_records, self.run_id, self._read)
            if records:
                self._pending.extend(records)
                return
            record = await trio.to_thread.run_sync(store.get_run, self.run_id)
            if record is None or record.status != "running":
                # It ended (or went) with no more of its journal to come: a journal
                # that failed, or a run deleted meanwhile. Read once more, then stop.
                records = await trio.to_thread.run_sync(store.read_records, self.run_id, self._read)
                if records:
                    self._pending.extend(records)
                    return
                raise JournalError(
                    f"the journal of run {self.run_id!r} ends before the run did"
                    + (f" (it is {record.status})" if record is not None else " (deleted)")
                )
            # live in another process (or taken over by one): until it writes again
            await self._watch.wait()
