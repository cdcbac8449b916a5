"""The store contract: where a runtime's journal keeps runs, their events and threads.

A store is synchronous and thread-confined per call: the journal calls each method in a
worker thread (``trio.to_thread``), one write at a time, so a store needs no async
driver (psycopg's async API and asyncpg are tied to asyncio). Every method is one
transaction: it happens whole or not at all.

What is kept:

- **runs**: one record per root run (the unit a client starts, streams, joins and
  cancels): its performer, input, config, thread, status, times and owner (the process
  that runs it);
- **events**: each root run's tree as compact records (``protocol.CompactEncoder``), in
  the order the tracer delivered them, numbered from 0 (a record's position); they are
  written in segments (one row per batch of records of one tree) so that a run never
  waits on a write per event;
- **threads**: conversations; a thread's messages (JSON values, opaque to the store) in
  order, each with the run that added it (the messages a run adds are one row, so that
  a thread of a thousand messages is read as a few);
- **owners**: the processes that hold runs, with a heartbeat, so that a run whose
  process died can be found and ended.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any, Final, Literal, overload

from attrs import field, frozen
from orjson import JSONDecodeError as FastJSONError
from orjson import loads as fast_loads

SCHEMA_VERSION: Final = 7
"""The version of the schema this code writes; a store made by an older one is migrated,
one made by a newer one is refused unless it says it takes this version's writes
(:data:`OLDEST_WRITER`). Version 2: journal records may give an input by reference
(``CompactEncoder(delta=True)``), which version 1 cannot read. Version 3: each owner
says which version its code writes (``troupe_owners.schema_version``; version 2's
owners, which do not, are 2), and the store which versions may write it
(``oldest_writer`` in ``troupe_meta``). Version 4: journal records may link to a message
written before in the journal instead of writing it again, which version 3 cannot read.
Version 5: the messages a run adds to a thread are one row (a JSON array, in
``troupe_message_segments``), not one row each (``troupe_messages``, whose rows the
migration gathers so, run by run): a thread of a thousand messages is read as a few rows.
Version 6: ``troupe_runs.resumed_by`` is indexed (retention follows a chain of resumes
link by link: 1,000 links took 4 s on PostgreSQL without it); its journals and tables
are version 5's, so version 5's code may go on beside it (:data:`OLDEST_WRITER`).
Version 7: a payload's plain dict with a ``"$type"`` key of its own is written escaped
(``{"$type": "$dict", "value": {...}}``, see protocol/_convert.py), which version 6's
code would read, silently, as a dict of those two keys; its tables are version 6's
(the migration rewrites nothing: older records never hold the escape).
Older records are read as they are (the decoder reads every form), so a store of an
older version is taken over as it is."""
OLDEST_WRITER: Final = 7
"""The oldest schema version whose code may go on using a store of this version (a
process of it that is live when the store is migrated goes on; one of an older version
blocks the migration). Version 3's code cannot read version 4's links, and a process
reads what it joins and recovers: it may not go on; version 4's would write and read a
thread's messages in a table version 5 has no more. Version 6 added an index alone,
which version 5's writes keep up to date. Version 7 takes no older process: version 6's
(and 5's) would read its escaped dicts as other dicts, silently (a run it joins, resumes
or recovers would see what the live run did not), and would write such a dict as it is,
which version 7 reads as the protocol object its tag names, or fails to."""
LEASE_SECONDS: Final = 30.0
"""An owner not heard from for this long is taken for dead (another machine's; one on
this machine is known dead at once, by its process id)."""

logger = logging.getLogger("troupe")

RunState = Literal["running", "ok", "error", "cancelled", "paused"]


class StoreError(Exception):
    """A store could not be opened, read or written. The message names the store (its
    URL without a password) and the cause, in one line."""


class FencedError(StoreError):
    """A write was refused because a run it writes for is no longer its writer's: another
    process took the run over (its first owner was presumed dead), so this process's
    late events or end must not interleave with the new owner's. Retrying cannot help."""


class JournalGapError(StoreError):
    """A journal write was refused because the run's journal in the store ends before
    the write's first record: records its writer wrote before are not there. A database
    server that crashed loses the commits it had not yet synced (``WriteBatch.sync``
    false) while their writer lives on; written after the gap, the run's later records
    would read back in the lost ones' places. The run cannot go on; retrying cannot help."""


@frozen
class RunRecord:
    """A root run as the store keeps it.

    Attributes:
        run_id: the run's id.
        performer: the name of the performer (the run's name).
        kind: the run's kind (``chain``, ``chat_model``, ``tool``, ...).
        input: the run's input as its start event carries it (a JSON value).
        config: the run's settings that can be kept (``run_name``, ``tags``,
            ``metadata``, ``timeout``) as JSON.
        thread_id: the thread the run belongs to, if any.
        status: ``running`` until it ends; then ``ok``, ``error``, ``cancelled`` or
            ``paused`` (it waits for decisions; resuming it is a new run).
        owner: the id of the process that runs (ran) it.
        created_at: when it started (seconds since the epoch).
        ended_at: when it ended.
        error: the error it ended with, described.
        events: how many records its tree's journal holds (as last written).
        resumed_by: for a paused run, the run that resumed it.
    """

    run_id: str
    performer: str
    kind: str
    input: Any = None
    config: dict[str, Any] = field(factory=dict)
    thread_id: str | None = None
    status: RunState = "running"
    owner: str = ""
    created_at: float = 0.0
    ended_at: float | None = None
    error: str | None = None
    events: int = 0
    resumed_by: str | None = None


@frozen
class ThreadRecord:
    """A conversation.

    Attributes:
        thread_id: its id (1 to 256 printable characters).
        created_at: when it was made.
        updated_at: when a run last added to it.
        metadata: what its creator gave (a JSON object).
        messages: how many messages it holds.
    """

    thread_id: str
    created_at: float
    updated_at: float
    metadata: dict[str, Any] = field(factory=dict)
    messages: int = 0


class EncodedRecords(Sequence[Any], ABC):
    """Records already written as JSON (a journal encodes each as it gathers it): a
    store writes their :meth:`json` as it is, not encoded again. Read as a sequence,
    they are what that JSON reads back as."""

    __slots__ = ()

    @abstractmethod
    def json(self) -> str:
        """The records as one JSON array, as :func:`dumps` writes it.

        Raises:
            TypeError, ValueError: a record is not JSON (the stores report a StoreError).
        """

    @abstractmethod
    def __len__(self) -> int: ...

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self.values()[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def values(self) -> list[Any]:
        """The records, as their JSON reads back."""
        return list(read_json(self.json()))


def records_json(records: Sequence[Any]) -> str:
    """A segment's records as the JSON array every store writes (see :func:`dumps`)."""
    if isinstance(records, EncodedRecords):
        return records.json()
    return dumps(records)


@frozen
class Segment:
    """Records of one tree's journal: ``records`` hold positions ``first`` to
    ``first + len(records) - 1`` (an :class:`EncodedRecords`, or JSON values)."""

    root_id: str
    first: int
    records: Sequence[Any]


@frozen
class RunEnd:
    """A root run ended: its record's final state, and the messages it adds to its
    thread (written in the same transaction as its terminal event's segment)."""

    run_id: str
    status: RunState
    ended_at: float
    error: str | None = None
    thread_id: str | None = None
    messages: Sequence[Any] = ()


@frozen
class WriteBatch:
    """One journal write: new runs, then segments, then ends, in one transaction.

    ``owner``: the process writing. When given, the write is fenced: if a run that a
    segment or an end is for is not (or no longer) ``owner``'s, nothing of the batch is
    applied and :class:`FencedError` is raised.

    ``sync``: whether the commit must survive a power cut (the store syncs it to disk
    before :meth:`Store.write` returns), or only a crashed process (committed, handed to
    the operating system or the database server, synced later; a store whose URL asks
    for every commit synced syncs it all the same). Either way it is committed: every
    process on the store reads it at once, and a later synced commit makes it durable
    too (the write-ahead log is synced in order: see ``docs/journal.md``). The journal
    asks for it when the batch holds what Troupe promises survives: a run's record, a
    root run's end, the end of a request that replay answers and that may have acted
    (a tool call, a nested run).
    """

    runs: Sequence[RunRecord] = ()
    segments: Sequence[Segment] = ()
    ends: Sequence[RunEnd] = ()
    owner: str | None = None
    sync: bool = True

    def __bool__(self) -> bool:
        return bool(self.runs or self.segments or self.ends)


def this_host() -> str:
    """Where this process's pid means something: the machine's name and, on Linux, its
    pid namespace (``myhost (pid:[4026531836])``).

    Containers that share a hostname (host networking gives each the host's) each have
    their own pids, often the same ones; judged by hostname alone, one would find the
    other's pid gone, or its own, and take over the other's live runs.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # (not Linux, or /proc not mounted: the hostname alone)
        return socket.gethostname()
    return f"{socket.gethostname()} ({namespace})"


@frozen
class Owner:
    """A process holding runs: ``host`` (:func:`this_host`) and ``pid`` let a process
    on the same machine tell at once that it is gone; others wait for its heartbeat to
    go stale."""

    owner_id: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    schema: int = SCHEMA_VERSION
    """The schema version its code writes."""


def presumed_dead(owner: Owner, now: float, lease: float = LEASE_SECONDS) -> bool:
    """Whether ``owner`` is gone: a process of this machine whose pid is gone, or one
    not heard from for ``lease`` seconds."""
    if owner.host == this_host():
        if owner.pid == os.getpid():
            return True  # this process's pid now: the owner that had it is gone
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return owner.seen_at < now - lease


JOURNAL_CHANGED: Final = "journal"
"""A :class:`Changes` kind: root runs whose journal (or record) changed."""
CANCEL_ASKED: Final = "cancel"
"""A :class:`Changes` kind: an owner whose runs were asked to be cancelled."""
EVERY_RUN: Final = "*"
"""A :data:`JOURNAL_CHANGED` key that stands for every run (too many to name)."""
OWNER_CAME: Final = "owner"
"""A :class:`Changes` kind: an owner (a process) that opened the store, by its id."""


class Changes(ABC):
    """What a process hears of a store's writes as they commit, from every process on
    it (PostgreSQL's ``LISTEN``/``NOTIFY``), on a connection of its own: a reader of a
    run that another process journals is woken by it instead of looking every so
    often. Not thread-safe: one task uses it."""

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that is readable when :meth:`take` may have something."""

    @abstractmethod
    def take(self) -> list[tuple[str, str]]:
        """What was heard since the last call, without waiting: ``(JOURNAL_CHANGED,
        root run id or EVERY_RUN)``, ``(CANCEL_ASKED, owner id)`` and ``(OWNER_CAME,
        owner id)`` pairs.

        Raises:
            StoreError: the connection broke (what was sent meanwhile is lost: open
                another, and read the store again).
        """

    @abstractmethod
    def close(self) -> None:
        """Stop listening. Safe to call more than once."""


class Store(ABC):
    """What a journal needs of a database. Methods are blocking and each is one
    transaction; the journal calls them from worker threads, one writer at a time.
    ``tests/test_store_contract.py`` checks what every store must do.
    """

    url: str
    """Where the store is, without a password (for messages)."""
    telling: bool = True
    """Whether each :meth:`write` tells the other processes of the runs it changed, in a
    store that can (:meth:`changes`). Its journal turns it off while no other process
    is alive on the store (nobody would hear), and on again as soon as one comes."""

    # -- opening -------------------------------------------------------------------
    @abstractmethod
    def open(self) -> None:
        """Connect, and create the schema or migrate an older one.

        Raises:
            StoreError: it cannot be opened, or its schema is newer than this code's
                (the message says what to do).
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections. Safe to call more than once."""

    @abstractmethod
    def schema(self) -> tuple[int, int]:
        """The store's schema version now, and the oldest version whose code may write
        it (a newer Troupe may have migrated it since it was opened)."""

    # -- owners --------------------------------------------------------------------
    @abstractmethod
    def heartbeat(self, owner: Owner) -> None:
        """Record (or refresh) a live owner."""

    @abstractmethod
    def owners(self) -> list[Owner]:
        """Every owner recorded."""

    @abstractmethod
    def forget_owner(self, owner_id: str, *, seen_at: float | None = None) -> None:
        """Remove an owner's record (it closed, or it is known dead and swept). With
        ``seen_at`` (when it was last heard of, as the sweep that judged it dead read
        it), only if it has not beaten since: an owner that was only late keeps its
        record."""

    # -- the journal ---------------------------------------------------------------
    @abstractmethod
    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one transaction.

        Raises:
            FencedError: ``batch.owner`` is given and a run it writes for is another
                owner's (it was taken over); nothing of it was applied.
            StoreError: it failed; nothing of it was applied.
        """

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord | None:
        """The root run ``run_id``, or ``None``."""

    @abstractmethod
    def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: RunState | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        """Root runs, newest first, filtered by what is given."""

    @abstractmethod
    def read_records(self, root_id: str, start: int = 0) -> list[Any]:
        """The journal of ``root_id``'s tree from position ``start`` on (every record
        written so far), in order."""

    @abstractmethod
    def journal_length(self, root_id: str) -> int:
        """How many records ``root_id``'s journal holds."""

    @abstractmethod
    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        """Make the running root run ``run_id`` of the dead ``dead_owner`` ``owner``'s
        (one transaction: of two processes at once, one wins); whether this call did.
        With ``seen_at`` (when ``dead_owner`` was last heard of, as the sweep that judged
        it dead read it), only if it has not beaten since: a sweep acts on what it read
        a moment before, and an owner that beat meanwhile is alive (its runs stay its
        own)."""

    @abstractmethod
    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        """Record that the paused root run ``run_id`` is resumed by the run ``by``, and
        keep ``by``'s record, if no run resumed it before (one transaction: of two at
        once, one wins; a process that dies after it leaves a run to recover, never a
        paused run claimed by nothing); whether this call did."""

    @abstractmethod
    def request_cancel(self, run_id: str) -> bool:
        """Ask the owner of the running root run ``run_id`` to cancel it; ``False`` if
        no such run is running."""

    @abstractmethod
    def take_cancels(self, owner_id: str) -> list[str]:
        """The runs of ``owner_id`` asked to be cancelled since it last looked (the
        requests are removed)."""

    def changes(self) -> Changes | None:
        """Start hearing every process's writes to this store as they commit (see
        :class:`Changes`); ``None`` if the store cannot tell (its readers look every
        so often instead). A store that can says, in each :meth:`write`, which root
        runs' journals or records it changed, and in :meth:`request_cancel` whose run
        it asked to cancel.

        Raises:
            StoreError: it cannot listen now (try again later).
        """
        return None

    def tell(self, kind: str, key: str) -> None:
        """Tell every process that hears this store's :meth:`changes` ``(kind, key)``
        now (:data:`OWNER_CAME` and an owner's id: a process came; a
        :data:`JOURNAL_CHANGED` key: a run changed), whatever :attr:`telling` says.
        Nothing in a store that cannot tell.

        Raises:
            StoreError: it could not be sent.
        """
        return None

    # -- threads -------------------------------------------------------------------
    @abstractmethod
    def create_thread(self, thread: ThreadRecord) -> bool:
        """Make a thread; ``False`` if one with its id exists (nothing changes)."""

    @abstractmethod
    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        """The thread ``thread_id``, or ``None``."""

    @abstractmethod
    def list_threads(self, *, limit: int = 100) -> list[ThreadRecord]:
        """Threads, most recently updated first."""

    @abstractmethod
    def thread_messages(self, thread_id: str, start: int = 0) -> list[tuple[str, Any]]:
        """A thread's messages in order from position ``start``, each with the id of
        the run that added it."""

    def read_thread(self, thread_id: str, start: int = 0) -> tuple[ThreadRecord | None, list[Any]]:
        """The thread ``thread_id`` (``None`` if there is none, and no messages) and
        its messages in order from position ``start``: what a run on it loads. Here
        two reads; the SQL stores read both in one (so that its count and its messages
        agree), without the ids of the runs that added them."""
        thread = self.get_thread(thread_id)
        if thread is None:
            return None, []
        return thread, [message for _, message in self.thread_messages(thread_id, start)]

    def thread_history(
        self, thread_id: str, runs: int
    ) -> tuple[ThreadRecord | None, list[tuple[str, Any]], list[RunRecord]]:
        """The thread ``thread_id`` (``None`` if there is none, and nothing else), its
        messages (each with the run that added it) and its last ``runs`` root runs,
        newest first. Here three reads; the SQL stores read them in one snapshot (so
        that a run listed as ended has its messages there)."""
        thread = self.get_thread(thread_id)
        if thread is None:
            return None, [], []
        return (
            thread,
            self.thread_messages(thread_id),
            self.list_runs(thread_id=thread_id, limit=runs),
        )

    @abstractmethod
    def delete_thread(self, thread_id: str) -> bool:
        """Delete a thread, its ended runs and their journals (but those a running run
        resumed, which its replay reads); ``False`` if there was none."""

    # -- retention -----------------------------------------------------------------
    @abstractmethod
    def delete_ended_before(self, cutoff: float) -> int:
        """Delete the runs (and their journals) that ended before ``cutoff``, and the
        threads not updated since; how many runs went."""


# -- what the SQL stores share ------------------------------------------------------------
RUN_COLUMNS: Final = (
    "run_id, performer, kind, input, config, thread_id, status, owner, created_at, "
    "ended_at, error, events, resumed_by"
)
"""The columns of a run's row, in the order :func:`run_from_row` reads them."""
THREAD_COLUMNS: Final = "thread_id, created_at, updated_at, metadata, messages"
"""The columns of a thread's row, in the order :func:`thread_from_row` reads them."""


def refused_segments(
    url: str, batch: WriteBatch, updated: int, held: Callable[[str], tuple[str, int] | None]
) -> None:
    """Raise why a fenced write's conditional update of its segments' runs (each the
    writer's, its journal no shorter than the segment's first record) changed only
    ``updated`` of them: :class:`JournalGapError` for a run that is the writer's but
    whose journal (``held(run_id)``: its owner and record count, read in the write's
    transaction) ends before its segment, else :class:`FencedError`."""
    if batch.owner is None or updated == len(batch.segments):
        return
    for segment in batch.segments:
        found = held(segment.root_id)
        if found is not None and found[0] == batch.owner and found[1] < segment.first:
            raise JournalGapError(
                f"store {url!r}: a write of run {segment.root_id}'s records from "
                f"{segment.first} is refused: its journal holds {found[1]} (records "
                "written before were lost: a database server that restarted loses "
                "the commits it had not synced)"
            )
    fenced(url, batch, "segments", len(batch.segments), updated)


def fenced(url: str, batch: WriteBatch, kind: str, expected: int, updated: int) -> None:
    """Raise :class:`FencedError` if a fenced write's conditional update of ``kind``
    (``segments`` or ``ends``) changed ``updated`` of the ``expected`` runs' rows."""
    if batch.owner is not None and updated != expected:
        runs = {s.root_id for s in batch.segments} | {e.run_id for e in batch.ends}
        raise FencedError(
            f"store {url!r}: a write of {kind} for {', '.join(sorted(runs)[:3])} is refused: "
            f"a run it writes for is no longer owned by {batch.owner} (another process took "
            "it over)"
        )


def check_schema(
    url: str,
    version: int | None,
    oldest_writer: int | None,
    tables: Iterable[str],
    start_anew: str,
    owners: Sequence[Owner],
    now: float,
) -> bool:
    """Whether this code may make (or migrate) the schema of a store at ``version``
    (read from ``troupe_meta``, ``None`` if absent; ``oldest_writer`` likewise) whose
    ``owners`` are as read (``schema``: the version of their code). ``False``: a newer
    store that takes this version's writes, used as it is (a warning says so).

    A migration under a live owner of older code is said (a warning naming them) if
    the new version takes their writes, else refused: they would go on writing what
    the new version cannot read.

    Raises:
        StoreError: the store is newer and does not take this version's writes, it has
            Troupe's ``tables`` without a version (``start_anew`` says what to do), or
            live owners of older code block its migration; saying what to do.
    """
    if version is not None and version > SCHEMA_VERSION:
        oldest = version if oldest_writer is None else oldest_writer
        if oldest > SCHEMA_VERSION:
            raise StoreError(
                f"store {url!r} was written by a newer Troupe (schema version {version}, "
                f"written by version {oldest} on; this one writes {SCHEMA_VERSION}): upgrade "
                "Troupe, or point it at another store"
            )
        logger.warning(
            "store %r has schema version %d, newer than this Troupe's %d; it takes this "
            "version's writes, so it is used as it is: upgrade Troupe",
            url,
            version,
            SCHEMA_VERSION,
        )
        return False
    if version is None:
        if any(table.startswith("troupe_") for table in tables):
            raise StoreError(
                f"store {url!r} has Troupe tables but no schema version: it was not made "
                f"by a released Troupe; {start_anew}"
            )
        return True
    live = [o for o in owners if o.schema < SCHEMA_VERSION and not presumed_dead(o, now)]
    if not live:
        return True
    said = ", ".join(f"pid {o.pid} on {o.host} (version {o.schema})" for o in live[:5])
    blocking = [o for o in live if o.schema < OLDEST_WRITER]
    if blocking:
        raise StoreError(
            f"store {url!r} is in use by {len(live)} process(es) of an older Troupe ({said}): "
            f"this one would migrate it from schema version {version} to {SCHEMA_VERSION}, "
            f"which takes writes of version {OLDEST_WRITER} on only; stop them (or wait "
            f"{LEASE_SECONDS:g} s after they stopped) and start again"
        )
    logger.warning(
        "store %r: migrated from schema version %d to %d while %d process(es) of an older "
        "Troupe are live on it (%s): they go on (version %d takes their writes), but "
        "cannot open it again: upgrade them",
        url,
        version,
        SCHEMA_VERSION,
        len(live),
        said,
        SCHEMA_VERSION,
    )
    return True


def newer_schema(url: str, version: int, oldest_writer: int) -> StoreError | None:
    """What a running process of this code says of its store found at ``version`` (a
    newer Troupe migrated it meanwhile): an error if it no longer takes this version's
    writes (the process must stop journaling), else ``None`` (a warning is logged)."""
    if version <= SCHEMA_VERSION:
        return None
    if oldest_writer > SCHEMA_VERSION:
        return StoreError(
            f"store {url!r} was migrated to schema version {version} by a newer Troupe, "
            f"which does not take this one's writes (version {SCHEMA_VERSION}; it takes "
            f"{oldest_writer} on): this process stops journaling: upgrade it"
        )
    logger.warning(
        "store %r was migrated to schema version %d by a newer Troupe; it takes this "
        "one's writes (version %d), so this process goes on: upgrade it",
        url,
        version,
        SCHEMA_VERSION,
    )
    return None


def run_filters(
    placeholder: str, thread_id: str | None, status: str | None, owner: str | None
) -> tuple[str, list[str]]:
    """The ``WHERE`` clause (or ``""``) and its arguments for ``list_runs``."""
    where, args = [], []
    for column, value in (("thread_id", thread_id), ("status", status), ("owner", owner)):
        if value is not None:
            where.append(f"{column} = {placeholder}")
            args.append(value)
    return (f"WHERE {' AND '.join(where)}" if where else ""), args


def run_row(run: RunRecord) -> tuple[Any, ...]:
    """A run as its row's values (:data:`RUN_COLUMNS`), JSON as text, free texts
    storable (:func:`storable_text`)."""
    return (
        run.run_id,
        storable_text(run.performer),
        storable_text(run.kind),
        dumps(run.input),
        dumps(run.config),
        run.thread_id,
        run.status,
        run.owner,
        run.created_at,
        run.ended_at,
        storable_text(run.error),
        run.events,
        run.resumed_by,
    )


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A run read back from its row (:data:`RUN_COLUMNS`; JSON kept as text)."""
    (
        run_id,
        performer,
        kind,
        input,
        config,
        thread_id,
        status,
        owner,
        created,
        ended,
        error,
        n,
        resumed_by,
    ) = row
    return RunRecord(
        run_id=run_id,
        performer=performer,
        kind=kind,
        input=read_json(input) if input is not None else None,
        config=read_json(config),
        thread_id=thread_id,
        status=status,
        owner=owner,
        created_at=created,
        ended_at=ended,
        error=error,
        events=n,
        resumed_by=resumed_by,
    )


def thread_from_row(row: Sequence[Any]) -> ThreadRecord:
    """A thread read back from its row (:data:`THREAD_COLUMNS`)."""
    thread_id, created, updated, metadata, messages = row
    return ThreadRecord(thread_id, created, updated, read_json(metadata), messages)


def records_from(segments: Iterable[Sequence[Any]], start: int) -> list[Any]:
    """The records from position ``start`` on, of segments read as ``(first, JSON
    text)`` rows in order (those that end after ``start``)."""
    records: list[Any] = []
    for first, text in segments:
        records.extend(read_json(text)[max(0, start - first) :])
    return records


_DIGITS: Final = bytes(b"0"[0] if b"0"[0] <= i <= b"9"[0] else b" "[0] for i in range(256))
"""A byte table: digits to ``0``, every other byte to a space."""
_LONG_NUMBER: Final = b"0" * 19
"""An integer outside ``[-2**63, 2**64)`` has at least 19 digits in a row."""


def read_json(text: str) -> Any:
    """``json.loads(text)``, read by orjson (C, about twice as fast on a journal's
    records: a replay and a join read a run's whole journal) wherever orjson reads it as
    ``json`` does, by ``json`` elsewhere. orjson refuses what ``json`` reads its own way
    (NaN and the infinities, a number past a float's range, a lone surrogate's escape,
    which :func:`dumps` writes), and then ``json`` reads the text; it would read an
    integer outside 64 bits as a float, so a text with 19 digits in a row (every such
    integer has them; so may a long id in a string, or a small float's ``repr``, read
    by ``json`` as well) is ``json``'s too (the test, a byte table and a substring
    search in C, costs a tenth of what orjson saves on a journal).

    Raises:
        json.JSONDecodeError: ``text`` is not JSON (``json``'s error, as before).
    """
    try:
        data = text.encode()
    except UnicodeEncodeError:  # (a lone surrogate: never in what the stores write)
        return json.loads(text)
    if _LONG_NUMBER in data.translate(_DIGITS):
        return json.loads(text)
    try:
        return fast_loads(data)
    except FastJSONError:
        return json.loads(text)


def messages_from(rows: Iterable[Sequence[Any]], start: int) -> list[tuple[str, Any]]:
    """A thread's messages from position ``start`` on, each with the id of the run that
    added it, of segments read as ``(first, run_id, JSON array text)`` rows in order
    (those that end after ``start``): see :func:`segment_values`."""
    rows = list(rows)
    messages: list[tuple[str, Any]] = []
    for (_, run_id, _), values in zip(rows, segment_values(rows, start), strict=True):
        messages += zip(repeat(run_id), values)
    return messages


def message_values(rows: Iterable[Sequence[Any]], start: int) -> list[Any]:
    """A thread's messages from position ``start`` on, of segments read as ``(first,
    JSON array text)`` rows in order (those that end after ``start``): see
    :func:`segment_values`."""
    rows = list(rows)
    messages: list[Any] = []
    for _, values in zip(rows, segment_values(rows, start), strict=True):
        messages += values
    return messages


def segment_values(rows: Sequence[Sequence[Any]], start: int) -> list[Any]:
    """The messages of each segment of a thread read as rows (``first`` first, the
    segment's JSON array text last) that end after ``start``, those before ``start``
    left out: their JSON read in one ``json.loads`` (a thousand small ones cost 2.5
    times as much).

    Raises:
        json.JSONDecodeError: a segment's text is not JSON.
    """
    if not rows:
        return []
    arrays: list[Any] = read_json(f"[{','.join([row[-1] for row in rows])}]")
    for index, row in enumerate(rows[: len(arrays)]):
        first = row[0]
        if first < start:
            arrays[index] = arrays[index][start - first :]
    return arrays


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _escape_surrogate(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def dumps(value: Any) -> str:
    """JSON text as every store writes it: compact, not ASCII-escaped, UTF-8 encodable.

    ``json.dumps(ensure_ascii=False)`` leaves a lone surrogate (a ``str`` that no UTF-8
    can hold, as ``os.fsdecode`` makes of undecodable bytes) as it is, and the database
    driver would refuse the whole batch; such a character is written as its ``\\udXXX``
    escape instead, which ``json.loads`` reads back as the same string (two of them that
    make a pair read back as the one character they encode). NaN and the
    infinities are written as Python's ``json`` writes them (and reads them back).

    Raises:
        TypeError, ValueError: ``value`` is not JSON (the stores report a StoreError).
    """
    return storable_json(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def storable_json(text: str) -> str:
    """JSON ``text`` (as ``json.dumps(ensure_ascii=False)`` writes it) made UTF-8
    encodable, as :func:`dumps` makes it."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(_escape_surrogate, text)
    return text


def storable_text(text: str | None) -> str | None:
    """A free text (an error described, a name) that every store can keep: a lone
    surrogate becomes its ``\\udXXX`` escape and NUL (which PostgreSQL's text refuses)
    ``\\x00``, so that an odd error message cannot fail the batch that ends its run."""
    if text is None or (text.isascii() and "\x00" not in text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def redact(url: str) -> str:
    """``url`` without its password (in its credentials or a ``password=`` parameter),
    for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    if qmark:
        query = "&".join(
            "password=***" if part.lower().startswith("password=") else part
            for part in query.split("&")
        )
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        if ":" in credentials:
            rest = f"{user}:***@{host}"
    return f"{scheme}://{rest}{qmark}{query}"
