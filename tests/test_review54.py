"""A hostile review of stop 53's changes (``read_json``, PostgreSQL's journal write in one
pipeline, the feed's cuts: the links' texts kept, the identity fast path; review 53's
fixes). Each test failed before the fix it names."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import suppress
from typing import Any

import pytest
import trio
from cattrs.errors import ClassValidationError

from actors.testing import hang_watchdog
from protocol import EventData, RunInfo, StreamEvent, ToolCall, UserMessage, _compact
from runtime._store import RunEnd, RunRecord, Segment, StoreError, WriteBatch

from .postgres import Cluster
from .test_compact import as_json, round_trip


class _CaseFree(str):
    """A text key that equals the texts of other cases (as a case-insensitive header
    name does), its own text kept."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


def _chunks_keyed(keys: list[Any]) -> list[StreamEvent]:
    """A chain's events: a chunk ``{key: message}`` for each of ``keys``, the same message
    each time (so that every chunk after the first links to it by its key)."""
    root = RunInfo(run_id="root", name="Agent", kind="chain")
    told = UserMessage("go")
    events = [StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input="go"))]
    for key in keys:
        events.append(StreamEvent("on_chain_stream", root, len(events), chunk={key: told}))
    end = EventData(input="go", output="done", ended=True)
    events.append(StreamEvent("on_chain_end", root, len(events), end, "ok", end_time=1.0))
    return events


def test_a_key_equal_to_a_kept_text_links_by_its_own_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The links' texts were looked up by their values' equality: a key that equals a
    # text kept before (a str subclass with an __eq__ of its own) was written as that
    # text, its record's link named a key the record does not hold, and its journal
    # could not be read back ("a record's links do not fit it: KeyError('role')").
    monkeypatch.setattr(_compact, "_LINK_TEXTS", _compact._ValueTexts())
    events = _chunks_keyed(["role", _CaseFree("Role"), "ROLE"])
    records, decoded = round_trip(events, delta=True)
    # (compared as JSON: the key's hash is not its text's)
    assert json.dumps(as_json(decoded)) == json.dumps(as_json(events))
    assert [r[-1][1] for r in records[2:5]] == ["role", "Role", "ROLE"]


def test_the_links_kept_texts_hold_no_long_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The texts kept for links (for the process's life, shared by every encoder) were
    # bounded in number, not in size: a payload's keys of any length were kept, each
    # twice (the key and its JSON), up to 65,536 of them (keys of 100 kB: 13 GB).
    monkeypatch.setattr(_compact, "_LINK_TEXTS", _compact._ValueTexts())
    keys = [f"{i:04d}" + "k" * 10_000 for i in range(100)]
    events = _chunks_keyed(keys)
    _, decoded = round_trip(events, delta=True)
    assert as_json(decoded) == as_json(events)
    kept = sum(len(k) + len(t) for k, t in _compact._LINK_TEXTS.items() if type(k) is str)
    assert kept < 10_000  # (the keys alone are 1,000,400 characters)


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["terminated", "cancelled", "timed out"])
async def test_a_write_cut_mid_pipeline_fails_whole_and_the_store_serves_on(
    postgres_cluster: Cluster, how: str
) -> None:
    # (Held: a check of the pipeline against a server that really cuts it, where
    # test_postgres_write makes the network fail by a stub.) A write sent whole waits
    # in the server for a run's row another session locked; the server then ends its
    # connection, cancels its statement, or times it out: the write fails with a
    # StoreError (no hang, nothing of it written) and the next write is made.
    url = postgres_cluster.new_database()
    with hang_watchdog(120, f"a write {how} mid-pipeline"):
        await trio.to_thread.run_sync(_cut_mid_pipeline, url, how)


def _cut_mid_pipeline(url: str, how: str) -> None:
    import psycopg

    from runtime._postgres_store import PostgresStore

    given = url + ("?options=-c%20statement_timeout%3D1000" if how == "timed out" else "")
    store = PostgresStore(given, max_connections=1)
    store.open()
    try:
        runs = [RunRecord(run_id=r, performer="p", kind="chain", owner="o") for r in "ab"]
        store.write(WriteBatch(runs=runs))
        batch = WriteBatch(
            segments=[Segment("a", 0, [1]), Segment("b", 0, [2])],
            ends=[RunEnd("a", "ok", 2.0)],
            owner="o",
        )
        failed: list[BaseException] = []
        with psycopg.connect(url) as locker:
            locker.execute("SELECT 1 FROM troupe_runs WHERE run_id = 'b' FOR UPDATE")
            writer = threading.Thread(target=_failing, args=(store.write, batch, failed))
            writer.start()
            waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            while not (pids := locker.execute(waiting).fetchall()):  # (the write waits)
                time.sleep(0.01)
            if how != "timed out":
                end = "pg_terminate_backend" if how == "terminated" else "pg_cancel_backend"
                locker.execute(f"SELECT {end}(%s)", pids[0])
            writer.join()
            locker.rollback()
        [error] = failed
        assert isinstance(error, StoreError), error
        assert store.read_records("a") == store.read_records("b") == []
        record = store.get_run("a")
        assert record is not None and record.status == "running"
        store.write(batch)
        assert store.read_records("b") == [2]
    finally:
        store.close()


def _failing(call: Any, batch: WriteBatch, failed: list[BaseException]) -> None:
    try:
        call(batch)
    except BaseException as exc:  # (the test looks at it)
        failed.append(exc)


class _Garbling:
    """A TCP proxy to a PostgreSQL server whose next answer to a client, once
    :attr:`garble` is set, begins with a message no server sends (a ``Z`` of a length
    past what libpq takes: it gives up on the connection, "lost synchronization")."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.garble = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self.port))
                threading.Thread(
                    target=self._pump, args=(client, server, False), daemon=True
                ).start()
                threading.Thread(
                    target=self._pump, args=(server, client, True), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, answers: bool) -> None:
        with suppress(OSError), source, sink:
            while data := source.recv(65536):
                if answers and self.garble.is_set():
                    self.garble.clear()
                    data = b"Z" + (1 << 30).to_bytes(4, "big") + data
                sink.sendall(data)

    def close(self) -> None:
        self._listener.close()


@pytest.mark.postgres
async def test_a_pipeline_whose_connection_libpq_gives_up_on_fails_the_write(
    postgres_cluster: Cluster,
) -> None:
    # A connection libpq dropped as it read the answers (a message it cannot take, from
    # a proxy or a server out of step) gives no more results, nor the pipeline's end:
    # the loop that waited for that end asked libpq for results for ever, its thread
    # at 100% of a core, the journal's writer stuck, the runtime's close with it.
    url = postgres_cluster.new_database()
    with hang_watchdog(60, "a write whose connection libpq gave up on"):
        await trio.to_thread.run_sync(_write_garbled, postgres_cluster.port, url)


def _write_garbled(port: int, url: str) -> None:
    from runtime._postgres_store import PostgresStore

    proxy = _Garbling(port)
    store = PostgresStore(url.replace(f":{port}/", f":{proxy.address}/"), max_connections=1)
    store.open()
    try:
        store.write(WriteBatch(runs=[RunRecord("a", "p", "chain", owner="o")]))
        proxy.garble.set()
        with pytest.raises(StoreError, match="lost synchronization with server"):
            store.write(WriteBatch(segments=[Segment("a", 0, [1])]))
        held = store.journal_length("a")  # (sent whole: it may have landed)
        store.write(WriteBatch(segments=[Segment("a", held, [2])]))  # on a new connection
        assert store.read_records("a")[-1] == 2
    finally:
        store.close()
        proxy.close()


def test_an_inner_objects_error_is_cattrs_own() -> None:
    # Within an object's plain structuring (its fast code failed), an inner object's
    # fast code that failed raised its bare error (KeyError('id')), not cattrs' detailed
    # one: the error named the first key missing only, and not the inner class (the
    # quick structuring's test, test_protocol, found it: its errors must be cattrs').
    from cattrs.gen import make_dict_structure_fn

    from protocol import ToolRequest, converter

    written = converter.unstructure(ToolRequest(ToolCall("c", "t", {})), ToolRequest)
    broken = {**written, "call": {}}
    cattrs_own = make_dict_structure_fn(ToolRequest, converter)
    with pytest.raises(ClassValidationError) as own:
        cattrs_own(broken, ToolRequest)
    with pytest.raises(ClassValidationError) as made:
        converter.structure(broken, ToolRequest)
    assert repr(made.value.exceptions) == repr(own.value.exceptions)
    [inner] = made.value.exceptions
    assert isinstance(inner, ClassValidationError)
    assert [repr(e) for e in inner.exceptions] == ["KeyError('id')", "KeyError('name')"]
