"""Promise 8 for the stores: closing is bounded even when the database holds a call up.

A PostgreSQL database can hold a statement up for ever (another session's lock, a
network that drops packets silently): a read a client left, or the heartbeat, must not
keep the closing runtime waiting, and the store's connections carry a statement
timeout and TCP keepalives, unless the URL sets its own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import trio

from actors.testing import hang_watchdog
from runtime._journal import Journal
from runtime._reads import CLOSE_WAIT, READ_THREADS, LeavableReads
from runtime._store import RunRecord, StoreError, WriteBatch
from tests.postgres import Cluster

RESCUE = 60.0
"""Seconds after which the test lets the locks go itself (closing did not return)."""


async def test_closing_the_reads_waits_for_a_read_under_way_a_bounded_time() -> None:
    """A read the store holds up past ``wait`` does not keep closing waiting: it ends
    later, its answer to nobody; a read after closing is refused."""
    reads = LeavableReads()
    began, release = threading.Event(), threading.Event()
    ended: list[str] = []

    def stuck() -> None:
        began.set()
        release.wait(30)
        ended.append("read")

    with trio.move_on_after(0.5):  # its reader leaves
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reads.read, stuck)
            await trio.to_thread.run_sync(began.wait, 10)
            await trio.sleep_forever()
    start = time.monotonic()
    await trio.to_thread.run_sync(reads.close, 0.2)
    took = time.monotonic() - start
    assert 0.2 <= took < 5, took
    with pytest.raises(StoreError, match="closed"):
        await reads.read(stuck)
    release.set()  # the left read ends, after closing, without harm
    for _ in range(100):
        if ended:
            break
        await trio.sleep(0.05)
    assert ended == ["read"]


@pytest.mark.postgres
async def test_closing_is_bounded_while_postgresql_holds_left_reads_and_the_heartbeat_up(
    postgres_cluster: Cluster,
) -> None:
    import psycopg

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    # The left reads hold every connection of the pool: the closing journal's own calls
    # (its services', its sign-off's) wait ``timeout`` for one, then make their own.
    store = PostgresStore(url, timeout=1.0)
    journal = Journal(store, heartbeat=0.05, lease=10.0)
    await journal.open()
    rescued = threading.Event()
    with hang_watchdog(RESCUE + 60, "bounded close on postgres"):
        with psycopg.connect(url) as locker:  # a transaction open: the tables stay locked
            # the left reads' table, and the heartbeat's schema read's
            locker.execute("LOCK TABLE troupe_threads, troupe_meta IN ACCESS EXCLUSIVE MODE")

            def rescue() -> None:  # closing did not return: the test ends all the same
                if not closed.wait(RESCUE):
                    rescued.set()
                    locker.cancel_safe()
                    locker.rollback()

            closed = threading.Event()
            rescuer = threading.Thread(target=rescue, daemon=True)
            rescuer.start()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.serve)
                with trio.move_on_after(0.3):  # reads their clients left, held up
                    async with trio.open_nursery() as readers:
                        for _ in range(READ_THREADS):
                            readers.start_soon(journal.reads.read, journal.store.list_threads)
                await trio.sleep(0.3)  # a beat under way, held up
                start = trio.current_time()
                journal.recorder.close()
            took = trio.current_time() - start
            closed.set()
            assert not rescued.is_set()
            # the left reads' CLOSE_WAIT, and three calls' wait of 1 s for the pool
            # (measured 8.6 s with the whole suite running beside it); before, closing
            # waited until the locks went
            assert took < CLOSE_WAIT + 10, took
            with pytest.raises(StoreError, match="is closed"):
                store.schema()
            locker.rollback()
        # the left calls end against the closed store: the heartbeat's connection is
        # closed by its beat as it ends
        for _ in range(100):
            if store._beat is None:
                break
            await trio.sleep(0.05)
        assert store._beat is None


def _shown(connection: Any, setting: str) -> str:
    row = connection.execute(f"SHOW {setting}").fetchone()
    assert row is not None
    return str(row[0])


def _given(connection: Any) -> dict[str, str]:
    return {o.keyword.decode(): (o.val or b"").decode() for o in connection.pgconn.info}


def settings_seen(url: str, *settings: str) -> dict[str, str]:
    """The server's ``settings`` as a PostgreSQL store on ``url`` sees them (a read of
    its pool's)."""
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(url)
    store.open()
    try:
        with store._reading() as connection:
            return {setting: _shown(connection, setting) for setting in settings}
    finally:
        store.close()


@pytest.mark.postgres
def test_postgresql_connections_have_a_statement_timeout_and_keepalives(
    postgres_cluster: Cluster,
) -> None:
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(postgres_cluster.url())
    store.open()
    try:
        with store._reading() as connection:
            assert _shown(connection, "statement_timeout") == "5min"
            given = _given(connection)
        assert given["keepalives"] == "1"
        assert given["keepalives_idle"] == "30"
        assert given["tcp_user_timeout"] == "60000"
        with store._beating(True) as connection:
            assert _shown(connection, "statement_timeout") == "5min"
            # but a migration is not cut: its transaction says so
            with connection.transaction():
                store._prepare(connection)
                assert _shown(connection, "statement_timeout") == "0"
            assert _shown(connection, "statement_timeout") == "5min"
    finally:
        store.close()


@pytest.mark.postgres
def test_the_urls_own_timeouts_and_options_are_kept(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.url()
    options = "options=-c%20statement_timeout%3D1234%20-c%20lock_timeout%3D77"
    store = PostgresStore(f"{url}?{options}&keepalives_idle=7&synchronous=full")
    store.open()
    try:
        with store._reading() as connection:
            assert _shown(connection, "statement_timeout") == "1234ms"
            assert _shown(connection, "lock_timeout") == "77ms"
            assert _given(connection)["keepalives_idle"] == "7"
    finally:
        store.close()
    # PGOPTIONS (read by libpq only where no options are given) is kept beside ours
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=88")
    assert settings_seen(url, "lock_timeout", "statement_timeout") == {
        "lock_timeout": "88ms",
        "statement_timeout": "5min",
    }


@pytest.mark.postgres
def test_a_statement_timeout_the_database_has_is_kept(postgres_cluster: Cluster) -> None:
    # A DBA's statement_timeout (ALTER DATABASE/ROLE ... SET, or the server's own
    # configuration) is below a client's startup options: the store's default, given
    # as one, would override it. The store gives none where the database has one.
    import psycopg

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    with psycopg.connect(url, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(f'ALTER DATABASE "{name[0]}" SET statement_timeout = 4321')
    store = PostgresStore(url)
    store.open()
    try:
        with store._reading() as connection:
            assert _shown(connection, "statement_timeout") == "4321ms"
        with store._beating(True) as connection:
            assert _shown(connection, "statement_timeout") == "4321ms"
    finally:
        store.close()


@pytest.mark.postgres
def test_a_write_the_database_holds_past_its_timeout_fails_as_a_store_failure(
    postgres_cluster: Cluster,
) -> None:
    import psycopg

    from runtime._postgres_store import PostgresStore

    url = postgres_cluster.new_database()
    store = PostgresStore(f"{url}?options=-c%20statement_timeout%3D300")
    store.open()
    try:
        run = RunRecord("r1", "cat", "chain", created_at=time.time())
        with psycopg.connect(url) as locker:
            locker.execute("LOCK TABLE troupe_runs IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(StoreError, match=r"a write failed: .*statement timeout"):
                store.write(WriteBatch(runs=[run]))
            locker.rollback()
        assert store.get_run("r1") is None  # nothing half written
        store.write(WriteBatch(runs=[run]))  # the next write, the lock gone, is kept
        got = store.get_run("r1")
        assert got is not None and got.run_id == "r1"
    finally:
        store.close()


@pytest.mark.postgres
def test_an_older_libpq_is_not_given_tcp_user_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # libpq 11 and older refuse an option they do not know ("invalid connection option"):
    # a psycopg built against such a system's libpq could not connect at all.
    import psycopg

    from runtime._postgres_store import PostgresStore

    store = PostgresStore("postgresql://localhost/troupe")
    assert store._connect_options()["tcp_user_timeout"] == 60_000
    monkeypatch.setattr(psycopg.pq, "version", lambda: 110_000)
    options = store._connect_options()
    assert "tcp_user_timeout" not in options
    assert options["keepalives_idle"] == 30
    given = PostgresStore("postgresql://localhost/troupe?tcp_user_timeout=5000")
    assert "tcp_user_timeout" not in given._connect_options()  # the URL's goes to libpq
