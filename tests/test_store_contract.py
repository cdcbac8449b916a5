"""The store contract (``runtime/_store.py``), one suite run against every store: SQLite
on a temporary file, and PostgreSQL on a throwaway cluster (``tests/postgres.py``).

The PostgreSQL cases are marked ``postgres``: ``.ci/run`` runs them as a step of their
own with ``TROUPE_POSTGRES_REQUIRED=1``. Elsewhere, where PostgreSQL or psycopg is
missing, they skip, saying what to install; in that step they fail instead.
"""

from __future__ import annotations

import math
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Agent, ScriptedChatModel, ScriptedTurn
from protocol import AssistantMessage, UserMessage
from runtime import open_runtime
from runtime._journal import Journal
from runtime._open_store import open_store
from runtime._store import (
    OLDEST_WRITER,
    SCHEMA_VERSION,
    FencedError,
    JournalGapError,
    Owner,
    RunEnd,
    RunRecord,
    Segment,
    Store,
    StoreError,
    ThreadRecord,
    WriteBatch,
    dumps,
)

from .postgres import Cluster

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database()


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty store's URL, of each kind."""
    return _url(request.param, request, tmp_path)


def opened(url: str) -> Store:
    store = open_store(url)
    store.open()
    return store


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = opened(url)
    try:
        yield store
    finally:
        store.close()


def execute(url: str, statement: str) -> None:
    """Run ``statement`` on the store's database behind its back."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        with connection:
            connection.execute(statement)
        connection.close()
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(statement.encode())


def run(run_id: str, created_at: float = 1.0, **fields: Any) -> RunRecord:
    defaults: dict[str, Any] = {"performer": "cat", "kind": "chain", "owner": "p1"}
    return RunRecord(run_id=run_id, created_at=created_at, **{**defaults, **fields})


def records(root: str, first: int, n: int) -> list[Any]:
    return [{"n": first + i, "root": root, "e": "on_chain_stream"} for i in range(n)]


def segment(root: str, first: int, n: int) -> Segment:
    return Segment(root, first, records(root, first, n))


def live_owner(url: str, version: int, now: float) -> None:
    """A process of version ``version``'s code (pid 4242 on host-b, another machine),
    live on the store at ``url``: its heartbeat at ``now``."""
    execute(
        url,
        "INSERT INTO troupe_owners (owner_id, host, pid, started_at, seen_at, schema_version) "
        f"VALUES ('old', 'host-b', 4242, {now}, {now}, {version})",
    )


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text and text
    return text


# -- the journal -----------------------------------------------------------------------


def test_a_batch_writes_runs_segments_and_ends_together(store: Store) -> None:
    started = run(
        "r1",
        created_at=10.5,
        input={"messages": [{"role": "user", "content": "hi"}]},
        config={"run_name": "cat", "tags": ["a"], "metadata": {"k": 1}, "timeout": 2.5},
        thread_id="t1",
    )
    store.write(WriteBatch(runs=[started], segments=[segment("r1", 0, 3)]))
    got = store.get_run("r1")
    assert got == RunRecord(
        run_id="r1",
        performer="cat",
        kind="chain",
        input={"messages": [{"role": "user", "content": "hi"}]},
        config={"run_name": "cat", "tags": ["a"], "metadata": {"k": 1}, "timeout": 2.5},
        thread_id="t1",
        status="running",
        owner="p1",
        created_at=10.5,
        events=3,
    )
    end = RunEnd("r1", "error", 12.25, error="boom", thread_id="t1", messages=["q", {"a": 1}])
    store.write(WriteBatch(segments=[segment("r1", 3, 2)], ends=[end]))
    got = store.get_run("r1")
    assert got is not None
    assert (got.status, got.ended_at, got.error, got.events) == ("error", 12.25, "boom", 5)
    assert store.read_records("r1") == records("r1", 0, 5)
    assert store.journal_length("r1") == 5
    assert store.thread_messages("t1") == [("r1", "q"), ("r1", {"a": 1})]
    store.write(WriteBatch())  # nothing to do
    assert store.get_run("nobody") is None


def test_records_read_from_any_position(store: Store) -> None:
    sizes = [3, 1, 5, 2]
    first = 0
    for n in sizes:
        store.write(
            WriteBatch(runs=[run("r")] if first == 0 else [], segments=[segment("r", first, n)])
        )
        first += n
    everything = records("r", 0, first)
    for start in range(first + 3):
        assert store.read_records("r", start) == everything[start:]
    assert store.journal_length("r") == first
    assert store.read_records("elsewhere") == [] and store.journal_length("elsewhere") == 0


def test_segments_of_several_trees_in_one_batch(store: Store) -> None:
    store.write(
        WriteBatch(
            runs=[run("a"), run("b")],
            segments=[segment("a", 0, 2), segment("b", 0, 1), segment("a", 2, 2)],
        )
    )
    assert store.read_records("a") == records("a", 0, 4)
    assert store.read_records("b") == records("b", 0, 1)
    assert [store.get_run(r).events for r in "ab"] == [4, 1]  # type: ignore[union-attr]


def test_a_duplicate_segment_fails_the_whole_batch(store: Store, url: str) -> None:
    store.write(WriteBatch(runs=[run("r")], segments=[segment("r", 0, 2)]))
    bad = WriteBatch(
        runs=[run("new", thread_id="fresh")],
        segments=[segment("new", 0, 1), segment("r", 2, 1), segment("r", 0, 5)],
        ends=[RunEnd("r", "ok", 5.0, thread_id="fresh", messages=["m"])],
    )
    with pytest.raises(StoreError) as failed:
        store.write(bad)
    message = one_line(failed.value)
    assert store.url in message
    # how the journal tells a reused id (not worth retrying) from a failing store
    assert "UNIQUE" in message or "duplicate key" in message
    assert "password" not in store.url
    assert store.get_run("new") is None and store.get_thread("fresh") is None
    assert store.read_records("new") == [] and store.read_records("r") == records("r", 0, 2)
    got = store.get_run("r")
    assert got is not None and (got.status, got.events) == ("running", 2)
    store.write(WriteBatch(segments=[segment("r", 2, 1)]))  # the store goes on
    assert store.journal_length("r") == 3


def test_a_duplicate_run_fails_its_batch(store: Store) -> None:
    store.write(WriteBatch(runs=[run("r")]))
    with pytest.raises(StoreError):
        store.write(WriteBatch(runs=[run("s"), run("r")]))
    assert store.get_run("s") is None


def test_runs_listed_newest_first_and_filtered(store: Store) -> None:
    store.write(
        WriteBatch(
            runs=[
                run("a", 1.0, thread_id="t", owner="p1"),
                run("b", 3.0, owner="p2"),
                run("c", 2.0, thread_id="t", owner="p2"),
                run("d", 3.0, owner="p1"),  # same time as b: larger id first
                run("e", 0.5, thread_id="u"),
            ]
        )
    )
    store.write(WriteBatch(ends=[RunEnd("c", "ok", 4.0), RunEnd("e", "cancelled", 4.0)]))

    def ids(**filters: Any) -> list[str]:
        return [r.run_id for r in store.list_runs(**filters)]

    assert ids() == ["d", "b", "c", "a", "e"]
    assert ids(limit=2) == ["d", "b"]
    assert ids(thread_id="t") == ["c", "a"]
    assert ids(status="running") == ["d", "b", "a"]
    assert ids(status="ok") == ["c"]
    assert ids(owner="p2") == ["b", "c"]
    assert ids(status="running", owner="p1") == ["d", "a"]
    assert ids(thread_id="t", status="running", owner="p1") == ["a"]
    assert ids(thread_id="none") == []


def test_a_large_segment_round_trips(store: Store) -> None:
    big = [
        {"seq": i, "event": "on_chat_model_stream", "chunk": f"token {i} ünïcode"}
        for i in range(10_000)
    ]
    store.write(WriteBatch(runs=[run("r")], segments=[Segment("r", 0, big)]))
    assert store.read_records("r") == big
    assert store.read_records("r", 9_990) == big[9_990:]
    assert store.journal_length("r") == 10_000


def test_odd_json_and_text_round_trip(store: Store) -> None:
    odd_text = "日本語 🐈 مرحبا \u200b\t\n\\\"' \x00 \x1f \U0010ffff"
    lone = "broken \udcff surrogate \ud800"
    value = {
        "text": odd_text,
        "lone": lone,
        lone: "as a key",
        "numbers": [0, -1, 2**62, 1.5e308, -0.0, 1e-300],
        "nested": [[[{"": None}]], {}, [], True, False],
    }
    store.write(
        WriteBatch(
            runs=[run("r", input=value, config={"metadata": value}, performer="ünï 🐈")],
            segments=[Segment("r", 0, [value, odd_text, lone, None, 3])],
        )
    )
    got = store.get_run("r")
    assert got is not None and got.input == value and got.config == {"metadata": value}
    assert got.performer == "ünï 🐈"
    assert store.read_records("r") == [value, odd_text, lone, None, 3]
    # NaN and the infinities come back as Python's json reads them
    store.write(WriteBatch(segments=[Segment("r", 5, [math.nan, math.inf, -math.inf])]))
    nan, inf, minus = store.read_records("r", 5)
    assert math.isnan(nan) and inf == math.inf and minus == -math.inf
    # a thread's metadata and messages too
    assert store.create_thread(ThreadRecord("t", 1.0, 1.0, metadata={"title": lone}))
    store.write(WriteBatch(runs=[run("s", thread_id="t")]))
    store.write(WriteBatch(ends=[RunEnd("s", "ok", 2.0, thread_id="t", messages=[value])]))
    thread = store.get_thread("t")
    assert thread is not None and thread.metadata == {"title": lone}
    assert store.thread_messages("t") == [("s", value)]


def test_an_error_text_no_database_holds_is_kept_escaped(store: Store) -> None:
    # An exception's message may hold a lone surrogate (os.fsdecode of odd bytes) or a
    # NUL: the run's end must still be written (PostgreSQL's text holds no NUL).
    store.write(WriteBatch(runs=[run("r", error="start \x00")]))
    store.write(WriteBatch(ends=[RunEnd("r", "error", 2.0, error="no file b'\udcff' \x00 é")]))
    got = store.get_run("r")
    assert got is not None and got.error == "no file b'\\udcff' \\x00 é"
    store.heartbeat(Owner("o", "host \udcff", 1, 1.0, 1.0))
    assert store.owners()[0].host == "host \\udcff"


def test_a_value_that_is_not_json_fails_its_batch(store: Store) -> None:
    with pytest.raises(StoreError) as failed:
        store.write(WriteBatch(runs=[run("r", thread_id="t", input={"x": object()})]))
    assert "not JSON serializable" in one_line(failed.value)
    assert store.get_run("r") is None and store.get_thread("t") is None
    with pytest.raises(StoreError):
        store.write(WriteBatch(runs=[run("r")], segments=[Segment("r", 0, [{1, 2}])]))
    assert store.get_run("r") is None


def test_concurrent_writers(store: Store) -> None:
    store.create_thread(ThreadRecord("shared", 0.0, 0.0))
    writers, segments, size = 8, 20, 5
    failures: list[BaseException] = []

    def write(w: int) -> None:
        try:
            root = f"w{w}"
            store.write(WriteBatch(runs=[run(root, thread_id="shared")]))
            for s in range(segments):
                store.write(WriteBatch(segments=[segment(root, s * size, size)]))
                if s % 5 == 0:
                    assert store.journal_length(root) == (s + 1) * size
            store.write(
                WriteBatch(
                    ends=[
                        RunEnd(
                            root,
                            "ok",
                            1.0 + w,
                            thread_id="shared",
                            messages=[f"{root}:{i}" for i in range(3)],
                        )
                    ]
                )
            )
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for worker in threads:
        worker.start()
    for worker in threads:
        worker.join()
    assert failures == []
    for w in range(writers):
        assert store.read_records(f"w{w}") == records(f"w{w}", 0, segments * size)
    messages = store.thread_messages("shared")
    assert len(messages) == 3 * writers
    for i in range(0, len(messages), 3):  # each run's messages together, in order
        run_id = messages[i][0]
        assert messages[i : i + 3] == [(run_id, f"{run_id}:{n}") for n in range(3)]
    thread = store.get_thread("shared")
    assert thread is not None and thread.messages == 3 * writers


def test_writers_deleters_and_retention_at_once(store: Store) -> None:
    # Runs start and end on shared threads (several trees per write, too) while threads
    # are deleted and retention sweeps: no write fails (on PostgreSQL: no deadlock
    # between the row locks of writes, deletes and retention), and every thread's count
    # matches its messages.
    threads = [f"t{i}" for i in range(4)]
    failures: list[BaseException] = []
    stop = threading.Event()

    def writer(w: int) -> None:
        rng = random.Random(w)
        try:
            for n in range(15):
                roots = [f"w{w}-{n}-{k}" for k in range(rng.choice((1, 2, 3)))]
                on = {root: rng.choice(threads) for root in roots}
                now = time.time()
                started = WriteBatch(
                    runs=[run(r, now, thread_id=on[r]) for r in roots],
                    segments=[segment(r, 0, 2) for r in roots],
                )
                ended = WriteBatch(
                    segments=[segment(r, 2, 1) for r in reversed(roots)],
                    ends=[RunEnd(r, "ok", time.time(), None, on[r], [r, "x"]) for r in roots],
                )
                if rng.random() < 0.3:
                    store.write(
                        WriteBatch(started.runs, [*started.segments, *ended.segments], ended.ends)
                    )
                else:
                    store.write(started)
                    store.write(ended)
        except BaseException as exc:
            failures.append(exc)

    def sweeper() -> None:
        rng = random.Random(99)
        try:
            while not stop.is_set():
                store.delete_thread(rng.choice(threads))
                store.create_thread(ThreadRecord(rng.choice(threads), 0.0, 0.0))
                store.delete_ended_before(time.time() - 0.01)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    workers.append(threading.Thread(target=sweeper))
    for worker in workers:
        worker.start()
    for worker in workers[:-1]:
        worker.join()
    stop.set()
    workers[-1].join()
    assert failures == []
    for thread in store.list_threads():
        messages = store.thread_messages(thread.thread_id)
        assert thread.messages == len(messages)
        for i in range(0, len(messages), 2):  # each run's two messages together
            assert messages[i + 1] == (messages[i][0], "x")


def test_cancel_requests_reach_the_runs_owner(store: Store) -> None:
    store.write(WriteBatch(runs=[run("a", owner="p1"), run("b", owner="p1"), run("c", owner="p2")]))
    assert store.take_cancels("p1") == []
    assert store.request_cancel("a") and store.request_cancel("c")
    assert store.request_cancel("a")  # asked twice: still one request
    assert not store.request_cancel("nobody")
    assert store.take_cancels("p1") == ["a"]
    assert store.take_cancels("p1") == []  # taken once
    # a run that ends drops its request; an ended run cannot be asked
    store.write(WriteBatch(ends=[RunEnd("c", "ok", 2.0)]))
    assert store.take_cancels("p2") == []
    assert not store.request_cancel("c")
    assert store.request_cancel("b")
    store.write(WriteBatch(ends=[RunEnd("b", "cancelled", 3.0)]))
    assert store.take_cancels("p1") == []


def test_a_dead_owners_run_is_taken_over_once(store: Store) -> None:
    store.write(WriteBatch(runs=[run("x", owner="dead"), run("y", owner="dead")]))
    store.write(WriteBatch(ends=[RunEnd("y", "ok", 2.0)]))
    assert not store.take_over("x", "someone else", "me")
    assert store.take_over("x", "dead", "me")
    assert not store.take_over("x", "dead", "other")  # taken already
    got = store.get_run("x")
    assert got is not None and got.owner == "me"
    assert not store.take_over("y", "dead", "me")  # ended
    assert not store.take_over("nobody", "dead", "me")


def test_a_take_over_and_a_forget_hold_only_while_the_owner_did_not_beat(store: Store) -> None:
    """Issue 30: a sweep judges an owner dead by its last beat (``seen_at``), then acts:
    an owner that beat in between is alive, so its runs stay its own and its record
    stays; one with no record at all (forgotten) is taken."""
    store.heartbeat(Owner("late", "h", 1, 1.0, 5.0))
    store.write(WriteBatch(runs=[run("x", owner="late"), run("y", owner="gone")]))
    store.heartbeat(Owner("late", "h", 1, 1.0, 8.0))  # it beat since it was judged
    assert not store.take_over("x", "late", "me", seen_at=5.0)
    store.forget_owner("late", seen_at=5.0)
    assert [o.seen_at for o in store.owners()] == [8.0]
    got = store.get_run("x")
    assert got is not None and got.owner == "late"
    assert store.take_over("x", "late", "me", seen_at=8.0)  # not since: taken
    store.forget_owner("late", seen_at=8.0)
    assert store.owners() == []
    assert store.take_over("y", "gone", "me", seen_at=0.0)  # no record: taken


def test_a_taken_over_runs_late_writes_are_fenced(store: Store) -> None:
    """Issue 30: once a run is taken over (its owner presumed dead), the old owner's
    late segments and end are refused whole (nothing of their batch applied), never
    interleaved with the new owner's."""
    store.write(WriteBatch(runs=[run("x", owner="old"), run("mine", owner="old")], owner="old"))
    store.write(WriteBatch(segments=[segment("x", 0, 2)], owner="old"))
    assert store.take_over("x", "old", "new")
    store.write(WriteBatch(segments=[segment("x", 2, 3)], owner="new"))
    before = store.read_records("x")
    late = [
        WriteBatch(segments=[segment("x", 5, 1)], owner="old"),  # past the new owner's
        WriteBatch(segments=[segment("x", 2, 1)], owner="old"),  # over the new owner's
        WriteBatch(ends=[RunEnd("x", "error", 9.0, "late")], owner="old"),
        # with a run of its own that it may write: the whole batch is refused
        WriteBatch(
            segments=[segment("mine", 0, 1), segment("x", 5, 1)],
            ends=[RunEnd("mine", "ok", 3.0)],
            owner="old",
        ),
        WriteBatch(runs=[run("fresh", owner="old")], ends=[RunEnd("x", "ok", 9.0)], owner="old"),
    ]
    for batch in late:
        with pytest.raises(FencedError) as refused:
            store.write(batch)
        assert "x" in one_line(refused.value) and "old" in str(refused.value)
    assert store.read_records("x") == before
    got = store.get_run("x")
    assert got is not None and (got.owner, got.status, got.events) == ("new", "running", 5)
    assert store.read_records("mine") == [] and store.get_run("fresh") is None
    mine = store.get_run("mine")
    assert mine is not None and mine.status == "running"
    # the new owner goes on; the old one still writes its own run
    store.write(
        WriteBatch(segments=[segment("x", 5, 1)], ends=[RunEnd("x", "ok", 9.0)], owner="new")
    )
    store.write(WriteBatch(segments=[segment("mine", 0, 1)], owner="old"))
    assert [r["n"] for r in store.read_records("x")] == list(range(6))
    assert store.read_records("mine") == records("mine", 0, 1)
    # a write for a run that no record holds (deleted) is refused when fenced
    with pytest.raises(FencedError):
        store.write(WriteBatch(segments=[segment("ghost", 0, 1)], owner="old"))


def test_a_write_of_many_trees_is_fenced_whole_and_in_order(store: Store) -> None:
    """A write of many trees' segments and ends (PostgreSQL's: one statement for all of
    them) is refused whole when one of its runs is another owner's, two segments of one
    run apply one after the other (a gap between them is refused), and each end keeps
    its own status, time and error."""
    roots = [f"t{i}" for i in range(12)]
    store.write(WriteBatch(runs=[run(r, owner="p") for r in roots], owner="p"))
    store.write(WriteBatch(segments=[segment(r, 0, 2) for r in roots], owner="p"))
    assert store.take_over("t7", "p", "q")
    with pytest.raises(FencedError) as refused:
        store.write(WriteBatch(segments=[segment(r, 2, 1) for r in roots], owner="p"))
    assert "no longer owned by p" in one_line(refused.value)
    assert all(store.journal_length(r) == 2 for r in roots)
    with pytest.raises(JournalGapError):  # the second starts past the first's end
        store.write(WriteBatch(segments=[segment("t0", 2, 1), segment("t0", 4, 1)], owner="p"))
    assert store.read_records("t0") == records("t0", 0, 2)
    store.write(WriteBatch(segments=[segment("t0", 2, 1), segment("t0", 3, 2)], owner="p"))
    assert store.read_records("t0") == records("t0", 0, 5) and store.journal_length("t0") == 5
    mine = [r for r in roots if r != "t7"]
    ends = [
        RunEnd(r, "error" if i % 3 == 0 else "ok", 10.0 + i, f"boom {i}" if i % 3 == 0 else None)
        for i, r in enumerate(mine)
    ]
    store.write(WriteBatch(segments=[segment(r, 2, 1) for r in mine[1:]], ends=ends, owner="p"))
    for end in ends:
        got = store.get_run(end.run_id)
        assert got is not None
        assert (got.status, got.ended_at, got.error) == (end.status, end.ended_at, end.error)
        assert got.events == (5 if end.run_id == "t0" else 3)
    taken = store.get_run("t7")
    assert taken is not None and (taken.owner, taken.status, taken.events) == ("q", "running", 2)


def test_two_ends_of_one_run_in_a_write_apply_one_after_the_other(store: Store) -> None:
    """As two segments of one run do: PostgreSQL's one statement for all of a write's
    ends changed the run's row once for both, and a fenced write was refused as if
    another process had taken the run over (its end, and its messages, lost)."""
    store.write(WriteBatch(runs=[run("r", owner="p", thread_id="t"), run("s", owner="p")]))
    ends = [
        RunEnd("r", "paused", 2.0, None, "t", ["asked"]),
        RunEnd("s", "ok", 2.5),
        RunEnd("r", "error", 3.0, "boom", "t", ["told"]),
    ]
    store.write(WriteBatch(ends=ends, owner="p"))
    got = store.get_run("r")
    assert got is not None and (got.status, got.ended_at, got.error) == ("error", 3.0, "boom")
    assert store.thread_messages("t") == [("r", "asked"), ("r", "told")]
    store.write(WriteBatch(ends=ends[::-1]))  # (unfenced too)
    got = store.get_run("r")
    assert got is not None and (got.status, got.ended_at, got.error) == ("paused", 2.0, None)


def test_a_paused_run_is_resumed_once(store: Store) -> None:
    store.write(WriteBatch(runs=[run("p", thread_id="t"), run("live")]))
    store.write(WriteBatch(ends=[RunEnd("p", "paused", 2.0, None, "t", ["asked"])]))
    assert [r.run_id for r in store.list_runs(status="paused")] == ["p"]
    assert not store.mark_resumed("live", run("r0", thread_id="t"))  # not paused
    assert not store.mark_resumed("nobody", run("r0"))
    assert store.get_run("r0") is None
    assert store.mark_resumed("p", run("r1", 3.0, thread_id="t"))
    got = store.get_run("p")
    assert got is not None and (got.status, got.resumed_by) == ("paused", "r1")
    resumed = store.get_run("r1")
    assert resumed is not None and (resumed.status, resumed.thread_id) == ("running", "t")
    # a second claim keeps nothing, not even the thread its run would have made
    assert not store.mark_resumed("p", run("r2", thread_id="elsewhere"))
    assert store.get_run("r2") is None and store.get_thread("elsewhere") is None
    # the resuming run's record makes its thread, as a written run's does
    store.write(WriteBatch(runs=[run("q")]))
    store.write(WriteBatch(ends=[RunEnd("q", "paused", 4.0)]))
    assert store.mark_resumed("q", run("q1", 5.0, thread_id="fresh"))
    assert store.get_thread("fresh") == ThreadRecord("fresh", 5.0, 5.0, {}, 0)


def test_of_two_resumes_at_once_one_wins(store: Store) -> None:
    store.write(WriteBatch(runs=[run("p", thread_id="t")]))
    store.write(WriteBatch(ends=[RunEnd("p", "paused", 2.0)]))
    won: list[bool] = []
    barrier = threading.Barrier(4)

    def claim(n: int) -> None:
        barrier.wait()
        won.append(store.mark_resumed("p", run(f"r{n}", thread_id="t")))

    workers = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(won) == [False, False, False, True]
    got = store.get_run("p")
    assert got is not None and got.resumed_by is not None
    assert [r.run_id for r in store.list_runs(status="running")] == [got.resumed_by]


def test_many_claims_at_once_are_each_answered_as_alone(store: Store) -> None:
    """Forty runs paused, each claimed twice at once from eighty threads, and one claim
    whose record has no JSON form: every run is won once, by one of its claims; the bad
    claim fails alone, naming the store (SQLite makes the claims waiting together in
    one transaction: see the next test)."""
    paused = [f"p{n}" for n in range(40)]
    store.write(WriteBatch(runs=[run(p) for p in paused] + [run("odd")]))
    store.write(WriteBatch(ends=[RunEnd(p, "paused", 2.0) for p in [*paused, "odd"]]))
    claims = [(p, f"{p}-by{k}") for p in paused for k in range(2)]
    answers: dict[str, bool | str] = {}
    barrier = threading.Barrier(len(claims) + 1)

    def claim(paused_id: str, by: str, config: dict[str, Any] | None = None) -> None:
        barrier.wait()
        try:
            answers[by] = store.mark_resumed(paused_id, run(by, config=config or {}))
        except StoreError as exc:
            answers[by] = one_line(exc)

    workers = [threading.Thread(target=claim, args=claim_) for claim_ in claims]
    workers.append(threading.Thread(target=claim, args=("odd", "odd-by", {"x": object()})))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert str(answers.pop("odd-by")).startswith("store ")
    odd = store.get_run("odd")
    assert odd is not None and odd.resumed_by is None and store.get_run("odd-by") is None
    for p in paused:
        won = [by for by in (f"{p}-by0", f"{p}-by1") if answers[by] is True]
        assert len(won) == 1 and answers[f"{p}-by{1 - int(won[0][-1])}"] is False, answers
        got = store.get_run(p)
        assert got is not None and got.resumed_by == won[0]
        assert store.get_run(won[0]) is not None


# -- threads ---------------------------------------------------------------------------


def test_threads_made_read_listed(store: Store) -> None:
    assert store.create_thread(ThreadRecord("t1", 1.0, 1.0, metadata={"user": "ann"}))
    assert not store.create_thread(ThreadRecord("t1", 9.0, 9.0, metadata={"user": "bob"}))
    assert store.get_thread("t1") == ThreadRecord("t1", 1.0, 1.0, {"user": "ann"}, 0)
    assert store.get_thread("t2") is None
    assert store.create_thread(ThreadRecord("t2", 2.0, 2.0))
    assert store.create_thread(ThreadRecord("t0", 2.0, 2.0))
    assert [t.thread_id for t in store.list_threads()] == ["t0", "t2", "t1"]
    assert [t.thread_id for t in store.list_threads(limit=1)] == ["t0"]
    # a run's end adds its messages and makes the thread the most recently updated
    store.write(WriteBatch(runs=[run("r", thread_id="t1")]))
    store.write(WriteBatch(ends=[RunEnd("r", "ok", 5.0, thread_id="t1", messages=["a", "b"])]))
    store.write(WriteBatch(runs=[run("s", thread_id="t1")]))
    store.write(WriteBatch(ends=[RunEnd("s", "ok", 6.0, thread_id="t1", messages=["c"])]))
    assert [t.thread_id for t in store.list_threads()] == ["t1", "t0", "t2"]
    assert store.get_thread("t1") == ThreadRecord("t1", 1.0, 6.0, {"user": "ann"}, 3)
    assert store.thread_messages("t1") == [("r", "a"), ("r", "b"), ("s", "c")]
    assert store.thread_messages("t1", 1) == [("r", "b"), ("s", "c")]
    assert store.thread_messages("t1", 3) == [] and store.thread_messages("t1", 9) == []
    assert store.thread_messages("t2") == [] and store.thread_messages("none") == []
    # what a run on it loads: the thread and its messages, read together
    thread = store.get_thread("t1")
    for start in range(5):
        assert store.read_thread("t1", start) == (thread, ["a", "b", "c"][start:])
        # (the base class's, of two reads, for a store that has no read of both)
        assert Store.read_thread(store, "t1", start) == store.read_thread("t1", start)
    assert Store.read_thread(store, "none") == (None, [])
    assert store.read_thread("t1") == (thread, ["a", "b", "c"])
    assert store.read_thread("t2") == (store.get_thread("t2"), [])
    assert store.read_thread("none") == (None, []) and store.read_thread("none", 2) == (None, [])
    # a history: the thread, its messages and its runs, read together
    history = (thread, store.thread_messages("t1"), store.list_runs(thread_id="t1", limit=1))
    assert store.thread_history("t1", 1) == history
    assert Store.thread_history(store, "t1", 1) == history  # (the base class's)
    assert store.thread_history("none", 5) == (None, [], [])
    assert Store.thread_history(store, "none", 5) == (None, [], [])
    # an end without messages changes nothing of its thread
    store.write(WriteBatch(runs=[run("q", thread_id="t1")]))
    store.write(WriteBatch(ends=[RunEnd("q", "cancelled", 7.0, thread_id="t1")]))
    assert store.get_thread("t1") == ThreadRecord("t1", 1.0, 6.0, {"user": "ann"}, 3)


async def test_a_run_on_a_thread_loads_what_the_store_holds(url: str) -> None:
    # A runtime's first load of a thread (its worker thread reads the thread and its
    # messages at once, and structures them) gives what the history API reads, and a
    # later run adds after it, from either store.
    # (a scripted model answers turn n of a conversation with its n-th turn)
    agent = Agent(model=ScriptedChatModel([ScriptedTurn(f"a{n}") for n in range(3)]), name="c")
    async with open_runtime(store=url) as rt:
        for turn in range(3):
            await rt.ainvoke(agent, f"q{turn}", thread_id="t")
    async with open_runtime(store=url) as rt:
        journal = rt.journal
        assert isinstance(journal, Journal)
        loaded = await journal.thread_history("t")
        history = await rt.threads.history("t")
        assert loaded == history.messages and len(loaded) == 6
        assert [type(m) for m in loaded] == [UserMessage, AssistantMessage] * 3
        assert [m.content for m in loaded] == ["q0", "a0", "q1", "a1", "q2", "a2"]
        assert await journal.thread_history("none") == []


def test_two_runs_of_a_thread_ending_in_one_batch(store: Store) -> None:
    store.write(WriteBatch(runs=[run("a", thread_id="t"), run("b", thread_id="t")]))
    store.write(
        WriteBatch(
            ends=[
                RunEnd("b", "ok", 3.0, thread_id="t", messages=["b1"]),
                RunEnd("a", "ok", 4.0, thread_id="t", messages=["a1", "a2"]),
            ]
        )
    )
    assert store.thread_messages("t") == [("b", "b1"), ("a", "a1"), ("a", "a2")]
    assert store.get_thread("t") == ThreadRecord("t", 1.0, 4.0, {}, 3)
    assert store.read_thread("t", 2) == (ThreadRecord("t", 1.0, 4.0, {}, 3), ["a2"])


def test_a_run_on_an_unknown_thread_makes_it(store: Store) -> None:
    store.write(WriteBatch(runs=[run("r", 4.0, thread_id="new"), run("s", 5.0, thread_id="new")]))
    assert store.get_thread("new") == ThreadRecord("new", 4.0, 4.0, {}, 0)
    store.create_thread(ThreadRecord("kept", 1.0, 1.0, metadata={"m": 1}))
    store.write(WriteBatch(runs=[run("q", 9.0, thread_id="kept")]))
    assert store.get_thread("kept") == ThreadRecord("kept", 1.0, 1.0, {"m": 1}, 0)


def test_deleting_a_thread(store: Store) -> None:
    store.write(
        WriteBatch(
            runs=[
                run("done", thread_id="t"),
                run("live", thread_id="t"),
                run("other", thread_id="u"),
            ],
            segments=[segment("done", 0, 2), segment("live", 0, 2), segment("other", 0, 1)],
        )
    )
    store.write(WriteBatch(ends=[RunEnd("done", "ok", 2.0, thread_id="t", messages=["m"])]))
    assert store.delete_thread("t")
    assert not store.delete_thread("t") and not store.delete_thread("never")
    assert store.get_thread("t") is None and store.thread_messages("t") == []
    assert store.get_run("done") is None and store.read_records("done") == []
    # a run still going keeps its record and journal
    assert store.read_records("live") == records("live", 0, 2)
    assert store.get_run("other") is not None and store.get_thread("u") is not None
    # and when it ends, its messages have no thread to go to: they are dropped
    store.write(
        WriteBatch(
            segments=[segment("live", 2, 1)],
            ends=[RunEnd("live", "ok", 3.0, thread_id="t", messages=["lost"])],
        )
    )
    got = store.get_run("live")
    assert got is not None and (got.status, got.events) == ("ok", 3)
    assert store.get_thread("t") is None and store.thread_messages("t") == []


# -- owners and retention ----------------------------------------------------------------


def test_owners(store: Store) -> None:
    assert store.owners() == []
    store.heartbeat(Owner("p1", "host-a", 101, 1.0, 1.0))
    store.heartbeat(Owner("p2", "host-b", 102, 2.0, 2.0))
    store.heartbeat(Owner("p1", "elsewhere", 999, 5.0, 7.5))  # a refresh: seen_at only
    assert sorted(store.owners(), key=lambda o: o.owner_id) == [
        Owner("p1", "host-a", 101, 1.0, 7.5),
        Owner("p2", "host-b", 102, 2.0, 2.0),
    ]
    store.forget_owner("p1")
    store.forget_owner("never")
    assert store.owners() == [Owner("p2", "host-b", 102, 2.0, 2.0)]


def test_retention_deletes_what_ended_before_the_cutoff(store: Store) -> None:
    store.create_thread(ThreadRecord("old", 1.0, 1.0))
    store.create_thread(ThreadRecord("recent", 1.0, 1.0))
    store.create_thread(ThreadRecord("empty", 1.0, 1.0))
    store.write(
        WriteBatch(
            runs=[
                run("gone", thread_id="old"),
                run("kept", thread_id="recent"),
                run("live", thread_id="recent"),
                run("bare"),
            ],
            segments=[segment(r, 0, 2) for r in ("gone", "kept", "live", "bare")],
        )
    )
    store.write(
        WriteBatch(
            ends=[
                RunEnd("gone", "ok", 10.0, thread_id="old", messages=["x"]),
                RunEnd("kept", "ok", 30.0, thread_id="recent", messages=["y"]),
                RunEnd("bare", "error", 15.0, error="e"),
            ]
        )
    )
    assert store.delete_ended_before(20.0) == 2
    assert store.get_run("gone") is None and store.read_records("gone") == []
    assert store.get_run("bare") is None and store.read_records("bare") == []
    assert store.read_records("kept") == records("kept", 0, 2)
    assert store.read_records("live") == records("live", 0, 2)
    assert store.get_thread("old") is None and store.thread_messages("old") == []
    assert store.get_thread("empty") is None
    assert store.thread_messages("recent") == [("kept", "y")]
    assert store.delete_ended_before(20.0) == 0
    assert store.delete_ended_before(100.0) == 1  # "kept"; "live" still runs
    assert store.get_thread("recent") is not None  # "live" still belongs to it


# -- opening ------------------------------------------------------------------------------


def test_a_store_opens_again_with_its_data(url: str) -> None:
    first = opened(url)
    first.write(WriteBatch(runs=[run("r")], segments=[segment("r", 0, 2)]))
    first.close()
    first.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        first.get_run("r")
    again = opened(url)
    try:
        assert again.read_records("r") == records("r", 0, 2)
    finally:
        again.close()


def test_several_open_one_new_store_at_once(url: str) -> None:
    stores: list[Store] = []
    failures: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        try:
            store = open_store(url)
            barrier.wait()
            store.open()
            stores.append(store)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert failures == []
        stores[0].write(WriteBatch(runs=[run("r")]))
        assert all(s.get_run("r") is not None for s in stores)  # as other processes would
    finally:
        for store in stores:
            store.close()


def test_a_newer_schema_is_refused(url: str) -> None:
    opened(url).close()
    execute(url, f"UPDATE troupe_meta SET value = '{SCHEMA_VERSION + 1}'")
    with pytest.raises(StoreError) as refused:
        opened(url)
    message = one_line(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "upgrade Troupe, or point it at another store" in message


def schema_version(url: str) -> str:
    """The version the store's ``troupe_meta`` says, read behind its back."""
    statement = "SELECT value FROM troupe_meta WHERE key = 'schema_version'"
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return str(connection.execute(statement).fetchone()[0])
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        row = pg.execute(statement.encode()).fetchone()
        assert row is not None
        return str(row[0])


@pytest.mark.parametrize("old", [1, 2])
def test_a_store_of_an_older_schema_version_is_migrated_and_its_journals_kept(
    url: str, old: int
) -> None:
    # Version 2 journals inputs by reference (``CompactEncoder(delta=True)``), which
    # version 1 cannot read, and version 3 links to messages written before, which
    # version 2 cannot read (each refuses a newer store); a store an older version made
    # is taken over, its records as they were (the decoder reads every form).
    written = [
        ["i", 0, "r", "A", "chain", [], [], {}, 1.0],
        [0, 0, "on_chain_start", {}, None, None],
    ]
    store = opened(url)
    try:
        store.write(WriteBatch(runs=[run("r")], segments=[Segment("r", 0, written)]))
    finally:
        store.close()
    execute(url, f"UPDATE troupe_meta SET value = '{old}'")
    store = opened(url)
    try:
        assert store.read_records("r") == written
    finally:
        store.close()
    assert schema_version(url) == str(SCHEMA_VERSION)


def _version_4_messages(url: str) -> list[tuple[str, int, str, str]]:
    """The messages of a store of version 4 (``troupe_messages``, a row each), read
    behind its back: ``(thread_id, position, run_id, JSON text)`` in order."""
    statement = (
        "SELECT thread_id, position, run_id, message FROM troupe_messages "
        "ORDER BY thread_id, position"
    )
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return [tuple(row) for row in connection.execute(statement)]
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        return [tuple(row) for row in pg.execute(statement.encode())]


def _check_gathered(store: Store, url: str, old: list[tuple[str, int, str, str]]) -> None:
    """A store migrated from version 4 holds the messages ``old`` it held, each read
    back as the JSON it was (its text written again is the same text), from any
    position; a run's end goes on numbering them; version 4's table is gone."""
    assert store.schema() == (SCHEMA_VERSION, OLDEST_WRITER)
    threads = sorted({row[0] for row in old})
    for thread_id in threads:
        rows = [row for row in old if row[0] == thread_id]
        thread = store.get_thread(thread_id)
        assert thread is not None and thread.messages == len(rows)
        for start in range(len(rows) + 1):
            got = store.thread_messages(thread_id, start)
            assert [(run_id, dumps(value)) for run_id, value in got] == [
                (run_id, text) for _, _, run_id, text in rows[start:]
            ]
            read = store.read_thread(thread_id, start)
            assert read[0] == thread and [dumps(v) for v in read[1]] == [r[3] for r in rows[start:]]
    thread_id = threads[0]
    store.write(WriteBatch(runs=[run("after", thread_id=thread_id)]))
    store.write(WriteBatch(ends=[RunEnd("after", "ok", 9.0, thread_id=thread_id, messages=[1])]))
    count = len([row for row in old if row[0] == thread_id])
    assert store.thread_messages(thread_id, count) == [("after", 1)]
    with pytest.raises(Exception, match="troupe_messages"):
        execute(url, "SELECT 1 FROM troupe_messages")


def test_a_version_4_store_has_its_threads_messages_gathered_run_by_run(url: str) -> None:
    # Version 4 kept a thread's messages a row each; version 5 keeps the messages of
    # each run as one row. The migration gathers them, and a thread reads as it did.
    opened(url).close()
    execute(url, "DROP TABLE troupe_message_segments")
    execute(
        url,
        "CREATE TABLE troupe_messages (thread_id TEXT NOT NULL, position BIGINT NOT NULL, "
        "run_id TEXT NOT NULL, message TEXT NOT NULL, PRIMARY KEY (thread_id, position))",
    )
    texts = ['"a"', '{"$type":"UserMessage","content":"é ✓"}', "1e+300", "[1,null]", '"b"']
    written = [("t1", 0, "r1", texts[0]), ("t1", 1, "r1", texts[1]), ("t1", 2, "r2", texts[2])]
    written += [("t1", 3, "r3", texts[3]), ("t1", 4, "r3", texts[4]), ("t2", 0, "r4", "-0.0")]
    for thread_id, position, run_id, text in written:
        quoted = text.replace("'", "''")
        execute(
            url,
            "INSERT INTO troupe_messages (thread_id, position, run_id, message) "
            f"VALUES ('{thread_id}', {position}, '{run_id}', '{quoted}')",
        )
    for thread_id, count in (("t1", 5), ("t2", 1)):
        execute(
            url,
            "INSERT INTO troupe_threads (thread_id, created_at, updated_at, metadata, messages) "
            f"VALUES ('{thread_id}', 1.0, 1.0, '{{}}', {count})",
        )
    execute(url, "UPDATE troupe_meta SET value = '4'")
    assert _version_4_messages(url) == written
    store = opened(url)
    try:
        _check_gathered(store, url, written)
    finally:
        store.close()
    assert schema_version(url) == str(SCHEMA_VERSION)


def test_a_store_that_version_4_made_is_migrated_with_its_threads(tmp_path: Path) -> None:
    # tests/stores/schema4.db: made by Troupe's code of schema version 4 (three runs of
    # an agent on two threads, an empty thread, and odd JSON values added through the
    # store: a lone surrogate, 1e300, -0.0, an unknown tag, null, a list)
    path = tmp_path / "schema4.db"
    path.write_bytes((Path(__file__).parent / "stores" / "schema4.db").read_bytes())
    url = f"sqlite:///{path}"
    assert schema_version(url) == "4"
    old = _version_4_messages(url)
    assert {row[0] for row in old} == {"ann", "bob", "odd"} and len(old) == 13
    store = opened(url)
    try:
        _check_gathered(store, url, old)
        empty = store.get_thread("empty")
        assert empty is not None and empty.metadata == {"k": "v"}
        assert store.thread_messages("empty") == []
    finally:
        store.close()
    connection = sqlite3.connect(path)
    try:  # each run's messages one row: the texts as version 4 wrote them, joined
        rows = connection.execute(
            "SELECT first, count, run_id, messages FROM troupe_message_segments "
            "WHERE thread_id = 'odd' ORDER BY first"
        ).fetchall()
    finally:
        connection.close()
    texts = [row[3] for row in old if row[0] == "odd"]
    assert rows == [(0, 6, "run-4", f"[{','.join(texts[:6])}]"), (6, 1, "run-5", '["after"]')]


def test_a_table_added_in_development_is_made(url: str) -> None:
    opened(url).close()
    execute(url, "DROP TABLE troupe_cancels")
    store = opened(url)
    try:
        store.write(WriteBatch(runs=[run("r")]))
        assert store.request_cancel("r") and store.take_cancels("p1") == ["r"]
    finally:
        store.close()


def test_every_table_of_the_schema_is_made_again_when_missing(url: str) -> None:
    store = opened(url)
    tables = store.tables  # type: ignore[attr-defined]  # (an SQL store's)
    store.close()
    assert {"troupe_runs", "troupe_segments", "troupe_owners"} <= tables
    for table in sorted(tables - {"troupe_meta"}):  # (which says the version)
        execute(url, f"DROP TABLE {table}")
        opened(url).close()
        execute(url, f"SELECT 1 FROM {table}")  # it is there again


def test_both_stores_schemas_make_the_same_tables() -> None:
    pytest.importorskip("psycopg")
    from runtime._postgres_store import PostgresStore
    from runtime._sqlite_store import SQLiteStore

    assert SQLiteStore.tables == PostgresStore.tables


def test_troupe_tables_without_a_version_are_refused(url: str) -> None:
    opened(url).close()
    execute(url, "DELETE FROM troupe_meta")
    with pytest.raises(StoreError) as refused:
        opened(url)
    assert "no schema version" in one_line(refused.value)


def test_a_closed_store_says_so(url: str) -> None:
    store = open_store(url)
    with pytest.raises(StoreError, match="is closed"):
        store.write(WriteBatch(runs=[run("r")]))


def _fails_to_open(url: str) -> str:
    store = open_store(url)
    started = time.monotonic()
    with pytest.raises(StoreError) as failed:
        store.open()
    assert time.monotonic() - started < 10
    message = one_line(failed.value)
    assert message.startswith(f"store {store.url!r}")
    return message


def test_sqlite_in_memory_reads_beside_writes() -> None:
    # One connection serves both: a read's transaction must not land inside a write's.
    store = opened("sqlite://:memory:")
    store.write(WriteBatch(runs=[run("r")]))
    failures: list[BaseException] = []

    def loop(step: Callable[[int], object]) -> None:
        try:
            for i in range(500):
                step(i)
        except BaseException as exc:
            failures.append(exc)

    workers = [
        threading.Thread(
            target=loop, args=(lambda i: store.write(WriteBatch(segments=[segment("r", i, 1)])),)
        ),
        threading.Thread(target=loop, args=(lambda i: store.read_records("r"),)),
        threading.Thread(target=loop, args=(lambda i: store.get_run("r"),)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures == []
    assert store.read_records("r") == records("r", 0, 500)
    store.close()


def test_sqlite_open_failures(tmp_path: Path) -> None:
    assert "does not exist" in _fails_to_open(f"sqlite:///{tmp_path}/missing/j.db")
    (tmp_path / "text.db").write_text("not a database, " * 1000)
    assert "not a database" in _fails_to_open(f"sqlite:///{tmp_path}/text.db")
    with pytest.raises(StoreError, match="sqlite:////absolute"):
        open_store("sqlite://relative.db")
    with pytest.raises(StoreError) as unknown:
        open_store("mysql://u:secret@h/db")
    assert "secret" not in one_line(unknown.value)


def test_a_missing_postgres_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "runtime._postgres_store", raising=False)
    with pytest.raises(StoreError) as missing:
        open_store("postgresql://u:secret@db.example/troupe")
    message = one_line(missing.value)
    assert message.startswith("store 'postgresql://u:***@db.example/troupe'")
    assert "pip install 'trio-troupe[postgres]'" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read and write any file")
def test_sqlite_without_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "cannot open it" in _fails_to_open(f"sqlite:///{locked}/j.db")
    finally:
        locked.chmod(0o700)


@pytest.mark.postgres
def test_postgres_open_failures(postgres_cluster: Cluster) -> None:
    from tests.postgres import free_port

    refused = _fails_to_open(f"postgresql://postgres:secret@127.0.0.1:{free_port()}/db")
    assert "Connection refused" in refused and "secret" not in refused
    missing = _fails_to_open(postgres_cluster.url("no_such_db"))
    assert 'database "no_such_db" does not exist' in missing
    assert "cannot open it" in _fails_to_open("postgresql://127.0.0.1:notaport/db")
    assert "cannot open it" in _fails_to_open(f"{postgres_cluster.url()}?nonsense=1")
    unknown_role = postgres_cluster.url().replace("postgres@", "nobody@")
    assert 'role "nobody" does not exist' in _fails_to_open(unknown_role)


# -- PostgreSQL: more than one process, and a server that restarts -------------------------


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url("postgres", request, tmp_path)


@pytest.mark.postgres
def test_postgres_stores_see_each_others_writes(pg_url: str) -> None:
    one, two = opened(pg_url), opened(pg_url)
    try:
        one.write(WriteBatch(runs=[run("r", thread_id="t")], segments=[segment("r", 0, 3)]))
        assert two.read_records("r", 1) == records("r", 1, 2)
        two.write(
            WriteBatch(
                segments=[segment("r", 3, 1)],
                ends=[RunEnd("r", "ok", 2.0, thread_id="t", messages=["m"])],
            )
        )
        got = one.get_run("r")
        assert got is not None and (got.status, got.events) == ("ok", 4)
        assert one.thread_messages("t") == [("r", "m")]
    finally:
        one.close()
        two.close()


_OTHER_PROCESS = """
import sys
from runtime._open_store import open_store
from runtime._store import RunEnd, RunRecord, Segment, WriteBatch
store = open_store(sys.argv[1])
store.open()
for n in range(20):
    root = f"child-{n}"
    store.write(WriteBatch(runs=[RunRecord(root, "cat", "chain", thread_id="shared")]))
    store.write(WriteBatch(
        segments=[Segment(root, 0, [n])],
        ends=[RunEnd(root, "ok", 1.0, None, "shared", [root])],
    ))
store.close()
"""


@pytest.mark.postgres
def test_postgres_two_processes_on_one_thread(pg_url: str) -> None:
    store = opened(pg_url)
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS, pg_url], cwd=Path(__file__).parent.parent
        )
        for n in range(20):
            root = f"parent-{n}"
            store.write(WriteBatch(runs=[run(root, thread_id="shared")]))
            store.write(WriteBatch(ends=[RunEnd(root, "ok", 1.0, None, "shared", [root])]))
        assert child.wait(timeout=60) == 0
        messages = store.thread_messages("shared")
        assert sorted(m for _, m in messages) == sorted(
            [f"parent-{n}" for n in range(20)] + [f"child-{n}" for n in range(20)]
        )
        assert all(run_id == m for run_id, m in messages)
        assert store.read_records("child-7") == [7]
        thread = store.get_thread("shared")
        assert thread is not None and thread.messages == 40
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_pool_reconnects_after_a_restart(pg_url: str, postgres_cluster: Cluster) -> None:
    store = opened(pg_url)
    try:
        store.write(WriteBatch(runs=[run("r")], segments=[segment("r", 0, 2)]))
        postgres_cluster.restart()
        store.write(WriteBatch(segments=[segment("r", 2, 2)]))  # the next write succeeds
        assert store.read_records("r") == records("r", 0, 4)
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_a_call_while_the_server_is_down_fails_in_bounded_time(
    pg_url: str, postgres_cluster: Cluster
) -> None:
    from runtime._postgres_store import PostgresStore

    store = PostgresStore(pg_url, timeout=1.0)
    store.open()
    try:
        postgres_cluster.stop_server()
        started = time.monotonic()
        with pytest.raises(StoreError) as failed:
            store.write(WriteBatch(runs=[run("r")]))
        assert time.monotonic() - started < 5
        message = one_line(failed.value)
        assert store.url in message and "no connection within 1 s" in message
        assert "Connection refused" in message
        postgres_cluster.start()
        store.write(WriteBatch(runs=[run("r")]))
        assert store.get_run("r") is not None
    finally:
        store.close()


def _heard(changes: Any, until: int) -> list[tuple[str, str]]:
    """What ``changes`` hears, waiting (up to 30 s) until it is ``until`` items."""
    import select

    heard: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    while len(heard) < until and time.monotonic() < deadline:
        select.select([changes.fileno()], [], [], max(0.0, deadline - time.monotonic()))
        heard += changes.take()
    return heard


@pytest.mark.postgres
def test_postgres_tells_other_processes_what_it_wrote(
    pg_url: str, postgres_cluster: Cluster
) -> None:
    """Issue 30: each write's runs, and each cancel request's owner, are heard by every
    listening process when the transaction commits (never before, never if it fails)."""
    from runtime._postgres_store import PostgresStore
    from runtime._store import CANCEL_ASKED, EVERY_RUN, JOURNAL_CHANGED, OWNER_CAME

    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    one.open()
    two.open()
    changes = two.changes()
    try:
        assert changes.take() == []
        one.write(WriteBatch(runs=[run("a"), run("b")], owner="p1"))
        one.write(WriteBatch(segments=[segment("a", 0, 2), segment("b", 0, 1)], owner="p1"))
        assert sorted(_heard(changes, 2)) == [(JOURNAL_CHANGED, "a"), (JOURNAL_CHANGED, "b")]
        one.write(WriteBatch(ends=[RunEnd("b", "ok", 2.0)], owner="p1"))
        assert _heard(changes, 1) == [(JOURNAL_CHANGED, "b")]
        with pytest.raises(FencedError):  # refused: nothing is said
            one.write(WriteBatch(segments=[segment("a", 2, 1)], owner="p2"))
        assert one.request_cancel("a")
        assert _heard(changes, 1) == [(CANCEL_ASKED, "p1")]
        # many runs in one write: several notifications; an id too long for one: every run
        many = [f"run-{i:04d}-{'x' * 90}" for i in range(300)] + ["y" * 7500]
        one.write(WriteBatch(runs=[run(r) for r in many], owner="p1"))
        one.write(WriteBatch(segments=[segment(r, 0, 1) for r in many], owner="p1"))
        heard = _heard(changes, len(many))
        assert sorted(key for _, key in heard) == sorted([*many[:-1], EVERY_RUN])
        # not telling (its process is alone): its writes say nothing; what it tells is
        # heard whatever it says
        one.telling = False
        one.write(WriteBatch(segments=[segment("a", 2, 1)], ends=[RunEnd("a", "ok", 3.0)]))
        one.tell(OWNER_CAME, "p9")
        one.tell(JOURNAL_CHANGED, EVERY_RUN)
        assert _heard(changes, 2) == [(OWNER_CAME, "p9"), (JOURNAL_CHANGED, EVERY_RUN)]
        one.telling = True
        # the server restarts: the listening connection says it broke
        postgres_cluster.restart()
        with pytest.raises(StoreError) as broke:
            _heard(changes, 1)
        assert "listening failed" in one_line(broke.value)
    finally:
        changes.close()
        one.close()
        two.close()


def test_sqlite_cannot_tell_so_readers_look(store: Store, url: str) -> None:
    if url.startswith("sqlite"):
        assert store.changes() is None
        store.tell("owner", "p1")  # nothing to tell it to


@pytest.mark.postgres
def test_a_notification_of_another_shape_wakes_every_run(pg_url: str) -> None:
    """Anything on the store's channel (another version's, an operator's ``NOTIFY``) is
    heard as 'something changed' (every join looks), never a crash of the listener: a
    payload that is JSON but not a list of ids raised a TypeError past the journal's
    handling of store errors, and the whole runtime stopped."""
    import psycopg

    from runtime._postgres_store import JOURNAL_CHANNEL, PostgresStore
    from runtime._store import EVERY_RUN, JOURNAL_CHANGED

    store = PostgresStore(pg_url)
    store.open()
    changes = store.changes()
    try:
        with psycopg.connect(pg_url, autocommit=True) as pg:
            for payload in ("5", "null", '{"a": 1}', "not json", '["r1", 2]'):
                pg.execute("SELECT pg_notify(%s, %s)", (JOURNAL_CHANNEL, payload))
        heard = _heard(changes, 6)
        assert heard == [
            (JOURNAL_CHANGED, EVERY_RUN),
            (JOURNAL_CHANGED, EVERY_RUN),
            (JOURNAL_CHANGED, EVERY_RUN),
            (JOURNAL_CHANGED, EVERY_RUN),
            (JOURNAL_CHANGED, "r1"),
            (JOURNAL_CHANGED, EVERY_RUN),
        ]
    finally:
        changes.close()
        store.close()


# -- processes of two versions on one store ------------------------------------------------


def _a_version_2_store(url: str, *owners: Owner) -> None:
    """Make the store at ``url`` as version 2 left it (owners that do not say their
    version, no ``oldest_writer``), with ``owners``."""
    opened(url).close()
    execute(url, "ALTER TABLE troupe_owners DROP COLUMN schema_version")
    execute(url, "UPDATE troupe_meta SET value = '2' WHERE key = 'schema_version'")
    execute(url, "DELETE FROM troupe_meta WHERE key = 'oldest_writer'")
    for o in owners:
        execute(
            url,
            "INSERT INTO troupe_owners (owner_id, host, pid, started_at, seen_at) VALUES "
            f"('{o.owner_id}', '{o.host}', {o.pid}, {o.started_at}, {o.seen_at})",
        )


def test_a_migration_under_a_live_process_of_older_code_says_so(
    url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 30: a version that takes an older one's writes (as version 3 took version
    2's; version 4 takes none, see the next tests) migrates a store under a live process
    of it, and the newer process says so (naming it and the versions); the older goes
    on, its version known from then on. A dead one is not named."""
    import runtime._sql as sql_module
    import runtime._store as store_module

    monkeypatch.setattr(store_module, "OLDEST_WRITER", 2)
    monkeypatch.setattr(sql_module, "OLDEST_WRITER", 2)
    now = time.time()
    _a_version_2_store(
        url,
        Owner("old", "host-b", 4242, now, now),
        Owner("gone", "host-c", 4243, now - 100, now - 100),
    )
    with caplog.at_level("WARNING", logger="troupe"):
        store = opened(url)
    try:
        said = " ".join(r.getMessage() for r in caplog.records)
        assert f"migrated from schema version 2 to {SCHEMA_VERSION}" in said
        assert "pid 4242 on host-b (version 2)" in said and "4243" not in said
        assert schema_version(url) == str(SCHEMA_VERSION)
        assert {o.owner_id: o.schema for o in store.owners()} == {"old": 2, "gone": 2}
        assert store.schema() == (SCHEMA_VERSION, 2)
        store.heartbeat(Owner("old", "host-b", 4242, now, now + 1))  # as version 2 beats
        store.write(WriteBatch(runs=[run("r", owner="old")], owner="old"))
    finally:
        store.close()


@pytest.mark.parametrize("old", [3, 4, 5, 6])
def test_a_live_process_of_an_older_version_blocks_the_migration(url: str, old: int) -> None:
    """Version 3's code cannot read version 4's links (a process reads what it joins
    and recovers), nor version 4's a thread's messages in version 5's table, nor
    version 5's and 6's version 7's escaped dicts: a live one blocks the migration (to
    7, which takes no older process's writes), in one line; nothing is migrated."""
    assert (SCHEMA_VERSION, OLDEST_WRITER) == (7, 7)
    now = time.time()
    opened(url).close()
    execute(url, f"UPDATE troupe_meta SET value = '{old}' WHERE key = 'schema_version'")
    execute(url, "UPDATE troupe_meta SET value = '2' WHERE key = 'oldest_writer'")
    live_owner(url, old, now)
    with pytest.raises(StoreError) as refused:
        opened(url)
    message = one_line(refused.value)
    assert f"pid 4242 on host-b (version {old})" in message and "stop them" in message
    assert schema_version(url) == str(old)


def test_a_migration_that_a_live_older_process_could_not_follow_is_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration to a version that does not take a live older process's writes (as
    version 2 did not take version 1's) is refused in one line naming the versions and
    the process; nothing is migrated. Once that process is dead, it goes ahead."""
    import runtime._store as store_module

    now = time.time()
    _a_version_2_store(url, Owner("old", "host-b", 4242, now, now))
    monkeypatch.setattr(store_module, "OLDEST_WRITER", SCHEMA_VERSION)
    with pytest.raises(StoreError) as refused:
        opened(url)
    message = one_line(refused.value)
    assert "in use by 1 process(es) of an older Troupe (pid 4242 on host-b (version 2))" in message
    assert f"from schema version 2 to {SCHEMA_VERSION}" in message and "stop them" in message
    assert schema_version(url) == "2"
    execute(url, f"UPDATE troupe_owners SET seen_at = {now - 100}")  # it stopped beating
    opened(url).close()
    assert schema_version(url) == str(SCHEMA_VERSION)


def test_a_newer_store_that_takes_this_versions_writes_is_used_as_it_is(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store a newer Troupe migrated, that says it takes this version's writes
    (``oldest_writer``), is opened as it is with a warning (an older process restarted
    during a rolling upgrade), not migrated back."""
    opened(url).close()
    newer = SCHEMA_VERSION + 1
    execute(url, f"UPDATE troupe_meta SET value = '{newer}' WHERE key = 'schema_version'")
    with caplog.at_level("WARNING", logger="troupe"):
        store = opened(url)
    try:
        assert f"schema version {newer}, newer than this Troupe's {SCHEMA_VERSION}" in caplog.text
        assert store.schema() == (newer, OLDEST_WRITER)
        store.write(WriteBatch(runs=[run("r")]))
        assert store.get_run("r") is not None
    finally:
        store.close()
    assert schema_version(url) == str(newer)
