"""The SQLite store: the standard library's ``sqlite3``, WAL mode, one writer.

Processes on one machine may share the file (WAL lets readers go on while one process
writes; a writer waits up to ``busy_timeout`` for another's transaction).

Every write is committed; which commits are synced to disk the URL says
(``?synchronous=``):

- ``selective`` (the default): a journal write that holds what must survive a power cut
  (``WriteBatch.sync``: a run's record, a root run's end, a tool's result) is committed
  with ``PRAGMA synchronous = FULL``, the others with ``NORMAL``; every other write
  (heartbeats, claims, cancels, threads) with ``FULL``. SQLite's own words: in WAL mode
  "writers sync the WAL on every transaction commit if PRAGMA synchronous is set to
  FULL but omit this sync if PRAGMA synchronous is set to NORMAL"
  (https://www.sqlite.org/wal.html), and a commit with NORMAL is durable across a
  crashed process, not a power cut (https://www.sqlite.org/pragma.html#pragma_synchronous).
  The setting is the connection's, read when a transaction commits, so it is switched
  between transactions. A synced commit syncs the WAL file, which holds every earlier
  commit's frames before its own: they are durable from then on too; and a power cut
  loses a tail of unsynced commits, never one before a commit that survives (the WAL's
  frames are checksummed in a chain, and recovery stops at the first that fails).
- ``full``: every commit synced (``PRAGMA synchronous = FULL``); ``extra``: the same,
  SQLite's ``EXTRA``;
- ``normal``: no commit synced (``NORMAL``: the WAL is synced at checkpoints only): a
  crashed process loses nothing committed, a power cut may lose the last commits, a
  run's end among them.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Final
from urllib.parse import parse_qs

from ._sql import Executes, SQLStore, Statements, message_row, tables_of
from ._store import (
    RUN_COLUMNS,
    RunEnd,
    RunRecord,
    StoreError,
    WriteBatch,
    fenced,
    records_json,
    run_row,
    storable_text,
)

BUSY_TIMEOUT_MS: Final = 10_000
SELECTIVE: Final = "SELECTIVE"
"""The default ``synchronous``: a commit is synced when it holds what must survive a
power cut (see the module's docstring)."""
WAL_KEPT_BYTES: Final = 32 * 1024 * 1024
"""The size SQLite truncates the WAL back to when it starts it again after a checkpoint
(``PRAGMA journal_size_limit``): a burst that grew it (a reader holding a snapshot while
runs stream, so that no checkpoint could finish) leaves no file of that size on disk for
the server's life. A server under steady load keeps it near 6 MB, below the limit, so it
is seldom truncated (SQLite's default keeps it at its largest for ever)."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS troupe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS troupe_runs (
    run_id TEXT PRIMARY KEY,
    performer TEXT NOT NULL,
    kind TEXT NOT NULL,
    input TEXT,
    config TEXT NOT NULL,
    thread_id TEXT,
    status TEXT NOT NULL,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    ended_at REAL,
    error TEXT,
    events INTEGER NOT NULL DEFAULT 0,
    resumed_by TEXT
);
CREATE INDEX IF NOT EXISTS troupe_runs_thread ON troupe_runs (thread_id, created_at);
CREATE INDEX IF NOT EXISTS troupe_runs_status ON troupe_runs (status, owner);
CREATE INDEX IF NOT EXISTS troupe_runs_ended ON troupe_runs (ended_at);
CREATE INDEX IF NOT EXISTS troupe_runs_resumed_by ON troupe_runs (resumed_by);
CREATE TABLE IF NOT EXISTS troupe_segments (
    root_id TEXT NOT NULL,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    records TEXT NOT NULL,
    PRIMARY KEY (root_id, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS troupe_threads (
    thread_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metadata TEXT NOT NULL,
    messages INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS troupe_threads_updated ON troupe_threads (updated_at);
CREATE TABLE IF NOT EXISTS troupe_message_segments (
    thread_id TEXT NOT NULL,
    first INTEGER NOT NULL,
    count INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    messages TEXT NOT NULL,
    PRIMARY KEY (thread_id, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS troupe_cancels (
    run_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS troupe_owners (
    owner_id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_at REAL NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 2
);
"""

_SQL: Final = Statements.of("?")


def _make_tables(connection: Executes) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement, ())


def _path(url: str) -> str:
    rest = url.partition("://")[2]
    path, _, _query = rest.partition("?")
    if path in (":memory:", "/:memory:"):
        return ":memory:"
    if not path.startswith("/") or path == "/":
        raise StoreError(
            f"store {url!r}: an SQLite URL is sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db"
        )
    return path[1:]


CLAIMS_PER_TRANSACTION: Final = 500
"""At most so many resumes' claims in one transaction (fewer where SQLite takes fewer
parameters in a statement: each claim's are three)."""

_PARAMETERS: Final = 30_000
"""At most so many parameters in one statement of many rows, or SQLite's own bound if
lower (``SQLITE_LIMIT_VARIABLE_NUMBER``: 32,766 from SQLite 3.32, 999 before)."""

_RUN_WIDTH: Final = len(RUN_COLUMNS.split(","))
_RUN_ROW: Final = "(" + ", ".join(["?"] * _RUN_WIDTH) + ")"


def _parameters(db: sqlite3.Connection) -> int:
    """How many parameters a statement of many rows takes on ``db``."""
    return min(_PARAMETERS, db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def _insert_rows(
    db: sqlite3.Connection, head: str, row: str, rows: list[tuple[Any, ...]], width: int
) -> None:
    """Insert ``rows`` (each of ``width`` values, written ``row``, as ``"(?, ?)"``) with
    ``head`` (the statement up to its ``VALUES``): statements of many rows, each of as
    many values as a statement on ``db`` takes, not ``executemany``, each of whose rows
    is a step that lets the GIL go and waits to have it back (see mark_resumed)."""
    size = max(_parameters(db) // width, 1)
    for start in range(0, len(rows), size):
        part = rows[start : start + size]
        db.execute(
            head + ", ".join([row] * len(part)), [value for values in part for value in values]
        )


def _claimable(db: sqlite3.Connection, run_ids: list[str]) -> list[str]:
    """Which of ``run_ids`` are paused and resumed by none."""
    return [
        row[0]
        for row in db.execute(
            "SELECT run_id FROM troupe_runs WHERE run_id IN ("
            + ", ".join(["?"] * len(run_ids))
            + ") AND status = 'paused' AND resumed_by IS NULL",
            run_ids,
        )
    ]


def _mark_resumed(n: int) -> str:
    """``n`` paused runs marked resumed, each by its own run: pairs of (run, resumed
    by), then the runs."""
    return (
        "UPDATE troupe_runs SET resumed_by = CASE run_id "
        + " ".join(["WHEN ? THEN ?"] * n)
        + " END WHERE run_id IN ("
        + ", ".join(["?"] * n)
        + ") AND status = 'paused' AND resumed_by IS NULL"
    )


class _Claim:
    """A resume's claim of a paused run, waiting for a transaction (see
    :meth:`SQLiteStore.mark_resumed`)."""

    __slots__ = ("by", "claimed", "done", "error", "run_id")

    def __init__(self, run_id: str, by: RunRecord) -> None:
        self.run_id = run_id
        self.by = by
        self.claimed = False
        self.done = False
        self.error: str | None = None


class SQLiteStore(SQLStore):
    """The journal in one SQLite file (see the module's docstring)."""

    sql = _SQL
    tables = tables_of(_SCHEMA.split(";"))

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = _path(url)
        query = parse_qs(url.partition("?")[2])
        sync = query.get("synchronous", [SELECTIVE])[-1].upper()
        if sync not in (SELECTIVE, "FULL", "NORMAL", "EXTRA"):
            raise StoreError(f"store {url!r}: synchronous must be selective, full, normal or extra")
        self.synchronous = sync
        """The URL's ``synchronous`` (upper case; see the module's docstring)."""
        self._synced = sync != "NORMAL"  # whether the writer's commits are synced now
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._claims: list[_Claim] = []  # resumes' claims waiting for the writer
        self._claims_lock = threading.Lock()
        self._claims_per_transaction = CLAIMS_PER_TRANSACTION  # (at open: SQLite's bound)

    # -- opening -------------------------------------------------------------------
    def open(self) -> None:
        if self.path != ":memory:":
            folder = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(folder):
                raise StoreError(f"store {self.url!r}: the folder {folder!r} does not exist")
        try:
            self._writer = self._connect()
            self._claims_per_transaction = max(
                min(CLAIMS_PER_TRANSACTION, _parameters(self._writer) // 3), 1
            )
            self._prepare_when_free(self._writer)
            if self.path == ":memory:":
                # One connection: reads take the writer's lock, or a read's BEGIN/COMMIT
                # would land inside a write's transaction (and commit half of it).
                self._reader = self._writer
                self._read_lock = self._write_lock
            else:
                self._reader = self._connect()
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"store {self.url!r}: cannot open it: {exc}") from None
        except StoreError:
            self.close()
            raise

    def _prepare_when_free(self, connection: sqlite3.Connection) -> None:
        """:meth:`_prepare`, again while another process holds the file: turning a new
        file to WAL needs it alone, and SQLite's busy timeout does not wait for that."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1e3
        while True:
            try:
                self._prepare(connection)
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                time.sleep(0.01 + random.random() * 0.04)

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1e3
        )
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        connection.execute(f"PRAGMA journal_size_limit = {WAL_KEPT_BYTES}")
        sync = "FULL" if self.synchronous == SELECTIVE else self.synchronous
        connection.execute(f"PRAGMA synchronous = {sync}")
        return connection

    def _prepare(self, connection: sqlite3.Connection) -> None:
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if self.path != ":memory:" and str(mode).lower() != "wal":
            raise StoreError(f"store {self.url!r}: SQLite would not use WAL mode ({mode})")
        connection.execute("BEGIN IMMEDIATE")
        try:
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            columns = {row[1] for row in connection.execute("PRAGMA table_info(troupe_owners)")}
            self._prepare_schema(
                connection, tables, columns, _make_tables, "move it aside and start a new store"
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the connections once no transaction nor read is on them: a connection
        closed while another thread's statement runs on it crashed the process
        (SIGSEGV: resumes' claims, a write, a read in worker threads as the store was
        closed). What comes after is refused (the store is closed)."""
        with self._write_lock:
            if self._read_lock is self._write_lock:  # (one connection: ":memory:")
                self._close_connections()
            else:
                with self._read_lock:
                    self._close_connections()

    def _close_connections(self) -> None:
        for connection in {id(c): c for c in (self._writer, self._reader) if c}.values():
            with suppress(sqlite3.Error):
                connection.close()
        self._writer = self._reader = None

    # -- transactions --------------------------------------------------------------
    @contextmanager
    def _writing(self, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """A transaction on the writer; committed synced unless ``sync`` is false and
        the URL's ``synchronous`` is ``selective`` (else as the URL says)."""
        with self._write_lock, self._transaction(sync) as connection:
            yield connection

    @contextmanager
    def _transaction(self, sync: bool = True) -> Iterator[sqlite3.Connection]:
        """:meth:`_writing`'s transaction, the writer's lock held already."""
        connection = self._writer
        if connection is None:
            raise StoreError(f"store {self.url!r} is closed")
        try:
            if sync != self._synced and self.synchronous == SELECTIVE:
                # between transactions: the setting a commit reads is the one then
                connection.execute(f"PRAGMA synchronous = {'FULL' if sync else 'NORMAL'}")
                self._synced = sync
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
            # ValueError, TypeError: a value that is not JSON, or a text no UTF-8 holds
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise StoreError(f"store {self.url!r}: a write failed: {exc}") from None

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            connection = self._reader
            if connection is None:
                raise StoreError(f"store {self.url!r} is closed")
            try:
                connection.execute("BEGIN")
                try:
                    yield connection
                finally:
                    connection.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"store {self.url!r}: a read failed: {exc}") from None

    # -- the journal ---------------------------------------------------------------
    def write(self, batch: WriteBatch) -> None:
        # A statement per kind of row, not per row: the journal calls this from a
        # worker thread while trio's thread is busy, and each statement hands the GIL
        # back and forth.
        with self._writing(batch.sync) as db:
            if batch.runs:
                self._insert_runs(db, batch.runs)
            # Fenced (batch.owner): the runs' rows are updated only where they are the
            # writer's, first (a taken-over run's segments would collide, or interleave).
            fence, owner = (_SQL.fence, (batch.owner,)) if batch.owner else ("", ())
            if batch.segments:
                statement, params = self._segments_updates(batch)
                updated = db.executemany(statement, params).rowcount
                self._segments_fenced(db, batch, updated)
                db.executemany(
                    _SQL.insert_segment,
                    [
                        (s.root_id, s.first, len(s.records), records_json(s.records))
                        for s in batch.segments
                    ],
                )
            if batch.ends:
                updated = db.executemany(
                    _SQL.end_run + fence,
                    [
                        (e.status, e.ended_at, storable_text(e.error), e.run_id, *owner)
                        for e in batch.ends
                    ],
                ).rowcount
                fenced(self.url, batch, "ends", len(batch.ends), updated)
                db.executemany(_SQL.drop_cancel, [(end.run_id,) for end in batch.ends])
            for end in batch.ends:
                if end.thread_id is not None and end.messages:
                    self._add_messages(db, end)

    @staticmethod
    def _insert_runs(db: sqlite3.Connection, runs: Sequence[RunRecord]) -> None:
        threads = [(r.thread_id, r.created_at, r.created_at) for r in runs if r.thread_id]
        _insert_rows(
            db,
            "INSERT OR IGNORE INTO troupe_threads "
            "(thread_id, created_at, updated_at, metadata) VALUES ",
            "(?, ?, ?, '{}')",
            threads,
            3,
        )
        head = _SQL.insert_run.removesuffix(_RUN_ROW)
        _insert_rows(db, head, _RUN_ROW, [run_row(run) for run in runs], _RUN_WIDTH)

    @staticmethod
    def _add_messages(db: sqlite3.Connection, end: RunEnd) -> None:
        assert end.thread_id is not None
        row = db.execute(
            "SELECT messages FROM troupe_threads WHERE thread_id = ?", (end.thread_id,)
        ).fetchone()
        if row is None:  # deleted while the run went on: the run's words go too
            return
        db.execute(
            _SQL.insert_messages, message_row(end.thread_id, row[0], end.run_id, end.messages)
        )
        db.execute(
            _SQL.set_thread_messages,
            (row[0] + len(end.messages), end.ended_at, end.thread_id),
        )

    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        """Claims made at once (resumes in several worker threads) share a transaction
        of a few statements: whichever thread takes the writer first makes the claims
        waiting then, in the order made. A thousand resumes at once made a thousand
        transactions in turn, and each of their statements let the GIL go and waited up
        to the interpreter's switch interval (5 ms) to have it back while trio's thread
        ran: most of their time. Each claim's answer is its own, as if made alone: of
        two claims of one run, the first made wins; a claim whose record cannot be
        written fails alone (the batch is made again one claim at a time)."""
        claim = _Claim(run_id, by)
        with self._claims_lock:
            self._claims.append(claim)
        while not claim.done:
            with self._write_lock:
                if not claim.done:
                    with self._claims_lock:
                        taken = self._claims_per_transaction
                        batch = self._claims[:taken]
                        del self._claims[:taken]
                    self._claim_all(batch)
        if claim.error is not None:
            raise StoreError(claim.error)
        return claim.claimed

    def _claim_all(self, batch: list[_Claim]) -> None:
        """The claims of ``batch`` in one transaction (the writer's lock held); where it
        fails and holds more than one, each again in a transaction of its own."""
        try:
            self._claim_together(batch)
        except BaseException as exc:
            for claim in batch:  # nobody else will make them: each is answered
                if not claim.done:
                    claim.error = f"store {self.url!r}: a claim failed: {exc!r}"
                    claim.done = True
            raise

    def _claim_together(self, batch: list[_Claim]) -> None:
        """:meth:`_claim_all`'s work: an error (the store's, or one of a claim's record:
        its JSON nested past the stack, no memory for it) has each claim of a batch made
        again alone, and answers a claim made alone; a ``BaseException`` goes up."""
        first: dict[str, _Claim] = {}
        for claim in batch:
            first.setdefault(claim.run_id, claim)
        try:
            with self._transaction() as db:
                ids = list(first)
                won = [first[run_id] for run_id in _claimable(db, ids)]
                if won:
                    db.execute(
                        _mark_resumed(len(won)),
                        [
                            *(v for c in won for v in (c.run_id, c.by.run_id)),
                            *(c.run_id for c in won),
                        ],
                    )
                    self._insert_runs(db, [c.by for c in won])
        except Exception as exc:  # (not only a StoreError: one claim's fails it alone)
            if len(batch) > 1:
                for claim in batch:
                    self._claim_together([claim])
                return
            batch[0].error = (
                str(exc)
                if isinstance(exc, StoreError)
                else f"store {self.url!r}: a claim failed: {exc!r}"
            )
        else:
            winners = {id(c) for c in won}
            for claim in batch:
                claim.claimed = id(claim) in winners
        for claim in batch:
            claim.done = True

    def request_cancel(self, run_id: str) -> bool:
        with self._writing() as db:
            row = db.execute(_SQL.running_owner, (run_id,)).fetchone()
            if row is None:
                return False
            db.execute(_SQL.insert_cancel, (run_id, row[0]))
            return True

    def take_cancels(self, owner_id: str) -> list[str]:
        with self._reading() as db:  # the common case: nothing asked, no write lock
            if (
                db.execute(
                    "SELECT 1 FROM troupe_cancels WHERE owner = ? LIMIT 1", (owner_id,)
                ).fetchone()
                is None
            ):
                return []
        with self._writing() as db:
            rows = db.execute(
                "SELECT run_id FROM troupe_cancels WHERE owner = ?", (owner_id,)
            ).fetchall()
            db.execute("DELETE FROM troupe_cancels WHERE owner = ?", (owner_id,))
        return [row[0] for row in rows]

    # -- retention -----------------------------------------------------------------
    def delete_ended_before(self, cutoff: float) -> int:
        with self._writing() as db:
            counts = [db.execute(sql, (cutoff,)).rowcount for sql in _SQL.delete_ended_before]
            return int(counts[1])

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check``: ``ok``, or what is wrong."""
        with self._reading() as db:
            return ", ".join(str(row[0]) for row in db.execute("PRAGMA integrity_check"))
