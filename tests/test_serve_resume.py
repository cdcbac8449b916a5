"""Runs that pause and resume over HTTP, against a real server with a store: the
``events`` protocol's paused end and ``POST /runs/{run_id}/resume`` (streamed and
waited for), AG-UI's interrupt outcome and ``RunAgentInput.resume``, the AI SDK's
``tool-approval-request`` and approval answers, and every way a resume can be wrong
(4xx naming the field, nothing run). Tools count their side effects in a file: nothing
runs twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.serve import Identity
from actors.testing import check_events
from protocol import CompactDecoder, Paused, PendingRequest, structure_any
from runtime import RunPaused, Runtime, interrupt, open_runtime

from .sse_client import Served, read_sse, serving

TURNS = (
    ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
    ScriptedTurn("all done"),
)


def payer(ledger: Path, *turns: ScriptedTurn) -> Agent:
    """An agent whose ``pay`` needs approval; every call is written to ``ledger``."""

    @tool(needs_approval=True)
    async def pay(amount: int) -> str:
        """Pay an amount."""
        with ledger.open("a") as file:
            file.write(f"pay {amount}\n")
        return f"paid {amount}"

    @tool
    async def ask(question: str) -> str:
        """Ask the person."""
        answer = await interrupt({"question": question})
        with ledger.open("a") as file:
            file.write(f"ask {answer}\n")
        return f"they said {answer}"

    return Agent(model=ScriptedChatModel(list(turns or TURNS)), tools=[pay, ask], name="payer")


def calls(ledger: Path) -> list[str]:
    return ledger.read_text().splitlines() if ledger.exists() else []


@asynccontextmanager
async def served_with_store(
    tmp_path: Path, *turns: ScriptedTurn, **options: Any
) -> AsyncIterator[tuple[Served, Runtime, Path]]:
    ledger = tmp_path / "ledger.txt"
    async with (
        open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt,
        serving({"payer": payer(ledger, *turns)}, runtime=rt, **options) as served,
    ):
        yield served, rt, ledger


async def _paused(client: httpx.AsyncClient, run_id: str = "first") -> list[dict[str, Any]]:
    async with client.stream(
        "POST", "/runs/stream", json={"input": "pay five", "run_id": run_id}
    ) as response:
        assert response.status_code == 200
        return [e.json() for e in await read_sse(response)]


async def test_the_paused_end_goes_out_as_is_and_resume_streams_the_new_run(
    tmp_path: Path,
) -> None:
    async with served_with_store(tmp_path) as (served, rt, ledger):
        events = await _paused(served.client)
        end = events[-1]
        assert end["event"] == "on_chain_end" and end["run_id"] == "first"
        paused = structure_any(end["data"]["output"])
        assert paused == Paused((PendingRequest("p1", "approval", "pay", {"amount": 5}),))
        assert calls(ledger) == []
        async with served.client.stream(
            "POST", "/runs/first/resume", json={"decisions": {"p1": True}, "run_id": "second"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["x-troupe-run-id"] == "second"
            resumed = [e.json() for e in await read_sse(response)]
        assert resumed[-1]["run_id"] == "second"
        assert resumed[-1]["data"]["output"]["output"] == "all done"
        assert [e["name"] for e in resumed if e["event"] == "on_tool_start"] == ["pay"]
        assert calls(ledger) == ["pay 5"]
        assert (await rt.get_run("first")).resumed_by == "second"


async def test_the_paused_end_decodes_from_compact_records(tmp_path: Path) -> None:
    async with served_with_store(tmp_path) as (served, _, _):
        body = {"input": "pay five", "run_id": "first", "protocol": "compact"}
        async with served.client.stream("POST", "/runs/stream", json=body) as response:
            frames = await read_sse(response)
    decoder = CompactDecoder()
    events = [e for f in frames for r in f.json() if (e := decoder.decode(r)) is not None]
    check_events(events)
    assert events[-1].status == "paused"
    assert events[-1].data.output == Paused(
        (PendingRequest("p1", "approval", "pay", {"amount": 5}),)
    )


async def test_resume_waits_with_stream_false_and_a_paused_wait_says_paused(
    tmp_path: Path,
) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        response = await served.client.post(
            "/runs/wait", json={"input": "pay five", "run_id": "first"}
        )
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "paused" and body["run_id"] == "first"
        assert structure_any(body["output"]).pending[0].id == "p1"
        denied = {"p1": {"approve": False, "reason": "too much"}}
        response = await served.client.post(
            "/runs/first/resume", json={"decisions": denied, "stream": False}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"
        assert calls(ledger) == []  # denied: never ran


async def test_an_interrupt_is_answered_with_any_value(tmp_path: Path) -> None:
    turns = (
        ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "colour?"}, id="a1")]),
        ScriptedTurn("noted"),
    )
    async with served_with_store(tmp_path, *turns) as (served, _, ledger):
        response = await served.client.post("/runs/wait", json={"input": "ask", "run_id": "q"})
        (pending,) = structure_any(response.json()["output"]).pending
        assert pending.kind == "interrupt" and pending.arguments == {"question": "colour?"}
        response = await served.client.post(
            "/runs/q/resume", json={"decisions": {pending.id: "blue"}, "stream": False}
        )
        assert response.json()["status"] == "ok", response.text
        assert calls(ledger) == ["ask blue"]


async def test_resume_refuses_what_is_wrong_naming_the_field_and_runs_nothing(
    tmp_path: Path,
) -> None:
    async with served_with_store(tmp_path) as (served, rt, ledger):
        client = served.client
        await _paused(client)

        async def refused(path: str, body: Any, status: int, field: str | None) -> str:
            response = await client.post(path, json=body)
            assert response.status_code == status, response.text
            assert response.json().get("field") == field, response.text
            return str(response.json()["error"])

        await refused("/runs/nope/resume", {"decisions": {}}, 404, "run_id")
        await refused("/runs/bad%20id/resume", {"decisions": {}}, 422, "run_id")
        await refused("/runs/first/resume", {}, 422, "decisions")
        await refused("/runs/first/resume", {"decisions": [True]}, 422, "decisions")
        await refused("/runs/first/resume", {"decisions": {"p1": True}, "stream": 1}, 422, "stream")
        error = await refused("/runs/first/resume", {"decisions": {"x": True}}, 422, "decisions")
        assert "decisions['x']" in error
        error = await refused("/runs/first/resume", {"decisions": {}}, 422, "decisions")
        assert "decisions['p1']" in error
        await refused("/runs/first/resume", {"decisions": {"p1": "yes"}}, 422, "decisions")
        await refused(
            "/runs/first/resume", {"decisions": {"p1": True}, "performer": "who"}, 404, None
        )
        response = await client.post(
            "/runs/first/resume", content=b"{", headers={"content-type": "application/json"}
        )
        assert response.status_code == 400 and response.json()["field"] == "body"
        assert (await rt.get_run("first")).resumed_by is None  # unchanged
        assert calls(ledger) == []
        # two at once: one wins, the other is told the run was resumed already
        statuses: list[int] = []

        async def resume() -> None:
            response = await client.post(
                "/runs/first/resume", json={"decisions": {"p1": True}, "stream": False}
            )
            statuses.append(response.status_code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(resume)
            nursery.start_soon(resume)
        assert sorted(statuses) == [200, 409]
        assert calls(ledger) == ["pay 5"]
        error = await refused("/runs/first/resume", {"decisions": {"p1": True}}, 409, "run_id")
        assert "resumed already" in error
        done = (await rt.get_run("first")).resumed_by
        assert done is not None
        error = await refused(f"/runs/{done}/resume", {"decisions": {}}, 409, "run_id")
        assert "not paused" in error
        assert calls(ledger) == ["pay 5"]


async def test_a_server_without_a_store_cannot_resume(tmp_path: Path) -> None:
    async with open_runtime() as rt, serving(payer(tmp_path / "l.txt"), runtime=rt) as served:
        response = await served.client.post("/runs/any/resume", json={"decisions": {}})
        assert response.status_code == 501
        assert response.json()["field"] == "run_id"
        # an AI SDK approval answer names the messages that carry it
        approved = {
            "type": "tool-pay",
            "toolCallId": "p1",
            "state": "approval-responded",
            "input": {"amount": 5},
            "approval": {"id": "gone/p1", "approved": True},
        }
        body = {
            "id": "chat",
            "messages": [
                {"id": "u", "role": "user", "parts": [{"type": "text", "text": "pay"}]},
                {"id": "a", "role": "assistant", "parts": [approved]},
            ],
        }
        response = await served.client.post("/api/chat", json=body)
        assert response.status_code == 501
        assert response.json()["field"] == "messages"
        assert "no store" in response.json()["error"]


class _Host:
    """A run host that is not a local runtime (as a cluster's is)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def closed(self) -> bool:
        return self._runtime.closed

    def astream_events(self, target: Any, input: Any, config: Any = None, *, run_id: str) -> Any:
        return self._runtime.astream_events(target, input, config, run_id=run_id)

    async def subscribe(self, *handlers: Any, drop_oldest: bool, capacity: int) -> Any:
        return await self._runtime.subscribe(*handlers, drop_oldest=drop_oldest, capacity=capacity)

    async def get_run(self, run_id: str) -> Any:
        return await self._runtime.get_run(run_id)


async def test_a_host_that_is_not_a_local_runtime_resumes_through_its_store(
    tmp_path: Path,
) -> None:
    """Any run host resumes (a cluster's too): the paused run's record is asked of the
    host, the resuming run starts there with the resume in its config."""
    ledger = tmp_path / "l.txt"
    async with (
        open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt,
        serving(payer(ledger), runtime=_Host(rt)) as served,
    ):
        response = await served.client.post("/runs/wait", json={"input": "pay", "run_id": "a"})
        assert response.json()["status"] == "paused"
        response = await served.client.post(
            "/runs/a/resume", json={"decisions": {"p1": True}, "stream": False, "run_id": "b"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ok"
        assert (await rt.get_run("a")).resumed_by == "b"
    assert calls(ledger) == ["pay 5"]


async def test_a_run_of_a_performer_the_server_lacks_needs_one_named(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    other = Agent(model=ScriptedChatModel(list(TURNS)), tools=payer(ledger).tools, name="other")
    async with (
        open_runtime(store=f"sqlite:///{tmp_path}/runs.db") as rt,
        serving({"a": payer(ledger), "b": payer(ledger)}, runtime=rt) as served,
    ):
        with pytest.raises(RunPaused):
            await rt.ainvoke(other, "pay", run_id="elsewhere")
        body: dict[str, Any] = {"decisions": {"p1": True}, "stream": False}
        response = await served.client.post("/runs/elsewhere/resume", json=body)
        assert response.status_code == 422 and response.json()["field"] == "performer"
        response = await served.client.post(
            "/runs/elsewhere/resume", json={**body, "performer": "a"}
        )
        assert response.json()["status"] == "ok", response.text
    assert calls(ledger) == ["pay 5"]


async def test_another_clients_paused_run_is_not_found(tmp_path: Path) -> None:
    def auth(request: Any) -> Identity | None:
        return Identity(request.headers.get("x-user", "anon"))

    async with served_with_store(tmp_path, auth=auth) as (served, _, ledger):
        client = served.client
        response = await client.post(
            "/runs/wait", json={"input": "pay", "run_id": "first"}, headers={"x-user": "ann"}
        )
        assert response.json()["status"] == "paused"
        response = await client.post(
            "/runs/first/resume", json={"decisions": {"p1": True}}, headers={"x-user": "bob"}
        )
        assert response.status_code == 404 and response.json()["field"] == "run_id"
        response = await client.post(
            "/runs/first/resume",
            json={"decisions": {"p1": True}, "stream": False},
            headers={"x-user": "ann"},
        )
        assert response.json()["status"] == "ok"
        assert calls(ledger) == ["pay 5"]


# --- AG-UI ------------------------------------------------------------------------------


def _ag_ui(run_id: str, **more: Any) -> dict[str, Any]:
    return {
        "threadId": "t1",
        "runId": run_id,
        "messages": [{"id": "u1", "role": "user", "content": "pay five"}],
        **more,
    }


async def _ag_ui_events(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with client.stream("POST", "/ag-ui", json=body) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        return [e.json() for e in await read_sse(response)]


async def test_ag_ui_ends_with_the_interrupt_outcome_and_resume_continues(
    tmp_path: Path,
) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        events = await _ag_ui_events(served.client, _ag_ui("first"))
        end = events[-1]
        assert end["type"] == "RUN_FINISHED" and "result" not in end
        (interrupt,) = end["outcome"]["interrupts"]
        assert end["outcome"]["type"] == "interrupt"
        assert interrupt["id"] == "first/p1" and interrupt["reason"] == "tool_call"
        assert interrupt["toolCallId"] == "p1"
        assert interrupt["metadata"]["troupe"]["arguments"] == {"amount": 5}
        answer = [{"interruptId": "first/p1", "status": "resolved", "payload": True}]
        events = await _ag_ui_events(served.client, _ag_ui("second", resume=answer))
        assert events[0]["type"] == "RUN_STARTED" and events[0]["runId"] == "second"
        assert events[-1]["type"] == "RUN_FINISHED" and events[-1]["result"]["output"] == (
            "all done"
        )
        assert calls(ledger) == ["pay 5"]


async def test_ag_ui_cancelled_denies_and_bad_resumes_are_refused(tmp_path: Path) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        client = served.client
        await _ag_ui_events(client, _ag_ui("first"))
        for resume, field in (
            ("yes", "resume"),
            ([1], "resume[0]"),
            ([{"interruptId": "p1", "status": "resolved"}], "resume[0].interruptId"),
            ([{"interruptId": "first/p1", "status": "done"}], "resume[0].status"),
            (
                [
                    {
                        "interruptId": "first/p1",
                        "status": "resolved",
                        "payload": {"approved": True, "reason": 1},
                    }
                ],
                "resume[0].payload.reason",
            ),
            (
                [
                    {
                        "interruptId": "first/p1",
                        "status": "resolved",
                        "payload": {"approved": True, "arguments": []},
                    }
                ],
                "resume[0].payload.arguments",
            ),
            (
                [
                    {"interruptId": "first/p1", "status": "resolved", "payload": True},
                    {"interruptId": "other/p1", "status": "resolved", "payload": True},
                ],
                "resume",
            ),
            ([{"interruptId": "first/zz", "status": "resolved", "payload": True}], "decisions"),
        ):
            response = await client.post("/ag-ui", json=_ag_ui("second", resume=resume))
            assert response.status_code == 422, (resume, response.text)
            assert response.json()["field"] == field
        response = await client.post(
            "/ag-ui",
            json=_ag_ui("second", resume=[{"interruptId": "gone/p1", "status": "resolved"}]),
        )
        assert response.status_code == 404
        cancelled = [{"interruptId": "first/p1", "status": "cancelled"}]
        events = await _ag_ui_events(client, _ag_ui("second", resume=cancelled))
        assert events[-1]["type"] == "RUN_FINISHED" and events[-1].get("outcome") is None
        assert events[-1]["result"]["output"] == "all done"
        assert calls(ledger) == []


# --- the AI SDK's UI message stream -------------------------------------------------------


def _chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "chat-1", "messages": messages, "trigger": "submit-message"}


USER = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "pay five"}]}


async def _chunks(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    async with client.stream("POST", "/api/chat", json=body) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        return [json.loads(e.data) for e in await read_sse(response) if e.data != "[DONE]"]


def _answer(run_id: str, approval: dict[str, Any]) -> dict[str, Any]:
    """The assistant message ``useChat`` sends back once the person answered."""
    part = {
        "type": "tool-pay",
        "toolCallId": "p1",
        "state": "approval-responded",
        "input": {"amount": 5},
        "approval": approval,
    }
    return {"id": run_id, "role": "assistant", "parts": [part]}


async def test_ui_message_stream_asks_for_approval_and_the_answer_continues(
    tmp_path: Path,
) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        chunks = await _chunks(served.client, _chat([USER]))
        run_id = chunks[0]["messageId"]
        asked = [c for c in chunks if c["type"] == "tool-approval-request"]
        approval_id = f"{run_id}/p1"
        assert asked == [
            {"type": "tool-approval-request", "approvalId": approval_id, "toolCallId": "p1"}
        ]
        assistant = _answer(run_id, {"id": approval_id, "approved": True})
        chunks = await _chunks(served.client, _chat([USER, assistant]))
        outputs = [c for c in chunks if c["type"] == "tool-output-available"]
        assert outputs == [
            {"type": "tool-output-available", "toolCallId": "p1", "output": "paid 5"}
        ]
        assert calls(ledger) == ["pay 5"]
        # answered again: the run was resumed already
        response = await served.client.post("/api/chat", json=_chat([USER, assistant]))
        assert response.status_code == 409 and response.json()["field"] == "run_id"
        bad = _answer(run_id, {"id": "x", "approved": True})
        response = await served.client.post("/api/chat", json=_chat([USER, bad]))
        assert response.status_code == 422
        assert response.json()["field"] == "messages[1].parts[0].approval.id"
        bad = _answer(run_id, {"id": approval_id})
        response = await served.client.post("/api/chat", json=_chat([USER, bad]))
        assert response.status_code == 422
        assert response.json()["field"] == "messages[1].parts[0].approval"
        assert calls(ledger) == ["pay 5"]


async def test_ui_message_stream_denial_reaches_the_model(tmp_path: Path) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        chunks = await _chunks(served.client, _chat([USER]))
        run_id = chunks[0]["messageId"]
        answer = {"id": f"{run_id}/p1", "approved": False, "reason": "no"}
        chunks = await _chunks(served.client, _chat([USER, _answer(run_id, answer)]))
        assert chunks[-1]["type"] == "finish"
        texts = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
        assert texts == "all done"
        assert calls(ledger) == []


ASK = (
    ScriptedTurn(tool_calls=[ScriptedCall("ask", {"question": "colour?"}, id="a1")]),
    ScriptedTurn("noted"),
)


async def test_ag_ui_and_ui_message_stream_carry_interrupts(tmp_path: Path) -> None:
    async with served_with_store(tmp_path, *ASK, *ASK) as (served, _, ledger):
        events = await _ag_ui_events(served.client, _ag_ui("first"))
        (asked,) = events[-1]["outcome"]["interrupts"]
        assert asked["reason"] == "input_required" and "toolCallId" not in asked
        assert asked["metadata"]["troupe"]["arguments"] == {"question": "colour?"}
        answer = [{"interruptId": asked["id"], "status": "resolved", "payload": "blue"}]
        events = await _ag_ui_events(served.client, _ag_ui("second", resume=answer))
        assert events[-1]["result"]["output"] == "noted"
        # the AI SDK is told of an interrupt as a data part (answered by the endpoint)
        chunks = await _chunks(served.client, _chat([USER]))
        (part,) = [c for c in chunks if c["type"] == "data-interrupt"]
        assert part["data"]["payload"] == {"question": "colour?"}
        run_id, _, request_id = part["id"].partition("/")
        response = await served.client.post(
            f"/runs/{run_id}/resume", json={"decisions": {request_id: None}, "stream": False}
        )
        assert response.json()["status"] == "ok", response.text
    assert calls(ledger) == ["ask blue", "ask None"]


async def test_an_ag_ui_cancelled_interrupt_answers_none(tmp_path: Path) -> None:
    async with served_with_store(tmp_path, *ASK) as (served, _, ledger):
        events = await _ag_ui_events(served.client, _ag_ui("first"))
        (asked,) = events[-1]["outcome"]["interrupts"]
        answer = [{"interruptId": asked["id"], "status": "cancelled"}]
        events = await _ag_ui_events(served.client, _ag_ui("second", resume=answer))
        assert events[-1]["type"] == "RUN_FINISHED"
    assert calls(ledger) == ["ask None"]


async def test_an_approval_with_edited_arguments_runs_them(tmp_path: Path) -> None:
    async with served_with_store(tmp_path) as (served, _, ledger):
        await _paused(served.client)
        edited = {"p1": {"approve": True, "arguments": {"amount": 3}}}
        response = await served.client.post(
            "/runs/first/resume", json={"decisions": edited, "stream": False}
        )
        assert response.json()["status"] == "ok", response.text
    assert calls(ledger) == ["pay 3"]
