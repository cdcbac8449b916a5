"""PostgreSQL's journal write in one round trip (``runtime/_postgres_store.py``): the
statements of a write sent whole in one pipeline, their parameters in PostgreSQL's binary
format made by the store itself, the fence checked by the statements, and the pool's
check of a connection without a round trip. Every path of it, against a throwaway
cluster (``tests/postgres.py``); the store contract (``tests/test_store_contract.py``)
holds for it as for every store."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import pytest

from runtime._store import (
    FencedError,
    JournalGapError,
    RunEnd,
    RunRecord,
    Segment,
    StoreError,
    WriteBatch,
)

from .postgres import Cluster

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(postgres_cluster: Cluster) -> str:
    return postgres_cluster.new_database()


@pytest.fixture
def store(pg_url: str) -> Iterator[Any]:
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(pg_url, max_connections=1)
    store.open()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["poll", "select"])
def waits(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How the store waits on its sockets: ``select.poll``, or ``select.select`` as on
    Windows, which has no ``poll``; the waits' names, one per wait."""
    import select

    import runtime._postgres_store as pg

    polling = request.param == "poll"
    monkeypatch.setattr(pg, "_POLLING", polling)
    made: list[str] = []
    name = "poll" if polling else "select"
    wait = getattr(select, name)

    def counted(*args: Any) -> Any:
        made.append(name)
        return wait(*args)

    monkeypatch.setattr(select, name, counted)
    return made


@pytest.fixture
def exchanges(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The statements of each write sent at once (one entry per pipeline)."""
    import runtime._postgres_store as pg

    sent: list[int] = []
    exchange = pg._exchange

    def counted(connection: Any, statements: Any) -> Any:
        sent.append(len(statements))
        return exchange(connection, statements)

    monkeypatch.setattr(pg, "_exchange", counted)
    return sent


def run(run_id: str, **fields: Any) -> RunRecord:
    defaults: dict[str, Any] = {"performer": "cat", "kind": "chain", "owner": "p1"}
    return RunRecord(run_id=run_id, created_at=1.0, **{**defaults, **fields})


def segment(root: str, first: int, n: int) -> Segment:
    return Segment(root, first, [{"n": first + i, "root": root} for i in range(n)])


def test_a_write_that_locks_no_thread_is_one_pipeline(
    store: Any, exchanges: list[int], waits: list[str]
) -> None:
    store.write(WriteBatch(runs=[run("a"), run("b")], owner="p1"))
    store.write(
        WriteBatch(segments=[segment("a", 0, 2), segment("b", 0, 3)], owner="p1", sync=False)
    )
    store.write(WriteBatch(segments=[segment("a", 2, 1)], ends=[RunEnd("a", "ok", 2.0)]))
    store.write(WriteBatch(ends=[RunEnd("b", "error", 3.0, "it \u00e9 failed")], owner="p1"))
    # BEGIN, the runs, COMMIT; BEGIN, SET LOCAL, the runs' lock, the segments, the
    # notification (the store tells, unless its journal is alone), COMMIT; BEGIN, the
    # segment, the end, the cancels, the notification, COMMIT; the same without segment
    assert exchanges == [4, 6, 6, 5]
    assert store.read_records("a") == [
        {"n": 0, "root": "a"},
        {"n": 1, "root": "a"},
        {"n": 2, "root": "a"},
    ]
    a, b = store.get_run("a"), store.get_run("b")
    assert (a.status, a.ended_at, a.error, a.events) == ("ok", 2.0, None, 3)
    assert (b.status, b.ended_at, b.error, b.events) == ("error", 3.0, "it \u00e9 failed", 3)


def test_a_write_larger_than_the_sockets_buffers_is_sent_whole(
    store: Any, exchanges: list[int], waits: list[str]
) -> None:
    # 8 MB: libpq cannot hand it to the kernel at once, so the store waits for the
    # socket to take more (and reads what the server answers meanwhile).
    store.write(WriteBatch(runs=[run("a")]))
    records = [{"n": i, "text": chr(0x61 + i % 26) * 1_000_000} for i in range(8)]
    store.write(WriteBatch(segments=[Segment("a", 0, records)]))
    assert len(exchanges) == 2  # each write one pipeline
    assert waits
    assert store.read_records("a") == records


def test_a_write_that_locks_threads_goes_statement_by_statement(
    store: Any, exchanges: list[int]
) -> None:
    store.write(WriteBatch(runs=[run("t1", thread_id="th")]))
    store.write(WriteBatch(ends=[RunEnd("t1", "ok", 2.0, None, "th", ["hello"])]))
    assert exchanges == []
    assert [m for _, m in store.thread_messages("th")] == ["hello"]


def test_a_write_the_fence_refuses_is_made_again_in_steps_which_say_why(
    store: Any, exchanges: list[int]
) -> None:
    store.write(WriteBatch(runs=[run("a"), run("b")], segments=[segment("a", 0, 2)]))
    # another owner: refused whole (the new run "c" is not kept either)
    with pytest.raises(FencedError, match="no longer owned by p2"):
        store.write(WriteBatch(runs=[run("c")], segments=[segment("a", 2, 1)], owner="p2"))
    with pytest.raises(FencedError, match="ends for b"):
        store.write(WriteBatch(ends=[RunEnd("b", "ok", 2.0)], owner="p2"))
    # the owner's, past its journal's end: a gap
    with pytest.raises(JournalGapError, match="its journal holds 2"):
        store.write(WriteBatch(segments=[segment("a", 5, 1)], owner="p1"))
    assert len(exchanges) == 4  # the first write, and each refused one tried at once
    assert store.get_run("c") is None
    assert store.read_records("a") == [{"n": 0, "root": "a"}, {"n": 1, "root": "a"}]
    b = store.get_run("b")
    assert b.status == "running" and b.ended_at is None
    # the connection serves on
    store.write(
        WriteBatch(segments=[segment("a", 2, 1)], ends=[RunEnd("b", "ok", 4.0)], owner="p1")
    )
    assert store.get_run("a").events == 3 and store.get_run("b").status == "ok"


def test_a_statement_that_fails_in_the_pipeline_fails_the_write_whole(store: Any) -> None:
    store.write(WriteBatch(runs=[run("a")]))
    with pytest.raises(StoreError, match="a write failed: duplicate key"):
        store.write(WriteBatch(runs=[run("b"), run("a")], segments=[segment("a", 0, 1)]))
    assert store.get_run("b") is None and store.read_records("a") == []
    store.write(WriteBatch(runs=[run("b")]))  # rolled back: the connection serves on
    assert store.get_run("b") is not None


def test_a_number_bigint_does_not_hold_fails_the_write_before_it_is_sent(
    store: Any, exchanges: list[int]
) -> None:
    store.write(WriteBatch(runs=[run("a")]))
    with pytest.raises(StoreError, match="a write failed"):
        store.write(WriteBatch(segments=[Segment("a", 2**63, [1])]))
    with pytest.raises(StoreError, match="a write failed"):
        store.write(WriteBatch(runs=[run("b", events=2**64)]))
    assert exchanges == [3]
    assert store.get_run("b") is None and store.read_records("a") == []


def test_a_connection_broken_during_a_write_is_closed_and_replaced(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    import runtime._postgres_store as pg

    store.write(WriteBatch(runs=[run("a")]))
    wait = pg._wait

    def broken(fileno: int, **_: object) -> bool:  # (as libpq says of a dropped connection)
        raise psycopg.OperationalError("the network went away")

    monkeypatch.setattr(pg, "_wait", broken)
    with pytest.raises(StoreError, match="a write failed: the network went away"):
        store.write(WriteBatch(segments=[segment("a", 0, 1)]))
    monkeypatch.setattr(pg, "_wait", wait)
    # The connection, left mid-pipeline, was closed (never lent again): the pool makes
    # another. Sent whole, the write may have landed or not (as a write whose COMMIT's
    # answer is lost: the journal asks the store which, Journal._holds).
    # The server goes on with what it was sent, so the write may land after it is read
    # as missing: the next write at the length read is then refused as a duplicate, and
    # written again at the new length (as the journal's retries do, Journal._landed).
    deadline = time.monotonic() + 30
    while True:
        held = store.journal_length("a")
        assert held in (0, 1)
        try:
            store.write(WriteBatch(segments=[segment("a", held, 2)]))
            break
        except StoreError as exc:
            assert held == 0 and "duplicate key" in str(exc), exc
            assert time.monotonic() < deadline
    assert store.read_records("a") == [{"n": n, "root": "a"} for n in range(held + 2)]


def test_an_idle_connection_is_lent_without_a_round_trip_and_a_closed_one_replaced(
    store: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch, waits: list[str]
) -> None:
    import psycopg
    from psycopg_pool import ConnectionPool

    checked: list[object] = []
    check = ConnectionPool.check_connection

    def counted(connection: Any) -> None:
        checked.append(connection)
        check(connection)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    store.write(WriteBatch(runs=[run("a")]))
    assert store.get_run("a") is not None
    assert checked == []  # nothing came on the idle connection: no statement to check it
    # the server closes the pool's connection (as a restart, or an idle timeout, does)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        others = (
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        admin.execute(f"SELECT pg_terminate_backend(pid) {others}")
        deadline = time.monotonic() + 30
        while admin.execute(f"SELECT count(*) {others}").fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    store.write(WriteBatch(segments=[segment("a", 0, 1)]))  # on a new connection
    assert len(checked) == 1
    assert store.read_records("a") == [{"n": 0, "root": "a"}]


@pytest.mark.parametrize(
    "values",
    [[], ["a"], ["", "é\u4e00\U0001f600", 'q"u\\o{te}', None, "x" * 70_000], [None]],
)
def test_text_arrays_in_binary_read_back_as_they_were(store: Any, values: list[Any]) -> None:
    import runtime._postgres_store as pg

    with store._connection("a read") as connection:
        result = connection.pgconn.exec_params(
            b"SELECT $1::text[]", [pg._texts(values)], [pg._TEXTS], [1], 1
        )
        assert result.status == 2, result.get_error_message()
        read = connection.adapters.get_loader(pg._TEXTS, 1)
        assert read(pg._TEXTS, connection).load(result.get_value(0, 0)) == values


@pytest.mark.parametrize("oid", ["_INT8", "_FLOAT8"])
def test_number_arrays_in_binary_read_back_as_they_were(store: Any, oid: str) -> None:
    import runtime._postgres_store as pg

    kind = getattr(pg, oid)
    array = {pg._INT8: pg._INT8S, pg._FLOAT8: pg._FLOAT8S}[kind]
    values: list[Any] = [0, 1, -(2**63), 2**63 - 1] if kind == pg._INT8 else [0.0, -1.5, 1e300]
    if kind == pg._FLOAT8:
        values.append(math.inf)
    with store._connection("a read") as connection:
        for given in (values, []):
            result = connection.pgconn.exec_params(
                b"SELECT $1", [pg._numbers(given, kind)], [array], [1], 1
            )
            assert result.status == 2, result.get_error_message()
            read = connection.adapters.get_loader(array, 1)
            assert read(array, connection).load(result.get_value(0, 0)) == given
