"""More than one server process on one store (issue 30): ``troupe serve --workers N`` (a
supervisor and N workers on one port) and separate ``troupe serve`` processes, all real
processes of this tree's code.

On PostgreSQL (marked ``postgres``: ``.ci/run``'s PostgreSQL step): a run started through
one process is streamed, joined (with ``Last-Event-ID``) and cancelled through another,
live; a worker killed with SIGKILL while others serve is reported and started again, and
its runs in flight are ended by the others (each still ends exactly once, its journal
whole and in order); SIGTERM drains every worker; joins and cancels are woken by
NOTIFY (the fallback looks pushed to a minute), also after the server restarts. On
SQLite (the main suite): the workers share finished runs and threads. And the refusals
(``--workers`` without a store) are one line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from actors._demo import make_cat_agent
from runtime import RunCancelledError, Runtime, open_runtime, open_store
from runtime._journal import Journal
from runtime._store import Store

from .postgres import Cluster
from .sse_client import SSE, first_line, iter_sse, read_sse

TROUPE = [sys.executable, "-m", "actors"]  # this tree's code (cwd first on sys.path)
QUESTION = {"input": "where is the cat?"}


class Workers:
    """A ``troupe serve --workers N`` process: its URL, its workers' pids, its stderr."""

    def __init__(self, process: trio.Process, line: str, stderr: Path) -> None:
        self.process = process
        self.url = line.split("serving on ")[1].split()[0]
        pids = line.split("pids ")[1].rstrip(")\n").split(", ") if "pids " in line else []
        self.pids = [int(p) for p in pids]
        self.stderr = stderr


@asynccontextmanager
async def supervisor(url: str, workers: int, tmp_path: Path, *extra: str) -> AsyncIterator[Workers]:
    stderr = tmp_path / f"stderr-{os.urandom(3).hex()}.txt"
    with stderr.open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [*TROUPE, "serve", "--port", "0", "--store", url, "--workers", str(workers), *extra],
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        yield Workers(process, await first_line(process, 90), stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _worker_of(store: Store, run_id: str) -> int:
    """The pid of the process that owns run ``run_id``."""
    record = await trio.to_thread.run_sync(store.get_run, run_id)
    assert record is not None
    owners = {o.owner_id: o.pid for o in await trio.to_thread.run_sync(store.owners)}
    return owners[record.owner]


async def _client_of_another_worker(base: str, run_id: str) -> httpx.AsyncClient:
    """A client whose (one, kept-alive) connection another worker serves than the one
    that runs the live run ``run_id``: ``GET /runs`` lists a run of its own worker as a
    live run (with ``detached``), one of another worker as the store's record."""
    for _ in range(100):
        client = httpx.AsyncClient(
            base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        listed = {r["run_id"]: r for r in (await client.get("/runs")).json()["runs"]}
        if "detached" not in listed[run_id]:
            return client
        await client.aclose()
    raise AssertionError(f"every connection went to the worker of run {run_id}")


# -- the command line ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--workers", "2"], "--workers N needs --store URL"),
        (["--workers", "2", "--store", "sqlite://:memory:"], "--workers N needs --store URL"),
        (["--workers", "2", "--ray", "local"], "--workers does not work with --ray"),
        (["--workers", "0", "--store", "sqlite:///x.db"], "a whole number >= 1"),
    ],
)
def test_workers_without_a_store_are_refused_in_one_line(args: list[str], said: str) -> None:
    done = subprocess.run(
        [*TROUPE, "serve", "--port", "0", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done
    last = done.stderr.strip().splitlines()[-1]
    assert said in last and "Traceback" not in done.stderr


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    """A store no worker can open: the first worker's one line, then the supervisor's,
    the exit status of a bad option, and no worker left."""
    (tmp_path / "x").write_text("not a database, but long enough to be read as one")
    done = subprocess.run(
        [*TROUPE, "serve", "--port", "0", "--workers", "2", "--store", f"sqlite:///{tmp_path}/x"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert "/x" in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert "worker 1 (pid" in lines[-1] and "did not start (exit status 2)" in lines[-1]
    assert "serving on" not in done.stdout


async def test_sqlite_workers_share_finished_runs_and_threads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    async with supervisor(url, 2, tmp_path) as served:
        assert len(set(served.pids)) == 2 and all(_alive(p) for p in served.pids)
        finished: dict[str, list[str]] = {}
        for turn in range(6):
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
                body = {"input": f"turn {turn}", "thread_id": "shared"}
                async with client.stream("POST", "/runs/stream", json=body) as response:
                    frames = await read_sse(response)
                finished[response.headers["x-troupe-run-id"]] = [f.data for f in frames]
        store = open_store(url)
        await trio.to_thread.run_sync(store.open)
        try:
            workers = {await _worker_of(store, run_id) for run_id in finished}
        finally:
            store.close()
        assert workers <= set(served.pids)
        for run_id, said_then in finished.items():  # through fresh connections: any worker
            async with (
                httpx.AsyncClient(base_url=served.url, timeout=30) as client,
                client.stream("GET", f"/runs/{run_id}/stream") as joined,
            ):
                assert [f.data for f in await read_sse(joined)] == said_then
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
                history = (await client.get("/threads/shared/history")).json()
                assert {r["run_id"] for r in history["runs"]} == set(finished)
                said = [m["content"] for m in history["messages"] if m["role"] == "user"]
                assert said == [f"turn {turn}" for turn in range(6)]
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(40):
            assert await served.process.wait() == 0
        assert not any(_alive(p) for p in served.pids)


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def pg_url(request: pytest.FixtureRequest) -> str:
    """A new database of the session's throwaway cluster."""
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    return cluster.new_database()


async def _follow(
    client: httpx.AsyncClient,
    run_id: str,
    last: int,
    seen: list[SSE],
    cancel_at: int = 0,
    canceller: httpx.AsyncClient | None = None,
) -> None:
    """Join run ``run_id`` after event ``last`` until its end; at ``cancel_at`` events
    seen, cancel it through ``canceller`` (else the same client)."""
    headers = {"last-event-id": str(last)} if last else {}
    async with client.stream("GET", f"/runs/{run_id}/stream", headers=headers) as joined:
        assert joined.status_code == 200, await joined.aread()
        async for event in iter_sse(joined):
            seen.append(event)
            if cancel_at and len(seen) == cancel_at:
                cancelled = await (canceller or client).post(f"/runs/{run_id}/cancel")
                assert cancelled.status_code == 202, cancelled.text


@pytest.mark.postgres
async def test_separate_servers_on_postgres_stream_join_and_cancel_each_others_runs(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        supervisor(pg_url, 1, tmp_path, "--delay", "0.3") as one,
        supervisor(pg_url, 1, tmp_path, "--delay", "0.3") as two,
        httpx.AsyncClient(base_url=one.url, timeout=30) as here,
        httpx.AsyncClient(base_url=two.url, timeout=30) as there,
    ):
        started = await here.post("/runs", json={**QUESTION, "detached": True})
        run_id = started.json()["run_id"]
        # answered once its record is journaled: the other server knows it at once
        assert (await there.get(f"/runs/{run_id}")).json()["status"] == "running"
        first: list[SSE] = []
        async with here.stream("GET", f"/runs/{run_id}/stream") as joined:
            async for event in iter_sse(joined):
                first.append(event)
                if len(first) == 4:
                    break
        # the rest through the other server, from Last-Event-ID, then cancelled there
        rest: list[SSE] = []
        await _follow(there, run_id, 4, rest, cancel_at=3)
        assert [int(e.id or 0) for e in [*first, *rest[:-1]]] == list(range(1, len(rest) + 4))
        assert rest[-2].json()["event"] == "on_chain_error"
        assert rest[-2].json()["data"]["error"] == "cancelled"
        assert (await here.get(f"/runs/{run_id}")).json()["status"] == "cancelled"
        # the whole run read back through either is the same
        async with there.stream("GET", f"/runs/{run_id}/stream") as again:
            whole = await read_sse(again)
        assert [e.data for e in whole] == [e.data for e in [*first, *rest]]
        for served in (one, two):
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(40):
                assert await served.process.wait() == 0


@pytest.mark.postgres
async def test_a_streamed_runs_id_header_is_known_to_every_process_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    """A client reads a streamed run's ``x-troupe-run-id`` header and, before reading
    any event, joins it and cancels it through another process: the id is known there
    (the run's record is journaled before the header is sent), never a 404."""
    async with (
        supervisor(pg_url, 1, tmp_path, "--delay", "0.2") as one,
        supervisor(pg_url, 1, tmp_path, "--delay", "0.2") as two,
        httpx.AsyncClient(base_url=one.url, timeout=30) as here,
        httpx.AsyncClient(base_url=two.url, timeout=30) as there,
    ):
        for path in ("/runs/stream", "/api/chat"):
            for _ in range(5):
                body = (
                    QUESTION
                    if path == "/runs/stream"
                    else {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
                )
                async with here.stream("POST", path, json=body) as streamed:
                    run_id = streamed.headers["x-troupe-run-id"]
                    status = await there.get(f"/runs/{run_id}")
                    assert status.status_code == 200, (path, status.text)
                    async with there.stream("GET", f"/runs/{run_id}/stream") as joined:
                        assert joined.status_code == 200, await joined.aread()
                    cancelled = await there.post(f"/runs/{run_id}/cancel")
                    assert cancelled.status_code == 202, (path, cancelled.text)
                    await streamed.aread()
        for served in (one, two):
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(40):
                assert await served.process.wait() == 0


@pytest.mark.postgres
async def test_workers_on_postgres_and_a_worker_killed_while_others_serve(
    pg_url: str, tmp_path: Path
) -> None:
    store = open_store(pg_url)
    async with supervisor(pg_url, 3, tmp_path, "--delay", "0.5") as served:
        await trio.to_thread.run_sync(store.open)
        try:
            assert len(set(served.pids)) == 3
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as starter:
                run_id = (await starter.post("/runs", json={**QUESTION, "detached": True})).json()[
                    "run_id"
                ]
            assert await _worker_of(store, run_id) in served.pids
            # joined and cancelled live through another worker
            client = await _client_of_another_worker(served.url, run_id)
            canceller = await _client_of_another_worker(served.url, run_id)
            try:
                seen: list[SSE] = []
                await _follow(client, run_id, 0, seen, cancel_at=5, canceller=canceller)
                assert seen[-2].json()["data"]["error"] == "cancelled"
                assert [int(e.id or 0) for e in seen[:-1]] == list(range(1, len(seen)))
            finally:
                await client.aclose()
                await canceller.aclose()
            # runs in flight on every worker; one worker is killed; another ends its runs
            victims: list[str] = []
            for _ in range(40):
                async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
                    started = await c.post("/runs", json={**QUESTION, "detached": True})
                    victims.append(started.json()["run_id"])
                if len(victims) >= 4 and len({await _worker_of(store, r) for r in victims}) > 1:
                    break
            doomed = await _worker_of(store, victims[0])
            killed = [r for r in victims if await _worker_of(store, r) == doomed]
            for r in victims:
                record = await trio.to_thread.run_sync(store.get_run, r)
                assert record is not None and record.status == "running"
            os.kill(doomed, signal.SIGKILL)
            client = httpx.AsyncClient(base_url=served.url, timeout=30)  # a worker that lives
            try:
                for r in victims:  # each to its end, through a worker that lives
                    if r not in killed:  # (the others' runs need not go on to their end)
                        assert (await client.post(f"/runs/{r}/cancel")).status_code in (202, 409)
                    events: list[SSE] = []
                    with trio.fail_after(60):
                        await _follow(client, r, 0, events)
                    ids = [int(e.id or 0) for e in events if e.id]
                    assert ids == list(range(1, len(ids) + 1)), r  # none lost or doubled
                    ends = [
                        e.json()
                        for e in events
                        if e.id
                        and e.json()["run_id"] == r
                        and e.json()["event"].endswith(("_end", "_error"))
                    ]
                    assert len(ends) == 1, (r, ends)  # it ended exactly once
                    if r in killed:
                        assert "stopped before the run ended" in ends[0]["data"]["error"]
                    record = await trio.to_thread.run_sync(store.get_run, r)
                    assert record is not None and record.status != "running"
            finally:
                await client.aclose()
            said = served.stderr.read_text()
            assert f"(pid {doomed}) died (killed by SIGKILL)" in said
            # the worker was started again: three serve
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as c:
                assert (await c.get("/health")).json()["status"] == "ok"
            served.process.send_signal(signal.SIGTERM)
            with trio.fail_after(40):
                assert await served.process.wait() == 0
            assert not any(_alive(p) for p in served.pids)
        finally:
            store.close()


def _journal(runtime: Runtime) -> Journal:
    journal = runtime.journal
    assert journal is not None
    return journal


@pytest.mark.postgres
async def test_on_postgres_joins_and_cancels_are_woken_by_notify(
    pg_url: str, postgres_cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runtimes on one database (two processes as far as PostgreSQL knows), with the
    fallback looks pushed to a minute: a join of the other's live run follows it to its
    end and a cancel stops it, so each write and the request were heard. Then the
    server restarts under them: the journals listen again, and hear again."""
    import runtime._journal as journal_module

    monkeypatch.setattr(journal_module, "HEARD_FALLBACK_SECONDS", 60.0)
    agent = make_cat_agent(token_delay=0.01)
    # (a run that outlasts the cancel's fallback look: only a request heard stops it
    # in time, however loaded the machine)
    slow = make_cat_agent(token_delay=5.0)
    async with open_runtime(store=pg_url) as rt, open_runtime(store=pg_url) as other:
        for runtime in (rt, other):
            with trio.fail_after(10):
                while not _journal(runtime).hearing:  # noqa: ASYNC110
                    await trio.sleep(0.01)
        for restarted in (False, True):
            async with rt.astream_events(agent, "where is the cat?") as stream:
                first = await stream.__anext__()
                await _journal(rt).recorded(stream.run_id)
                with trio.fail_after(30):  # a minute per look, were nothing heard
                    async with other.join(stream.run_id) as joined:
                        seen = [event async for event in joined]
                    rest = [event async for event in stream]
            assert [(e.run_id, e.seq) for e in seen] == [(e.run_id, e.seq) for e in [first, *rest]]
            async with rt.astream_events(slow, "where is the cat?") as stream:
                await stream.__anext__()
                await _journal(rt).recorded(stream.run_id)
                assert await other.cancel(stream.run_id)
                with trio.fail_after(30), pytest.raises(RunCancelledError):
                    async for _ in stream:
                        pass
            if not restarted:
                await trio.to_thread.run_sync(postgres_cluster.restart)
                for runtime in (rt, other):
                    with trio.fail_after(30):  # deaf, then listening again
                        while not _journal(runtime).hearing:  # noqa: ASYNC110
                            await trio.sleep(0.05)


def _telling(journal: Journal) -> bool:
    """Whether the journal's writes tell other processes (``NOTIFY``) now."""
    return journal.store.telling


@pytest.mark.postgres
async def test_a_lone_process_sends_no_notify_until_another_comes(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone on the store, a process's writes send no ``NOTIFY`` (nobody would hear);
    a second process that opens the store says so, and from then on the first one's
    writes are heard: a join there of a run begun while the first was alone follows it
    to its end with the fallback looks pushed to a minute. Once the second signs off,
    the first is alone again."""
    import runtime._journal as journal_module
    from runtime._store import JOURNAL_CHANGED

    monkeypatch.setattr(journal_module, "HEARD_FALLBACK_SECONDS", 60.0)
    agent = make_cat_agent(token_delay=0.02)
    listener = open_store(pg_url)
    await trio.to_thread.run_sync(listener.open)
    changes = await trio.to_thread.run_sync(listener.changes)
    assert changes is not None

    async def heard() -> set[str]:
        await trio.sleep(0.2)  # what was sent has arrived
        return {key for kind, key in changes.take() if kind == JOURNAL_CHANGED}

    try:
        async with open_runtime(store=pg_url) as rt:
            journal = _journal(rt)
            with trio.fail_after(10):
                while not journal.hearing:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            await journal.sweep()
            assert not _telling(journal)  # alone
            await heard()
            assert (await rt.ainvoke(agent, "where is the cat?", run_id="alone")).output
            assert "alone" not in await heard()
            async with rt.astream_events(agent, "where is the cat?") as stream:
                first = await stream.__anext__()
                await journal.recorded(stream.run_id)
                async with open_runtime(store=pg_url) as other:
                    with trio.fail_after(10):
                        while not _telling(journal):  # noqa: ASYNC110
                            await trio.sleep(0.01)
                    await journal.sweep()  # another lives: it goes on telling
                    assert _telling(journal)
                    with trio.fail_after(30):  # a minute per look, were nothing heard
                        async with other.join(stream.run_id) as joined:
                            seen = [event async for event in joined]
                        rest = [event async for event in stream]
                    assert [(e.run_id, e.seq) for e in seen] == [
                        (e.run_id, e.seq) for e in [first, *rest]
                    ]
                    assert stream.run_id in await heard()
            await journal.sweep()  # the other signed off
            assert not _telling(journal)
    finally:
        changes.close()
        listener.close()


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


async def test_workers_dying_again_and_again_stop_the_server(tmp_path: Path) -> None:
    """A worker killed is started again (said on stderr); workers dying more than five
    times within a minute stop the server, loudly, with no worker left behind."""
    async with supervisor(f"sqlite:///{tmp_path}/runs.db", 2, tmp_path) as served:
        killed: set[int] = set()
        with trio.fail_after(120):
            while served.process.returncode is None:
                for pid in _children(served.process.pid) - killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                await trio.sleep(0.05)
        assert await served.process.wait() == 1
        said = served.stderr.read_text()
        assert said.count("(killed by SIGKILL); starting another") == 5
        assert "workers died 6 times within 60 s" in said.strip().splitlines()[-1]
        assert not any(_alive(p) for p in killed | set(served.pids))


async def test_workers_stop_when_their_supervisor_dies(tmp_path: Path) -> None:
    async with supervisor(f"sqlite:///{tmp_path}/runs.db", 2, tmp_path) as served:
        served.process.kill()  # SIGKILL: it tells nobody
        await served.process.wait()
        with trio.fail_after(40):  # each drains and stops, its stdin closed
            while any(_alive(p) for p in served.pids):  # noqa: ASYNC110
                await trio.sleep(0.05)
