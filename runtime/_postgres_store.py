"""The PostgreSQL store: psycopg 3 and psycopg_pool's ``ConnectionPool``, for more than
one process on one database.

The journal calls every method from a worker thread (``trio.to_thread``), so the store is
synchronous: psycopg's async API and asyncpg are both tied to asyncio, and a trio program
cannot use them. Every method takes a connection from the pool and is one transaction.

The schema is the SQLite store's (tables prefixed ``troupe_``, JSON kept as TEXT written
by :func:`runtime._store.dumps`, segments keyed by ``(root_id, first)``), with PostgreSQL's
types: times are ``double precision``, counts ``bigint``, ids ``text COLLATE "C"`` (byte
order, as SQLite sorts). Its version is kept in ``troupe_meta``; it is made (or checked)
under a transaction-level advisory lock, so that processes opening one database at once
do not race. (One index more than SQLite's: runs by creation time, for ``list_runs``.)

Where SQLite's one writer serialises everything, here processes write at once, so rows
are locked in one order, threads (by id) before runs (by id): a write locks the threads
its runs and ends name before it appends messages (two processes ending runs of one
thread number them in turn), ``delete_thread`` locks the thread before its runs, and
retention locks idle threads before it sees whether they still have runs. A case of the
contract suite runs writers, deletes and retention at once: no deadlock, counts right.

The pool checks a connection before lending it (:func:`_check`: a connection the server
closed has a readable socket, and is then checked by a statement), so after the server
restarts the first call finds its connections dead and gets new ones; a call already
running on a connection that breaks fails with :class:`StoreError`.

A journal write that locks no thread is one round trip: its statements, from BEGIN to
COMMIT, sent at once (see "a journal write in one round trip" below).

Every write says which root runs it changed, and a cancel request whose runs it asks to
cancel, with PostgreSQL's ``NOTIFY`` (delivered when the transaction commits); a process
hears them on a connection of its own (:meth:`PostgresStore.changes`), so that a join of
a run that another process journals sees each write as it commits, and a run's owner
hears a cancel request at once (``docs/serving.md``, "More than one process").

A journal write that holds nothing that must survive a power cut (``WriteBatch.sync``
false: no run's record, no root run's end, no tool's result) commits asynchronously
(``SET LOCAL synchronous_commit = off``, for its transaction only); every other
transaction commits as the server's ``synchronous_commit`` says (``on`` by default:
synced). That is the URL's ``?synchronous=selective``, the default, as SQLite's;
``?synchronous=full`` leaves every commit to the server's setting (each synced, by
default). Troupe takes the parameter out of the URL before libpq reads it. PostgreSQL's own words (https://www.postgresql.org/docs/15/wal-async-commit.html):
the mode of a transaction is the setting "when transaction commit begins"; an
asynchronous commit may be lost if the database server crashes (its process, not only
the machine) within three times ``wal_writer_delay``; and recovery replays the WAL "up
to the last record that was flushed" in commit order, so an earlier commit is never
lost while a later one stands: a synced commit flushes the WAL up to its own record,
every earlier commit with it. A server that crashed and came back under a live process
may so have lost the tail of a run's journal: the journal's next write for the run is
refused (``JournalGapError``: its records would land after the gap) and the run ends
with an error.

psycopg is the ``postgres`` extra (``pip install 'trio-troupe[postgres]'``) and is
imported only here.
"""

from __future__ import annotations

import json
import os
import select
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from itertools import chain, repeat
from typing import Any, Final

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # the extra is missing (open_store says so in one line)
    raise ImportError(f"{exc}; pip install 'trio-troupe[postgres]'") from exc

from ._sql import Executes, SQLStore, Statements, message_row, tables_of
from ._store import (
    CANCEL_ASKED,
    EVERY_RUN,
    JOURNAL_CHANGED,
    OWNER_CAME,
    RUN_COLUMNS,
    Changes,
    RunRecord,
    StoreError,
    WriteBatch,
    dumps,
    fenced,
    records_json,
    redact,
    run_row,
    storable_text,
)

Connection = psycopg.Connection[tuple[Any, ...]]

OPEN_TIMEOUT: Final = 5.0
"""Seconds :meth:`PostgresStore.open` waits for the server."""
TIMEOUT: Final = 10.0
"""Seconds a call waits for a connection of the pool (all busy, or the server down)."""
MAX_CONNECTIONS: Final = 8
STATEMENT_TIMEOUT_MS: Final = 300_000
"""The server's ``statement_timeout`` on every connection unless the URL's ``options``
set one, or the database has one already (``ALTER ROLE``/``ALTER DATABASE ... SET``, the
server's configuration: a DBA's is kept): a statement the database holds up (a lock
another session keeps, a server that stalls) fails after 5 minutes instead of holding
its thread, and a closing runtime, forever. Far above any statement Troupe sends (a
journal write takes milliseconds, retention's delete of a day's runs seconds); a write
it cuts fails as any store failure does (its runs' journals fail)."""
KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
"""libpq's TCP options on every connection (those the URL does not set): a network that
drops packets silently breaks the connection within a minute (probes after 30 s of
silence, 3 unanswered 10 s apart; data unacknowledged for 60 s) instead of leaving a
statement waiting for an answer that never comes. (A Unix socket ignores them.)"""
TCP_USER_TIMEOUT_LIBPQ: Final = 120_000
"""The first libpq that knows ``tcp_user_timeout`` (12): with an older one (psycopg built
against the system's), the keepalives alone bound a silent network."""
RECONNECT_TIMEOUT: Final = 10.0
"""Seconds the pool retries a connection (with backoff: 1, 2, 4 s...) before it gives up
and starts again with the next call (so that after a long outage the wait between
attempts stays short)."""

_PIPELINE: Final = psycopg.Pipeline.is_supported()
"""Whether libpq can send statements without waiting for each answer (libpq 14 on; the
binary wheels' can)."""
_LOCK: Final = 0x7472_6F75_7065_0001
"""The advisory lock held while the schema is made or checked ("troupe" 1)."""

_SQL: Final = Statements.of("%s", lateral=True)
_RETENTION_LOCK: Final = (
    "SELECT run_id FROM troupe_runs WHERE ended_at IS NOT NULL AND ended_at < %s "
    "ORDER BY run_id FOR UPDATE"
)
_ASYNC_COMMIT: Final = "SET LOCAL synchronous_commit = off"
"""Said in a transaction that need not survive a power cut (see the module's docstring)."""
_START_ANEW: Final = "drop its troupe_ tables, or use another database (or schema)"
_SEGMENT_ROWS: Final = "unnest(%b::text[], %b::bigint[], %b::bigint[]) AS s(root_id, first, count)"
_SET_EVENTS: Final = (
    f"UPDATE troupe_runs r SET events = s.first + s.count FROM {_SEGMENT_ROWS} "
    "WHERE r.run_id = s.root_id"
)
"""A write's segments' runs' record counts, its segments given as arrays (ids, firsts,
counts): :attr:`Statements.set_events` for all of them in one statement."""
_SET_EVENTS_FENCED: Final = f"{_SET_EVENTS} AND r.owner = %s AND r.events >= s.first"
""":data:`_SET_EVENTS` fenced (:attr:`Statements.fence`, :attr:`Statements.not_past`)."""
_INSERT_SEGMENTS: Final = (
    "INSERT INTO troupe_segments (root_id, first, count, records) "
    "SELECT * FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::text[])"
)
"""A write's segments (ids, firsts, counts, records' JSON as arrays), one statement."""
_END_RUNS: Final = (
    "UPDATE troupe_runs r SET status = e.status, ended_at = e.ended_at, error = e.error "
    "FROM unnest(%b::text[], %b::text[], %b::float8[], %b::text[]) "
    "AS e(run_id, status, ended_at, error) WHERE r.run_id = e.run_id"
)
"""A write's runs' ends (ids, statuses, times, errors as arrays): :attr:`Statements.end_run`
for all of them in one statement."""
_END_RUNS_FENCED: Final = f"{_END_RUNS} AND r.owner = %s"
""":data:`_END_RUNS` fenced (:attr:`Statements.fence`)."""
_DROP_CANCELS: Final = "DELETE FROM troupe_cancels WHERE run_id = ANY(%b::text[])"
"""The cancel requests of a write's ended runs (:attr:`Statements.drop_cancel`)."""

_SCHEMA: Final[tuple[str, ...]] = (
    "CREATE TABLE IF NOT EXISTS troupe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS troupe_runs (
        run_id TEXT COLLATE "C" PRIMARY KEY,
        performer TEXT NOT NULL,
        kind TEXT NOT NULL,
        input TEXT,
        config TEXT NOT NULL,
        thread_id TEXT COLLATE "C",
        status TEXT NOT NULL,
        owner TEXT COLLATE "C" NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        ended_at DOUBLE PRECISION,
        error TEXT,
        events BIGINT NOT NULL DEFAULT 0,
        resumed_by TEXT COLLATE "C"
    )""",
    "CREATE INDEX IF NOT EXISTS troupe_runs_thread ON troupe_runs (thread_id, created_at)",
    "CREATE INDEX IF NOT EXISTS troupe_runs_status ON troupe_runs (status, owner)",
    "CREATE INDEX IF NOT EXISTS troupe_runs_ended ON troupe_runs (ended_at)",
    "CREATE INDEX IF NOT EXISTS troupe_runs_created ON troupe_runs (created_at, run_id)",
    "CREATE INDEX IF NOT EXISTS troupe_runs_resumed_by ON troupe_runs (resumed_by)",
    """CREATE TABLE IF NOT EXISTS troupe_segments (
        root_id TEXT COLLATE "C" NOT NULL,
        first BIGINT NOT NULL,
        count BIGINT NOT NULL,
        records TEXT NOT NULL,
        PRIMARY KEY (root_id, first)
    )""",
    """CREATE TABLE IF NOT EXISTS troupe_threads (
        thread_id TEXT COLLATE "C" PRIMARY KEY,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        metadata TEXT NOT NULL,
        messages BIGINT NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS troupe_threads_updated ON troupe_threads (updated_at)",
    """CREATE TABLE IF NOT EXISTS troupe_message_segments (
        thread_id TEXT COLLATE "C" NOT NULL,
        first BIGINT NOT NULL,
        count BIGINT NOT NULL,
        run_id TEXT COLLATE "C" NOT NULL,
        messages TEXT NOT NULL,
        PRIMARY KEY (thread_id, first)
    )""",
    """CREATE TABLE IF NOT EXISTS troupe_cancels (
        run_id TEXT COLLATE "C" PRIMARY KEY,
        owner TEXT COLLATE "C" NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS troupe_owners (
        owner_id TEXT COLLATE "C" PRIMARY KEY,
        host TEXT NOT NULL,
        pid BIGINT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL,
        seen_at DOUBLE PRECISION NOT NULL,
        schema_version INTEGER NOT NULL DEFAULT 2
    )""",
)


def _make_tables(connection: Executes) -> None:
    for statement in _SCHEMA:
        connection.execute(statement, ())


def _many(db: psycopg.Cursor[tuple[Any, ...]], statement: str, rows: Sequence[Any]) -> int:
    """``executemany``, or ``execute`` for one row (a round trip less: measured 0.54 ms
    for a write of one segment instead of 0.63); how many rows it changed."""
    if len(rows) == 1:
        db.execute(statement, rows[0])
    else:
        db.executemany(statement, rows)
    return db.rowcount


def _insert_runs(db: psycopg.Cursor[tuple[Any, ...]], runs: Sequence[RunRecord]) -> None:
    """Insert ``runs``' records (their threads already made and locked)."""
    _many(db, _SQL.insert_run, [run_row(run) for run in runs])


JOURNAL_CHANNEL: Final = "troupe_journal"
"""The ``NOTIFY`` channel of the root runs whose journal a write changed (a JSON list of
their ids per notification)."""
CANCEL_CHANNEL: Final = "troupe_cancel"
"""The ``NOTIFY`` channel of cancel requests (the id of the owner asked)."""
OWNER_CHANNEL: Final = "troupe_owner"
"""The ``NOTIFY`` channel of processes that opened the store (the id of the owner)."""
PAYLOAD_BYTES: Final = 7000
"""The most bytes of ids one notification names (PostgreSQL takes up to 8,000)."""
_NOTIFY: Final = "SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p"


def _notify_changed(db: psycopg.Cursor[tuple[Any, ...]], roots: Sequence[str]) -> None:
    """Tell the listeners of :data:`JOURNAL_CHANNEL` that ``roots`` changed (when the
    transaction commits): the notifications of :func:`_payloads`, sent by one statement."""
    # (binary: a text array escapes each element's quotes in Python, one call per quote)
    db.execute(_NOTIFY, (JOURNAL_CHANNEL, _payloads(roots)))


def _payloads(roots: Iterable[str]) -> list[str]:
    """The notifications that say ``roots`` changed: one per :data:`PAYLOAD_BYTES` of
    ids; an id longer than that is sent as :data:`EVERY_RUN`."""
    payloads: list[str] = []
    chunk: list[str] = []
    size = 0
    for root in roots:
        length = len(dumps(root).encode()) + 1
        if length > PAYLOAD_BYTES:
            payloads.append(dumps([EVERY_RUN]))
            continue
        if size + length > PAYLOAD_BYTES:
            payloads.append(dumps(chunk))
            chunk, size = [], 0
        chunk.append(root)
        size += length
    if chunk:
        payloads.append(dumps(chunk))
    return payloads


# -- a journal write in one round trip --------------------------------------------------
#
# Each round trip a write waits for costs its thread the GIL: the thread lets it go to
# wait, and taking it back from trio's thread, busy with the runs, takes up to the
# interpreter's switch interval (5 ms). Written statement by statement, a write waited
# for the pool's check, BEGIN, the runs' lock, the segments' update, their insert and
# COMMIT: a 100-run round's writes took 87 ms each beside a thread busy in Python,
# against 26 ms alone. So a write that locks no thread is sent whole, from BEGIN to
# COMMIT, in one pipeline (libpq's: statements sent without waiting for each answer),
# its parameters in PostgreSQL's binary format made here by C calls (psycopg's dumpers
# run Python for each array element), and its fence checked by its statements
# themselves: a statement whose fenced update changed fewer runs than it names divides
# by zero, which aborts the transaction (and the COMMIT after it); the write is then
# made again statement by statement (:meth:`PostgresStore._write_in_steps`), which says
# why it is refused (or writes it, if the runs' rows changed meanwhile).

_TEXT: Final = 25
_INT8: Final = 20
_FLOAT8: Final = 701
_TEXTS: Final = 1009
_INT8S: Final = 1016
_FLOAT8S: Final = 1022
_HEADER: Final = struct.Struct(">iiIii")
"""A one-dimensional array's header: dimensions, whether it holds NULLs, the elements'
type, its length, its lower bound."""
_LENGTH: Final = struct.Struct(">i").pack
_NULL: Final = b"\xff\xff\xff\xff"
_Statement = tuple[bytes, Sequence[bytes | None], Sequence[int]]
"""A statement, its parameters (PostgreSQL's binary format) and their types."""
_Result = psycopg.pq.abc.PGresult
_REFUSED: Final = "22012"
"""The SQLSTATE of a write's refusal by its own statements (``division_by_zero``)."""


def _texts(values: Sequence[str | None]) -> bytes:
    """``values`` as a ``text[]`` in PostgreSQL's binary format."""
    if None in values:
        held = [None if v is None else v.encode() for v in values]
        head = _HEADER.pack(1, 1, _TEXT, len(held), 1)
        return head + b"".join(_NULL if d is None else _LENGTH(len(d)) + d for d in held)
    data = [v.encode() for v in values]  # type: ignore[union-attr]  # (no None)
    head = _HEADER.pack(1, 0, _TEXT, len(data), 1)
    return b"".join(
        chain((head,), chain.from_iterable(zip(map(_LENGTH, map(len, data)), data, strict=True)))
    )


def _numbers(values: Sequence[float], oid: int) -> bytes:
    """``values`` as a ``bigint[]`` (``oid``: :data:`_INT8`) or a ``float8[]``
    (:data:`_FLOAT8`) in PostgreSQL's binary format."""
    shape = ("iq" if oid == _INT8 else "id") * len(values)
    try:
        return struct.pack(
            f">iiIii{shape}",
            1,
            0,
            oid,
            len(values),
            1,
            *chain.from_iterable(zip(repeat(8, len(values)), values, strict=True)),
        )
    except struct.error as exc:  # (a number the type does not hold)
        raise OverflowError(f"{exc}: {values!r:.200}") from None


def _scalar(value: Any, oid: int) -> bytes | None:
    """One value of type ``oid`` in PostgreSQL's binary format (``None``: NULL)."""
    if value is None:
        return None
    if oid == _TEXT:
        return value.encode()  # type: ignore[no-any-return]
    try:
        return struct.pack(">q" if oid == _INT8 else ">d", value)
    except struct.error as exc:
        raise OverflowError(f"{exc}: {value!r:.200}") from None


_RUN_TYPES: Final = (
    *(_TEXT,) * 8,  # run_id, performer, kind, input, config, thread_id, status, owner
    _FLOAT8,  # created_at
    _FLOAT8,  # ended_at
    _TEXT,  # error
    _INT8,  # events
    _TEXT,  # resumed_by
)
_INSERT_RUN: Final = (
    f"INSERT INTO troupe_runs ({RUN_COLUMNS}) VALUES "
    f"({', '.join(f'${i}' for i in range(1, len(_RUN_TYPES) + 1))})"
).encode()
_LOCK_RUNS: Final = (
    b"SELECT count(*) FROM (SELECT run_id FROM troupe_runs WHERE run_id = ANY($1) "
    b"ORDER BY run_id FOR UPDATE) AS locked"
)
_SEGMENTS: Final = (
    "WITH s AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[]) "
    "AS s(root_id, first, count, records)), "
    "u AS (UPDATE troupe_runs r SET events = s.first + s.count FROM s WHERE r.run_id = s.root_id"
)
_SEGMENTS_ALL: Final = (
    f"{_SEGMENTS}) INSERT INTO troupe_segments (root_id, first, count, records) SELECT * FROM s"
).encode()
"""A write's segments (arrays: ids, firsts, counts, records' JSON) and their runs' record
counts, unfenced (as :data:`_SET_EVENTS` and :data:`_INSERT_SEGMENTS`)."""
_SEGMENTS_FENCED: Final = (
    f"{_SEGMENTS} AND r.owner = $5 AND r.events >= s.first RETURNING r.run_id), "
    "i AS (INSERT INTO troupe_segments (root_id, first, count, records) "
    "SELECT s.* FROM s JOIN u ON u.run_id = s.root_id RETURNING 1) "
    "SELECT 1 / ((SELECT count(*) FROM i) = $6)::int"
).encode()
"""The same fenced (:data:`_SET_EVENTS_FENCED`): only the segments of the runs updated are
inserted, and a write that updates fewer than ``$6`` (all its segments) is refused."""
_NOTIFY_AT_ONCE: Final = b"SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"


def _numbered(statement: str) -> bytes:
    """``statement``'s ``%s``/``%b`` placeholders as ``$1``, ``$2``..."""
    parts = statement.replace("%b", "%s").split("%s")
    return "".join(
        part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, 1)
    ).encode()


_END_AT_ONCE: Final = _numbered(_END_RUNS)
_END_AT_ONCE_FENCED: Final = (
    f"WITH ended AS ({_numbered(_END_RUNS_FENCED).decode()} RETURNING 1) "
    "SELECT 1 / ((SELECT count(*) FROM ended) = $6)::int"
).encode()
"""A write's runs' ends (:data:`_END_RUNS_FENCED`), refused unless every one changed."""
_DROP_AT_ONCE: Final = _numbered(_DROP_CANCELS)


def _at_once(batch: WriteBatch) -> bool:
    """Whether :meth:`PostgresStore._write_at_once` takes ``batch``: it locks no thread (no run of a
    thread, no end that adds messages to one), and holds no two segments, nor two ends,
    of one run (which the journal never writes)."""
    if not _PIPELINE:
        return False
    if any(run.thread_id is not None for run in batch.runs):
        return False
    if any(end.thread_id and end.messages for end in batch.ends):
        return False
    segments, ends = batch.segments, batch.ends
    return len({s.root_id for s in segments}) == len(segments) and len(
        {e.run_id for e in ends}
    ) == len(ends)


def _statements(batch: WriteBatch, telling: bool, selective: bool) -> list[_Statement]:
    """The statements that write ``batch`` (:func:`_at_once` takes it), from BEGIN to
    COMMIT, each with its parameters in binary and their types."""
    sent: list[_Statement] = [(b"BEGIN", (), ())]
    if not batch.sync and selective:
        sent.append((_ASYNC_COMMIT.encode(), (), ()))
    for run in batch.runs:
        row = run_row(run)
        sent.append(
            (_INSERT_RUN, [_scalar(v, t) for v, t in zip(row, _RUN_TYPES, strict=True)], _RUN_TYPES)
        )
    segments, ends = batch.segments, batch.ends
    roots = [s.root_id for s in segments]
    touched = [*dict.fromkeys(roots), *(e.run_id for e in ends)]
    if len(set(touched)) > 1:  # runs in id order: no deadlock
        sent.append((_LOCK_RUNS, [_texts(sorted(set(touched)))], [_TEXTS]))
    owner = None if batch.owner is None else batch.owner.encode()
    if segments:
        arrays = [
            _texts(roots),
            _numbers([s.first for s in segments], _INT8),
            _numbers([len(s.records) for s in segments], _INT8),
            _texts([records_json(s.records) for s in segments]),
        ]
        types = [_TEXTS, _INT8S, _INT8S, _TEXTS]
        sent.append(_fenced(_SEGMENTS_ALL, _SEGMENTS_FENCED, arrays, types, owner, len(segments)))
    if ends:
        run_ids = _texts([e.run_id for e in ends])
        arrays = [
            run_ids,
            _texts([e.status for e in ends]),
            _numbers([float(e.ended_at) for e in ends], _FLOAT8),
            _texts([storable_text(e.error) for e in ends]),
        ]
        types = [_TEXTS, _TEXTS, _FLOAT8S, _TEXTS]
        sent.append(_fenced(_END_AT_ONCE, _END_AT_ONCE_FENCED, arrays, types, owner, len(ends)))
        sent.append((_DROP_AT_ONCE, [run_ids], [_TEXTS]))
    told = roots if segments else [e.run_id for e in ends]
    if telling and told:  # (the roots it changed: distinct, as are its ends)
        payloads = _texts(_payloads(told))
        sent.append((_NOTIFY_AT_ONCE, [JOURNAL_CHANNEL.encode(), payloads], [_TEXT, _TEXTS]))
    sent.append((b"COMMIT", (), ()))
    return sent


def _fenced(
    statement: bytes,
    fenced: bytes,
    values: Sequence[bytes | None],
    types: Sequence[int],
    owner: bytes | None,
    count: int,
) -> _Statement:
    """``statement`` with its ``values``, or where the write is ``owner``'s, ``fenced``,
    its fenced form, which is refused unless it changes ``count`` runs."""
    if owner is None:
        return statement, values, types
    return fenced, [*values, owner, _scalar(count, _INT8)], [*types, _TEXT, _INT8]


def _exchange(connection: Connection, sent: Sequence[_Statement]) -> _Result | None:
    """Send ``sent`` (a transaction, from BEGIN to COMMIT) in one pipeline and wait for
    its answers: the first statement's that failed (its transaction rolled back), or
    ``None``. A connection left in an unknown state (a network error, an interrupt) is
    closed (the pool then drops it)."""
    pgconn = connection.pgconn
    failed = None
    pgconn.enter_pipeline_mode()
    try:
        for statement, values, types in sent:
            pgconn.send_query_params(statement, values, types, [1] * len(values))
        pgconn.pipeline_sync()
        _flush(pgconn)
        while True:
            if pgconn.is_busy():
                _wait(pgconn.socket)
                pgconn.consume_input()
                continue
            result = pgconn.get_result()
            if result is None:  # (the end of one statement's results)
                if pgconn.status == psycopg.pq.ConnStatus.BAD:
                    # libpq dropped the connection as it read (a message it cannot
                    # take, out of step): no more results come, nor the pipeline's end,
                    # and this loop asked for them for ever at 100% of a core
                    raise psycopg.OperationalError(pgconn.get_error_message())
                continue
            if result.status == psycopg.pq.ExecStatus.PIPELINE_SYNC:
                break
            if result.status == psycopg.pq.ExecStatus.FATAL_ERROR and failed is None:
                failed = result
        pgconn.exit_pipeline_mode()
        if failed is not None and pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            connection.execute("ROLLBACK")
    except BaseException:
        connection.close()
        raise
    return failed


def _flush(pgconn: psycopg.pq.abc.PGconn) -> None:
    """Send what libpq holds of a nonblocking connection's output (reading what comes
    meanwhile, so that a server that waits for its answers to be read goes on)."""
    while pgconn.flush():
        if _wait(pgconn.socket, writing=True):
            pgconn.consume_input()


_POLLING: Final = hasattr(select, "poll")
"""Whether :func:`_wait` uses ``select.poll``: every system but Windows (where psycopg
runs too), which has none; there ``select.select`` (whose limit is on how many sockets
it is given, not on their numbers, as it is on other systems)."""


def _wait(fileno: int, *, writing: bool = False, timeout: float | None = None) -> bool:
    """Wait until the socket ``fileno`` can be read, has failed or been closed (or, with
    ``writing``, can be written), at most ``timeout`` seconds (``None``: as long as it
    takes); whether it can be read, has failed or been closed."""
    if not _POLLING:
        readers, _, failed = select.select([fileno], [fileno] if writing else [], [fileno], timeout)
        return bool(readers or failed)
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLOUT if writing else select.POLLIN)
    wait = None if timeout is None else int(timeout * 1000)
    while not (ready := poller.poll(wait)) and wait is None:
        pass
    return bool(ready) and ready[0][1] != select.POLLOUT


def _check(connection: Connection) -> None:
    """The pool's check of a connection before it lends it, without a round trip: a
    connection the server closed (a restart, a crash, an idle timeout) has had its
    socket made readable (the server's last message, or its end), and is then checked by
    a statement (``ConnectionPool.check_connection``), which fails; an idle connection
    that nothing came to is lent as it is."""
    pgconn = connection.pgconn
    if pgconn.status != psycopg.pq.ConnStatus.OK:
        raise psycopg.OperationalError("the connection is closed")
    if _wait(pgconn.socket, timeout=0):
        ConnectionPool.check_connection(connection)


def _synchronous(url: str) -> tuple[str, str]:
    """``url`` without its ``synchronous`` query parameter (Troupe's, not libpq's), and
    that parameter's value (``selective`` if none; a ``key=value`` connection string
    has none)."""
    scheme, sep, rest = url.partition("://")
    base, mark, query = rest.partition("?")
    if not sep or not mark:
        return url, "selective"
    kept, value = [], "selective"
    for part in query.split("&"):
        key, _, given = part.partition("=")
        if key == "synchronous":
            value = given.lower()
        else:
            kept.append(part)
    return f"{scheme}://{base}" + (f"?{'&'.join(kept)}" if kept else ""), value


def _cause(exc: BaseException) -> str:
    """An error's message on one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class PostgresStore(SQLStore):
    """The journal in a PostgreSQL database (see the module's docstring).

    Args:
        url: ``postgresql://user[:password]@host[:port]/database[?param=value...]`` (any
            libpq connection URL or ``key=value`` string).
        open_timeout: seconds :meth:`open` waits for the server.
        timeout: seconds a call waits for a connection.
        max_connections: the pool's size (the heartbeat has one connection more, its own).
    """

    sql = _SQL
    tables = tables_of(_SCHEMA)

    def __init__(
        self,
        url: str,
        *,
        open_timeout: float = OPEN_TIMEOUT,
        timeout: float = TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.url = redact(url)
        self._conninfo, synchronous = _synchronous(url)
        if synchronous not in ("selective", "full"):
            raise StoreError(f"store {self.url!r}: synchronous must be selective or full")
        self._selective = synchronous == "selective"
        self.open_timeout = open_timeout
        self.timeout = timeout
        self.max_connections = max_connections
        self._pool: ConnectionPool[Connection] | None = None
        # The server options libpq resolved for the first connection (from the URL, a
        # service file it names, or PGOPTIONS): ours are added to them (see open).
        self._server_options: str | None = None
        # The TCP settings (KEEPALIVES) it resolved: a service file's are kept.
        self._resolved: dict[str, str] = {}
        self._server_timeout = False  # the database has a statement_timeout of its own
        # The heartbeat's connection, apart from the pool: calls the database holds up
        # (reads a client left on a locked table, a slow server) may take every one of
        # the pool's and queue for more, and the owner whose heartbeat queued behind
        # them would look dead to the other processes (see _beating).
        self._beat: Connection | None = None
        self._beat_lock = threading.Lock()

    # -- opening -------------------------------------------------------------------
    def _connect_options(self) -> dict[str, Any]:
        """Options for every connection: autocommit (each method opens its transaction),
        UTF-8, and, unless the URL sets them, a bounded connection time, a statement
        timeout (:data:`STATEMENT_TIMEOUT_MS`) and TCP keepalives (:data:`KEEPALIVES`)."""
        given = conninfo_to_dict(self._conninfo)
        options: dict[str, Any] = {"autocommit": True, "client_encoding": "UTF8"}
        if "connect_timeout" not in given and not os.environ.get("PGCONNECT_TIMEOUT"):
            options["connect_timeout"] = max(2, round(self.open_timeout))
        set_already = given.keys() | self._resolved.keys()
        options.update({k: v for k, v in KEEPALIVES.items() if k not in set_already})
        if psycopg.pq.version() < TCP_USER_TIMEOUT_LIBPQ:
            options.pop("tcp_user_timeout", None)  # (an older libpq refuses the option)
        # (libpq reads a service file's options, and PGOPTIONS, only where no options
        # are given: kept in ours)
        server = self._server_options
        if server is None:
            server = str(given.get("options", os.environ.get("PGOPTIONS", "")))
        if "statement_timeout" not in server and not self._server_timeout:
            options["options"] = f"{server} -c statement_timeout={STATEMENT_TIMEOUT_MS}".strip()
        return options

    def open(self) -> None:
        if self._pool is not None:
            return
        try:
            # The first connection without our options and TCP settings: libpq
            # resolves its own (a service file's too, which conninfo_to_dict does not
            # read).
            first = {
                k: v
                for k, v in self._connect_options().items()
                if k != "options" and k not in KEEPALIVES
            }
            with psycopg.connect(self._conninfo, **first) as connection:
                resolved = {o.keyword.decode(): o.val for o in connection.pgconn.info}
                self._server_options = (resolved.get("options") or b"").decode()
                self._resolved = {
                    key: value.decode()
                    for key, value in resolved.items()
                    if key in KEEPALIVES and value
                }
                shown = connection.execute("SHOW statement_timeout").fetchone()
                self._server_timeout = shown is not None and shown[0] != "0"
            options = self._connect_options()
            # (the schema's transaction may wait long for another process's: on a
            # connection with the TCP settings, as every other)
            with psycopg.connect(self._conninfo, **options) as connection:
                self._prepare(connection)
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url!r}: cannot open it: {_cause(exc)}") from None
        pool: ConnectionPool[Connection] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=max(1, self.max_connections),
            kwargs=options,
            open=False,
            check=_check,
            timeout=self.timeout,
            reconnect_timeout=RECONNECT_TIMEOUT,
            name=f"troupe {self.url}",
        )
        try:
            pool.open(wait=True, timeout=self.open_timeout)
        except psycopg.Error as exc:
            pool.close()
            raise StoreError(f"store {self.url!r}: cannot open it: {_cause(exc)}") from None
        self._pool = pool

    def _prepare(self, connection: Connection) -> None:
        encoding = connection.execute("SHOW server_encoding").fetchone()
        if encoding is None or encoding[0].upper() not in ("UTF8", "UNICODE"):
            raise StoreError(
                f"store {self.url!r}: the database's encoding is {encoding and encoding[0]}, "
                "not UTF8: create it with ENCODING 'UTF8'"
            )
        with connection.transaction():
            # A migration (ours, or another process's that this waits for) may take
            # longer than a statement may: not cut.
            connection.execute("SET LOCAL statement_timeout = 0")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            tables = {
                row[0]
                for row in connection.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = current_schema() AND table_name LIKE 'troupe%%'"
                )
            }
            columns = {
                row[0]
                for row in connection.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = 'troupe_owners'"
                )
            }
            self._prepare_schema(connection, tables, columns, _make_tables, _START_ANEW)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            with suppress(Exception):
                pool.close()
        # A beat under way (a statement the database holds up, that the journal left
        # when it closed) keeps the heartbeat's connection and closes it as it ends.
        self._close_beat_if_closed()

    # -- transactions --------------------------------------------------------------
    @contextmanager
    def _connection(self, what: str) -> Iterator[Connection]:
        """A connection of the pool; psycopg's errors (and a value no JSON or UTF-8
        holds) become :class:`StoreError` naming the store and the cause.

        If the pool lends none within ``timeout`` (the server was down, and the pool
        waits out its reconnection backoff, or every connection is busy), one connection
        of its own is tried for this call: it says why the server cannot be reached, or
        it serves the call as soon as the server is back.
        """
        pool = self._pool
        if pool is None:
            raise StoreError(f"store {self.url!r} is closed")
        pooled = True
        try:
            connection = pool.getconn()
        except PoolTimeout:
            pooled = False
            try:
                connection = psycopg.connect(self._conninfo, **self._connect_options())
            except psycopg.Error as exc:
                raise StoreError(
                    f"store {self.url!r}: {what} failed: no connection within "
                    f"{self.timeout:g} s: {_cause(exc)}"
                ) from None
        except psycopg.Error as exc:  # the pool is closing
            raise StoreError(f"store {self.url!r}: {what} failed: {_cause(exc)}") from None
        try:
            yield connection
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url!r}: {what} failed: {_cause(exc)}") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise StoreError(f"store {self.url!r}: {what} failed: {_cause(exc)}") from None
        finally:
            if pooled:
                with suppress(psycopg.Error):
                    pool.putconn(connection)  # a broken one is discarded
            else:
                connection.close()

    @contextmanager
    def _writing(self) -> Iterator[psycopg.Cursor[tuple[Any, ...]]]:
        with (
            self._connection("a write") as connection,
            connection.transaction(),
            connection.cursor() as cursor,
        ):
            yield cursor

    def _reading(self) -> AbstractContextManager[Connection]:
        return self._connection("a read")

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        # (autocommit: each statement would be a transaction, with a view of its own)
        with self._connection("a read") as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield connection

    def _one_write(self) -> AbstractContextManager[Connection]:
        return self._connection("a write")  # autocommit: the statement's own transaction

    @contextmanager
    def _beating(self, reading: bool) -> Iterator[Connection]:
        """The heartbeat's own connection (autocommit: each statement its transaction),
        made at its first call and again after one failed, checked before each call as
        the pool checks its own (after the server restarted, the next call finds it
        dead and makes another); never queued behind the pool's other calls."""
        what = "a heartbeat's read" if reading else "a heartbeat"
        if self._pool is None:  # (without waiting for a beat the store's closing left)
            raise StoreError(f"store {self.url!r} is closed")
        try:
            with self._beat_lock:
                if self._pool is None:
                    raise StoreError(f"store {self.url!r} is closed")
                try:
                    connection = self._beat
                    if connection is not None:
                        try:
                            ConnectionPool.check_connection(connection)
                        except psycopg.Error:
                            with suppress(psycopg.Error):
                                connection.close()
                            connection = self._beat = None
                    if connection is None or connection.closed:
                        options = self._connect_options()
                        connection = self._beat = psycopg.connect(self._conninfo, **options)
                    yield connection
                except psycopg.Error as exc:
                    beat, self._beat = self._beat, None
                    if beat is not None:
                        with suppress(psycopg.Error):
                            beat.close()
                    raise StoreError(f"store {self.url!r}: {what} failed: {_cause(exc)}") from None
        finally:
            # A close that found the lock held left the connection to this beat: looked
            # at once the lock is let go (looked at before, a close between the look and
            # the release was missed, and the connection stayed open).
            self._close_beat_if_closed()

    def _close_beat_if_closed(self) -> None:
        """Close the heartbeat's connection if the store is closed, unless a beat holds
        it (:meth:`close` leaves it to the beat, which calls this as it lets the lock
        go)."""
        if self._pool is None and self._beat_lock.acquire(blocking=False):
            try:
                beat, self._beat = self._beat, None
                if beat is not None:
                    with suppress(Exception):
                        beat.close()
            finally:
                self._beat_lock.release()

    # -- the journal ---------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        if not batch:
            return
        telling = self.telling  # (once: the journal may turn it while this writes)
        if _at_once(batch):
            with self._connection("a write") as connection:
                if self._write_at_once(connection, batch, telling):
                    return
        with self._writing() as db:
            self._write_in_steps(db, batch, telling)

    def _write_at_once(self, connection: Connection, batch: WriteBatch, telling: bool) -> bool:
        """Write ``batch`` in one round trip (see "a journal write in one round trip");
        ``False`` if its fence refused it (nothing of it written:
        :meth:`_write_in_steps` says why)."""
        failed = self._send(connection, _statements(batch, telling, self._selective))
        if failed is None:
            return True
        if failed.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == _REFUSED.encode():
            return False
        raise psycopg.errors.error_from_result(failed)

    def _send(self, connection: Connection, sent: Sequence[_Statement]) -> _Result | None:
        """:func:`_exchange` (a test's spy looks at what a write sends here)."""
        return _exchange(connection, sent)

    def _write_in_steps(
        self, db: psycopg.Cursor[tuple[Any, ...]], batch: WriteBatch, telling: bool
    ) -> None:
        """``batch`` written statement by statement in the transaction ``db`` (a write
        :meth:`_write_at_once` does not take: one that locks threads, or holds two
        segments or two ends of one run; or one whose fence it found refused, to say
        why)."""
        threads = self._lock_threads(db, batch)
        if batch.runs:
            _insert_runs(db, batch.runs)
        touched = {s.root_id for s in batch.segments} | {e.run_id for e in batch.ends}
        if len(touched) > 1:  # runs after threads, in id order: no deadlock
            db.execute(
                "SELECT run_id FROM troupe_runs WHERE run_id = ANY(%s) ORDER BY run_id FOR UPDATE",
                (sorted(touched),),
            )
        # said once in the transaction, anywhere in it
        unsynced = not batch.sync and self._selective
        if batch.segments:
            # Fenced (batch.owner): the runs' rows are updated only where they are
            # the writer's, first (a taken-over run's segments would collide, or
            # interleave); the update locks them. One statement each for the
            # runs' rows and the segments, whatever their number: the rows as
            # arrays (unnest), sent in binary, where executemany went through
            # psycopg's Python once per row (a write of 100 segments of 20
            # records: 3.7 ms of this thread's CPU before, 1.9 ms).
            # (Two segments of one run, which the journal never writes in one
            # batch, are applied one after the other, as executemany does.)
            segments = batch.segments
            roots = [s.root_id for s in segments]
            firsts = [s.first for s in segments]
            counts = [len(s.records) for s in segments]
            if len(set(roots)) < len(roots):
                statement, params = self._segments_updates(batch)
                updated = _many(db, statement, params)
            elif batch.owner is None:
                updated = db.execute(_SET_EVENTS, (roots, firsts, counts)).rowcount
            else:
                updated = db.execute(
                    _SET_EVENTS_FENCED, (roots, firsts, counts, batch.owner)
                ).rowcount
            self._segments_fenced(db, batch, updated)
            # The readers of these runs in other processes hear of them when this
            # transaction commits; sent with the segments (no round trip of its own).
            with db.connection.pipeline() if _PIPELINE else nullcontext():
                if unsynced:
                    db.execute(_ASYNC_COMMIT)
                    unsynced = False
                db.execute(
                    _INSERT_SEGMENTS,
                    (roots, firsts, counts, [records_json(s.records) for s in segments]),
                )
                if telling:
                    _notify_changed(db, [*dict.fromkeys(roots)])
        if batch.ends:
            self._end(db, batch, threads)
            if not batch.segments and telling:
                _notify_changed(db, [*{e.run_id: 0 for e in batch.ends}])
        if unsynced:
            db.execute(_ASYNC_COMMIT)

    def _lock_threads(
        self, db: psycopg.Cursor[tuple[Any, ...]], batch: WriteBatch
    ) -> dict[str, int]:
        """Lock the threads ``batch`` adds runs or messages to, making those its new runs
        name (each by its first run); their message counts (a thread deleted meanwhile,
        that no new run names, is not there).

        Every write and ``delete_thread`` take their locks in one order, threads (by id)
        before runs, so that processes cannot deadlock; and a thread that a run is being
        added to cannot be deleted as empty meanwhile (the deleter waits, then sees the
        run). One statement per thread, in id order, sent together (one round trip).
        """
        made: dict[str, float] = {}
        for run in batch.runs:
            if run.thread_id is not None:
                made.setdefault(run.thread_id, run.created_at)
        wanted = set(made) | {e.thread_id for e in batch.ends if e.thread_id and e.messages}
        if not wanted:
            return {}
        connection = db.connection
        asked: list[psycopg.Cursor[tuple[Any, ...]]] = []
        with connection.pipeline() if _PIPELINE else nullcontext():
            for thread_id in sorted(wanted):
                cursor = connection.cursor()
                if thread_id in made:  # made, or locked as it is
                    created = made[thread_id]
                    cursor.execute(
                        "INSERT INTO troupe_threads (thread_id, created_at, updated_at, "
                        "metadata) VALUES (%s, %s, %s, '{}') ON CONFLICT (thread_id) DO "
                        "UPDATE SET thread_id = excluded.thread_id RETURNING thread_id, messages",
                        (thread_id, created, created),
                    )
                else:
                    cursor.execute(
                        "SELECT thread_id, messages FROM troupe_threads WHERE thread_id = %s "
                        "FOR UPDATE",
                        (thread_id,),
                    )
                asked.append(cursor)
        counts: dict[str, int] = {}
        for cursor in asked:
            row = cursor.fetchone()
            if row is not None:
                counts[row[0]] = row[1]
        return counts

    def _end(
        self, db: psycopg.Cursor[tuple[Any, ...]], batch: WriteBatch, counts: dict[str, int]
    ) -> None:
        ends = batch.ends
        run_ids = [e.run_id for e in ends]
        ended = (
            run_ids,
            [e.status for e in ends],
            [float(e.ended_at) for e in ends],
            [storable_text(e.error) for e in ends],
        )
        if len(set(run_ids)) < len(run_ids):
            # (two ends of one run, which the journal never writes in one batch, apply
            # one after the other, as two segments of one run do: one UPDATE ... FROM
            # changes the row once, and the fence would count one run too few)
            fence, owner = (_SQL.fence, (batch.owner,)) if batch.owner else ("", ())
            each = [(e.status, e.ended_at, storable_text(e.error), e.run_id, *owner) for e in ends]
            changed = _many(db, _SQL.end_run + fence, each)
        elif batch.owner is None:
            changed = db.execute(_END_RUNS, ended).rowcount
        else:
            changed = db.execute(_END_RUNS_FENCED, (*ended, batch.owner)).rowcount
        fenced(self.url, batch, "ends", len(ends), changed)
        db.execute(_DROP_CANCELS, (run_ids,))
        rows: list[tuple[str, int, int, str, str]] = []
        updated: dict[str, float] = {}
        for end in batch.ends:
            # a thread deleted while its run went on is not there: the run's messages
            # go with it
            if end.thread_id is None or not end.messages or end.thread_id not in counts:
                continue
            n = counts[end.thread_id]
            rows.append(message_row(end.thread_id, n, end.run_id, end.messages))
            counts[end.thread_id] = n + len(end.messages)
            updated[end.thread_id] = end.ended_at
        if rows:
            _many(db, _SQL.insert_messages, rows)
            _many(
                db,
                _SQL.set_thread_messages,
                [(counts[t], when, t) for t, when in updated.items()],
            )

    def delete_thread(self, thread_id: str) -> bool:
        with self._writing() as db:
            # The thread first (locked: no run is added to it, no resume claims one of
            # its runs meanwhile); then its runs to delete, chosen once and deleted by
            # id, records and journals alike: chosen again by a statement of its own,
            # a run that ended in between (an end without messages locks no thread)
            # lost its record but kept its journal, for ever.
            found = db.execute(_SQL.delete_thread[0], (thread_id,)).rowcount
            db.execute(_SQL.delete_thread[1], (thread_id,))
            db.execute(_SQL.thread_ended_runs, (thread_id,))
            gone = [row[0] for row in db.fetchall()]
            if gone:
                db.execute("DELETE FROM troupe_segments WHERE root_id = ANY(%s)", (gone,))
                db.execute("DELETE FROM troupe_runs WHERE run_id = ANY(%s)", (gone,))
        return found == 1

    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        claimed = False
        try:
            with self._writing() as db:
                self._lock_threads(db, WriteBatch(runs=[by]))  # threads before runs
                db.execute(_SQL.mark_resumed, (by.run_id, run_id))
                if db.rowcount != 1:  # resumed already (or not paused): nothing is kept
                    raise psycopg.Rollback()
                _insert_runs(db, [by])
                claimed = True
        except StoreError:
            raise
        except Exception as exc:  # its record's JSON nested past the stack, say: as SQLite
            raise StoreError(f"store {self.url!r}: a claim failed: {exc!r}") from None
        return claimed

    def request_cancel(self, run_id: str) -> bool:
        with self._writing() as db:
            # The run's row is locked (FOR SHARE): an end being written waits, or is
            # waited for and then seen (no request is left behind for an ended run).
            db.execute(_SQL.running_owner + " FOR SHARE", (run_id,))
            row = db.fetchone()
            if row is None:
                return False
            db.execute(_SQL.insert_cancel, (run_id, row[0]))
            db.execute("SELECT pg_notify(%s, %s)", (CANCEL_CHANNEL, row[0]))  # its owner hears
            return True

    def take_cancels(self, owner_id: str) -> list[str]:
        with self._connection("a write") as db:
            rows = db.execute(
                "DELETE FROM troupe_cancels WHERE owner = %s RETURNING run_id", (owner_id,)
            ).fetchall()
        return [row[0] for row in rows]

    # -- retention -----------------------------------------------------------------
    def delete_ended_before(self, cutoff: float) -> int:
        with self._writing() as db:
            # The old runs locked first (a claim of one is waited for), then (in
            # statements of their own, so with what committed meanwhile) those kept
            # told apart: a resume's claim that committed keeps its paused run, one
            # that waits finds it gone. (Runs only: no thread is locked after them.)
            # (the runs gone by id: a query over both the old runs and those kept
            # could be planned a nested loop, minutes long, where statistics lag)
            db.execute(_RETENTION_LOCK, (cutoff,))
            old = {row[0] for row in db.fetchall()}
            # (the recursive step's cost is estimated far above its index lookups,
            # past jit_above_cost: compiling it took 60 ms of the statement's 80 for a
            # chain of 1,000 resumes)
            db.execute("SET LOCAL jit = off")
            db.execute(_SQL.kept_ended_before, (cutoff,))
            gone_ids = sorted(old.difference(row[0] for row in db.fetchall()))
            db.execute("DELETE FROM troupe_segments WHERE root_id = ANY(%s)", (gone_ids,))
            db.execute("DELETE FROM troupe_runs WHERE run_id = ANY(%s)", (gone_ids,))
            gone = db.rowcount
        with self._writing() as db:
            # Lock the idle threads first, then see (in a statement of its own, so with
            # what committed meanwhile) which have no run left: a run being added to
            # one holds its lock, and is seen.
            db.execute(
                "SELECT thread_id FROM troupe_threads WHERE updated_at < %s "
                "ORDER BY thread_id FOR UPDATE",
                (cutoff,),
            )
            idle = [row[0] for row in db.fetchall()]
            if idle:
                db.execute(
                    "DELETE FROM troupe_threads t WHERE thread_id = ANY(%s) AND NOT EXISTS "
                    "(SELECT 1 FROM troupe_runs r WHERE r.thread_id = t.thread_id) "
                    "RETURNING thread_id",
                    (idle,),
                )
                empty = [row[0] for row in db.fetchall()]
                db.execute(
                    "DELETE FROM troupe_message_segments WHERE thread_id = ANY(%s)", (empty,)
                )
            return int(gone)

    # -- hearing other processes: LISTEN/NOTIFY -----------------------------------------
    def tell(self, kind: str, key: str) -> None:
        if kind == OWNER_CAME:
            channel, payload = OWNER_CHANNEL, key
        elif kind == JOURNAL_CHANGED:
            channel, payload = JOURNAL_CHANNEL, dumps([key])
        else:
            raise ValueError(f"nothing is told of {kind!r}")
        with self._connection("a notification") as db:
            db.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def changes(self) -> Changes:
        """Listen to :data:`JOURNAL_CHANNEL`, :data:`CANCEL_CHANNEL` and
        :data:`OWNER_CHANNEL` on a connection of its own (a listening connection cannot
        go back to the pool)."""
        try:
            connection = psycopg.connect(self._conninfo, **self._connect_options())
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url!r}: cannot listen: {_cause(exc)}") from None
        try:
            for channel in (JOURNAL_CHANNEL, CANCEL_CHANNEL, OWNER_CHANNEL):
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as exc:
            connection.close()
            raise StoreError(f"store {self.url!r}: cannot listen: {_cause(exc)}") from None
        return _Changes(self.url, connection)


class _Changes(Changes):
    """Notifications read straight from libpq, without waiting (the caller waits for
    :meth:`fileno` to be readable, in trio): psycopg's own ``notifies()`` blocks its
    thread."""

    def __init__(self, url: str, connection: Connection) -> None:
        self.url = url
        self._connection = connection
        self._fileno = connection.pgconn.socket

    def fileno(self) -> int:
        return self._fileno

    def take(self) -> list[tuple[str, str]]:
        pgconn = self._connection.pgconn
        heard: list[tuple[str, str]] = []
        try:
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                payload = notify.extra.decode("utf-8", "replace")
                channel = notify.relname.decode()
                if channel == CANCEL_CHANNEL:
                    heard.append((CANCEL_ASKED, payload))
                    continue
                if channel == OWNER_CHANNEL:
                    heard.append((OWNER_CAME, payload))
                    continue
                try:
                    roots = json.loads(payload)
                except ValueError:
                    roots = [EVERY_RUN]
                if not isinstance(roots, list):  # not ours (any client may NOTIFY)
                    roots = [EVERY_RUN]
                heard.extend(
                    (JOURNAL_CHANGED, root if isinstance(root, str) else EVERY_RUN)
                    for root in roots
                )
        except psycopg.Error as exc:
            raise StoreError(f"store {self.url!r}: listening failed: {_cause(exc)}") from None
        return heard

    def close(self) -> None:
        with suppress(psycopg.Error):
            self._connection.close()
