"""A hostile review of stop 43's changes (batch writes, the tracer's hops, recovery's
new pieces, a cancel asked as a claim is made): stop 44."""

from __future__ import annotations

import gc
import subprocess
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from actors import Agent
from actors.testing import run_watched
from protocol import StreamEvent
from runtime import (
    Performer,
    Resume,
    Run,
    RunNotPausedError,
    RunPaused,
    UnknownRunError,
    open_runtime,
)
from runtime._sqlite_store import SQLiteStore
from runtime._store import Owner, RunEnd, RunRecord, Segment, Store, WriteBatch, this_host

from .postgres import Cluster
from .recovery_worker import make_agent
from .test_direct_delivery import Step, Tree, check_streams, plans
from .test_recovery import killed_paying
from .test_review45 import _first_paused
from .test_review46 import once_ended, refuse_every_input
from .test_serve_resume import calls, payer
from .test_store_contract import opened


class _LosingClaims:
    """A store on which another process claims a paused run first while this one's
    claim is on its way (a loaded machine, a far database): the claim, once let go
    (``release``), fails."""

    entered: threading.Event
    release: threading.Event

    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        self.entered.set()
        assert self.release.wait(20)
        rival = attrs.evolve(by, run_id=f"{by.run_id}-rival", owner="rival")
        assert super().mark_resumed(run_id, rival)  # type: ignore[misc]
        claimed: bool = super().mark_resumed(run_id, by)  # type: ignore[misc]
        return claimed


class _LosingClaim(_LosingClaims, SQLiteStore):
    pass


async def test_a_cancel_asked_as_a_claim_that_fails_is_made_says_so(tmp_path: Path) -> None:
    # rt.cancel asked while a resume claims its paused run said True (the run was
    # cancelled) although the claim then failed: there was never a run to cancel.
    store = _LosingClaim(f"sqlite:///{tmp_path}/runs.db")
    await _cancelled_as_a_claim_fails(store, tmp_path / "ledger.txt")


@pytest.mark.postgres
async def test_a_cancel_asked_as_a_claim_that_fails_is_made_says_so_on_postgresql(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    from runtime._postgres_store import PostgresStore

    class LosingClaim(_LosingClaims, PostgresStore):
        pass

    store = LosingClaim(postgres_cluster.new_database())
    await _cancelled_as_a_claim_fails(store, tmp_path / "ledger.txt")


async def _cancelled_as_a_claim_fails(store: _LosingClaims, ledger: Path) -> None:
    assert isinstance(store, Store)
    store.entered, store.release = threading.Event(), threading.Event()
    agent = payer(ledger)
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first")
        answers: list[bool] = []

        async def resume() -> None:
            with pytest.raises(RunNotPausedError):
                await rt.resume(agent, "first", {"p1": True}, run_id="second")

        async def cancel() -> None:
            answers.append(await rt.cancel("second"))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(resume)
                await trio.to_thread.run_sync(store.entered.wait)
                nursery.start_soon(cancel)
                await trio.testing.wait_all_tasks_blocked()
                store.release.set()
        assert answers == [False]  # no run "second" was ever there
        with pytest.raises(UnknownRunError):
            await rt.get_run("second")
        assert calls(ledger) == []


class _LosingTakeOver(SQLiteStore):
    """A store on which, as this process takes a dead process's run over, a cancel is
    asked here (``ask``, in the event loop), and then another process takes the run
    first."""

    ask: Any = None

    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        if self.ask is not None:
            trio.from_thread.run(self.ask, run_id)
            assert super().take_over(run_id, dead_owner, "rival", seen_at=seen_at)
        return super().take_over(run_id, dead_owner, owner, seen_at=seen_at)


async def test_a_cancel_asked_as_a_take_over_that_fails_is_made_reaches_the_taker(
    tmp_path: Path,
) -> None:
    # rt.cancel asked while this process took a dead process's run over said True
    # (the run would be cancelled once taken up) and did nothing more: another process
    # took the run first, and ran it to its end, never asked.
    url = f"sqlite:///{tmp_path}/runs.db"
    ledger = tmp_path / "ledger.txt"
    answers: list[bool] = []
    store = _LosingTakeOver(url)
    with trio.fail_after(60):
        async with open_runtime(store=store, resume=[make_agent(str(ledger))]) as rt:

            async def ask(run_id: str) -> None:
                async def cancel() -> None:
                    answers.append(await rt.cancel(run_id))

                trio.lowlevel.spawn_system_task(cancel)
                await trio.testing.wait_all_tasks_blocked()

            await trio.to_thread.run_sync(killed_paying, url, ledger)
            store.ask = ask
            journal = rt.journal
            assert journal is not None
            await journal.sweep()
            while not answers:  # noqa: ASYNC110
                await trio.sleep(0.01)
            assert answers == [True]  # asked of the process that took it
            assert store.take_cancels("rival") == ["r1"]


class _Ends(SQLiteStore):
    """A store that keeps which runs each write ended."""

    ended: list[str]

    def write(self, batch: WriteBatch) -> None:
        super().write(batch)
        self.ended.extend(end.run_id for end in batch.ends)


async def dead_claim(tmp_path: Path) -> tuple[_Ends, Agent]:
    """A store on which a process claimed the paused run "first" for its resume
    ("second": its record running, its journal empty) and died before its first write."""
    url = f"sqlite:///{tmp_path}/runs.db"
    agent = payer(tmp_path / "ledger.txt")
    async with open_runtime(store=url) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first")
    store = _Ends(url)
    store.ended = []
    store.open()
    first = store.get_run("first")
    assert first is not None
    now = time.time()
    claim = RunRecord(
        run_id="second",
        performer=first.performer,
        kind=first.kind,
        input=first.input,
        config={"resumes": "first", "origin": "first", "decisions": {"p1": {"approve": True}}},
        owner="dead",
        created_at=now,
    )
    assert store.mark_resumed("first", claim)
    store.heartbeat(Owner("dead", this_host(), _gone_pid(), now, now))
    return store, agent


async def test_a_dead_claim_that_cannot_be_resumed_ends_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process claimed a paused run for its resume ("second": its record running,
    # its journal empty) and died before the run's start was written (a write nobody
    # waits for gathers up to 50 ms). Recovery took "second" over and could not start
    # it (its performer refuses the journaled input): its record was ended twice, once
    # as a claim never started ("cancelled") and once as a run not resumed ("error"),
    # whichever came last standing.
    store, agent = await dead_claim(tmp_path)
    refuse_every_input(agent, monkeypatch)
    async with open_runtime(store=store, resume=[agent]) as rt:
        await once_ended(rt, "second")
        await trio.sleep(0.3)  # (a second end would be written meanwhile)
        ended = await rt.get_run("second")
    assert store.ended.count("second") == 1, store.ended
    assert ended.status == "error" and "not an input this agent takes" in (ended.error or "")


def _gone_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


@pytest.mark.postgres
def test_a_threads_delete_racing_a_runs_end_leaves_no_journal_without_its_run(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rt.threads.delete deleted the thread's ended runs' journals, then (a statement
    # of its own, seeing what committed meanwhile) their records. A run of the thread
    # that ended between the two without adding messages (an error, a cancel: its end
    # locks no thread) had its record deleted and its journal left, for ever (no run
    # names it, so retention never finds it); so had the paused run a running resume
    # replays, and that resume, when the resume ended meanwhile.
    from .test_review46 import _Between

    url = postgres_cluster.new_database()
    deleter, ender = opened(url), opened(url)
    try:
        now = time.time()
        deleter.write(
            WriteBatch(
                runs=[
                    _run("R", now, thread_id="t"),
                    _run("P", now, thread_id="t"),
                    _run("done", now, thread_id="t"),
                ],
                segments=[_segment("R", 3), _segment("P", 2), _segment("done", 1)],
                ends=[RunEnd("P", "paused", now), RunEnd("done", "ok", now)],
            )
        )
        assert deleter.mark_resumed("P", _run("N", now, thread_id="t"))
        deleter.write(WriteBatch(segments=[_segment("N", 2)]))

        def end_meanwhile() -> None:  # (an end without messages locks no thread)
            ender.write(
                WriteBatch(
                    ends=[RunEnd("R", "error", now, "boom"), RunEnd("N", "cancelled", now)],
                    owner="p",
                )
            )

        original = deleter._writing  # type: ignore[attr-defined]

        @contextmanager
        def writing() -> Iterator[Any]:
            with original() as db:
                yield _Between(db, "DELETE FROM troupe_runs", end_meanwhile)

        monkeypatch.setattr(deleter, "_writing", writing)
        assert deleter.delete_thread("t")
        monkeypatch.undo()
        for run_id in ["R", "P", "N", "done"]:
            record, journal = deleter.get_run(run_id), deleter.read_records(run_id)
            assert (record is None) == (journal == []), (run_id, record, journal)
        assert deleter.get_run("done") is None
    finally:
        deleter.close()
        ender.close()


def _run(run_id: str, created_at: float, **fields: Any) -> RunRecord:
    return RunRecord(run_id, "cat", "chain", owner="p", created_at=created_at, **fields)


def _segment(root_id: str, n: int) -> Segment:
    return Segment(root_id, 0, [{"n": i} for i in range(n)])


async def test_a_dead_processs_run_whose_journal_cannot_be_read_back_ends(tmp_path: Path) -> None:
    # Recovery took the run over (its record this process's) and then failed to read
    # it back (here a record it cannot decode; a store's failure does the same): the
    # sweep went on to end it as an orphan, which takes it from the dead process
    # first, and found it this process's: nothing ended it, and it said "running" for
    # this process's life (a join waited, its thread refused every run).
    url = f"sqlite:///{tmp_path}/runs.db"
    agent = payer(tmp_path / "ledger.txt")
    store = SQLiteStore(url)
    store.open()
    now = time.time()
    dead = RunRecord("r", agent.name, "chain", input={"input": "x"}, owner="dead", created_at=now)
    store.write(WriteBatch(runs=[dead], segments=[Segment("r", 0, ["not a record"])]))
    store.heartbeat(Owner("dead", this_host(), _gone_pid(), now, now))
    store.close()
    async with open_runtime(store=url, resume=[agent]) as rt:
        with trio.fail_after(20):
            while (await rt.get_run("r")).status == "running":  # noqa: ASYNC110
                await trio.sleep(0.05)
        ended = await rt.get_run("r")
        assert ended.status == "error" and "could not be resumed" in (ended.error or "")
        assert "not a record" in (ended.error or "")


class _Token:
    """A chunk whose life a test can follow."""

    __slots__ = ("__weakref__", "n")

    def __init__(self, n: int) -> None:
        self.n = n


@attrs.frozen(eq=False)
class _Streamer(Performer[int, int]):
    """Streams ``message`` chunks, a scheduler pass after each (as a model's tokens
    come from the network), each kept in ``alive`` while something holds it."""

    alive: weakref.WeakSet[_Token]
    name: str = "streamer"
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = attrs.field(factory=dict)

    def coerce_input(self, value: Any) -> int:
        return int(value)

    async def perform(self, message: int, run: Run) -> int:
        for n in range(message):
            token = _Token(n)
            self.alive.add(token)
            await run.emit(token)
            del token
            await trio.lowlevel.checkpoint()
        return message


@pytest.mark.parametrize("lag", [False, True])
async def test_a_long_run_of_chunks_read_keeps_what_was_read_no_longer(lag: bool) -> None:
    # A stream's channel kept every chunk its reader had read while the run's chunks
    # came one after another (handed over by their producer, joining the run of them
    # the reader was at): a run streaming for long (a model's long answer, a performer
    # that streams for hours) grew its reader's channel without bound, 16 events of
    # capacity or not (promise 5; before stop 43 each was let go once read).
    alive: weakref.WeakSet[_Token] = weakref.WeakSet()
    most = 0
    read = 0
    async with (
        open_runtime() as rt,
        rt.astream_events(_Streamer(alive), 3_000, capacity=16) as stream,
    ):
        async for event in stream:
            if event.event != "on_chain_stream":
                continue
            read += 1
            del event
            if read % 500 == 0:
                gc.collect()
                most = max(most, len(alive))
            if lag and read % 3 == 0:
                await trio.lowlevel.checkpoint()  # (a reader behind now and then)
    assert read == 3_000
    assert most <= 100, most  # (the channel's capacity, and a few read being let go)


# -- many runs at once, their readers stalling, leaving or cancelled -------------------


@attrs.frozen
class _Reading:
    """How a stream is read: in full (``all``), slowly (``stall``: a pause at event
    ``at``), left at event ``at`` (``leave``), or its reader's scope cancelled there
    (``cancel``: it must never be given another event)."""

    how: str
    at: int


@attrs.frozen
class _Many:
    trees: tuple[tuple[tuple[Step, ...], tuple[Step, ...]], ...]
    readings: tuple[_Reading, ...]
    capacity: int


@st.composite
def _many(draw: st.DrawFn) -> _Many:
    n = draw(st.integers(1, 24))  # (the tracer's senders handle starts and ends: any number)
    trees = tuple((draw(plans), draw(plans)) for _ in range(n))
    readings = tuple(
        _Reading(
            draw(st.sampled_from(["all", "stall", "leave", "cancel"])), draw(st.integers(1, 50))
        )
        for _ in range(n)
    )
    return _Many(trees, readings, draw(st.sampled_from([1, 2, 16, 64])))


async def _read_many(case: _Many) -> None:
    streams: list[tuple[list[StreamEvent], bool]] = []
    async with open_runtime() as rt:

        async def one(parent: tuple[Step, ...], child: tuple[Step, ...], reading: _Reading) -> None:
            seen: list[StreamEvent] = []
            after: list[StreamEvent] = []  # given once its scope was cancelled
            tree = Tree(parent, Tree(child, name="child"))
            with trio.CancelScope() as scope:
                async with rt.astream_events(tree, 0, capacity=case.capacity) as stream:
                    async for event in stream:
                        (after if scope.cancel_called else seen).append(event)
                        if len(seen) == reading.at:
                            if reading.how == "leave":
                                break
                            if reading.how == "cancel":
                                scope.cancel()
                            elif reading.how == "stall":
                                await trio.sleep(0.005)
            assert after == []
            streams.append((seen, reading.how in ("all", "stall")))

        async with trio.open_nursery() as nursery:
            for (parent, child), reading in zip(case.trees, case.readings, strict=True):
                nursery.start_soon(one, parent, child, reading)
    check_streams(streams)


@given(_many())
def test_many_runs_read_stalled_left_or_cancelled_keep_every_promise(case: _Many) -> None:
    run_watched(lambda: _read_many(case), seconds=60, label=repr(case))


async def test_a_resume_never_started_whose_reader_is_cancelled_at_its_end_ends_its_claim(
    tmp_path: Path,
) -> None:
    # A resume's run cancelled before its actor took it up never starts, and the end of
    # its claim's record is written as its reader reaches the stream's end. A reader
    # woken by that end as its own scope is cancelled (trio gives it the wake, and the
    # cancel at its next checkpoint: the write's) took the end from the journal and
    # never wrote it: the record said "running" for the process's life (its thread
    # refused every run).
    async with _first_paused(tmp_path) as (rt, agent, _):
        resume = Resume("first", {"p1": True})
        async with rt.astream_events(agent, None, resume=resume, run_id="second") as events:
            events.cancel()  # (before its actor took it up: it never starts)
            with trio.CancelScope() as reading:
                reading.cancel()
                await events._wait_durable()  # (where __anext__ is once woken by the end)
        with trio.fail_after(10):
            while (await rt.get_run("second")).status == "running":  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await rt.get_run("second")).status == "cancelled"
