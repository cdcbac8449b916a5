"""The AI SDK's chat over HTTP, beyond one question: client-side tools declared on the
agent, the answer that continues the message calling them, resumable streams
(``"resumable": true``, ``GET /api/chat/{id}/stream``) and the stop endpoint; the same
routes for AG-UI. The AI SDK's own Chat runs these in tests/test_serve_clients.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from starlette.requests import Request

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.serve import Identity
from protocol import AgentRequest, ToolSpec

from .sse_client import iter_sse, serving

CONFIRM: dict[str, Any] = {
    "name": "confirm",
    "description": "Ask the user to confirm.",
    "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
}

ANSWERED: dict[str, Any] = {
    "id": "a1",
    "role": "assistant",
    "parts": [
        {"type": "step-start"},
        {
            "type": "tool-confirm",
            "toolCallId": "c1",
            "state": "output-available",
            "input": {"question": "sure?"},
            "output": "yes",
        },
    ],
}
"""The assistant message that called the client's tool, its answer added (as
``addToolOutput`` leaves it)."""


def helper(*turns: ScriptedTurn, token_delay: float = 0.0) -> Agent:
    @tool
    async def lookup(x: int) -> str:
        """Look up."""
        return f"found {x}"

    script = turns or (
        ScriptedTurn(tool_calls=[ScriptedCall("confirm", {"question": "sure?"}, id="c1")]),
        ScriptedTurn("confirmed"),
    )
    model = ScriptedChatModel(list(script), token_delay=token_delay)
    return Agent(model, [lookup], name="helper", client_tools=[CONFIRM])


def slow() -> Agent:
    """An agent whose answer takes about 20 s (stopped long before)."""
    return helper(ScriptedTurn("tok " * 2000), token_delay=0.01)


def user(text: str, id: str = "u1") -> dict[str, Any]:
    return {"id": id, "role": "user", "parts": [{"type": "text", "text": text}]}


def chunks(text: str) -> list[Any]:
    return [
        json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
        for line in text.splitlines()
        if line.startswith("data: ")
    ]


async def test_a_declared_client_tool_ends_the_run_and_its_result_continues_the_message() -> None:
    async with serving({"helper": helper()}) as served:
        first = await served.client.post(
            "/api/chat", json={"id": "chat-1", "messages": [user("do it")]}
        )
        assert first.status_code == 200, first.text
        got = chunks(first.text)
        types = [c["type"] if isinstance(c, dict) else c for c in got]
        assert "tool-input-available" in types
        assert not any(t.startswith("tool-output") for t in types)  # nothing made up
        assert got[-2] == {"type": "finish", "finishReason": "tool-calls"}
        assert got[-1] == "[DONE]"
        call = next(c for c in got if c.get("type") == "tool-input-available")
        assert call["toolName"] == "confirm" and call["input"] == {"question": "sure?"}
        second = await served.client.post(
            "/api/chat", json={"id": "chat-1", "messages": [user("do it"), ANSWERED]}
        )
        assert second.status_code == 200, second.text
        got = chunks(second.text)
    # the answer goes on in that message (a new id would show it twice)
    assert got[0] == {"type": "start", "messageId": "a1"}
    assert "".join(c.get("delta", "") for c in got if isinstance(c, dict)) == "confirmed"
    assert got[-2] == {"type": "finish", "finishReason": "stop"}


async def test_a_use_chat_body_may_bring_tools_and_replace_a_declared_one() -> None:
    mine = {**CONFIRM, "description": "Mine."}
    agent = helper()
    request = agent.coerce_input({"messages": [{"role": "user", "content": "hi"}], "tools": [mine]})
    offered = agent.offered_client_tools(request)
    assert offered == (ToolSpec("confirm", "Mine.", CONFIRM["parameters"]),)
    other = ToolSpec("other", "Another.")
    both = agent.offered_client_tools(agent.coerce_input(AgentRequest("hi", (), [other])))
    assert [spec.name for spec in both] == ["confirm", "other"]
    async with serving({"helper": helper()}) as served:
        got = await served.client.post(
            "/api/chat", json={"id": "chat-1", "messages": [user("do it")], "tools": [mine]}
        )
    assert got.status_code == 200 and chunks(got.text)[-2]["finishReason"] == "tool-calls"


@pytest.mark.parametrize(
    "tools",
    [
        "confirm",
        [{**CONFIRM, "name": "lookup"}],  # the agent's own tool
        [CONFIRM, CONFIRM],  # twice
        [{"name": ""}],
    ],
)
async def test_client_tools_in_a_body_that_are_wrong_are_a_422_naming_tools(tools: Any) -> None:
    async with serving({"helper": helper()}) as served:
        got = await served.client.post(
            "/api/chat", json={"id": "chat-1", "messages": [user("do it")], "tools": tools}
        )
    assert got.status_code == 422, got.text
    assert got.json()["field"] == "tools", got.json()


def test_declared_client_tools_that_are_wrong_are_refused() -> None:
    model = ScriptedChatModel([ScriptedTurn("x")])

    @tool
    async def lookup(x: int) -> str:
        """Look up."""
        return str(x)

    with pytest.raises(ValueError, match=r"clash.*\['lookup'\]"):
        Agent(model, [lookup], client_tools=[{"name": "lookup"}])
    with pytest.raises(TypeError, match=r"client_tools\[0\]"):
        Agent(model, client_tools=["confirm"])
    with pytest.raises(TypeError, match="repeated"):
        Agent(model, client_tools=[CONFIRM, CONFIRM])
    with pytest.raises(TypeError, match="must be a list"):
        Agent(model, client_tools="confirm")


async def _leave_after(client: httpx.AsyncClient, body: dict[str, Any], n: int) -> list[Any]:
    """Stream a run and leave after ``n`` frames (a reload)."""
    seen: list[Any] = []
    async with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200
        async for event in iter_sse(response):
            seen.append(json.loads(event.data))
            if len(seen) == n:
                break
    return seen


async def test_a_resumable_run_goes_on_without_its_client_and_is_resumed_then_stopped() -> None:
    body = {"id": "chat-1", "messages": [user("go")], "resumable": True}
    async with serving({"helper": slow()}) as served:
        client = served.client
        assert (await client.get("/api/chat/chat-1/stream")).status_code == 204
        seen = await _leave_after(client, body, 5)
        server = served.app.state.troupe
        await trio.sleep(0.1)
        (live,) = server.runs.live()  # the client left: the run goes on
        assert live.detached and not live.finished and live.chat == "chat-1"
        resumed: list[Any] = []
        async with client.stream("GET", "/api/chat/chat-1/stream") as response:
            assert response.status_code == 200
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            async for event in iter_sse(response):
                resumed.append(event.data)
                if len(resumed) == 40:
                    stopped = await client.post("/api/chat/chat-1/stop")
                    assert stopped.status_code == 202, stopped.text
                    assert stopped.json() == {"run_id": live.run_id, "status": "cancelling"}
        again = await client.post("/api/chat/chat-1/stop")
        after = await client.get("/api/chat/chat-1/stream")
    # the whole stream again from its start, as the AI SDK's resume replays it
    assert [json.loads(d) for d in resumed[:5]] == seen
    assert [json.loads(d)["type"] for d in resumed[-3:-1]] == ["abort", "finish"]
    assert resumed[-1] == "[DONE]"
    assert again.status_code == 404 and after.status_code == 204


async def test_a_run_that_is_not_resumable_still_ends_with_its_client() -> None:
    body = {"id": "chat-1", "messages": [user("go")]}
    async with serving({"helper": slow()}) as served:
        await _leave_after(served.client, body, 5)
        with trio.fail_after(5):
            while served.app.state.troupe.runs.live():  # noqa: ASYNC110  # the server's view
                await trio.sleep(0.01)
        assert (await served.client.get("/api/chat/chat-1/stream")).status_code == 204


async def test_the_ag_ui_routes_rejoin_and_stop_a_thread_run() -> None:
    body = {
        "threadId": "thread-1",
        "runId": "run-1",
        "messages": [{"id": "u1", "role": "user", "content": "go"}],
        "resumable": True,
    }
    async with serving({"helper": slow()}) as served:
        client = served.client
        async with client.stream("POST", "/ag-ui", json=body) as response:
            async for _ in iter_sse(response):
                break
        frames: list[Any] = []
        async with client.stream("GET", "/ag-ui/thread-1/stream") as response:
            async for event in iter_sse(response):
                frames.append(json.loads(event.data))
                if len(frames) == 10:
                    assert (await client.post("/ag-ui/thread-1/stop")).status_code == 202
    assert frames[0] == {"type": "RUN_STARTED", "threadId": "thread-1", "runId": "run-1"}
    assert frames[-1]["type"] == "RUN_ERROR" and frames[-1]["code"] == "cancelled"


async def test_chat_routes_refuse_what_is_wrong() -> None:
    async with serving({"helper": helper()}) as served:
        client = served.client
        for path in ("/api/chat/-bad/stream", "/ag-ui/%20/stream"):
            got = await client.get(path)
            assert got.status_code == 422 and got.json()["field"] == "id", got.text
        assert (await client.post("/api/chat/nothing/stop")).status_code == 404
        for resumable in ("true", 1, None):
            got = await client.post(
                "/api/chat", json={"id": "c", "messages": [user("x")], "resumable": resumable}
            )
            assert got.status_code == 422 and got.json()["field"] == "resumable", got.text
        got = await client.post("/runs/wait", json={"input": "x", "resumable": True})
        assert got.status_code == 422 and got.json()["field"] == "resumable", got.text


async def test_resumable_runs_count_as_detached_ones() -> None:
    async with serving({"helper": slow()}, max_detached=1) as served:
        body = {"id": "chat-1", "messages": [user("go")], "resumable": True}
        await _leave_after(served.client, body, 2)
        got = await served.client.post("/api/chat", json={**body, "id": "chat-2"})
        assert got.status_code == 429, got.text
        assert (await served.client.post("/api/chat/chat-1/stop")).status_code == 202


def _by_header(request: Request) -> Identity:
    return Identity(request.headers.get("x-user", "anyone"))


async def test_another_identity_neither_rejoins_nor_stops_a_chat() -> None:
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    async with serving({"helper": slow()}, auth=_by_header) as served:
        client = served.client
        body = {"id": "chat-1", "messages": [user("go")], "resumable": True}
        async with client.stream("POST", "/api/chat", json=body, headers=alice) as response:
            async for _ in iter_sse(response):
                break
        assert (await client.get("/api/chat/chat-1/stream", headers=bob)).status_code == 204
        assert (await client.post("/api/chat/chat-1/stop", headers=bob)).status_code == 404
        assert (await client.post("/api/chat/chat-1/stop", headers=alice)).status_code == 202


async def test_a_chat_served_by_another_process_is_resumed_and_stopped_through_the_store(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/runs.db"
    async with (
        serving({"helper": slow()}, store=store) as one,
        serving({"helper": slow()}, store=store) as other,
    ):
        body = {"id": "chat-1", "messages": [user("go")], "resumable": True}
        seen = await _leave_after(one.client, body, 5)
        frames: list[Any] = []
        async with other.client.stream("GET", "/api/chat/chat-1/stream") as response:
            assert response.status_code == 200
            async for event in iter_sse(response):
                frames.append(event.data)
                if len(frames) == 20:
                    stopped = await other.client.post("/api/chat/chat-1/stop")
                    assert stopped.status_code == 202, stopped.text
        assert (await other.client.get("/api/chat/chat-1/stream")).status_code == 204
    assert [json.loads(d)["type"] for d in frames[:2]] == [c["type"] for c in seen[:2]]
    assert frames[-1] == "[DONE]"


async def test_a_client_tool_answered_in_the_last_message_alone_goes_on_on_the_thread(
    tmp_path: Path,
) -> None:
    # The AI SDK's server-side history: the client sends only its last message, here
    # the assistant message whose client tool it answered.
    async with serving({"helper": helper()}, store=f"sqlite:///{tmp_path}/runs.db") as served:
        first = await served.client.post(
            "/api/chat", json={"id": "chat-1", "message": user("do it")}
        )
        assert chunks(first.text)[-2]["finishReason"] == "tool-calls"
        second = await served.client.post("/api/chat", json={"id": "chat-1", "message": ANSWERED})
        assert second.status_code == 200, second.text
        history = (await served.client.get("/threads/chat-1/history")).json()
    assert "".join(c.get("delta", "") for c in chunks(second.text) if isinstance(c, dict)) == (
        "confirmed"
    )
    said = [(m["role"], m.get("content")) for m in history["messages"]]
    assert said == [
        ("user", "do it"),
        ("assistant", ""),
        ("tool", "yes"),
        ("assistant", "confirmed"),
    ]


async def test_resumable_may_be_asked_in_the_query() -> None:
    # AG-UI's HttpAgent sends a body of its own fixed shape: the URL says it
    body = {
        "threadId": "t",
        "runId": "r",
        "messages": [{"id": "u", "role": "user", "content": "go"}],
    }
    async with serving({"helper": slow()}) as served:
        async with served.client.stream("POST", "/ag-ui?resumable=true", json=body) as response:
            async for _ in iter_sse(response):
                break
        (live,) = served.app.state.troupe.runs.live()
        assert live.detached
        assert (await served.client.post("/ag-ui/t/stop")).status_code == 202
        got = await served.client.post("/ag-ui?resumable=yes", json={**body, "runId": "r2"})
    assert got.status_code == 422 and got.json()["field"] == "resumable"


async def test_a_run_whose_first_events_are_no_longer_kept_is_a_410_to_resume() -> None:
    # The AI SDK's resume replays the whole stream: a part of it would be a wrong message.
    async with serving({"helper": slow()}, replay=5) as served:
        body = {"id": "chat-1", "messages": [user("go")], "resumable": True}
        await _leave_after(served.client, body, 2)
        with trio.fail_after(5):
            while served.app.state.troupe.runs.live()[0].position < 10:  # noqa: ASYNC110
                await trio.sleep(0.01)
        got = await served.client.get("/api/chat/chat-1/stream")
        assert got.status_code == 410, got.text
        assert (await served.client.post("/api/chat/chat-1/stop")).status_code == 202
