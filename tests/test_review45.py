"""A hostile review of threads, multitask and pause/resume across the edges (stop 45)."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from runtime import (
    Resume,
    RunCancelledError,
    RunNotPausedError,
    RunPaused,
    RunRecord,
    Runtime,
    Store,
    UnknownRunError,
    open_runtime,
)
from runtime._sqlite_store import SQLiteStore
from runtime._store import RunEnd, WriteBatch
from tests.postgres import Cluster
from tests.test_bounded_close import _given
from tests.test_store_contract import run

from .sse_client import Served, serving
from .test_serve_resume import (
    USER,
    _ag_ui,
    _ag_ui_events,
    _answer,
    _chat,
    _chunks,
    calls,
    payer,
    served_with_store,
)

SLOW = 0.05


@asynccontextmanager
async def _payer_and_cat(tmp_path: Path) -> AsyncIterator[tuple[Served, Runtime, Path]]:
    """A server with a store serving an agent that pauses (``payer``) and a slow one
    (``cat``)."""
    ledger = tmp_path / "ledger.txt"
    async with (
        open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt,
        serving(
            {"payer": payer(ledger), "cat": make_cat_agent(token_delay=SLOW)}, runtime=rt
        ) as served,
    ):
        yield served, rt, ledger


@asynccontextmanager
async def _first_paused(tmp_path: Path) -> AsyncIterator[tuple[Runtime, Agent, Path]]:
    """A runtime on a SQLite store whose run ``first`` (``payer``'s, on thread ``t``)
    paused for approval ``p1``; the agent, and its ledger."""
    ledger = tmp_path / "ledger.txt"
    agent = payer(ledger)
    async with open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first", thread_id="t")
        yield rt, agent, ledger


async def _paused_on(client: httpx.AsyncClient, thread: str, run_id: str) -> None:
    body = {"performer": "payer", "input": "pay five", "thread_id": thread, "run_id": run_id}
    got = await client.post("/runs/wait", json=body)
    assert got.json()["status"] == "paused", got.text


async def _going_on(client: httpx.AsyncClient, thread: str) -> str:
    body = {"performer": "cat", "input": "where?", "thread_id": thread, "detached": True}
    got = await client.post("/runs", json=body)
    assert got.status_code == 202, got.text
    run_id: str = got.json()["run_id"]
    return run_id


async def test_a_resume_on_a_thread_with_a_run_going_follows_multitask(tmp_path: Path) -> None:
    # A resume is a new run on the paused run's thread: it takes its turn as any run on
    # the thread does. It started at once, beside the run going, whatever multitask said.
    async with _payer_and_cat(tmp_path) as (served, rt, ledger):
        client = served.client
        await _paused_on(client, "t", "first")
        going = await _going_on(client, "t")
        refused = await client.post(
            "/runs/first/resume", json={"decisions": {"p1": True}, "stream": False}
        )
        assert refused.status_code == 409, refused.text
        assert refused.json()["field"] == "multitask" and going in refused.json()["error"]
        assert calls(ledger) == []
        assert (await rt.get_run("first")).resumed_by is None  # left as it was
        waited = await client.post(
            "/runs/first/resume",
            json={"decisions": {"p1": True}, "stream": False, "multitask": "enqueue"},
        )
        assert waited.json()["status"] == "ok", waited.text
        before = await rt.get_run(going)
        after = await rt.get_run(waited.json()["run_id"])
        assert before.ended_at is not None and before.ended_at <= after.created_at
        assert calls(ledger) == ["pay 5"]


async def test_a_resume_that_names_another_thread_is_a_422(tmp_path: Path) -> None:
    async with _payer_and_cat(tmp_path) as (served, rt, ledger):
        client = served.client
        await _paused_on(client, "t", "first")
        bodies: list[tuple[dict[str, Any], str]] = [
            ({"thread_id": "elsewhere"}, "thread_id"),
            ({"config": {"thread_id": "elsewhere"}}, "config.thread_id"),
        ]
        for body, field in bodies:
            got = await client.post(
                "/runs/first/resume", json={"decisions": {"p1": True}, "stream": False, **body}
            )
            assert got.status_code == 422 and got.json()["field"] == field, got.text
        got = await client.post("/threads/elsewhere/runs/wait", json={"decisions": {"p1": True}})
        assert got.status_code in (404, 422), got.text
        assert calls(ledger) == [] and (await rt.get_run("first")).resumed_by is None
        same = await client.post(
            "/runs/first/resume",
            json={"decisions": {"p1": True}, "stream": False, "thread_id": "t"},
        )
        assert same.json()["status"] == "ok", same.text


class _SlowClaims:
    """A store whose resume claims return late (a loaded machine, a far database): the
    claim is committed, and the resumed run shows as running, a while before its
    process goes on with it."""

    claimed: threading.Event

    def mark_resumed(self, run_id: str, by: RunRecord) -> bool:
        claimed: bool = super().mark_resumed(run_id, by)  # type: ignore[misc]
        if claimed:
            self.claimed.set()
            time.sleep(0.6)  # (more than a look for cancel requests: 0.25 s)
        return claimed


class _SlowClaim(_SlowClaims, SQLiteStore):
    claimed = threading.Event()


async def test_a_cancel_that_comes_as_a_resume_claims_its_run_is_not_lost(tmp_path: Path) -> None:
    # A resume's claim writes the new run's record (running) before the run's start
    # reaches the journal: a cancel asked then (by another server's interrupt, or
    # rt.cancel) was taken from the store by this process's journal, found no such
    # run here, and was dropped; the run went on to its end, and the paused call ran.
    store = _SlowClaim(f"sqlite:///{tmp_path}/runs.db")
    store.claimed = threading.Event()
    await _cancelled_as_it_claims(store, tmp_path / "ledger.txt")


@pytest.mark.postgres
async def test_a_cancel_that_comes_as_a_resume_claims_its_run_is_not_lost_on_postgresql(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    from runtime._postgres_store import PostgresStore

    class SlowClaim(_SlowClaims, PostgresStore):
        pass

    store = SlowClaim(postgres_cluster.new_database())
    store.claimed = threading.Event()
    await _cancelled_as_it_claims(store, tmp_path / "ledger.txt")


async def _cancelled_as_it_claims(store: _SlowClaims, ledger: Path) -> None:
    agent = payer(ledger)
    assert isinstance(store, Store)
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay five", run_id="first")
        ended: list[Any] = []

        async def resume() -> None:
            try:
                ended.append(await rt.resume(agent, "first", {"p1": True}, run_id="second"))
            except RunCancelledError as exc:
                ended.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume)
            await trio.to_thread.run_sync(store.claimed.wait)
            assert await rt.cancel("second")  # running, as the store says
        assert len(ended) == 1 and isinstance(ended[0], RunCancelledError), ended
        assert calls(ledger) == []
        assert (await rt.get_run("second")).status == "cancelled"


async def test_a_resume_cancelled_before_its_run_starts_leaves_no_run_going(
    tmp_path: Path,
) -> None:
    # The claim wrote the new run's record (running) before it started; a stream left
    # (or cancelled, as a server's drain or an interrupt does) before its actor took
    # the run up ended nothing: the record said "running" for the process's life, and
    # every later run on the thread was refused (or waited its turn for ever).
    async with _first_paused(tmp_path) as (rt, agent, ledger):
        resume = Resume("first", {"p1": True})
        with pytest.raises(RunCancelledError):
            async with rt.astream_events(agent, None, resume=resume, run_id="second") as events:
                events.cancel()
                async for _ in events:
                    pass
        with trio.fail_after(10):
            while (await rt.get_run("second")).status == "running":  # noqa: ASYNC110
                await trio.sleep(0.05)
        assert (await rt.get_run("second")).status == "cancelled"
        assert await rt.list_runs(thread_id="t", status="running") == []
        assert calls(ledger) == []


@pytest.mark.postgres
async def test_two_processes_resume_one_paused_run_at_once_on_postgresql(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    # Two runtimes (each its own owner, as two processes are) on one PostgreSQL store
    # resume the same paused runs at once, with different decisions: of each pair one
    # wins, the other is refused, and only the winner's decision is acted on.
    url = postgres_cluster.new_database()
    ledger = tmp_path / "ledger.txt"
    agent = payer(ledger)
    async with open_runtime(store=url) as a, open_runtime(store=url) as b:
        paused = [f"p{n}" for n in range(6)]
        for run_id in paused:
            with pytest.raises(RunPaused):
                await a.ainvoke(agent, "pay five", run_id=run_id, thread_id=f"t{run_id}")
        won: dict[str, str] = {}
        refused: list[str] = []

        async def resume(rt: Runtime, run_id: str, by: str, approve: bool) -> None:
            try:
                await rt.resume(agent, run_id, {"p1": approve}, run_id=by)
            except RunNotPausedError:
                refused.append(by)
            else:
                won[run_id] = by

        async with trio.open_nursery() as nursery:
            for run_id in paused:
                nursery.start_soon(resume, a, run_id, f"{run_id}-a", True)
                nursery.start_soon(resume, b, run_id, f"{run_id}-b", False)
        assert sorted(won) == paused and len(refused) == len(paused)
        for run_id, by in won.items():
            assert (await b.get_run(run_id)).resumed_by == by
            assert (await a.get_run(by)).status == "ok"
            loser = f"{run_id}-b" if by.endswith("-a") else f"{run_id}-a"
            assert loser in refused
            with pytest.raises(UnknownRunError):
                await a.get_run(loser)  # its claim left nothing
        approved = sum(by.endswith("-a") for by in won.values())
        assert calls(ledger) == ["pay 5"] * approved
        assert await a.list_runs(status="running") == []


async def test_two_answers_to_one_request_are_a_422_naming_the_second(tmp_path: Path) -> None:
    # An AG-UI resume (or an AI SDK message) that answers one request twice, once
    # approving and once denying, was taken silently as its last answer.
    async with served_with_store(tmp_path) as (served, rt, ledger):
        client = served.client
        await _ag_ui_events(client, _ag_ui("first"))
        twice = [
            {"interruptId": "first/p1", "status": "resolved", "payload": False},
            {"interruptId": "first/p1", "status": "resolved", "payload": True},
        ]
        got = await client.post("/ag-ui", json=_ag_ui("second", resume=twice))
        assert got.status_code == 422, got.text
        assert got.json()["field"] == "resume[1].interruptId"
        assert calls(ledger) == [] and (await rt.get_run("first")).resumed_by is None
        chunks = await _chunks(client, _chat([USER]))
        run_id = chunks[0]["messageId"]
        approval = {"id": f"{run_id}/p1", "approved": True}
        assistant = _answer(run_id, approval)
        part = assistant["parts"][0]
        assistant["parts"] = [{**part, "approval": {**approval, "approved": False}}, part]
        got = await client.post("/api/chat", json=_chat([USER, assistant]))
        assert got.status_code == 422, got.text
        assert got.json()["field"] == "messages[1].parts[1].approval.id"
        assert calls(ledger) == [] and (await rt.get_run(run_id)).resumed_by is None


async def test_a_reject_is_answered_at_once_while_another_request_waits_its_turn(
    tmp_path: Path,
) -> None:
    # A request that waits its turn (enqueue) holds the thread's lock until its run
    # starts; a reject (and a thread's delete) behind it waited for that lock: for the
    # whole of the running run, before its 409.
    async with _payer_and_cat(tmp_path) as (served, rt, _):
        client = served.client
        going = await _going_on(client, "t")
        server = served.app.state.troupe
        answers: list[int] = []

        async def enqueue() -> None:
            body = {"performer": "cat", "input": "where?", "multitask": "enqueue"}
            answers.append((await client.post("/threads/t/runs/wait", json=body)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(enqueue)
            with trio.fail_after(10):
                while not len(server.thread_locks):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # it waits its turn
            body = {"performer": "cat", "input": "where?"}
            rejected = await client.post("/threads/t/runs/wait", json=body)
            assert (await rt.get_run(going)).status == "running"  # answered meanwhile
            assert rejected.status_code == 409 and going in rejected.json()["error"]
            refused = await client.delete("/threads/t")
            assert (await rt.get_run(going)).status == "running"
            assert refused.status_code == 409
        assert answers == [200]


TWICE = (
    ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
    ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 7}, id="p2")]),
    ScriptedTurn("all done"),
)


async def _retention_keeps_a_chain(store: str | Store, ledger: Path) -> None:
    agent = payer(ledger, *TWICE)
    async with open_runtime(store=store) as rt:
        with pytest.raises(RunPaused):
            await rt.ainvoke(agent, "pay twice", run_id="first")
        with pytest.raises(RunPaused):
            await rt.resume(agent, "first", {"p1": True}, run_id="second")
        second = await rt.get_run("second")
        # "first" ended (paused) before the cutoff, "second" after: only "first" is old
        assert await rt.delete_ended_before(second.created_at) == 0
        output = await rt.resume(agent, "second", {"p2": True}, run_id="third")
        assert output.output == "all done"
        assert calls(ledger) == ["pay 5", "pay 7"]
        # once the whole chain is old, it goes
        assert await rt.delete_ended_before(time.time() + 1) == 3


async def test_retention_keeps_the_runs_a_kept_resume_replays(tmp_path: Path) -> None:
    # A resumed run's replay reads the runs it resumed, back to the first: retention
    # deleted a paused run that ended before its cutoff while the run that resumed it
    # was kept, and resuming that one (its next approval) was an UnknownRunError naming
    # the deleted run: the conversation could not go on.
    await _retention_keeps_a_chain(f"sqlite:///{tmp_path}/runs.db", tmp_path / "ledger.txt")


@pytest.mark.postgres
async def test_retention_keeps_the_runs_a_kept_resume_replays_on_postgresql(
    postgres_cluster: Cluster, tmp_path: Path
) -> None:
    await _retention_keeps_a_chain(postgres_cluster.new_database(), tmp_path / "ledger.txt")


class _EndsBetween(SQLiteStore):
    """A store on which another process's run on thread ``t`` ends (adding a message)
    just before the next list of runs is read."""

    armed = False

    def list_runs(self, **filters: Any) -> list[RunRecord]:
        if self.armed:
            self.armed = False
            self.write(WriteBatch(runs=[run("other", thread_id="t")]))
            said = {"$type": "UserMessage", "content": "from elsewhere"}
            self.write(WriteBatch(ends=[RunEnd("other", "ok", time.time(), None, "t", [said])]))
        return super().list_runs(**filters)


async def test_a_threads_history_is_one_snapshot(tmp_path: Path) -> None:
    # The history's thread, messages and runs were three reads: a run that ended
    # between the second and the third was listed as ended well, without the messages
    # it added (a client rebuilding the conversation from it lost that turn).
    store = _EndsBetween(f"sqlite:///{tmp_path}/runs.db")
    async with open_runtime(store=store) as rt:
        await rt.threads.create("t")
        store.armed = True
        history = await rt.threads.history("t")
        ended = {r.run_id for r in history.runs if r.status == "ok"}
        assert ended == set(history.added_by), (history.runs, history.added_by)
        assert history.thread.messages == len(history.messages)


@pytest.mark.postgres
def test_a_services_and_the_environments_connection_settings_are_kept(
    postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The store's TCP keepalives, tcp_user_timeout and connect_timeout are defaults for
    # what nothing sets: a service file's (keepalives_idle=7...) and PGCONNECT_TIMEOUT
    # were overridden by them (given to libpq as the connection's own options).
    from runtime._postgres_store import PostgresStore

    (tmp_path / "pg_service.conf").write_text(
        "[troupe_review45]\n"
        f"host=127.0.0.1\nport={postgres_cluster.port}\nuser=postgres\ndbname=postgres\n"
        "keepalives_idle=7\ntcp_user_timeout=1234\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "19")
    store = PostgresStore("postgresql://?service=troupe_review45")
    store.open()
    try:
        with store._reading() as connection:
            given = _given(connection)
    finally:
        store.close()
    assert given["keepalives_idle"] == "7" and given["tcp_user_timeout"] == "1234"
    assert given["connect_timeout"] == "19"
    assert given["keepalives_interval"] == "10" and given["keepalives_count"] == "3"


async def test_a_resume_by_a_performer_that_cannot_take_the_input_changes_nothing(
    tmp_path: Path,
) -> None:
    # The paused run's input was turned into the resuming performer's after the claim:
    # a performer that refuses it (another than the paused run's) failed the resume
    # with its record left running for the process's life and the paused run claimed
    # by it (never to be resumed: the person's decision was lost, the thread blocked).
    async with _first_paused(tmp_path) as (rt, agent, ledger):
        other = ScriptedChatModel([ScriptedTurn("hi")])
        with pytest.raises(TypeError):
            await rt.resume(other, "first", {"p1": True}, run_id="wrong")
        assert (await rt.get_run("first")).resumed_by is None
        assert await rt.list_runs(thread_id="t", status="running") == []
        output = await rt.resume(agent, "first", {"p1": True}, run_id="second")
        assert output.output == "all done" and calls(ledger) == ["pay 5"]


async def test_an_ai_sdk_approval_whose_reason_is_not_a_string_is_a_422(tmp_path: Path) -> None:
    # AG-UI's answer with a reason that is not a string is a 422; the AI SDK's was
    # taken with its reason dropped (a denial told to the model without it).
    async with served_with_store(tmp_path) as (served, rt, ledger):
        client = served.client
        chunks = await _chunks(client, _chat([USER]))
        run_id = chunks[0]["messageId"]
        answer = _answer(run_id, {"id": f"{run_id}/p1", "approved": False, "reason": ["no"]})
        got = await client.post("/api/chat", json=_chat([USER, answer]))
        assert got.status_code == 422, got.text
        assert got.json()["field"] == "messages[1].parts[0].approval.reason"
        assert (await rt.get_run(run_id)).resumed_by is None and calls(ledger) == []


async def test_an_interrupt_cancels_the_running_run_while_another_request_waits_its_turn(
    tmp_path: Path,
) -> None:
    # An interrupt behind a request that waits its turn (enqueue) waited for the thread's
    # lock, which that request holds until its own run starts: the running run was not
    # cancelled but ran to its end (and then the enqueued run was cancelled instead).
    async with _payer_and_cat(tmp_path) as (served, rt, _):
        client = served.client
        going = await _going_on(client, "t")
        server = served.app.state.troupe
        answers: dict[str, Any] = {}

        async def ask(how: str) -> None:
            body = {"performer": "cat", "input": "where?", "multitask": how}
            answers[how] = (await client.post("/threads/t/runs/wait", json=body)).json()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "enqueue")
            with trio.fail_after(10):
                while not len(server.thread_locks):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # it waits its turn
            nursery.start_soon(ask, "interrupt")
        assert (await rt.get_run(going)).status == "cancelled"
        assert answers["interrupt"]["status"] == "ok", answers
