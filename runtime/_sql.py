"""What the SQL stores share: one table of their statements, and the methods that are
the same on both.

Both stores speak the same SQL but for a few dialect bits, which stay in their own
modules: the schema's types, the transactions (SQLite's one writer, ``BEGIN
IMMEDIATE``; PostgreSQL's row locks taken in one order, its pipeline, ``NOTIFY``), and
the statements only one of them needs (``FOR UPDATE``, ``RETURNING``, ``ANY``). Every
statement here is written once with ``{p}`` for a parameter; :meth:`Statements.of`
writes it with the driver's placeholder (``?`` for ``sqlite3``, ``%s`` for psycopg).
"""

from __future__ import annotations

import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol, final

from attrs import fields, frozen

from ._store import (
    OLDEST_WRITER,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    THREAD_COLUMNS,
    Owner,
    RunRecord,
    RunState,
    Store,
    ThreadRecord,
    WriteBatch,
    check_schema,
    dumps,
    message_values,
    messages_from,
    records_from,
    refused_segments,
    run_filters,
    run_from_row,
    storable_text,
    thread_from_row,
)


class Cursor(Protocol):
    """What a statement's answer gives (``sqlite3.Cursor``, ``psycopg.Cursor``)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Executes(Protocol):
    """What runs a statement (``sqlite3.Connection``, ``psycopg.Connection``)."""

    def execute(self, query: Any, params: Any = ..., /) -> Cursor: ...


_RUN_VALUES = ", ".join(["{p}"] * len(RUN_COLUMNS.split(",")))
_CREATE_TABLE: Final = re.compile(r"CREATE TABLE IF NOT EXISTS (\w+)")
_STEP: Final = "SELECT r.run_id FROM troupe_runs r JOIN kept k ON r.resumed_by = k.run_id"
"""``kept``'s recursive step: the runs the runs kept so far resumed, each found through
the index of ``troupe_runs.resumed_by`` (schema 6)."""
_LATERAL_STEP: Final = (
    "SELECT r.run_id FROM kept k CROSS JOIN LATERAL "
    "(SELECT run_id FROM troupe_runs WHERE resumed_by = k.run_id OFFSET 0) r"
)
""":data:`_STEP` as PostgreSQL is told it (``Statements.of(..., lateral=True)``): a lookup
of the index per run kept, whatever the table's statistics say. Written as a join, it
was planned a sort and a merge join per link where they lagged (a table written since
its last ``ANALYZE``): a chain of 1,000 resumes took 4 s, index or not; so, 5 ms
(``OFFSET 0`` keeps the planner from making the lookup a join again)."""
_KEPT: Final = (
    "kept(run_id) AS (SELECT r.run_id FROM troupe_runs r JOIN troupe_runs n "
    "ON n.run_id = r.resumed_by{also} WHERE {keeps} "
    f"UNION {_STEP})"
)
"""The runs kept whatever else says: those a run ``n`` for which ``{keeps}`` holds
resumed, and the ones they resumed, back to the first (a resume's replay, or its
recovery, reads them all)."""
_KEPT_BEFORE: Final = "WITH RECURSIVE cut(at) AS (SELECT {p}), " + _KEPT.replace(
    "{also}", ", cut"
).replace("{keeps}", "n.ended_at IS NULL OR n.ended_at >= cut.at")
"""``kept``, as retention (its one argument the cutoff) keeps runs, and ``cut``."""
_ENDED_BEFORE: Final = (
    _KEPT_BEFORE + " SELECT t.run_id FROM troupe_runs t, cut WHERE t.ended_at IS NOT NULL AND "
    "t.ended_at < cut.at AND t.run_id NOT IN (SELECT run_id FROM kept)"
)
"""The runs that ended before retention's cutoff (its one argument) but those it keeps
whatever their age (see ``_KEPT``: the runs a run it keeps replays)."""
_THREADS_ENDED: Final = (
    "WITH RECURSIVE "
    + _KEPT.replace("{also}", "").replace("{keeps}", "n.status = 'running'")
    + " SELECT t.run_id FROM troupe_runs t WHERE t.thread_id = {p} AND "
    "t.status != 'running' AND t.run_id NOT IN (SELECT run_id FROM kept)"
)
"""The runs of a thread (its one argument) a delete of it deletes: those that ended but
the ones a running run replays (see ``_KEPT``)."""


def tables_of(schema: Iterable[str]) -> frozenset[str]:
    """The tables a store's schema (its ``CREATE`` statements) makes: a store of this
    version has them all (one missing, as in a store made before it was added in
    development, is made)."""
    return frozenset(_CREATE_TABLE.findall("\n".join(schema)))


@final
@frozen
class Statements:
    """The statements both stores run, each with its parameters' placeholders."""

    schema_version: str = (
        "INSERT INTO troupe_meta (key, value) VALUES ({p}, {p}) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
    )
    """Of ``schema_version`` and ``oldest_writer``, each with its value."""
    schema: str = (
        "SELECT key, value FROM troupe_meta WHERE key IN ('schema_version', 'oldest_writer')"
    )
    heartbeat: str = (
        "INSERT INTO troupe_owners (owner_id, host, pid, started_at, seen_at, schema_version) "
        "VALUES ({p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (owner_id) DO UPDATE SET seen_at = "
        "excluded.seen_at"
    )
    owners: str = (
        "SELECT owner_id, host, pid, started_at, seen_at, schema_version FROM troupe_owners"
    )
    older_owners: str = "SELECT owner_id, host, pid, started_at, seen_at FROM troupe_owners"
    """The owners of a store of version 2 or older (its version is their code's)."""
    owners_column: str = (
        "ALTER TABLE troupe_owners ADD COLUMN schema_version INTEGER NOT NULL DEFAULT 2"
    )
    """Version 3's migration (an owner of older code, which does not say, is 2)."""
    forget_owner: str = "DELETE FROM troupe_owners WHERE owner_id = {p}"
    not_seen_since: str = " AND seen_at <= {p}"
    """Appended to :attr:`forget_owner` when the sweep that judged the owner dead
    forgets it (not if it beat since)."""
    insert_run: str = f"INSERT INTO troupe_runs ({RUN_COLUMNS}) VALUES ({_RUN_VALUES})"
    insert_segment: str = (
        "INSERT INTO troupe_segments (root_id, first, count, records) VALUES ({p}, {p}, {p}, {p})"
    )
    set_events: str = "UPDATE troupe_runs SET events = {p} WHERE run_id = {p}"
    end_run: str = (
        "UPDATE troupe_runs SET status = {p}, ended_at = {p}, error = {p} WHERE run_id = {p}"
    )
    fence: str = " AND owner = {p}"
    """Appended to :attr:`set_events` and :attr:`end_run` for a fenced write."""
    not_past: str = " AND events >= {p}"
    """Appended to :attr:`set_events` after :attr:`fence`: a journal's records go on
    from its end, never past it (see :class:`~runtime._store.JournalGapError`). (Not
    ``=``: an attempt that landed though it failed, made again, is the segment's
    duplicate, which the journal recognizes.)"""
    owner_events: str = "SELECT owner, events FROM troupe_runs WHERE run_id = {p}"
    drop_cancel: str = "DELETE FROM troupe_cancels WHERE run_id = {p}"
    insert_messages: str = (
        "INSERT INTO troupe_message_segments (thread_id, first, count, run_id, messages) "
        "VALUES ({p}, {p}, {p}, {p}, {p})"
    )
    version_4_messages: str = (
        "SELECT thread_id, position, run_id, message FROM troupe_messages "
        "ORDER BY thread_id, position"
    )
    """Version 5's migration: the messages of a store of version 4 or older, a row each."""
    drop_version_4_messages: str = "DROP TABLE troupe_messages"
    set_thread_messages: str = (
        "UPDATE troupe_threads SET messages = {p}, updated_at = {p} WHERE thread_id = {p}"
    )
    get_run: str = f"SELECT {RUN_COLUMNS} FROM troupe_runs WHERE run_id = {{p}}"
    list_runs: str = (
        f"SELECT {RUN_COLUMNS} FROM troupe_runs {{where}} "
        "ORDER BY created_at DESC, run_id DESC LIMIT {p}"
    )
    read_records: str = (
        "SELECT first, records FROM troupe_segments WHERE root_id = {p} "
        "AND first + count > {p} ORDER BY first"
    )
    journal_length: str = "SELECT max(first + count) FROM troupe_segments WHERE root_id = {p}"
    take_over: str = (
        "UPDATE troupe_runs SET owner = {p} WHERE run_id = {p} AND owner = {p} AND "
        "status = 'running'"
    )
    still_dead: str = (
        " AND NOT EXISTS (SELECT 1 FROM troupe_owners WHERE owner_id = {p} AND seen_at > {p})"
    )
    """Appended to :attr:`take_over` when the sweep gives when it last heard of the dead
    owner (not if it beat since)."""
    mark_resumed: str = (
        "UPDATE troupe_runs SET resumed_by = {p} WHERE run_id = {p} AND "
        "status = 'paused' AND resumed_by IS NULL"
    )
    running_owner: str = "SELECT owner FROM troupe_runs WHERE run_id = {p} AND status = 'running'"
    insert_cancel: str = (
        "INSERT INTO troupe_cancels (run_id, owner) VALUES ({p}, {p}) "
        "ON CONFLICT (run_id) DO NOTHING"
    )
    create_thread: str = (
        "INSERT INTO troupe_threads (thread_id, created_at, updated_at, metadata) "
        "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (thread_id) DO NOTHING"
    )
    get_thread: str = f"SELECT {THREAD_COLUMNS} FROM troupe_threads WHERE thread_id = {{p}}"
    list_threads: str = (
        f"SELECT {THREAD_COLUMNS} FROM troupe_threads "
        "ORDER BY updated_at DESC, thread_id LIMIT {p}"
    )
    thread_messages: str = (
        "SELECT first, run_id, messages FROM troupe_message_segments WHERE thread_id = {p} "
        "AND first + count > {p} ORDER BY first"
    )
    thread_texts: str = (
        "SELECT first, messages FROM troupe_message_segments WHERE thread_id = {p} "
        "AND first + count > {p} ORDER BY first"
    )
    """:attr:`thread_messages` without the runs that added them (what a run loads)."""
    delete_thread: tuple[str, ...] = (
        "DELETE FROM troupe_threads WHERE thread_id = {p}",
        "DELETE FROM troupe_message_segments WHERE thread_id = {p}",
        f"DELETE FROM troupe_segments WHERE root_id IN ({_THREADS_ENDED})",
        f"DELETE FROM troupe_runs WHERE run_id IN ({_THREADS_ENDED})",
    )
    """Each of one argument (the thread's id); the first deletes the thread (its count
    says whether there was one). The PostgreSQL store runs the first two, then deletes
    the runs of :attr:`thread_ended_runs` by id."""
    thread_ended_runs: str = _THREADS_ENDED
    """Of one argument (the thread's id): the runs a delete of it deletes."""
    kept_ended_before: str = _KEPT_BEFORE + " SELECT run_id FROM kept"
    """Of one argument (retention's cutoff): the runs it keeps whatever their age (see
    ``_KEPT``)."""
    delete_ended_before: tuple[str, ...] = (
        f"DELETE FROM troupe_segments WHERE root_id IN ({_ENDED_BEFORE})",
        f"DELETE FROM troupe_runs WHERE run_id IN ({_ENDED_BEFORE})",
        "DELETE FROM troupe_message_segments WHERE thread_id IN (SELECT thread_id FROM "
        "troupe_threads WHERE updated_at < {p}) AND thread_id NOT IN "
        "(SELECT thread_id FROM troupe_runs WHERE thread_id IS NOT NULL)",
        "DELETE FROM troupe_threads WHERE updated_at < {p} AND thread_id NOT IN "
        "(SELECT thread_id FROM troupe_runs WHERE thread_id IS NOT NULL)",
    )
    """Each of one argument (the cutoff); the second deletes the runs (its count is the
    answer; see ``_ENDED_BEFORE`` for those kept). The PostgreSQL store deletes the
    runs by id instead (the old ones locked, less :attr:`kept_ended_before`), then the
    idle threads with locks of its own (other processes write meanwhile)."""
    placeholder: str = "{p}"

    @classmethod
    def of(cls, placeholder: str, *, lateral: bool = False) -> Statements:
        """The statements with ``placeholder`` for each parameter (and, if ``lateral``,
        the recursive step of the runs retention keeps as :data:`_LATERAL_STEP`)."""

        def made(text: str) -> str:
            text = text.replace("{p}", placeholder)
            return text.replace(_STEP, _LATERAL_STEP) if lateral else text

        written: dict[str, Any] = {}
        for attribute in fields(cls):
            text = attribute.default
            if isinstance(text, tuple):
                written[attribute.name] = tuple(made(t) for t in text)
            else:
                written[attribute.name] = made(str(text))
        return cls(**written)


class SQLStore(Store):
    """The methods both SQL stores run alike, on their :attr:`sql` statements; each
    store gives its transactions (:meth:`_reading`, :meth:`_writing`,
    :meth:`_one_write`)."""

    sql: Statements
    tables: frozenset[str]
    """The tables its schema makes (:func:`tables_of`)."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Executes]:
        """A connection to read with (a consistent view while it is held)."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Executes]:
        """A transaction to write in (committed when it is left without an error)."""

    def _snapshot(self) -> AbstractContextManager[Executes]:
        """A connection whose statements all read one snapshot of the store (for a read
        of several statements): :meth:`_reading`, unless that gives each statement its
        own view (the PostgreSQL store's, autocommit)."""
        return self._reading()

    def _one_write(self) -> AbstractContextManager[Executes]:
        """Where one statement writes (a transaction of its own)."""
        return self._writing()

    def _beating(self, reading: bool) -> AbstractContextManager[Executes]:
        """Where the heartbeat writes the owner's record (:meth:`heartbeat`) and reads
        the schema's version (``reading``; :meth:`schema`): as any other call, unless
        the store's calls may queue for a connection (see the PostgreSQL store)."""
        return self._reading() if reading else self._one_write()

    def _segments_updates(self, batch: WriteBatch) -> tuple[str, list[tuple[Any, ...]]]:
        """The statement that updates ``batch``'s segments' runs (their record count),
        and its parameters, one tuple per segment: fenced if the batch has an owner
        (each run the writer's, its journal going on from its end)."""
        sql = self.sql
        if batch.owner is None:
            return sql.set_events, [(s.first + len(s.records), s.root_id) for s in batch.segments]
        return sql.set_events + sql.fence + sql.not_past, [
            (s.first + len(s.records), s.root_id, batch.owner, s.first) for s in batch.segments
        ]

    def _segments_fenced(self, db: Executes, batch: WriteBatch, updated: int) -> None:
        """Raise why a fenced write's update of its segments' runs (:attr:`~Statements.fence`,
        :attr:`~Statements.not_past`) changed only ``updated`` of them, read in its
        transaction ``db`` (see :func:`refused_segments`)."""

        def held(run_id: str) -> tuple[str, int] | None:
            row = db.execute(self.sql.owner_events, (run_id,)).fetchone()
            return None if row is None else (row[0], int(row[1]))

        refused_segments(self.url, batch, updated, held)

    def schema(self) -> tuple[int, int]:
        with self._beating(True) as db:
            found = {key: int(value) for key, value in db.execute(self.sql.schema, ()).fetchall()}
        version = found.get("schema_version", SCHEMA_VERSION)
        return version, found.get("oldest_writer", version)

    def _prepare_schema(
        self,
        db: Executes,
        tables: set[str],
        owner_columns: set[str],
        make: Callable[[Executes], None],
        start_anew: str,
    ) -> None:
        """Make, migrate or check the schema, in the transaction ``db`` that holds the
        store alone: ``tables`` are Troupe's that it has, ``owner_columns`` those of its
        ``troupe_owners``; ``make`` makes every table that is missing."""
        meta: dict[str, int] = {}
        if "troupe_meta" in tables:
            meta = {key: int(value) for key, value in db.execute(self.sql.schema, ()).fetchall()}
        version = meta.get("schema_version")
        owners: list[Owner] = []
        if version is not None and version < SCHEMA_VERSION and "troupe_owners" in tables:
            if "schema_version" in owner_columns:
                owners = [Owner(*row) for row in db.execute(self.sql.owners, ()).fetchall()]
            else:  # older than version 3: its owners' code is its version
                rows = db.execute(self.sql.older_owners, ()).fetchall()
                owners = [Owner(r[0], r[1], r[2], r[3], r[4], version) for r in rows]
        if not check_schema(
            self.url,
            version,
            meta.get("oldest_writer"),
            tables,
            start_anew,
            owners,
            time.time(),
        ):
            return  # newer, and it takes this version's writes: as it is
        if version == SCHEMA_VERSION and tables >= self.tables:
            return  # nothing to make (and no CREATE privilege needed)
        make(db)
        if "troupe_messages" in tables:  # version 4 or older
            gather_messages(db, self.sql)
        if "troupe_owners" in tables and "schema_version" not in owner_columns:
            db.execute(self.sql.owners_column, ())
            if version is not None and version < 2:  # its owners' code is version 1
                db.execute("UPDATE troupe_owners SET schema_version = 1", ())
        db.execute(self.sql.schema_version, ("schema_version", str(SCHEMA_VERSION)))
        db.execute(self.sql.schema_version, ("oldest_writer", str(OLDEST_WRITER)))

    # -- owners --------------------------------------------------------------------
    def heartbeat(self, owner: Owner) -> None:
        with self._beating(False) as db:
            db.execute(
                self.sql.heartbeat,
                (
                    owner.owner_id,
                    storable_text(owner.host),
                    owner.pid,
                    owner.started_at,
                    owner.seen_at,
                    owner.schema,
                ),
            )

    def owners(self) -> list[Owner]:
        with self._reading() as db:
            rows = db.execute(self.sql.owners, ()).fetchall()
        return [Owner(*row) for row in rows]

    def forget_owner(self, owner_id: str, *, seen_at: float | None = None) -> None:
        with self._one_write() as db:
            if seen_at is None:
                db.execute(self.sql.forget_owner, (owner_id,))
            else:
                db.execute(self.sql.forget_owner + self.sql.not_seen_since, (owner_id, seen_at))

    # -- the journal ---------------------------------------------------------------
    def get_run(self, run_id: str) -> RunRecord | None:
        with self._reading() as db:
            row = db.execute(self.sql.get_run, (run_id,)).fetchone()
        return None if row is None else run_from_row(row)

    def list_runs(
        self,
        *,
        thread_id: str | None = None,
        status: RunState | None = None,
        owner: str | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        clause, args = run_filters(self.sql.placeholder, thread_id, status, owner)
        with self._reading() as db:
            rows = db.execute(
                self.sql.list_runs.replace("{where}", clause), (*args, max(0, limit))
            ).fetchall()
        return [run_from_row(row) for row in rows]

    def read_records(self, root_id: str, start: int = 0) -> list[Any]:
        with self._reading() as db:
            rows = db.execute(self.sql.read_records, (root_id, start)).fetchall()
        return records_from(rows, start)

    def journal_length(self, root_id: str) -> int:
        with self._reading() as db:
            row = db.execute(self.sql.journal_length, (root_id,)).fetchone()
        return int(row[0] or 0) if row is not None else 0

    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        with self._one_write() as db:
            if seen_at is None:
                taken = db.execute(self.sql.take_over, (owner, run_id, dead_owner))
            else:
                taken = db.execute(
                    self.sql.take_over + self.sql.still_dead,
                    (owner, run_id, dead_owner, dead_owner, seen_at),
                )
            return taken.rowcount == 1

    # -- threads -------------------------------------------------------------------
    def create_thread(self, thread: ThreadRecord) -> bool:
        with self._one_write() as db:
            created = db.execute(
                self.sql.create_thread,
                (thread.thread_id, thread.created_at, thread.updated_at, dumps(thread.metadata)),
            )
            return created.rowcount == 1

    def get_thread(self, thread_id: str) -> ThreadRecord | None:
        with self._reading() as db:
            row = db.execute(self.sql.get_thread, (thread_id,)).fetchone()
        return None if row is None else thread_from_row(row)

    def list_threads(self, *, limit: int = 100) -> list[ThreadRecord]:
        with self._reading() as db:
            rows = db.execute(self.sql.list_threads, (max(0, limit),)).fetchall()
        return [thread_from_row(row) for row in rows]

    def thread_messages(self, thread_id: str, start: int = 0) -> list[tuple[str, Any]]:
        with self._reading() as db:
            rows = db.execute(self.sql.thread_messages, (thread_id, start)).fetchall()
        return messages_from(rows, start)

    def read_thread(self, thread_id: str, start: int = 0) -> tuple[ThreadRecord | None, list[Any]]:
        with self._snapshot() as db:
            row = db.execute(self.sql.get_thread, (thread_id,)).fetchone()
            if row is None:
                return None, []
            rows = db.execute(self.sql.thread_texts, (thread_id, start)).fetchall()
        return thread_from_row(row), message_values(rows, start)

    def thread_history(
        self, thread_id: str, runs: int
    ) -> tuple[ThreadRecord | None, list[tuple[str, Any]], list[RunRecord]]:
        clause, args = run_filters(self.sql.placeholder, thread_id, None, None)
        with self._snapshot() as db:
            row = db.execute(self.sql.get_thread, (thread_id,)).fetchone()
            if row is None:
                return None, [], []
            rows = db.execute(self.sql.thread_messages, (thread_id, 0)).fetchall()
            listed = db.execute(
                self.sql.list_runs.replace("{where}", clause), (*args, max(0, runs))
            ).fetchall()
        return thread_from_row(row), messages_from(rows, 0), [run_from_row(r) for r in listed]

    def delete_thread(self, thread_id: str) -> bool:
        with self._writing() as db:
            counts = [db.execute(sql, (thread_id,)).rowcount for sql in self.sql.delete_thread]
            return counts[0] == 1


def message_row(
    thread_id: str, first: int, run_id: str, messages: Sequence[Any]
) -> tuple[str, int, int, str, str]:
    """The row of the ``messages`` a run adds to a thread from position ``first``."""
    return (thread_id, first, len(messages), run_id, dumps(list(messages)))


def gather_messages(db: Executes, sql: Statements) -> None:
    """Version 5's migration, in the transaction ``db`` that holds the store alone: the
    messages of ``troupe_messages`` (a row each, as version 4 and older wrote them) made
    rows of ``troupe_message_segments``, one per run that added them (each message's
    JSON text as it was, so that it reads back the same), and that table dropped."""
    segments: list[tuple[str, int, str, list[str]]] = []
    for thread_id, position, run_id, text in db.execute(sql.version_4_messages, ()).fetchall():
        if segments:
            last_thread, first, last_run, texts = segments[-1]
            if (last_thread, last_run, first + len(texts)) == (thread_id, run_id, position):
                texts.append(text)
                continue
        segments.append((thread_id, position, run_id, [text]))
    for thread_id, first, run_id, texts in segments:
        db.execute(
            sql.insert_messages, (thread_id, first, len(texts), run_id, f"[{','.join(texts)}]")
        )
    db.execute(sql.drop_version_4_messages, ())
