"""Hostile review of multi-process (issue 30): sweeps, heartbeats, schema v3, run ids
sent once journaled, no NOTIFY from a lone process."""

from __future__ import annotations

import sqlite3
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import trio

import runtime._journal as journal_module
from actors._demo import make_cat_agent
from runtime import RunCancelledError, StoreError, open_runtime
from runtime._journal import Journal
from runtime._sqlite_store import SQLiteStore
from runtime._store import SCHEMA_VERSION, Owner, WriteBatch
from runtime._stored import JoinedStream

from .postgres import Cluster
from .sse_client import serving
from .test_checkpoints import Chunks
from .test_hosted import Slow, _until_journaled

try:
    from runtime._postgres_store import PostgresStore
except ImportError:  # the PostgreSQL tests skip, saying what to install
    PostgresStore = None  # type: ignore[assignment,misc]

QUESTION = {"input": "where is the cat?"}


class _NoNewRuns(SQLiteStore):
    """A store that refuses every write that makes a run's record (a disk full)."""

    def write(self, batch: WriteBatch) -> None:
        if batch.runs:
            raise StoreError(f"store {self.url!r}: database or disk is full")
        super().write(batch)


@pytest.mark.parametrize("path", ["/runs", "/runs/stream"])
async def test_a_run_whose_record_cannot_be_written_is_a_503_not_an_id_nobody_finds(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run id is answered once its record is journaled; when that write fails the
    request is a 503 naming the store's error, not an id that no process finds."""
    monkeypatch.setattr(journal_module, "WRITE_RETRIES", (0.01,))
    store = _NoNewRuns(f"sqlite:///{tmp_path}/runs.db")
    body: dict[str, Any] = {**QUESTION, "detached": True} if path == "/runs" else QUESTION
    async with serving(make_cat_agent(), store=store) as served:
        got = await served.client.post(path, json=body)
        assert got.status_code == 503, (got.status_code, got.headers, got.text[:300])
        assert "disk is full" in got.json()["error"]
        server = served.app.state.troupe
        with trio.fail_after(10):
            while server.runs.live():  # noqa: ASYNC110
                await trio.sleep(0.01)  # the run the journal could not keep ends


@pytest.mark.postgres
async def test_a_lone_process_that_ends_an_orphan_wakes_its_own_joins_of_it(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process alone on PostgreSQL sends no NOTIFY (nobody else would hear it). Its
    own joins that wait for a run's journal in the store (a run of another process,
    now dead) heard its writes through that NOTIFY too: when its sweep ends the orphan,
    they must still hear of it then, not after the fallback look (here 30 s)."""
    monkeypatch.setattr(journal_module, "HEARD_FALLBACK_SECONDS", 30.0)
    url = postgres_cluster.new_database()
    direct = PostgresStore(url)
    direct.open()
    got: list[Any] = []
    async with open_runtime(store=url) as dying, dying.astream_events(Slow(), 1) as stream:
        async for event in stream:
            if event.chunk == "first":
                break
        dead = dying.journal
        assert dead is not None
        await _until_journaled(dying, stream.run_id)
        # to the lone process, the run's owner is another machine's, a minute silent
        journal_module._LIVE_OWNERS.discard(dead.owner.owner_id)
        old = time.time() - 60
        direct.forget_owner(dead.owner.owner_id)
        direct.heartbeat(Owner(dead.owner.owner_id, "another-host", 1, old, old))
        lone = Journal(PostgresStore(url), heartbeat=1.0, lease=1.0)
        await lone.open()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lone.serve)
                with trio.fail_after(10):
                    while not lone.hearing:  # noqa: ASYNC110
                        await trio.sleep(0.01)

                def start(fn: Any, *args: Any, name: str | None = None) -> None:
                    nursery.start_soon(fn, *args)

                async with JoinedStream(lone, start, stream.run_id) as joined:
                    with trio.fail_after(10):  # the sweep ends it a beat from now
                        got.extend([event async for event in joined])
                lone.recorder.close()
        finally:
            journal_module._LIVE_OWNERS.add(dead.owner.owner_id)
            direct.close()
            with suppress(Exception):
                stream.cancel()
    assert got[-1].status == "error" and got[-1].run_id == stream.run_id


async def test_a_store_newer_at_open_is_said_once_not_again_as_migrated_meanwhile(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store a newer Troupe made, which takes this version's writes, is used as it is,
    with one warning at open; the heartbeat's look at the schema finds it as it was,
    and does not say it "was migrated" since (nothing changed)."""
    url = f"sqlite:///{tmp_path}/runs.db"
    SQLiteStore(url).open()
    newer = SCHEMA_VERSION + 1
    with sqlite3.connect(tmp_path / "runs.db") as db:
        db.execute("UPDATE troupe_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
    journal = Journal(SQLiteStore(url), heartbeat=0.05)
    with caplog.at_level("WARNING", logger="troupe"):
        await journal.open()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.serve)
            await trio.sleep(0.5)  # several beats
            journal.recorder.close()
    said = [r.getMessage() for r in caplog.records if "newer" in r.getMessage()]
    assert len(said) == 1, said
    assert "used as it is" in said[0]


class Ticks(Chunks):
    """Emits a chunk every 20 ms until cancelled."""

    async def perform(self, message: int, run: Any) -> int:
        tick = 0
        while True:
            await run.emit(tick)
            tick += 1
            await trio.sleep(0.02)


@pytest.mark.postgres
async def test_a_process_coming_while_a_lone_one_stops_telling_hears_its_writes(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process alone stops sending NOTIFY at a sweep; a second comes, again and again,
    at any moment of that sweep (and no later sweep of the first's sees it): each time
    its join of the first's live run hears each write at once (never the fallback
    look, 30 s here)."""
    monkeypatch.setattr(journal_module, "HEARD_FALLBACK_SECONDS", 30.0)
    defaults = Journal.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "heartbeat", 3600.0)  # its sweeps are the test's
    url = postgres_cluster.new_database()
    async with open_runtime(store=url) as lone, lone.astream_events(Ticks(), 0) as stream:
        journal = lone.journal
        assert journal is not None
        with trio.fail_after(10):
            while not journal.hearing:  # noqa: ASYNC110
                await trio.sleep(0.005)

        async def drain() -> None:
            with suppress(RunCancelledError):
                async for _ in stream:
                    pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            for attempt in range(16):
                await journal.sweep()
                assert not journal.store.telling  # alone
                swept = trio.Event()

                async def sweep_after(delay: float, swept: trio.Event = swept) -> None:
                    await trio.sleep(delay)
                    await journal.sweep()
                    swept.set()

                nursery.start_soon(sweep_after, attempt * 0.003)
                coming = await nursery.start(_opened_runtime, url)
                await swept.wait()  # (its last sweep for a while: the test's)
                async with coming.join(stream.run_id) as joined:
                    with trio.fail_after(5):
                        for _ in range(10):  # ticks are 20 ms apart
                            await joined.__anext__()
                coming.close.set()
                await coming.closed.wait()
            stream.cancel()


class _Opened:
    def __init__(self, rt: Any) -> None:
        self.rt = rt
        self.close = trio.Event()
        self.closed = trio.Event()

    def join(self, run_id: str) -> Any:
        return self.rt.join(run_id)


async def _opened_runtime(url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """A runtime on ``url`` until its ``close`` is set (started as a task, for a test
    that races its opening with something else)."""
    async with open_runtime(store=url) as rt:
        opened = _Opened(rt)
        task_status.started(opened)
        await opened.close.wait()
    opened.closed.set()


@pytest.mark.postgres
async def test_a_lone_process_whose_sweep_finds_an_unheard_newcomer_tells_every_run(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process alone stops sending NOTIFY; a second comes, and its arrival is lost
    (its ``NOTIFY troupe_owner`` never sent): the first's next sweep sees it, and tells
    of every run at once, as on an arrival heard (the newcomer's joins read the store
    again rather than wait for their fallback look)."""
    from runtime._store import EVERY_RUN, JOURNAL_CHANGED, OWNER_CAME

    assert PostgresStore is not None
    defaults = Journal.__init__.__kwdefaults__
    assert defaults is not None
    monkeypatch.setitem(defaults, "heartbeat", 3600.0)  # its sweeps are the test's
    url = postgres_cluster.new_database()
    listener = PostgresStore(url)
    listener.open()
    changes = listener.changes()
    tell = PostgresStore.tell

    def lost_arrival(store: Any, kind: str, key: str) -> None:
        if kind != OWNER_CAME:
            tell(store, kind, key)

    try:
        async with open_runtime(store=url) as lone:
            journal = lone.journal
            assert journal is not None
            with trio.fail_after(10):
                while not journal.hearing:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            await journal.sweep()
            assert not journal.store.telling  # alone
            monkeypatch.setattr(PostgresStore, "tell", lost_arrival)
            async with open_runtime(store=url):
                await trio.sleep(0.2)
                changes.take()  # what was heard until now
                assert not journal.store.telling  # the arrival was not heard
                await journal.sweep()
                assert _telling(journal)
                await trio.sleep(0.2)  # (delivered)
                assert (JOURNAL_CHANGED, EVERY_RUN) in changes.take()
    finally:
        changes.close()
        listener.close()


def _telling(journal: Journal) -> bool:
    """Whether the journal's writes tell other processes (``NOTIFY``) now."""
    return journal.store.telling
