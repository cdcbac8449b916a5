"""Schema version 7: a payload's plain dict with a ``"$type"`` key is written escaped
(protocol/_convert.py), which version 6's code would read as another dict, silently.
Its tables are version 6's: the migration rewrites nothing, and takes no older process
(a live one blocks it; one running when it happens stops journaling), on both stores."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import runtime._sql as sql_module
import runtime._store as store_module
from runtime._store import (
    OLDEST_WRITER,
    SCHEMA_VERSION,
    RunEnd,
    Segment,
    StoreError,
    WriteBatch,
    newer_schema,
)

from .test_store_contract import (
    KINDS,
    _url,
    execute,
    live_owner,
    one_line,
    opened,
    run,
    schema_version,
)

FITS = {"$type": "UserMessage", "content": "hi"}
RECORDS = [
    ["i", 0, "a", "A", "tool", [], [], {}, 1.0],
    [0, 0, "on_tool_start", {"input": {}}, None, None],
    # as version 6 wrote a tool's dict with a "$type" key: as it is (version 7 reads it
    # as version 6 did: such records are not rewritten)
    [0, 1, "on_tool_end", {"output": {"n": 1}}, "ok", 2.0, 0],
    [0, 2, {"$type": "$dict", "value": FITS}],  # (as version 7 writes one)
]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store's URL, of each kind."""
    return _url(request.param, request, tmp_path)


def _as_version_6(url: str) -> None:
    """Make the store at ``url`` as version 6's code left it: the same tables, saying
    version 6, taking version 5's writes."""
    execute(url, "UPDATE troupe_meta SET value = '6' WHERE key = 'schema_version'")
    execute(url, "UPDATE troupe_meta SET value = '5' WHERE key = 'oldest_writer'")
    assert schema_version(url) == "6"


def _filled(url: str) -> list[object]:
    """The store at ``url`` with runs, a journal and a thread's messages; its runs."""
    store = opened(url)
    try:
        store.write(
            WriteBatch(
                runs=[run("a", thread_id="t"), run("b")], segments=[Segment("a", 0, RECORDS)]
            )
        )
        store.write(WriteBatch(ends=[RunEnd("a", "ok", 2.0, None, "t", [FITS])]))
        return [store.get_run(r) for r in "ab"]
    finally:
        store.close()


def test_this_version_writes_7_and_takes_no_older_process(url: str) -> None:
    assert (SCHEMA_VERSION, OLDEST_WRITER) == (7, 7)
    store = opened(url)
    try:
        assert store.schema() == (7, 7)
    finally:
        store.close()


def test_a_version_6_store_is_migrated_and_keeps_everything_as_it_was(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    before = _filled(url)
    _as_version_6(url)
    with caplog.at_level("WARNING", logger="troupe"):
        store = opened(url)
    try:
        assert "migrated" not in caplog.text  # (no process of older code was live)
        assert store.schema() == (7, 7)
        assert [store.get_run(r) for r in "ab"] == before
        assert store.read_records("a") == RECORDS  # nothing rewritten
        assert store.thread_messages("t") == [("a", FITS)]
        store.write(WriteBatch(runs=[run("c")]))
        assert store.get_run("c") is not None
    finally:
        store.close()
    assert schema_version(url) == "7"


def test_a_live_version_6_process_blocks_the_migration_until_it_stops(url: str) -> None:
    _filled(url)
    _as_version_6(url)
    now = time.time()
    live_owner(url, 6, now)
    with pytest.raises(StoreError) as refused:
        opened(url)
    message = one_line(refused.value)
    assert "pid 4242 on host-b (version 6)" in message
    assert "from schema version 6 to 7" in message and "stop them" in message
    assert schema_version(url) == "6"
    execute(url, f"UPDATE troupe_owners SET seen_at = {now - 100}")  # it stopped beating
    opened(url).close()
    assert schema_version(url) == "7"


def test_version_6_code_neither_opens_a_version_7_store_nor_goes_on_writing_it(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened(url).close()  # version 7's
    for module in (store_module, sql_module):
        monkeypatch.setattr(module, "SCHEMA_VERSION", 6)
        monkeypatch.setattr(module, "OLDEST_WRITER", 5)
    with pytest.raises(StoreError) as refused:
        opened(url)  # as version 6's code opens it
    assert "schema version 7, written by version 7 on; this one writes 6" in one_line(refused.value)
    # one already running when the store was migrated hears of it at its next heartbeat
    heard = newer_schema(url, 7, 7)
    assert heard is not None and "stops journaling" in str(heard)
    assert schema_version(url) == "7"
