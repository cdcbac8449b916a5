"""Schema version 6: ``troupe_runs.resumed_by`` indexed (retention follows a chain of
resumes link by link through it), and a store that version 5 made taken over with every
run, thread and journaled event readable and resumable, on both stores."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from protocol import unstructure_any
from runtime import open_runtime
from runtime._store import OLDEST_WRITER, SCHEMA_VERSION, RunEnd, Segment, StoreError, WriteBatch

from .test_review45 import TWICE
from .test_serve_resume import calls, payer
from .test_store_contract import KINDS, _url, execute, live_owner, opened, run, schema_version

STORES = Path(__file__).parent / "stores"
INDEX = "troupe_runs_resumed_by"


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store's URL, of each kind."""
    return _url(request.param, request, tmp_path)


def _indexes(url: str) -> set[str]:
    """The indexes of ``troupe_runs``, read behind the store's back."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            rows = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'troupe_runs'"
            ).fetchall()
        finally:
            connection.close()
        return {row[0] for row in rows}
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        found = pg.execute(b"SELECT indexname FROM pg_indexes WHERE tablename = 'troupe_runs'")
        return {row[0] for row in found}


def _as_version_5(url: str) -> None:
    """Make the store at ``url`` as version 5's code left it: the same tables, without
    the index, saying version 5."""
    execute(url, f"DROP INDEX {INDEX}")
    execute(url, "UPDATE troupe_meta SET value = '5' WHERE key = 'schema_version'")
    execute(url, "UPDATE troupe_meta SET value = '5' WHERE key = 'oldest_writer'")
    assert INDEX not in _indexes(url) and schema_version(url) == "5"


def test_a_new_store_has_the_resume_index(url: str) -> None:
    opened(url).close()
    assert INDEX in _indexes(url)


def test_a_version_5_store_is_migrated_once_its_version_5_process_stopped_and_keeps_everything(
    url: str,
) -> None:
    # Version 6 added an index alone, which version 5's writes keep up to date; version
    # 7 (escaped dicts, see tests/test_schema7.py) takes no older process: a live one of
    # version 5 blocks the migration until it stops.
    store = opened(url)
    now = time.time()
    try:
        segments = [Segment("a", 0, [["i", 0, "a", "A", "chain", [], [], {}, 1.0], [0, 0, "x"]])]
        store.write(WriteBatch(runs=[run("a", thread_id="t"), run("b")], segments=segments))
        said = {"$type": "UserMessage", "content": "hi"}
        store.write(WriteBatch(ends=[RunEnd("a", "paused", 2.0, None, "t", [said])]))
        store.write(WriteBatch(ends=[RunEnd("b", "ok", 2.0)]))
        assert store.mark_resumed("a", run("c", thread_id="t"))
        before = [store.get_run(r) for r in "abc"]
    finally:
        store.close()
    _as_version_5(url)
    live_owner(url, 5, now)
    with pytest.raises(StoreError) as refused:
        opened(url)
    assert "pid 4242 on host-b (version 5)" in str(refused.value)
    assert schema_version(url) == "5" and INDEX not in _indexes(url)
    execute(url, f"UPDATE troupe_owners SET seen_at = {now - 100}")  # it stopped beating
    store = opened(url)
    try:
        assert store.schema() == (SCHEMA_VERSION, OLDEST_WRITER) and INDEX in _indexes(url)
        assert [store.get_run(r) for r in "abc"] == before
        assert store.read_records("a") == [
            ["i", 0, "a", "A", "chain", [], [], {}, 1.0],
            [0, 0, "x"],
        ]
        assert store.thread_messages("t") == [("a", said)]
        store.write(WriteBatch(runs=[run("d")]))
        store.write(WriteBatch(ends=[RunEnd("c", "paused", 3.0)]))
        assert store.mark_resumed("c", run("e"))
        # retention keeps the chain a running run resumes (a, c, through the index)
        assert store.delete_ended_before(10.0) == 1  # b
        assert {r.run_id for r in store.list_runs()} == {"a", "c", "d", "e"}
    finally:
        store.close()
    assert schema_version(url) == str(SCHEMA_VERSION)


def _copy_rows(source: Path, url: str) -> None:
    """The rows of every table of the SQLite store ``source`` (as version 5 wrote them)
    into the store at ``url`` (made anew), as they are."""
    opened(url).close()
    connection = sqlite3.connect(source)
    try:
        tables = [
            "troupe_runs",
            "troupe_segments",
            "troupe_threads",
            "troupe_message_segments",
            "troupe_owners",
        ]
        rows = {t: connection.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
    finally:
        connection.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        for table, values in rows.items():
            for row in values:
                marks = ", ".join(["%s"] * len(row))
                pg.execute(f"INSERT INTO {table} VALUES ({marks})".encode(), row)


@pytest.fixture(params=KINDS)
def version_5_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """tests/stores/schema5.db, made by Troupe's code of schema version 5, as a store of
    each kind: the file itself for SQLite; its rows, as they are, in a PostgreSQL store
    made as version 5 (its tables, without version 6's index)."""
    path = tmp_path / "schema5.db"
    path.write_bytes((STORES / "schema5.db").read_bytes())
    if request.param == "sqlite":
        url = f"sqlite:///{path}"
    else:
        url = _url(request.param, request, tmp_path)
        _copy_rows(path, url)
        _as_version_5(url)
    assert schema_version(url) == "5" and INDEX not in _indexes(url)
    return url


async def _read_back(url: str) -> dict[str, Any]:
    """What :file:`tests/stores/schema5_events.json` holds, as this version reads it."""
    out: dict[str, Any] = {}
    async with open_runtime(store=url) as rt:
        for run_id in ("ann-1", "ann-2", "first", "second"):
            async with rt.join(run_id) as events:
                out[run_id] = [unstructure_any(e) async for e in events]
        history = await rt.threads.history("ann")
        out["ann-history"] = [unstructure_any(m) for m in history.messages]
    return out


async def test_a_store_that_version_5_made_reads_back_and_resumes(
    version_5_url: str, tmp_path: Path
) -> None:
    # tests/stores/schema5.db: made by Troupe's code of schema version 5: two runs of a
    # chat agent on thread "ann", an empty thread with metadata, and the payer agent of
    # tests/test_serve_resume.py (turns TWICE of tests/test_review45.py) on thread
    # "bob": run "first" paused for approval of p1, run "second" resumed it (pay 5) and
    # paused for p2. tests/stores/schema5_events.json: every event of each run, and
    # thread ann's messages, as version 5's code read them back (``rt.join``).
    url = version_5_url
    expected = json.loads((STORES / "schema5_events.json").read_text())
    assert await _read_back(url) == expected  # the same events, read by this version
    assert schema_version(url) == str(SCHEMA_VERSION) and INDEX in _indexes(url)
    ledger = tmp_path / "ledger.txt"
    agent = payer(ledger, *TWICE)
    async with open_runtime(store=url) as rt:
        thread = await rt.threads.get("empty")
        assert thread is not None and thread.metadata == {"k": "v"}
        bob = await rt.threads.history("bob")
        assert sorted(r.run_id for r in bob.runs) == ["first", "second"]
        output = await rt.resume(agent, "second", {"p2": True}, run_id="third")
        assert output.output == "all done"
        assert calls(ledger) == ["pay 7"]  # pay 5 ran when version 5 made the store
        assert (await rt.get_run("second")).resumed_by == "third"
        async with rt.join("third") as events:
            last = [e async for e in events][-1]
        assert last.status == "ok"
        assert len((await rt.threads.history("bob")).messages) > 0
    with trio.fail_after(10):
        assert await _read_back(url) == expected  # and again, after the resume
