"""Owners, heartbeats and the sweep across processes (issue 30): a sweep acts on what it
read a moment before, so an owner that beats (or signs off, or ends its runs) in that
window keeps what is its own; a run whose owner's record is gone waits out the lease; a
slow sweep does not hold the heartbeat back; and every run still ends exactly once.

"Another process" is a second journal on the same SQLite file whose owner record names
another host (only its heartbeat tells whether it lives), with the first journal's id
taken out of this process's live owners.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio

import runtime._journal as journal_module
from actors.testing import check_events
from runtime import JournalError, Performer, Run, open_runtime
from runtime._journal import Journal
from runtime._sqlite_store import SQLiteStore
from runtime._store import (
    SCHEMA_VERSION,
    Owner,
    RunEnd,
    RunRecord,
    StoreError,
    WriteBatch,
    presumed_dead,
    this_host,
)

ELSEWHERE = "another-host"


class Hooked(SQLiteStore):
    """A store that calls ``after_owners`` once it read the owners (the moment between
    a sweep's judgement and its acts), and ``before_take_over`` before each take-over."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.after_owners: Callable[[], None] = lambda: None
        self.before_take_over: Callable[[], None] = lambda: None
        self.owners_delay = 0.0

    def owners(self) -> list[Owner]:
        time.sleep(self.owners_delay)
        found = super().owners()
        self.after_owners()
        return found

    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        self.before_take_over()
        return super().take_over(run_id, dead_owner, owner, seen_at=seen_at)


def _opened(url: str) -> SQLiteStore:
    store = SQLiteStore(url)
    store.open()
    return store


def _running(run_id: str, owner: str, created_at: float) -> RunRecord:
    return RunRecord(run_id, "p", "chain", owner=owner, created_at=created_at)


def _a_stale_owner(url: str) -> tuple[SQLiteStore, float]:
    """The store, with owner ``A`` of another host last heard of a minute ago, and its
    running run ``R``; and when it was heard of."""
    store = _opened(url)
    stale = time.time() - 60
    store.heartbeat(Owner("A", ELSEWHERE, 1, stale, stale))
    store.write(WriteBatch(runs=[_running("R", "A", stale)]))
    return store, stale


async def _sweeper(store: SQLiteStore, *, lease: float = 30.0) -> Journal:
    journal = Journal(store, lease=lease)
    await journal.open()
    return journal


async def _closed(journal: Journal) -> None:
    journal_module._LIVE_OWNERS.discard(journal.owner.owner_id)
    await trio.to_thread.run_sync(journal.store.close)


async def test_an_owner_that_beats_while_a_sweep_judges_it_keeps_its_runs(url: str) -> None:
    # A's last beat is a minute old when the sweep reads it (dead by the lease); A beats
    # before the sweep acts: A lives, its run stays A's and running, its record stays.
    store, stale = _a_stale_owner(url)
    hooked = Hooked(url)
    journal = await _sweeper(hooked)
    try:

        def beats() -> None:
            now = time.time()
            store.heartbeat(Owner("A", ELSEWHERE, 1, stale, now))

        hooked.before_take_over = beats
        assert await journal.sweep() == 0
    finally:
        await _closed(journal)
    record = store.get_run("R")
    assert record is not None and (record.status, record.owner) == ("running", "A")
    assert [o.owner_id for o in store.owners() if o.owner_id == "A"] == ["A"]
    assert store.read_records("R") == []  # no error event written over A's run
    store.close()


async def test_a_run_whose_owner_has_no_record_waits_out_the_lease(url: str) -> None:
    # An owner whose record a sweep forgot (it was late) starts a run before its next
    # beat: its run is not taken for an orphan until the lease passed since it began.
    store = _opened(url)
    now = time.time()
    store.write(
        WriteBatch(runs=[_running("young", "late", now), _running("old", "gone", now - 120)])
    )
    journal = await _sweeper(store, lease=30.0)
    try:
        assert await journal.sweep() == 1
    finally:
        await _closed(journal)
    store = _opened(url)
    young, old = store.get_run("young"), store.get_run("old")
    assert young is not None and young.status == "running"
    assert old is not None and old.status == "error" and "stopped" in (old.error or "")
    store.close()


async def test_an_owner_signing_off_while_a_sweep_judges_it_dead_keeps_its_runs(
    url: str,
) -> None:
    # A ends its run and forgets its record (it signs off) after the sweep read the
    # owners and A's running runs, before it acts: the run keeps A's end, once.
    store, _ = _a_stale_owner(url)
    hooked = Hooked(url)
    journal = await _sweeper(hooked)

    def signs_off() -> None:  # A ends its run and forgets its record
        store.write(WriteBatch(ends=[_end("R")], owner="A"))
        store.forget_owner("A")

    try:
        hooked.before_take_over = signs_off
        assert await journal.sweep() == 0
    finally:
        await _closed(journal)
    record = store.get_run("R")
    assert record is not None and record.status == "ok"  # A's end, once
    store.close()


def _end(run_id: str) -> RunEnd:
    return RunEnd(run_id, "ok", time.time())


class Slow(Performer[str, str]):
    """Waits until ``release`` is set (from another task)."""

    name = "slow"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012  # shared, read-only

    def __init__(self, release: trio.Event) -> None:
        self.release = release

    def coerce_input(self, value: Any) -> str:
        return str(value)

    async def perform(self, message: str, run: Run) -> str:
        await self.release.wait()
        return "done"


@pytest.mark.parametrize("first", ["owner_ends", "sweep_takes_over"])
async def test_a_run_ended_as_its_owner_signs_off_and_swept_at_once_ends_once(
    url: str, first: str
) -> None:
    """A real owner (a runtime) and a sweep that takes it for dead (its beat looks a
    minute old to the sweep), at the moment the owner ends its run and signs off:
    whichever writes first, the run ends exactly once, and the other is refused."""
    release = trio.Event()
    hooked = Hooked(url)
    store = _opened(url)
    outcome: list[Any] = []
    judged, go_on = threading.Event(), threading.Event()

    def judge() -> None:  # the sweep has read A's running runs: it waits to act
        judged.set()
        go_on.wait(30)

    async with open_runtime(store=url) as owner_rt:
        journal = owner_rt.journal
        assert journal is not None
        owner_id = journal.owner.owner_id
        # to the sweep, A is another machine's process, last heard of a minute ago
        journal_module._LIVE_OWNERS.discard(owner_id)
        store.forget_owner(owner_id)
        old = time.time() - 60
        store.heartbeat(Owner(owner_id, ELSEWHERE, 1, old, old))
        sweeper = await _sweeper(hooked)
        hooked.before_take_over = judge
        try:

            async def run() -> None:
                try:
                    outcome.append(await owner_rt.ainvoke(Slow(release), "x", run_id="R"))
                except JournalError as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                await _until(store, "R", lambda status: status is not None)  # it started
                nursery.start_soon(sweeper.sweep)
                assert await trio.to_thread.run_sync(judged.wait, 30)
                if first == "owner_ends":
                    release.set()  # the run ends, its end durable, before the sweep acts
                    with trio.fail_after(30):
                        while not outcome:  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    go_on.set()
                else:
                    go_on.set()  # the sweep ends it first; then the owner's end comes
                    await _until(store, "R", lambda status: status not in (None, "running"))
                    release.set()
        finally:
            go_on.set()
            journal_module._LIVE_OWNERS.add(owner_id)
            await _closed(sweeper)
    # the owner signed off: it holds no running run, so its record went
    assert owner_id not in [o.owner_id for o in store.owners()]
    record = store.get_run("R")
    async with open_runtime(store=url) as reader, reader.join("R") as joined:
        events = [e async for e in joined]
    check_events(events)  # every run that started ended, exactly once
    assert len([e for e in events if e.run_id == "R" and e.status is not None]) == 1
    assert record is not None
    if first == "owner_ends":
        assert outcome == ["done"] and record.status == "ok"
    else:
        assert isinstance(outcome[0], JournalError) and record.status == "error"
        assert "stopped before the run ended" in (record.error or "")
    store.close()


async def _until(store: SQLiteStore, run_id: str, wanted: Callable[[str | None], bool]) -> None:
    """Wait (30 s at most) until run ``run_id``'s status in the store is ``wanted``."""

    def status() -> str | None:
        record = store.get_run(run_id)
        return None if record is None else record.status

    with trio.fail_after(30):
        while not wanted(await trio.to_thread.run_sync(status)):  # noqa: ASYNC110
            await trio.sleep(0.01)


async def test_a_slow_sweep_does_not_hold_the_heartbeat_back(url: str) -> None:
    """The sweep takes 3 s (a slow read of the owners); meanwhile the owner's record is
    refreshed every beat, so that no other process takes it for dead (lease 1 s)."""
    hooked = Hooked(url)
    journal = Journal(hooked, heartbeat=0.05, lease=1.0)
    await journal.open()
    store = _opened(url)
    gaps: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.serve)
        await trio.sleep(0.2)
        hooked.owners_delay = 3.0  # every sweep from now on
        deadline = trio.current_time() + 3.5
        while trio.current_time() < deadline:
            await trio.sleep(0.1)
            mine = [
                o
                for o in await trio.to_thread.run_sync(store.owners)
                if o.owner_id == journal.owner.owner_id
            ]
            assert mine
            gaps.append(time.time() - mine[0].seen_at)
        hooked.owners_delay = 0.0
        journal.recorder.close()
    store.close()
    assert max(gaps) < 1.0, gaps  # never as stale as the lease


async def test_threads_held_elsewhere_do_not_hold_the_heartbeat_back(url: str) -> None:
    """Every thread of trio's default pool held (tools blocked in ``trio.to_thread``,
    reads their clients left on a slow store): the owner's record is still refreshed
    every beat, so that no other process takes its live runs for dead (lease 1 s)."""
    journal = Journal(SQLiteStore(url), heartbeat=0.05, lease=1.0)
    await journal.open()
    store = _opened(url)
    release = threading.Event()
    limiter = trio.to_thread.current_default_thread_limiter()
    gaps: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.serve)
        for _ in range(int(limiter.total_tokens) + 5):
            nursery.start_soon(trio.to_thread.run_sync, release.wait, 30)
        # reads a client left: abandoned (their own nursery cancelled), still under way;
        # once released they find the store closed, which no one hears of
        with trio.move_on_after(0.2):
            async with trio.open_nursery() as left:
                for _ in range(40):
                    left.start_soon(journal.reads.read, release.wait, 30)
                await trio.sleep_forever()
        await trio.sleep(0.2)
        assert limiter.borrowed_tokens == limiter.total_tokens
        deadline = trio.current_time() + 2.0
        while trio.current_time() < deadline:
            await trio.sleep(0.1)
            (mine,) = [o for o in store.owners() if o.owner_id == journal.owner.owner_id]
            gaps.append(time.time() - mine.seen_at)
        release.set()
        journal.recorder.close()
    store.close()
    assert max(gaps) < 0.5, gaps  # beat on time: never near the lease


@pytest.mark.parametrize("takes_ours", [True, False])
async def test_a_running_process_hears_that_a_newer_troupe_migrated_its_store(
    url: str, takes_ours: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer Troupe migrates the store under a running process (its beat was late, or
    it was forced): if the new version takes this one's writes the process goes on,
    saying so once; if not, its journal stops at its next beat with one line naming
    both versions (its writes would not be read), and its runtime with it."""
    journal = Journal(SQLiteStore(url), heartbeat=0.05)
    await journal.open()
    newer = SCHEMA_VERSION + 1
    db = sqlite3.connect(url.removeprefix("sqlite:///"))
    with db:
        db.execute("UPDATE troupe_meta SET value = ? WHERE key = 'schema_version'", (str(newer),))
        if not takes_ours:
            db.execute(
                "UPDATE troupe_meta SET value = ? WHERE key = 'oldest_writer'", (str(newer),)
            )
    db.close()
    with caplog.at_level("WARNING", logger="troupe"):
        if takes_ours:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.serve)
                await trio.sleep(0.5)  # several beats
                journal.recorder.close()
            said = [r.getMessage() for r in caplog.records if "newer Troupe" in r.getMessage()]
            assert len(said) == 1 and "this process goes on" in said[0]
        else:
            with trio.fail_after(10), pytest.raises(StoreError) as stopped:
                await journal.serve()
            message = str(stopped.value)
            assert "\n" not in message
            assert f"migrated to schema version {newer}" in message
            assert f"version {SCHEMA_VERSION}" in message and "upgrade it" in message


def test_a_process_in_another_pid_namespace_of_the_same_hostname_is_judged_by_its_beat() -> None:
    """Two containers sharing a hostname (host networking) each have their own pids,
    often the very same (1): an owner named by the hostname and another pid namespace is
    judged by its heartbeat alone, never by this process's pids; one of this pid
    namespace whose pid is gone is dead at once."""
    now = time.time()
    here = this_host()
    assert here.startswith(socket.gethostname())
    other_container = f"{socket.gethostname()} (pid:[1])"
    assert other_container != here
    for pid in (os.getpid(), 1, 2**22 + 1):  # this process's pid, init's, one that is gone
        fresh = Owner("B", other_container, pid, now, now)
        assert not presumed_dead(fresh, now, lease=30.0)
        assert presumed_dead(Owner("B", other_container, pid, now, now - 31.0), now, lease=30.0)
    assert presumed_dead(Owner("C", here, 2**22 + 1, now, now), now, lease=30.0)
    assert presumed_dead(Owner("C", here, os.getpid(), now, now), now, lease=30.0)
    assert not presumed_dead(Owner("C", here, 1, now, now), now, lease=30.0)  # init lives
