"""Which journal writes are synced to disk: those that hold what must survive a power
cut (a run's record, a root run's end, the end of a request replay answers that may
have acted: a tool's call), and no others (``WriteBatch.sync``); every write is
committed. Checked against what each database had in effect when the transaction
committed (SQLite's ``PRAGMA synchronous``, PostgreSQL's ``synchronous_commit``), on
both stores. The PostgreSQL cases are marked ``postgres`` (see
``tests/test_store_contract.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import CompactDecoder
from runtime import open_runtime
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, RunRecord, Segment, Store, StoreError, WriteBatch

from .postgres import Cluster

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _synced(setting: Any) -> bool:
    """Whether a commit under ``setting`` is synced: SQLite's ``synchronous`` FULL (2)
    or EXTRA (3); PostgreSQL's ``synchronous_commit`` anything but ``off``."""
    return setting >= 2 if isinstance(setting, int) else setting not in ("off", "local_off")


class _Spy:
    """Records each journal write: the batch, and the setting that its transaction
    committed under (read in the transaction, after everything else in it; on
    PostgreSQL, a write sent at once too)."""

    def _init_spy(self, slow_ends: float) -> None:
        self.slow_ends = slow_ends
        self.writes: list[tuple[WriteBatch, Any]] = []
        self.settings: list[Any] = []  # of every transaction of ``_writing``
        self._last = threading.local()

    def _seen(self, setting: Any) -> None:
        self.settings.append(setting)
        self._last.setting = setting

    def _spied(self, batch: WriteBatch, write: Any) -> None:
        if batch.ends and self.slow_ends:
            time.sleep(self.slow_ends)  # a caller that did not wait would be early
        self._last.setting = None
        write(batch)
        self.writes.append((batch, self._last.setting))


class SpySQLite(_Spy, SQLiteStore):
    def __init__(self, url: str, slow_ends: float = 0.0) -> None:
        super().__init__(url)
        self._init_spy(slow_ends)

    @contextmanager
    def _writing(self, sync: bool = True) -> Iterator[Any]:
        with super()._writing(sync) as db:
            yield db
            self._seen(db.execute("PRAGMA synchronous").fetchone()[0])

    def write(self, batch: WriteBatch) -> None:
        self._spied(batch, super().write)


def _spy(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    slow_ends: float = 0.0,
    query: str = "",
) -> Any:
    if kind == "sqlite":
        return SpySQLite(f"sqlite:///{tmp_path / 'runs.db'}", slow_ends)
    from runtime._postgres_store import PostgresStore

    class SpyPostgres(_Spy, PostgresStore):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self._init_spy(slow_ends)

        @contextmanager
        def _writing(self) -> Iterator[Any]:
            with super()._writing() as db:
                yield db
                row = db.execute("SHOW synchronous_commit").fetchone()
                assert row is not None
                self._seen(row[0])

        def _send(self, connection: Any, sent: Any) -> Any:
            # (a write sent at once, BEGIN to COMMIT: the setting kept for the session
            # just before its COMMIT, read after it)
            spy = b"SELECT set_config('troupe.spy', current_setting('synchronous_commit'), false)"
            failed = super()._send(connection, [*sent[:-1], (spy, (), ()), sent[-1]])
            if failed is None:  # (else rolled back: made again in steps, or failed)
                row = connection.execute("SHOW troupe.spy").fetchone()
                assert row is not None
                self._seen(row[0])
            return failed

        def write(self, batch: WriteBatch) -> None:
            self._spied(batch, super().write)

    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return SpyPostgres(cluster.new_database() + query)


def _agent(tokens: int) -> Agent:
    """A tool call, then an answer of ``tokens`` tokens streamed over a while (so that
    writes of tokens alone are made meanwhile)."""

    @tool
    async def look(n: int) -> str:
        """Look."""
        return f"looked {n}"

    turns = [
        ScriptedTurn(tool_calls=[ScriptedCall("look", {"n": 1}, id="l1")]),
        ScriptedTurn(tokens=tuple(f" t{i}" for i in range(tokens)), token_delay=0.002),
    ]
    return Agent(model=ScriptedChatModel(turns), tools=[look], name="looker")


def _must_sync(batch: WriteBatch, decoders: dict[str, CompactDecoder]) -> bool:
    """What the promise says of ``batch``: a run's record, a root run's end, or the end
    of a run that is not a model's turn (decoded from its segments, in write order)."""
    promised = bool(batch.runs or batch.ends)
    for segment in batch.segments:
        decoder = decoders.setdefault(segment.root_id, CompactDecoder())
        for record in segment.records:
            event = decoder.decode(record)
            if event is not None and event.status is not None and event.run.parent_ids:
                promised |= event.run.kind != "chat_model"
    return promised


@pytest.mark.parametrize("kind", KINDS)
async def test_only_writes_that_hold_what_must_survive_a_power_cut_are_synced(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _spy(kind, request, tmp_path)
    async with open_runtime(store=store) as rt:
        await rt.ainvoke(_agent(150), "look", run_id="run")
    decoders: dict[str, CompactDecoder] = {}
    promised = [_must_sync(batch, decoders) for batch, _ in store.writes]
    assert [batch.sync for batch, _ in store.writes] == promised
    assert [_synced(setting) for _, setting in store.writes] == promised
    # the tool's end was written, synced, before the run's end; tokens alone were not
    tool_end = next(i for i, (b, _) in enumerate(store.writes) if not b.runs and promised[i])
    assert not store.writes[tool_end][0].ends
    assert False in promised[tool_end:], "no write of tokens alone: the answer streamed too fast"


@pytest.mark.parametrize("kind", KINDS)
async def test_a_run_s_end_is_synced_before_ainvoke_returns(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store = _spy(kind, request, tmp_path, slow_ends=0.2)
    async with open_runtime(store=store) as rt:
        await rt.ainvoke(_agent(5), "look", run_id="run")
        ends = [(b, s) for b, s in store.writes if any(e.run_id == "run" for e in b.ends)]
        assert len(ends) == 1  # written (and its transaction committed) already
        batch, setting = ends[0]
        assert batch.sync and _synced(setting)


def _batch(sync: bool, first: int = 0, run: bool = False) -> WriteBatch:
    return WriteBatch(
        runs=[RunRecord("r", "p", "chain", created_at=1.0)] if run else (),
        segments=[Segment("r", first, [[0, first, "x"]])],
        sync=sync,
    )


@pytest.mark.parametrize(
    ("query", "settings"),
    [
        ("", [2, 1, 2, 2]),  # selective (the default): as each write asks; others synced
        ("?synchronous=selective", [2, 1, 2, 2]),
        ("?synchronous=full", [2, 2, 2, 2]),
        ("?synchronous=extra", [3, 3, 3, 3]),
        ("?synchronous=normal", [1, 1, 1, 1]),
    ],
)
def test_sqlite_syncs_what_its_url_says(tmp_path: Path, query: str, settings: list[int]) -> None:
    store = SpySQLite(f"sqlite:///{tmp_path / 'runs.db'}{query}")
    store.open()
    try:
        store.write(_batch(True, run=True))
        store.write(_batch(False, 1))
        with store._writing() as db:  # any other write (a heartbeat, a claim): synced
            db.execute("SELECT 1")
        store.write(_batch(True, 2))
        assert store.settings == settings
        assert len(store.read_records("r")) == 3  # every write committed
    finally:
        store.close()


def test_a_sqlite_url_with_another_synchronous_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="synchronous must be selective, full, normal or extra"):
        SQLiteStore(f"sqlite:///{tmp_path / 'runs.db'}?synchronous=off")


@pytest.mark.postgres
def test_postgres_commits_an_unsynced_write_asynchronously_and_that_alone(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    store: Store = _spy("postgres", request, tmp_path)
    store.open()
    try:
        store.write(_batch(True, run=True))
        store.write(_batch(False, 1))
        store.write(_batch(True, 2))
        store.write(WriteBatch(ends=[RunEnd("r", "ok", 2.0)], sync=False))
        # SET LOCAL: the next transaction on the connection is as the server says
        assert store.settings == ["on", "off", "on", "off"]  # type: ignore[attr-defined]
        assert len(store.read_records("r")) == 3
        assert store.get_run("r").status == "ok"  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("query", "settings"),
    [("?synchronous=selective", ["on", "off", "on"]), ("?synchronous=FULL", ["on", "on", "on"])],
)
def test_postgres_syncs_what_its_url_says(
    request: pytest.FixtureRequest, tmp_path: Path, query: str, settings: list[str]
) -> None:
    store: Store = _spy("postgres", request, tmp_path, query=query)
    store.open()  # (libpq never sees the parameter: it would refuse it)
    try:
        store.write(_batch(True, run=True))
        store.write(_batch(False, 1))
        store.write(_batch(True, 2))
        assert store.settings == settings  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_postgres_url_with_another_synchronous_is_refused(postgres_cluster: Cluster) -> None:
    from runtime._postgres_store import PostgresStore

    with pytest.raises(StoreError, match="synchronous must be selective or full"):
        PostgresStore(postgres_cluster.new_database() + "?sslmode=disable&synchronous=normal")
