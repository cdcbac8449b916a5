"""A hostile review of review45's fixes (threads, resumes, claims, retention): stop 46."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import Agent
from actors.testing import check_events
from runtime import RunPaused, RunRecord, Runtime, open_runtime
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, WriteBatch

from .postgres import Cluster
from .recovery_worker import make_agent
from .test_recovery import journal, killed_paying
from .test_review45 import TWICE, _payer_and_cat, _SlowClaims
from .test_serve_resume import calls, payer
from .test_store_contract import opened, run, segment


class _SlowTakeOver(SQLiteStore):
    """A store on which a cancel is asked (as another process asks it) the moment a
    dead process's run is taken over, before the take-over returns (a loaded machine,
    a far database)."""

    taken = threading.Event()

    def take_over(
        self, run_id: str, dead_owner: str, owner: str, *, seen_at: float | None = None
    ) -> bool:
        taken = super().take_over(run_id, dead_owner, owner, seen_at=seen_at)
        if taken:
            self.taken.set()
            assert self.request_cancel(run_id)  # it is running, this process's
            time.sleep(0.6)  # (more than a look for cancel requests: 0.25 s)
        return taken


async def test_a_cancel_asked_as_a_dead_processs_run_is_taken_over_is_not_lost(
    tmp_path: Path,
) -> None:
    # A recovered run's record (running, this process's) is in the store before its
    # start reaches the journal: a cancel asked then was taken from the store by this
    # process's journal, found no run here, and was dropped (review45 fixed the same
    # shape for a resume's claim): the run went on to its end, its payment made.
    url = f"sqlite:///{tmp_path}/runs.db"
    ledger = tmp_path / "ledger.txt"
    killed_paying(url, ledger)

    store = _SlowTakeOver(url)
    store.taken = threading.Event()
    async with open_runtime(store=store, resume=[make_agent(str(ledger))]) as rt:
        assert store.taken.is_set()
        with trio.fail_after(20):
            while (await rt.get_run("r1")).status == "running":  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await rt.get_run("r1")).status == "cancelled"
    # the payment in flight at the crash (run again at least once, as a recovery
    # does) was cancelled: it never finished
    assert "pay 5 done" not in ledger.read_text().splitlines()
    check_events(journal(url))


class _SlowClaim(_SlowClaims, SQLiteStore):
    claimed = threading.Event()


async def test_a_threads_delete_while_a_resume_goes_on_keeps_the_runs_it_replays(
    tmp_path: Path,
) -> None:
    # rt.threads.delete keeps the thread's running runs, but deleted the paused run a
    # running resume replays (as retention did before review45): that resume's next
    # resume (or its recovery after a crash) was an UnknownRunError naming the deleted
    # run, and the conversation could not go on.
    ledger = tmp_path / "ledger.txt"
    agent = payer(ledger, *TWICE)
    store = _SlowClaim(f"sqlite:///{tmp_path}/runs.db")
    store.claimed = threading.Event()
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay twice", run_id="first", thread_id="t")
        paused: list[BaseException] = []

        async def resume() -> None:
            try:
                await rt.resume(agent, "first", {"p1": True}, run_id="second")
            except RunPaused as exc:
                paused.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume)
            await trio.to_thread.run_sync(store.claimed.wait)
            assert (await rt.get_run("second")).status == "running"
            await rt.threads.delete("t")  # its running run "second" is kept
        assert len(paused) == 1
        output = await rt.resume(agent, "second", {"p2": True}, run_id="third")
        assert output.output == "all done"
        assert calls(ledger) == ["pay 5", "pay 7"]


class _Between:
    """A cursor that calls ``before`` before it runs a statement that begins with
    ``statement``."""

    def __init__(self, cursor: Any, statement: str, before: Callable[[], None]) -> None:
        self._cursor, self._statement, self._before = cursor, statement, before

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith(self._statement):
            self._before()
        return self._cursor.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@pytest.mark.postgres
@pytest.mark.parametrize("moment", ["claim_first", "retention_first"])
def test_retention_racing_a_claim_keeps_the_paused_run_on_postgresql(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    # Retention in one process and a resume's claim of an old paused run in another,
    # at once. Retention read what to delete before the claim committed (PostgreSQL
    # checks again only the row it waited for, not the query that chose it): it
    # deleted the paused run the claim's run (running) replays, or only its journal.
    # Whatever the order, a claim that holds keeps the paused run with its journal.
    import runtime._postgres_store as pg

    url = postgres_cluster.new_database()
    claimant, retention = opened(url), opened(url)
    try:
        old = time.time() - 3600
        claimant.write(
            WriteBatch(
                runs=[run("P", old)],
                segments=[segment("P", 0, 3)],
                ends=[RunEnd("P", "paused", old + 1)],
            )
        )
        in_claim, go_on = threading.Event(), threading.Event()
        insert_runs = pg._insert_runs

        def slow_insert(db: Any, runs: Any) -> None:  # (the claim's locks held)
            insert_runs(db, runs)
            in_claim.set()
            assert go_on.wait(30)

        monkeypatch.setattr(pg, "_insert_runs", slow_insert)
        claimed: list[bool] = []
        claim = threading.Thread(
            target=lambda: claimed.append(claimant.mark_resumed("P", run("B", time.time())))
        )

        def claim_meanwhile() -> None:  # the claim made (or waiting), then committed
            claim.start()
            in_claim.wait(1)
            go_on.set()
            claim.join(0.5)

        gone: list[int] = []
        if moment == "claim_first":  # retention starts as the claim holds its locks
            claim.start()
            assert in_claim.wait(30)
            deleting = threading.Thread(
                target=lambda: gone.append(retention.delete_ended_before(time.time()))
            )
            deleting.start()
            time.sleep(0.5)  # (it waits for the claim's lock on P)
            go_on.set()
            deleting.join(30)
        else:  # retention has chosen its runs: the claim commits before they go
            original = retention._writing  # type: ignore[attr-defined]
            statement = "DELETE FROM troupe_runs"

            @contextmanager
            def writing() -> Iterator[Any]:
                with original() as db:
                    yield _Between(db, statement, claim_meanwhile)

            monkeypatch.setattr(retention, "_writing", writing)
            gone.append(retention.delete_ended_before(time.time()))
        go_on.set()
        claim.join(30)
        record = retention.get_run("P")
        if claimed == [True]:  # the claim held: its paused run is kept, whole
            assert record is not None and record.resumed_by == "B", gone
            assert len(retention.read_records("P")) == 3
            assert gone == [0]
        else:  # retention went first: the claim was refused
            assert claimed == [False] and record is None and gone == [1]
    finally:
        go_on.set()
        claimant.close()
        retention.close()


async def test_a_resume_of_a_run_on_no_thread_naming_a_thread_is_a_422(tmp_path: Path) -> None:
    # A resume goes on its paused run's thread; a paused run on none has none: a body
    # naming one was taken (the thread made, the resume's turn taken there), and the
    # run went on no thread at all.
    async with _payer_and_cat(tmp_path) as (served, rt, ledger):
        client = served.client
        got = await client.post(
            "/runs/wait", json={"performer": "payer", "input": "pay five", "run_id": "first"}
        )
        assert got.json()["status"] == "paused", got.text
        for body, field in (
            ({"thread_id": "elsewhere"}, "thread_id"),
            ({"config": {"thread_id": "elsewhere"}}, "config.thread_id"),
        ):
            named = await client.post(
                "/runs/first/resume", json={"decisions": {"p1": True}, "stream": False, **body}
            )
            assert named.status_code == 422 and named.json()["field"] == field, named.text
            assert "the paused run is on none" in named.json()["error"]
        assert calls(ledger) == [] and (await rt.get_run("first")).resumed_by is None
        assert [t.thread_id for t in await rt.threads.list()] == []


def refuse_every_input(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """``agent`` refuses every input from now on (its input's type changed, say)."""

    def refuses(self: object, value: Any) -> Any:
        raise ValueError("not an input this agent takes")

    monkeypatch.setattr(type(agent), "coerce_input", refuses)  # (the agent is frozen)


async def once_ended(rt: Runtime, run_id: str) -> RunRecord:
    """``run_id``'s record, once it says the run is no longer running."""
    with trio.fail_after(20):
        while (await rt.get_run(run_id)).status == "running":  # noqa: ASYNC110
            await trio.sleep(0.05)
    return await rt.get_run(run_id)


async def test_a_dead_processs_run_that_cannot_be_resumed_ends_with_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recovery took the run over (its record running, this process's) and then could
    # not start it (here its performer refuses the journaled input): it said "running"
    # for this process's life, so a join of it waited and nothing ended it until the
    # process died and another one's sweep came.
    url = f"sqlite:///{tmp_path}/runs.db"
    ledger = tmp_path / "ledger.txt"
    killed_paying(url, ledger)
    agent = make_agent(str(ledger))
    refuse_every_input(agent, monkeypatch)
    async with open_runtime(store=url, resume=[agent]) as rt:
        ended = await once_ended(rt, "r1")
        assert ended.status == "error"
        assert "could not be resumed" in (ended.error or "")
        assert "not an input this agent takes" in (ended.error or "")
    events = journal(url)
    check_events(events)
    root_ends = [e.status for e in events if e.run.run_id == "r1" and e.status is not None]
    assert root_ends == ["error"]  # once
    # the payment in flight at the crash was not run again
    assert ledger.read_text().splitlines() == ["look 1", "pay 5 begun"]
