"""Generated clients of ``troupe serve``, each case under a hang watchdog.

``test_serve.py`` checks each endpoint and behaviour on its own. This generates what a
crowd of clients does to one server at once, over real HTTP on 127.0.0.1: streams in
every protocol read to the end or dropped after the k-th frame; detached runs joined
with a good, stale, future or malformed ``Last-Event-ID``, or cancelled (twice); waits
that the client gives up on; bodies that are not what the server asked for (issue 28's
among them: ids that cannot go in a header, JSON 100,000 deep, a 5,001-digit integer);
bodies sent slowly or never finished; floods of detached runs past the server's cap;
viewer pages reading the board (from now, or reconnecting with any id). Under it
all, the clients all leave at once, the server drains and shuts down (as on SIGTERM), or
the runtime the app was given closes while the server still serves.

For every case: it finishes (a hang prints trio's task tree and fails the process); no
response is a 500; a stream the server began is never cut, and ends as its protocol
says a run ends; a
joined stream's positions follow on from the one the client gave, one by one; once the
clients are done the server has no live run and the runtime no open run; the runtime
saw no protocol violation; and no task of Troupe's outlives the server.
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio
import trio.testing
from attrs import define, field, frozen
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors._demo import make_cat_agent
from actors.testing import run_watched
from runtime import Runtime, open_runtime

from .oddities import BadStr
from .sse_client import SSE, iter_sse, serving
from .tasks import live_task_names


@tool
async def odd(kind: str) -> str:
    """Raises something odd."""
    if kind == "str":
        raise BadStr()
    raise RuntimeError(kind)


PERFORMERS: dict[str, Any] = {
    "cat": make_cat_agent(random.Random(1), token_delay=0.0005),
    "instant": make_cat_agent(random.Random(1)),
    "odd": Agent(
        ScriptedChatModel(
            [
                ScriptedTurn(tool_calls=[ScriptedCall("odd", {"kind": "str"})]),
                ScriptedTurn("after the odd tool " * 5),
            ],
            token_delay=0.0005,
        ),
        [odd],
        name="Odd",
    ),
    "fails": Agent(
        ScriptedChatModel([ScriptedTurn("half", error="the model broke")]),
        name="Fails",
    ),
}
PROTOCOLS = ["events", "ag-ui", "ui-message-stream", "compact"]
BAD_BODIES: list[Any] = [
    b"{not json",
    b"[]",
    {"performer": "nobody", "input": "q"},
    {"performer": "cat", "input": "q", "protocol": "smoke-signals"},
    {"performer": "cat", "input": 42},
    {"performer": "cat"},
    {"performer": "cat", "input": "q", "run_id": ""},
    {"performer": "cat", "input": "q", "run_id": "\u2603"},
    {"performer": "cat", "input": "q", "run_id": "a\r\nb"},
    {"performer": "cat", "input": "q", "runId": "a/b"},
    b"[" * 100_000,
    b'{"performer": "cat", "input": "q", "config": {"metadata": {"n": ' + b"9" * 5001 + b"}}}",
]


@frozen
class ClientPlan:
    kind: str  # stream | detached | wait | bad | viewer | slow | flood
    performer: str
    protocol: str
    leave_after: int | None  # frames read before leaving; None: read to the end
    last_event_id: str | None  # a join's Last-Event-ID (None: no join)
    cancels: int  # cancel requests for a detached run
    start_delay: float
    bad: int


@frozen
class Case:
    clients: tuple[ClientPlan, ...]
    teardown: str  # end | leave | drain | runtime_closes
    teardown_after: float
    replay: int
    heartbeat: float
    body_timeout: float
    max_detached: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    clients = tuple(
        ClientPlan(
            kind=draw(
                st.sampled_from(
                    ["stream", "stream", "detached", "wait", "bad", "viewer", "slow", "flood"]
                )
            ),
            performer=draw(st.sampled_from(sorted(PERFORMERS))),
            protocol=draw(st.sampled_from(PROTOCOLS)),
            leave_after=draw(st.one_of(st.none(), st.integers(0, 40))),
            last_event_id=draw(
                st.sampled_from([None, "0", "3", "12", "99999", "x1", "-1", "\u00b2", "9" * 5000])
            ),
            cancels=draw(st.integers(0, 2)),
            start_delay=draw(st.sampled_from([0.0, 0.0, 0.002, 0.01])),
            bad=draw(st.integers(0, len(BAD_BODIES) - 1)),
        )
        for _ in range(draw(st.integers(1, 6)))
    )
    return Case(
        clients=clients,
        teardown=draw(st.sampled_from(["end", "end", "leave", "drain", "runtime_closes"])),
        teardown_after=draw(st.sampled_from([0.0, 0.003, 0.02, 0.06])),
        replay=draw(st.sampled_from([4, 1000])),
        heartbeat=draw(st.sampled_from([15.0, 0.002])),
        # a short timeout, yet long enough that a client sending its body at once always
        # makes it (0.02 s did not, on a loaded machine: a legitimate request got a 408)
        body_timeout=draw(st.sampled_from([30.0, 0.3])),
        max_detached=draw(st.sampled_from([2, 1000])),
    )


@define
class Seen:
    """What the clients saw, for the checks."""

    statuses: list[int] = field(factory=list)
    problems: list[str] = field(factory=list)
    drain_began: float | None = None


def _check_ending(protocol: str, frames: list[SSE], seen: Seen, what: str) -> None:
    """A stream read to its end: does it end as its protocol ends a run?"""
    if not frames:
        seen.problems.append(f"{what}: a stream with no events")
        return
    last = frames[-1]
    if last.event == "error":
        return  # the run failed, or could not be followed (its events were lost): said so
    if protocol == "events":
        if last.event not in ("on_chain_end", "on_chain_error") or last.json()["parent_ids"]:
            seen.problems.append(f"{what}: ends with {last.event} {last.data[:80]}")
    elif protocol == "ag-ui":
        if last.json().get("type") not in ("RUN_FINISHED", "RUN_ERROR"):
            seen.problems.append(f"{what}: AG-UI stream ends with {last.data[:80]}")
    elif protocol == "ui-message-stream" and last.data != "[DONE]":
        seen.problems.append(f"{what}: UI message stream ends with {last.data[:80]}")


def _a_position(text: str) -> bool:
    """Whether the server should take ``text`` as a ``Last-Event-ID``."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _check_positions(frames: list[SSE], after: int, seen: Seen, what: str) -> None:
    ids = [int(f.id) for f in frames if f.id is not None]
    if ids and ids != list(range(after + 1, after + 1 + len(ids))):
        seen.problems.append(f"{what}: positions {ids[:12]} after {after}")


async def _read(
    response: httpx.Response,
    plan: ClientPlan,
    protocol: str,
    seen: Seen,
    what: str,
    sent_at: float,
) -> list[SSE] | None:
    """The frames of a stream; ``None`` when the client left before its end."""
    frames: list[SSE] = []
    try:
        async for event in iter_sse(response):
            frames.append(event)
            if plan.leave_after is not None and len(frames) > plan.leave_after:
                return None
    except (httpx.TransportError, httpx.StreamError) as exc:
        # A draining server ends every stream in flight with its run's end. A request
        # sent once the drain began may meet hypercorn's shutdown: on a kept-alive
        # connection it can be answered in part and then closed (its idle watcher's close
        # is shielded, so the request that arrived meanwhile cannot stop it).
        began = seen.drain_began
        if began is not None and sent_at >= began:
            return None
        seen.problems.append(
            f"{what}: cut after {len(frames)} frames: {exc!r}; sent "
            f"{sent_at - began if began is not None else None} s after the drain began, cut "
            f"{trio.current_time() - began if began is not None else None} s after"
        )
        return None
    _check_ending(protocol, frames, seen, what)
    return frames


async def _client(client: httpx.AsyncClient, plan: ClientPlan, seen: Seen) -> None:
    await trio.sleep(plan.start_delay)
    body = {"performer": plan.performer, "input": "where is the cat?", "protocol": plan.protocol}
    if plan.kind == "bad":
        bad = BAD_BODIES[plan.bad]
        kw: dict[str, Any] = {"content": bad} if isinstance(bad, bytes) else {"json": bad}
        response = await client.post("/runs/stream", **kw)
        seen.statuses.append(response.status_code)
        if not 400 <= response.status_code < 500 and response.status_code != 503:
            seen.problems.append(f"bad body {bad!r}: {response.status_code}")
        elif not response.json().get("error"):
            seen.problems.append(f"bad body {bad!r}: an error without words {response.text}")
        return
    if plan.kind == "stream":
        sent_at = trio.current_time()
        async with client.stream("POST", "/runs/stream", json=body) as response:
            seen.statuses.append(response.status_code)
            if response.status_code == 200:
                await _read(response, plan, plan.protocol, seen, f"stream {plan}", sent_at)
        return
    if plan.kind == "viewer":
        await _viewer(client, plan, seen)
        return
    if plan.kind == "slow":
        await _slow_body(client, plan, seen)
        return
    if plan.kind == "flood":
        for _ in range(3 + plan.bad):
            flooded = await client.post("/runs", json={**body, "detached": True})
            seen.statuses.append(flooded.status_code)
            if flooded.status_code not in (202, 429, 503):
                seen.problems.append(f"flood: {flooded.status_code} {flooded.text[:200]}")
        return
    if plan.kind == "wait":
        with trio.move_on_after(0.005 * plan.leave_after if plan.leave_after is not None else 30):
            response = await client.post("/runs/wait", json=body)
            seen.statuses.append(response.status_code)
            if response.status_code == 200 and response.json()["status"] not in ("ok", "error"):
                seen.problems.append(f"wait: {response.text[:200]}")
        return
    started = await client.post("/runs", json={**body, "detached": True})
    seen.statuses.append(started.status_code)
    if started.status_code != 202:
        return
    run_id = started.json()["run_id"]
    async with trio.open_nursery() as nursery:
        for _ in range(plan.cancels):
            nursery.start_soon(_cancel, client, run_id, plan.start_delay, seen)
        if plan.last_event_id is not None:
            await _join(client, run_id, plan, seen)


async def _viewer(client: httpx.AsyncClient, plan: ClientPlan, seen: Seen) -> None:
    """A viewer page: the recent runs, a tree and a record of one, then the board's
    messages from where ``Last-Event-ID`` says (read until the page leaves)."""
    runs = await client.get("/viewer/runs")
    seen.statuses.append(runs.status_code)
    if runs.status_code != 200:
        return
    listed = runs.json()["runs"]
    some = listed[plan.bad % len(listed)]["id"] if listed else "no-such-run"
    for path in (f"/viewer/runs/{some}/tree", f"/viewer/runs/{some}/record"):
        got = await client.get(path)
        seen.statuses.append(got.status_code)
        if got.status_code not in (200, 404):  # 404: it left the history meanwhile
            seen.problems.append(f"viewer {path}: {got.status_code} {got.text[:200]}")
    headers = (
        {}
        if plan.last_event_id is None
        else {b"Last-Event-ID": plan.last_event_id.encode("latin-1")}
    )
    async with client.stream("GET", "/viewer/events", headers=headers) as response:
        seen.statuses.append(response.status_code)
        if plan.last_event_id is not None and not _a_position(plan.last_event_id):
            if response.status_code != 422:
                seen.problems.append(f"viewer after {plan.last_event_id!r}: {response.status_code}")
            return
        messages: list[dict[str, Any]] = []
        with trio.move_on_after(0.05 + 0.005 * (plan.leave_after or 0)):
            try:
                async for event in iter_sse(response):
                    messages.append(event.json())  # noqa: PERF401  # kept as they come: the page leaves mid-stream
            except (httpx.TransportError, httpx.StreamError):
                pass  # a page is left open until the server goes: its stream is cut then
        if messages and messages[0]["k"] != "hello":
            seen.problems.append(f"viewer: the first message is {messages[0]}")


async def _slow_body(client: httpx.AsyncClient, plan: ClientPlan, seen: Seen) -> None:
    """A client that sends a request's head and part of its body, then nothing more,
    and leaves after a while (or is answered first)."""
    url = client.base_url
    assert url.host is not None and url.port is not None
    body = b'{"performer": "cat", "input": "where is the cat?"}'
    head = (
        b"POST /runs/stream HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    stream = await trio.open_tcp_stream(url.host, url.port)
    async with stream:
        await stream.send_all(head + body[: 1 + plan.bad])
        answer = b""
        # a client that waits for its answer (cancels == 2), or one that leaves first
        with trio.move_on_after(1.0 if plan.cancels == 2 else 0.005 * (plan.leave_after or 0)):
            while b"\r\n" not in answer:
                piece = await stream.receive_some()
                if not piece:
                    break
                answer += piece
    if answer:
        status = int(answer.split(b" ", 2)[1])
        seen.statuses.append(status)
        if status not in (408, 503):
            seen.problems.append(f"slow body: {answer[:200]!r}")


async def _cancel(client: httpx.AsyncClient, run_id: str, delay: float, seen: Seen) -> None:
    await trio.sleep(delay)
    response = await client.post(f"/runs/{run_id}/cancel")
    seen.statuses.append(response.status_code)
    if response.status_code not in (202, 409, 404, 503):
        seen.problems.append(f"cancel: {response.status_code} {response.text[:200]}")


async def _join(client: httpx.AsyncClient, run_id: str, plan: ClientPlan, seen: Seen) -> None:
    last = plan.last_event_id
    assert last is not None
    headers = {b"Last-Event-ID": last.encode("latin-1")}  # bytes: httpx sends them as they are
    url = f"/runs/{run_id}/stream?protocol={plan.protocol}"
    sent_at = trio.current_time()
    async with client.stream("GET", url, headers=headers) as response:
        seen.statuses.append(response.status_code)
        if not _a_position(last):
            if response.status_code != 422:
                seen.problems.append(f"join after {last!r}: {response.status_code}")
            return
        if response.status_code != 200:
            # 404: the run is gone; 410: its events after `last` are no longer kept;
            # 422: `last` is past the run's last event
            if response.status_code not in (404, 410, 422):
                seen.problems.append(f"join after {last}: {response.status_code}")
            return
        frames = await _read(response, plan, plan.protocol, seen, f"join {plan}", sent_at)
    if frames is not None and plan.protocol in ("events", "compact"):
        _check_positions(frames, int(last), seen, f"join {plan}")


async def _run_case(case: Case) -> dict[str, Any]:
    seen = Seen()
    found: dict[str, Any] = {"seen": seen}
    options: dict[str, Any] = {
        "replay": case.replay,
        "heartbeat": case.heartbeat,
        "body_timeout": case.body_timeout,
        "max_detached": case.max_detached,
    }
    runtime: Runtime | None = None

    async def clients(served: Any) -> None:
        async with trio.open_nursery() as nursery:
            for plan in case.clients:
                nursery.start_soon(_guarded, served.client, plan, seen)

    async with trio.open_nursery() as outer:
        if case.teardown == "runtime_closes":
            closed = trio.Event()

            async def own_runtime(task_status: Any) -> None:
                nonlocal runtime
                with trio.CancelScope() as scope:
                    async with open_runtime(close_grace=0.05) as rt:
                        runtime = rt
                        task_status.started(scope)
                        await trio.sleep_forever()
                closed.set()

            scope = await outer.start(own_runtime)
            options["runtime"] = runtime
        async with serving(PERFORMERS, **options) as served:
            server = served.app.state.troupe
            if case.teardown == "end":
                await clients(served)
                with trio.fail_after(10):  # detached runs end on their own
                    while server.runs.live() or server.runtime.open_runs:  # noqa: ASYNC110  # the server's state, polled
                        await trio.sleep(0.005)
                runtime = server.runtime
            else:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(clients, served)
                    await trio.sleep(case.teardown_after)
                    if case.teardown == "runtime_closes":
                        scope.cancel()
                        await closed.wait()
                        await clients(served)  # new clients, a closed runtime: no 500s
                    elif case.teardown == "drain":  # as on SIGTERM, under the clients
                        runtime = server.runtime
                        seen.drain_began = trio.current_time()
                        await server.drain(grace=1.0)
                        served.shutdown.set()
                    else:  # the clients all leave at once
                        runtime = server.runtime
                        nursery.cancel_scope.cancel()
    assert runtime is not None
    found["violations"] = runtime.protocol_violations
    found["open_runs"] = runtime.open_runs
    await trio.testing.wait_all_tasks_blocked()
    found["left"] = [n for n in live_task_names() if n.startswith("troupe")]
    return found


async def _guarded(client: httpx.AsyncClient, plan: ClientPlan, seen: Seen) -> None:
    # A request that races the server's shutdown finds no server, or one that closes the
    # connection before answering (a stream it had begun is checked in _read). With no
    # shutdown under way, a dropped connection is the server's fault.
    try:
        await _client(client, plan, seen)
    except* (httpx.TransportError, httpx.StreamError, OSError, trio.BrokenResourceError) as group:
        if seen.drain_began is None:
            seen.problems.append(f"{plan}: the connection failed: {group.exceptions!r}")


@settings(max_examples=max(10, settings().max_examples // 3))
@given(cases())
def test_a_crowd_of_clients_never_breaks_the_server(case: Case) -> None:
    found = run_watched(lambda: _run_case(case), seconds=60, label=repr(case))
    seen: Seen = found["seen"]
    assert not seen.problems, seen.problems
    assert 500 not in seen.statuses, seen.statuses
    assert found["violations"] == 0
    assert found["open_runs"] == 0
    assert not found["left"], found["left"]  # no task outlives its server
