"""The HTTP edge on a store (issues 30 and 32): ``troupe serve --store URL``; runs that
outlive their server (joins with ``Last-Event-ID``, status and cancels after a restart
and through another server on the same file); threads over HTTP with ``multitask``;
AG-UI's ``threadId`` and the AI SDK's chat ``id`` naming threads, a frontend's whole
history taken without doubling; the owner rules of ``--auth`` for stored runs and
threads; and every refusal (404, 409, 422, 501, a store that cannot be opened)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors._demo import make_cat_agent
from actors.serve import Identity
from actors.serve._errors import BadRequest
from actors.serve._history import new_messages
from actors.serve._threads import ended_as
from actors.testing import run_watched
from protocol import ChatMessage, SystemMessage, UserMessage
from runtime import RunCancelledError, StoreError, describe_error, open_store
from runtime._sqlite_store import SQLiteStore

from .sse_client import SSE, first_line, iter_sse, read_sse, serving
from .test_serve_history import _reporter

TROUPE = [sys.executable, "-m", "actors"]  # this tree's code (cwd first on sys.path)
QUESTION = {"input": "where is the cat?"}
SLOW = 0.05


def _said(answer: str) -> list[str]:
    """The contents of the messages a reporter was given."""
    return [m["content"] for m in json.loads(answer)]


# -- without a store -------------------------------------------------------------------


async def test_without_a_store_threads_are_a_501_that_says_to_start_with_store() -> None:
    async with serving(_reporter()) as served:
        client = served.client
        for method, path in [
            ("POST", "/threads"),
            ("GET", "/threads"),
            ("GET", "/threads/t1"),
            ("GET", "/threads/t1/history"),
            ("DELETE", "/threads/t1"),
            ("POST", "/threads/t1/runs/stream"),
            ("POST", "/threads/t1/runs/wait"),
        ]:
            got = await client.request(method, path, json=QUESTION)
            assert got.status_code == 501, (path, got.text)
            assert "--store" in got.json()["error"]
        for body, field in [
            ({**QUESTION, "thread_id": "t1"}, "thread_id"),
            ({**QUESTION, "config": {"thread_id": "t1"}}, "config.thread_id"),
        ]:
            got = await client.post("/runs/wait", json=body)
            assert got.status_code == 501 and got.json()["field"] == field, got.text
        # a frontend's thread id only labels its stream, as before
        ag_ui = {"threadId": "t1", "runId": "r1", "messages": [{"role": "user", "content": "hi"}]}
        async with client.stream("POST", "/ag-ui", json=ag_ui) as response:
            frames = await read_sse(response)
        assert frames[0].json()["threadId"] == "t1"
        assert (await client.get("/runs/nope")).status_code == 404


# -- threads ---------------------------------------------------------------------------


async def test_the_threads_endpoints(url: str) -> None:
    async with serving(_reporter(), store=url) as served:
        client = served.client
        made = await client.post("/threads", json={"metadata": {"topic": "cats"}})
        assert made.status_code == 201, made.text
        thread = made.json()
        assert thread["metadata"] == {"topic": "cats"} and thread["messages"] == 0
        named = await client.post("/threads", json={"thread_id": "a thread, named"})
        assert named.status_code == 201 and named.json()["thread_id"] == "a thread, named"
        empty = await client.post("/threads")  # no body at all
        assert empty.status_code == 201
        listed = (await client.get("/threads")).json()["threads"]
        assert {t["thread_id"] for t in listed} == {
            thread["thread_id"],
            "a thread, named",
            empty.json()["thread_id"],
        }
        assert (await client.get("/threads", params={"limit": "1"})).json()["threads"][:1]
        got = await client.get(f"/threads/{thread['thread_id']}")
        assert got.json() == thread
        waited = await client.post(
            f"/threads/{thread['thread_id']}/runs/wait", json={"input": "I am Ann"}
        )
        assert waited.json()["status"] == "ok", waited.text
        history = (await client.get(f"/threads/{thread['thread_id']}/history")).json()
        assert history["messages"][0]["content"] == "I am Ann"
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        assert history["added_by"] == [waited.json()["run_id"]] * 2
        assert [r["run_id"] for r in history["runs"]] == [waited.json()["run_id"]]
        assert history["runs"][0]["status"] == "ok"
        assert history["thread"]["messages"] == 2
        deleted = await client.delete(f"/threads/{thread['thread_id']}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        for method, path in [
            ("GET", f"/threads/{thread['thread_id']}"),
            ("GET", f"/threads/{thread['thread_id']}/history"),
            ("DELETE", f"/threads/{thread['thread_id']}"),
            ("POST", f"/threads/{thread['thread_id']}/runs/wait"),
            ("POST", f"/threads/{thread['thread_id']}/runs/stream"),
            ("GET", f"/runs/{waited.json()['run_id']}"),
            ("GET", f"/runs/{waited.json()['run_id']}/stream"),
        ]:
            gone = await client.request(method, path, json=QUESTION)
            assert gone.status_code == 404, (method, path, gone.text)


async def test_thread_refusals_name_the_field(url: str) -> None:
    async with serving(_reporter(), store=url) as served:
        client = served.client
        await client.post("/threads", json={"thread_id": "t1"})
        taken = await client.post("/threads", json={"thread_id": "t1"})
        assert taken.status_code == 409 and taken.json()["field"] == "thread_id"
        for bad in ["x" * 257, "a\nb", "", 5, ["t"]]:
            for path, body in [
                ("/threads", {"thread_id": bad}),
                ("/runs/wait", {**QUESTION, "thread_id": bad}),
                ("/runs/stream", {**QUESTION, "thread_id": bad}),
            ]:
                got = await client.post(path, json=body)
                assert got.status_code == 422, (path, bad, got.text)
                assert got.json()["field"] == "thread_id"
            got = await client.post("/runs/wait", json={**QUESTION, "config": {"thread_id": bad}})
            assert got.status_code == 422 and got.json()["field"] == "config.thread_id"
        long = await client.get(f"/threads/{'x' * 257}")
        assert long.status_code == 422 and long.json()["field"] == "thread_id"
        for metadata in ([1], {"troupe.owner": "me"}):
            got = await client.post("/threads", json={"metadata": metadata})
            assert got.status_code == 422 and got.json()["field"] == "metadata"
        for bad_multitask in ["sometimes", 1, ""]:
            got = await client.post(
                "/threads/t1/runs/wait", json={**QUESTION, "multitask": bad_multitask}
            )
            assert got.status_code == 422 and got.json()["field"] == "multitask"
        two = await client.post("/threads/t1/runs/wait", json={**QUESTION, "thread_id": "t2"})
        assert two.status_code == 422 and two.json()["field"] == "thread_id"
        spoof = {**QUESTION, "config": {"metadata": {"troupe.owner": "root"}}}
        assert (await client.post("/runs/wait", json=spoof)).status_code == 422
        for bad_limit in ["0", "x", "5000"]:
            got = await client.get("/threads", params={"limit": bad_limit})
            assert got.status_code == 422 and got.json()["field"] == "limit"
        assert (await client.get("/threads/nope")).status_code == 404
        assert (await client.post("/threads/nope/runs/wait", json=QUESTION)).status_code == 404


async def test_a_performer_that_keeps_no_threads_is_a_422(url: str) -> None:
    model = ScriptedChatModel([ScriptedTurn("hi")] * 3)
    async with serving(model, store=url) as served:
        got = await served.client.post("/runs/wait", json={"input": "hi", "thread_id": "t"})
        assert got.status_code == 422 and got.json()["field"] == "thread_id"
        assert "keeps no threads" in got.json()["error"]
        # a frontend's own id then only labels its stream, as without a store
        ag_ui = {"threadId": "t", "runId": "r1", "messages": [{"role": "user", "content": "?"}]}
        await _answer(served.client, "/ag-ui", ag_ui)  # a 200
        assert (await served.client.get("/threads/t")).status_code == 404


async def test_a_thread_keeps_the_conversation_across_bodies_and_runs(url: str) -> None:
    async with serving(_reporter(), store=url) as served:
        client = served.client
        first = await client.post("/runs/wait", json={"input": "I am Ann", "thread_id": "t"})
        assert first.json()["status"] == "ok"
        second = await client.post(
            "/runs/wait", json={"input": "Who am I?", "config": {"thread_id": "t"}}
        )
        said = _said(second.json()["output"]["output"])
        assert said[0] == "I am Ann" and said[-1] == "Who am I?" and len(said) == 3
        async with client.stream(
            "POST", "/threads/t/runs/stream", json={"input": "And now?"}
        ) as response:
            frames = await read_sse(response)
        assert response.headers["x-troupe-run-id"]
        end = frames[-1].json()
        assert end["event"] == "on_chain_end"
        assert len(_said(end["data"]["output"]["output"])) == 5
        status = (await client.get(f"/runs/{response.headers['x-troupe-run-id']}")).json()
        assert status["status"] == "ok" and status["thread_id"] == "t"


# -- two runs on one thread --------------------------------------------------------------


async def _first_event(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    """Start a stream and return its response after its first event (the run is going)."""
    response = await client.send(client.build_request("POST", path, json=body), stream=True)
    events = iter_sse(response)
    await events.__anext__()
    return response, events


async def _second_run(
    client: httpx.AsyncClient, path: str, multitask: str
) -> tuple[str, list[SSE], httpx.Response]:
    """Stream a run on thread ``t`` (by ``path``), and while it goes ask for another
    with ``multitask``: the first's id, its events after its first, the second's answer."""
    response, events = await _first_event(client, path, {**QUESTION, "thread_id": "t"})
    try:
        second = await client.post(
            "/threads/t/runs/wait", json={**QUESTION, "multitask": multitask}
        )
        rest = [event async for event in events]
    finally:
        await response.aclose()
    return response.headers["x-troupe-run-id"], rest, second


async def test_multitask_reject_enqueue_interrupt(url: str) -> None:
    async with serving(make_cat_agent(token_delay=SLOW), store=url) as served:
        client = served.client
        first_id, _, rejected = await _second_run(client, "/runs/stream", "reject")
        assert rejected.status_code == 409 and rejected.json()["field"] == "multitask"
        assert first_id in rejected.json()["error"]
        assert (await client.get(f"/runs/{first_id}")).json()["status"] == "ok"

        first_id, rest, enqueued = await _second_run(client, "/threads/t/runs/stream", "enqueue")
        assert enqueued.json()["status"] == "ok", enqueued.text
        assert rest[-1].json()["event"] == "on_chain_end"  # the first ran to its end
        first = (await client.get(f"/runs/{first_id}")).json()
        second = (await client.get(f"/runs/{enqueued.json()['run_id']}")).json()
        assert first["ended_at"] <= second["started_at"]

        _, rest, interrupting = await _second_run(client, "/runs/stream", "interrupt")
        assert interrupting.json()["status"] == "ok", interrupting.text
        assert rest[-1].event == "error"  # after the run's cancelled end
        assert rest[-2].json()["event"] == "on_chain_error"
        assert rest[-2].json()["data"]["error"] == "cancelled"
        runs = (await client.get("/threads/t/history")).json()["runs"]
        assert [r["status"] for r in runs] == ["ok", "cancelled", "ok", "ok", "ok"]


async def test_two_requests_at_once_on_an_idle_thread_start_one_run(url: str) -> None:
    async with serving(make_cat_agent(token_delay=SLOW), store=url) as served:
        statuses: list[int] = []

        async def ask() -> None:
            got = await served.client.post("/runs/wait", json={**QUESTION, "thread_id": "t"})
            statuses.append(got.status_code)

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(ask)
        assert sorted(statuses) == [200, 409, 409, 409]


async def test_a_thread_with_a_run_going_is_not_deleted(url: str) -> None:
    async with serving(make_cat_agent(token_delay=SLOW), store=url) as served:
        client = served.client
        on_t = {**QUESTION, "thread_id": "t"}
        response, _ = await _first_event(client, "/runs/stream", on_t)
        try:
            refused = await client.delete("/threads/t")
            assert refused.status_code == 409
        finally:
            await response.aclose()


# -- runs that outlive their server --------------------------------------------------------


async def test_a_finished_run_is_joined_after_a_restart(url: str) -> None:
    async with serving(make_cat_agent(), store=url) as served:
        async with served.client.stream("POST", "/runs/stream", json=QUESTION) as response:
            streamed = await read_sse(response)
        run_id = response.headers["x-troupe-run-id"]
    assert [int(e.id or 0) for e in streamed] == list(range(1, len(streamed) + 1))
    async with serving(make_cat_agent(), store=url) as served:
        client = served.client
        for after in (0, 10, len(streamed) - 1):
            async with client.stream(
                "GET", f"/runs/{run_id}/stream", headers={"last-event-id": str(after)}
            ) as joined:
                rest = await read_sse(joined)
            assert [(e.id, e.event, e.json()) for e in rest] == [
                (e.id, e.event, e.json()) for e in streamed[after:]
            ]
        async with client.stream(
            "GET", f"/runs/{run_id}/stream", headers={"last-event-id": str(len(streamed))}
        ) as joined:
            assert await read_sse(joined) == []  # every event: nothing more
        past = await client.get(f"/runs/{run_id}/stream", headers={"last-event-id": "100000"})
        assert past.status_code == 422 and past.json()["field"] == "Last-Event-ID"
        async with client.stream(
            "GET", f"/runs/{run_id}/stream", params={"protocol": "ag-ui"}
        ) as joined:
            ag_ui = [e.json()["type"] for e in await read_sse(joined)]
        assert ag_ui[0] == "RUN_STARTED" and ag_ui[-1] == "RUN_FINISHED"
        status = (await client.get(f"/runs/{run_id}")).json()
        assert status["status"] == "ok" and status["owner"] == "anyone"
        again = await client.post("/runs/wait", json={**QUESTION, "run_id": run_id})
        assert again.status_code == 409 and again.json()["field"] == "run_id"
        assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 409
        assert (await client.get("/runs/no-such-run")).status_code == 404
        assert (await client.get("/runs/no-such-run/stream")).status_code == 404
        assert (await client.post("/runs/no-such-run/cancel")).status_code == 404


async def test_a_failed_run_joined_after_a_restart_ends_with_its_error(url: str) -> None:
    def explode(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        raise KeyError("boom")

    agent = Agent(ScriptedChatModel(explode), name="Exploding")
    async with serving(agent, store=url) as served:
        async with served.client.stream("POST", "/runs/stream", json=QUESTION) as response:
            streamed = await read_sse(response)
        run_id = response.headers["x-troupe-run-id"]
    async with (
        serving(agent, store=url) as served,
        served.client.stream("GET", f"/runs/{run_id}/stream") as joined,
    ):
        rest = await read_sse(joined)
    assert [(e.event, e.data) for e in rest] == [(e.event, e.data) for e in streamed]
    assert rest[-1].event == "error" and "boom" in rest[-1].json()["error"]


async def _troupe_serve(url: str, *extra: str) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [*TROUPE, "serve", "--port", "0", "--store", url, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    return process, (await first_line(process)).split("serving on ")[1].strip()


async def test_a_run_of_another_server_on_the_store_is_streamed_and_cancelled(
    url: str,
) -> None:
    process, other = await _troupe_serve(url, "--delay", "0.3")
    try:
        async with (
            httpx.AsyncClient(base_url=other, timeout=30) as there,
            serving(make_cat_agent(), store=url) as served,
        ):
            started = await there.post("/runs", json={**QUESTION, "detached": True})
            run_id = started.json()["run_id"]
            client = served.client
            with trio.fail_after(10):
                while (await client.get(f"/runs/{run_id}")).status_code == 404:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # until its record is journaled
            listed = (await client.get("/runs")).json()["runs"]
            assert [r["run_id"] for r in listed] == [run_id]
            seen: list[SSE] = []
            async with client.stream("GET", f"/runs/{run_id}/stream") as joined:
                async for event in iter_sse(joined):
                    seen.append(event)
                    if len(seen) == 5:
                        cancelled = await client.post(f"/runs/{run_id}/cancel")
                        assert cancelled.status_code == 202, cancelled.text
            assert seen[-1].event == "error"  # after the run's cancelled end
            assert seen[-2].json()["event"] == "on_chain_error"
            assert seen[-2].json()["data"]["error"] == "cancelled"
            assert [int(e.id or 0) for e in seen[:-1]] == list(range(1, len(seen)))
            assert (await client.get(f"/runs/{run_id}")).json()["status"] == "cancelled"
            assert (await client.post(f"/runs/{run_id}/cancel")).status_code == 409
            async with there.stream("GET", f"/runs/{run_id}/stream") as there_joined:
                assert [e.data for e in await read_sse(there_joined)] == [e.data for e in seen]
            # a run on a thread, going on the other server, is interrupted from here
            on_thread = {**QUESTION, "thread_id": "shared", "detached": True}
            there_id = (await there.post("/runs", json=on_thread)).json()["run_id"]
            with trio.fail_after(10):
                while (await client.get(f"/runs/{there_id}")).status_code == 404:  # noqa: ASYNC110
                    await trio.sleep(0.02)
            busy = await client.post("/threads/shared/runs/wait", json=QUESTION)
            assert busy.status_code == 409 and there_id in busy.json()["error"]
            interrupting = await client.post(
                "/threads/shared/runs/wait", json={**QUESTION, "multitask": "interrupt"}
            )
            assert interrupting.json()["status"] == "ok", interrupting.text
            runs = (await client.get("/threads/shared/history")).json()["runs"]
            assert [(r["run_id"], r["status"]) for r in runs] == [
                (interrupting.json()["run_id"], "ok"),
                (there_id, "cancelled"),
            ]
    finally:
        process.kill()
        await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()


# -- identities ----------------------------------------------------------------------------


def _identify(request: Request) -> Identity | None:
    name = request.headers.get("x-user")
    return None if name is None else Identity(name, sees_all=name == "root")


async def test_stored_runs_and_threads_keep_their_owners(url: str) -> None:
    ada, bob, root = ({"x-user": n} for n in ("ada", "bob", "root"))
    async with serving(_reporter(), store=url, auth=_identify) as served:
        client = served.client
        run = await client.post("/runs/wait", json={**QUESTION, "thread_id": "ada's"}, headers=ada)
        run_id = run.json()["run_id"]
    async with serving(_reporter(), store=url, auth=_identify) as served:
        client = served.client
        for method, path in [
            ("GET", f"/runs/{run_id}"),
            ("GET", f"/runs/{run_id}/stream"),
            ("POST", f"/runs/{run_id}/cancel"),
            ("GET", "/threads/ada's"),
            ("GET", "/threads/ada's/history"),
            ("DELETE", "/threads/ada's"),
            ("POST", "/threads/ada's/runs/wait"),
        ]:
            got = await client.request(method, path, json=QUESTION, headers=bob)
            assert got.status_code == 404, (method, path, got.text)
        taken = await client.post(
            "/runs/wait", json={**QUESTION, "thread_id": "ada's"}, headers=bob
        )
        assert taken.status_code == 409 and taken.json()["field"] == "thread_id"
        assert (await client.get("/threads", headers=bob)).json()["threads"] == []
        assert (await client.get(f"/runs/{run_id}", headers=ada)).json()["owner"] == "ada"
        assert (await client.get(f"/runs/{run_id}", headers=root)).status_code == 200
        listed = (await client.get("/threads", headers=ada)).json()["threads"]
        assert [(t["thread_id"], t["owner"]) for t in listed] == [("ada's", "ada")]
        again = await client.post("/threads/ada's/runs/wait", json={"input": "again"}, headers=ada)
        assert len(_said(again.json()["output"]["output"])) == 3


# -- frontends on threads ---------------------------------------------------------------


def _ag_ui(thread: str, run: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {"threadId": thread, "runId": run, "messages": list(messages)}


async def _answer(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    """The text of the answer a frontend's request streams (AG-UI's or the AI SDK's)."""
    async with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200, await response.aread()
        frames = [e.json() for e in await read_sse(response) if e.data != "[DONE]"]
    if "threadId" in body:
        assert frames[0]["threadId"] == body["threadId"]
    texts = ("TEXT_MESSAGE_CONTENT", "text-delta")
    return "".join(frame["delta"] for frame in frames if frame.get("type") in texts)


async def test_ag_ui_turns_on_a_thread_are_neither_lost_nor_doubled(url: str) -> None:
    async with serving(_reporter(), store=url) as served:
        client = served.client

        async def turn(body: dict[str, Any]) -> str:
            return await _answer(client, "/ag-ui", body)

        u1 = {"id": "m1", "role": "user", "content": "I am Ann"}
        a1_text = await turn(_ag_ui("chat", "r1", u1))
        assert _said(a1_text) == ["I am Ann"]
        a1 = {"id": "m2", "role": "assistant", "content": a1_text}
        u2 = {"id": "m3", "role": "user", "content": "Who am I?"}
        # the whole history, as HttpAgent sends it: the thread's messages are not doubled
        a2_text = await turn(_ag_ui("chat", "r2", u1, a1, u2))
        assert _said(a2_text) == ["I am Ann", a1_text, "Who am I?"]
        # only the last message: the thread gives the rest
        u3 = {"id": "m5", "role": "user", "content": "And now?"}
        assert _said(await turn(_ag_ui("chat", "r3", u3))) == [
            "I am Ann",
            a1_text,
            "Who am I?",
            a2_text,
            "And now?",
        ]
        # an edited history is refused, naming the first message that differs
        edited = {**u1, "content": "I am Bob"}
        refused = await client.post("/ag-ui", json=_ag_ui("chat", "r4", edited, a1, u2))
        assert refused.status_code == 409 and refused.json()["field"] == "messages[0]"
        short = await client.post("/ag-ui", json=_ag_ui("chat", "r5", u1, a1, u2))
        assert short.status_code == 409 and short.json()["field"] == "messages"
        # the app's context (a system message) comes with every request: not compared
        context = [{"description": "page", "value": "home"}]
        body: dict[str, Any] = {**_ag_ui("chat", "r6", u1, a1, u2), "context": context}
        history = (await client.get("/threads/chat/history")).json()["messages"]
        whole = [
            {"id": f"h{i}", "role": m["role"], "content": m["content"]}
            for i, m in enumerate(history)
        ]
        body["messages"] = [*whole, {"id": "m9", "role": "user", "content": "Last?"}]
        said = _said(await turn(body))
        assert said[-2:] == ["Context from the app:\n- page: home", "Last?"]
        assert len(said) == len(history) + 2


def _ui(message_id: str, role: str, text: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    if role == "assistant":
        parts.insert(0, {"type": "step-start"})
    return {"id": message_id, "role": role, "parts": parts}


async def test_use_chat_turns_on_a_thread(url: str) -> None:
    async with serving(_reporter(), store=url) as served:
        client = served.client

        async def turn(body: dict[str, Any]) -> str:
            return await _answer(client, "/api/chat", body)

        u1 = _ui("u1", "user", "I am Ann")
        a1_text = await turn({"id": "chat-1", "messages": [u1]})
        u2 = _ui("u2", "user", "Who am I?")
        a2_text = await turn(
            {"id": "chat-1", "messages": [u1, _ui("a1", "assistant", a1_text), u2]}
        )
        assert _said(a2_text) == ["I am Ann", a1_text, "Who am I?"]
        # the AI SDK's server-side history: only the last message, as `message`
        u3 = _ui("u3", "user", "And now?")
        assert len(_said(await turn({"id": "chat-1", "message": u3}))) == 5
        thread = (await client.get("/threads/chat-1")).json()
        assert thread["messages"] == 6
        edited = {"id": "chat-1", "messages": [_ui("u1", "user", "I am Bob"), u2, u3]}
        refused = await client.post("/api/chat", json=edited)
        assert refused.status_code == 409 and refused.json()["field"] == "messages[0]"


# -- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--store", "sqlite:////no/such/folder/runs.db"], "'/no/such/folder' does not exist"),
        (["--store", "mysql://db"], "unknown kind of store"),
        (["--store", "sqlite:///"], "an SQLite URL is"),
        (["--retention", "7d"], "--retention needs --store"),
        (["--ray", "local", "--store", "sqlite:///x.db"], "--store does not work with --ray"),
        (["--store", "sqlite:///x.db", "--retention", "soon"], "expected an age"),
        (["--store", "sqlite:///x.db", "--retention=-1h"], "must be > 0"),
        (["--store", "sqlite:///x.db", "--retention", "0s"], "must be > 0"),
    ],
)
def test_a_store_that_cannot_be_opened_is_one_line(
    args: list[str], said: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [*TROUPE, "serve", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 2, done.stderr
    assert said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    if "--retention" not in args:
        assert done.stderr.strip().count("\n") == 0 or "usage:" in done.stderr


async def test_troupe_serve_keeps_runs_in_its_store(url: str, tmp_path: Path) -> None:
    process, served = await _troupe_serve(url, "--retention", "1h")
    try:
        async with httpx.AsyncClient(base_url=served, timeout=30) as client:
            done = await client.post("/runs/wait", json={**QUESTION, "thread_id": "t"})
            assert (await client.get("/threads/t")).json()["messages"] > 0
    finally:
        process.kill()
        await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()
    store = open_store(url)
    store.open()
    try:
        record = store.get_run(done.json()["run_id"])
    finally:
        store.close()
    assert record is not None and record.status == "ok" and record.thread_id == "t"


async def test_retention_deletes_ended_runs(url: str) -> None:
    async with serving(make_cat_agent(), store=url, retention=0.3) as served:
        done = await served.client.post("/runs/wait", json=QUESTION)
        run_id = done.json()["run_id"]
        store = open_store(url)
        store.open()
        try:
            assert store.get_run(run_id) is not None
            with trio.fail_after(10):
                while store.get_run(run_id) is not None:  # noqa: ASYNC110
                    await trio.sleep(0.05)
        finally:
            store.close()


def test_asgi_app_refuses_bad_store_options() -> None:
    from actors.serve import asgi_app

    with pytest.raises(ValueError, match="not both"):
        asgi_app(make_cat_agent(), store="sqlite:///x.db", runtime=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        asgi_app(make_cat_agent(), store=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retention"):
        asgi_app(make_cat_agent(), store="sqlite:///x.db", retention=-1)


# -- faults ----------------------------------------------------------------------------------


class _FailingStore(SQLiteStore):
    """A store whose reads of threads fail (a disk gone, a database restarting), and
    its lists of runs too once ``failing`` is set."""

    failing = False

    def list_threads(self, *, limit: int = 100) -> list[Any]:
        raise StoreError(f"store {self.url!r}: disk I/O error")

    def list_runs(self, **filters: Any) -> list[Any]:
        if self.failing:
            raise StoreError(f"store {self.url!r}: disk I/O error")
        return super().list_runs(**filters)


async def test_a_store_that_fails_is_a_503_naming_it(url: str) -> None:
    async with serving(_reporter(), store=_FailingStore(url)) as served:
        got = await served.client.get("/threads")
        assert got.status_code == 503 and "disk I/O error" in got.json()["error"]
        assert (await served.client.post("/runs/wait", json=QUESTION)).status_code == 200


async def test_a_store_that_fails_while_a_run_waits_its_turn_is_a_503(url: str) -> None:
    store = _FailingStore(url)
    async with serving(make_cat_agent(token_delay=SLOW), store=store) as served:
        client = served.client
        first = await client.post("/runs", json={**QUESTION, "thread_id": "t", "detached": True})
        statuses: list[int] = []

        async def wait_in_turn() -> None:
            enqueue = {**QUESTION, "multitask": "enqueue"}
            statuses.append((await client.post("/threads/t/runs/wait", json=enqueue)).status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_in_turn)
            await trio.sleep(0.2)
            store.failing = True
        store.failing = False
        assert statuses == [503]
        await client.post(f"/runs/{first.json()['run_id']}/cancel")


async def test_a_run_waiting_its_turn_ends_with_its_client_or_the_server(url: str) -> None:
    async with serving(make_cat_agent(token_delay=SLOW), store=url) as served:
        client = served.client
        server = served.app.state.troupe
        first = await client.post("/runs", json={**QUESTION, "thread_id": "t", "detached": True})
        first_id = first.json()["run_id"]
        enqueue = {**QUESTION, "multitask": "enqueue"}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up waiting
            await client.post("/threads/t/runs/wait", json=enqueue, timeout=0.3)
        with trio.fail_after(10):
            while len(server.thread_locks):  # noqa: ASYNC110
                await trio.sleep(0.02)  # the waiting request saw its client go
        statuses: list[int] = []

        async def wait_in_turn() -> None:
            got = await client.post("/threads/t/runs/wait", json=enqueue)
            statuses.append(got.status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait_in_turn)
            with trio.fail_after(10):
                while not len(server.thread_locks):  # noqa: ASYNC110
                    await trio.sleep(0.01)  # it waits its turn
            await trio.sleep(0.1)
            server.draining = True  # as a shutdown begins
        server.draining = False
        assert statuses == [503]
        await client.post(f"/runs/{first_id}/cancel")
        runs = (await client.get("/threads/t/history")).json()["runs"]
        assert [r["run_id"] for r in runs] == [first_id], runs  # no other run began


def test_how_a_stored_run_ended_reads_as_a_live_runs_error() -> None:
    assert ended_as("ok", None) is None
    cancelled = ended_as("cancelled", "cancelled")
    assert isinstance(cancelled, RunCancelledError)
    failed = ended_as("error", "KeyError: 'boom'")
    assert describe_error(failed) == "KeyError: 'boom'"  # type: ignore[arg-type]
    assert describe_error(ended_as("error", "it broke")) == "RuntimeError: it broke"  # type: ignore[arg-type]
    assert isinstance(ended_as(None, None), RunCancelledError)  # its journal stops short


def test_a_frontends_new_messages_on_a_thread() -> None:
    said: list[tuple[int, ChatMessage]] = [(0, UserMessage("hi"))]
    assert new_messages(said, [], "t") == 0
    with pytest.raises(BadRequest) as nothing:
        new_messages([(0, SystemMessage("x"))], [], "t")
    assert nothing.value.status == 409 and nothing.value.field == "messages"


# -- generated requests ------------------------------------------------------------------

THREAD_IDS = st.text(max_size=300) | st.sampled_from(["t", "a/b", "a\nb", "x" * 257, ".."])
THREAD_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "input": st.sampled_from(["where is the cat?", "", 5]),
        "thread_id": THREAD_IDS | st.integers() | st.none(),
        "multitask": st.sampled_from(["reject", "enqueue", "interrupt", "x", ""]) | st.integers(),
        "config": st.fixed_dictionaries({}, optional={"thread_id": THREAD_IDS | st.integers()}),
        "threadId": THREAD_IDS,
        "id": THREAD_IDS,
        "runId": st.sampled_from(["r1", "r 2"]),
        "message": st.just({"role": "user", "parts": [{"type": "text", "text": "hi"}]}),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text()}
            ),
            max_size=3,
        ),
        "metadata": st.dictionaries(st.text(max_size=12), st.integers(), max_size=2)
        | st.integers(),
        "detached": st.booleans(),
    },
)


@settings(max_examples=25, deadline=None)
# (a path's thread id: no "/", and not "." or "..", which a client's URL resolves away)
@given(
    body=THREAD_BODIES,
    where=THREAD_IDS.filter(lambda t: "/" not in t and t.isprintable() and t not in (".", "..")),
)
def test_no_thread_request_gets_a_500(body: dict[str, Any], where: str) -> None:
    async def probe() -> list[str]:
        problems: list[str] = []
        with tempfile.TemporaryDirectory() as folder:
            async with serving(_reporter(), store=f"sqlite:///{folder}/runs.db") as served:
                client = served.client
                path = quote(where, safe="") or "%20"
                for method, url in [
                    ("POST", "/runs/wait"),
                    ("POST", "/runs/stream"),
                    ("POST", "/runs"),
                    ("POST", "/threads"),
                    ("POST", f"/threads/{path}/runs/wait"),
                    ("GET", f"/threads/{path}"),
                    ("GET", f"/threads/{path}/history"),
                    ("DELETE", f"/threads/{path}"),
                ]:
                    with trio.fail_after(20):
                        got = await client.request(method, url, json=body)
                    if got.status_code >= 500 and got.status_code != 503:
                        problems.append(f"{method} {url}: {got.status_code} {got.text[:300]}")
                    elif got.status_code >= 400 and not got.json().get("error"):
                        problems.append(f"{method} {url}: {got.status_code} without words")
                server = served.app.state.troupe
                with trio.fail_after(20):
                    while server.runs.live() or len(server.thread_locks):  # noqa: ASYNC110
                        await trio.sleep(0.005)
        return problems

    problems = run_watched(probe, seconds=60, label=repr((body, where)))
    assert not problems, problems
