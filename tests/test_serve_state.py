"""AG-UI's shared state over HTTP: the body's ``state`` is the run's state (its tools
read and change it); the AG-UI stream carries ``STATE_SNAPSHOT`` (the client's state)
and an RFC 6902 ``STATE_DELTA`` per change, in order with the tool events; the events
and UI message streams carry each change in their own form; ``forwardedProps`` reach
the run; and every wrong state is a 4xx naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.serve._app import MAX_CONFIG, MAX_STATE
from runtime import RunContext, SharedState

from .sse_client import serving

AG_UI_EVENT: TypeAdapter[Any] = TypeAdapter(Event)
USER = {"id": "u1", "role": "user", "content": "add milk"}


def shop(*turns: ScriptedTurn) -> Agent:
    @tool
    async def add_item(item: str, state: SharedState) -> str:
        """Put an item in the basket."""
        await state.patch([{"op": "add", "path": "/items/-", "value": item}])
        return f"{len(state.get('items'))} items"

    @tool
    async def remove(path: str, state: SharedState) -> str:
        """Remove what is at a path of the state."""
        await state.patch([{"op": "remove", "path": path}])
        return "removed"

    @tool
    async def mark(note: str, state: SharedState) -> str:
        """Note something in the state."""
        await state.update({"note": note})
        return "noted"

    @tool
    async def props(context: RunContext, state: SharedState) -> dict[str, Any]:
        """What the client forwarded, and the state."""
        return {"props": context.metadata.get("forwarded_props"), "state": state.value}

    default = (
        ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="c1")]),
        ScriptedTurn("added"),
    )
    return Agent(
        model=ScriptedChatModel(list(turns or default)),
        tools=[add_item, remove, mark, props],
        name="shop",
    )


def frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def agui_body(**more: Any) -> dict[str, Any]:
    return {"threadId": "t1", "runId": "r1", "messages": [USER], **more}


async def test_the_ag_ui_stream_carries_the_clients_state_and_each_change_in_order() -> None:
    state = {"items": ["bread"], "owner": "Ann"}
    async with serving(shop()) as served:
        response = await served.client.post("/ag-ui", json=agui_body(state=state))
    assert response.status_code == 200, response.text
    got = frames(response.text)
    for one in got:
        AG_UI_EVENT.validate_python(one)  # AG-UI's own types
    types = [f["type"] for f in got]
    assert types[:2] == ["RUN_STARTED", "STATE_SNAPSHOT"]
    assert got[1]["snapshot"] == state
    # the delta comes with the tool's events: after its call, before its result
    delta_at = types.index("STATE_DELTA")
    assert types.index("TOOL_CALL_END") < delta_at < types.index("TOOL_CALL_RESULT")
    (delta,) = [f["delta"] for f in got if f["type"] == "STATE_DELTA"]
    assert delta == [{"op": "add", "path": "/items/-", "value": "milk"}]
    # applied to the state the client sent, it makes the run's state
    assert jsonpatch.apply_patch(state, delta) == {"items": ["bread", "milk"], "owner": "Ann"}


async def test_the_events_and_ui_streams_carry_each_change_in_their_own_form() -> None:
    async with serving(shop()) as served:
        events = await served.client.post(
            "/runs/stream", json={"input": "add milk", "state": {"items": []}}
        )
        chat = await served.client.post(
            "/api/chat",
            json={
                "id": "c1",
                "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "x"}]}],
                "state": {"items": []},
            },
        )
    custom = [e for e in frames(events.text) if e["event"] == "on_custom_event"]
    assert [(e["name"], e["data"]["chunk"]) for e in custom] == [
        (
            "state",
            {"$type": "StateDelta", "patch": [{"op": "add", "path": "/items/-", "value": "milk"}]},
        )
    ]
    parts = [f for f in frames(chat.text) if f["type"] == "data-state"]
    assert parts == [
        {
            "type": "data-state",
            "data": {"patch": [{"op": "add", "path": "/items/-", "value": "milk"}]},
        }
    ]


async def test_a_delta_that_does_not_apply_is_the_tool_calls_error_not_the_servers() -> None:
    bad = shop(
        ScriptedTurn(tool_calls=[ScriptedCall("remove", {"path": "/nothing"}, id="c1")]),
        ScriptedTurn("could not"),
    )
    async with serving(bad) as served:
        response = await served.client.post("/ag-ui", json=agui_body(state={"a": 1}))
        again = await served.client.post("/ag-ui", json=agui_body(runId="r2", state={"a": 1}))
    got = frames(response.text)
    assert "STATE_DELTA" not in [f["type"] for f in got]
    (result,) = [f for f in got if f["type"] == "TOOL_CALL_RESULT"]
    assert (
        result["content"].startswith("Error:")
        and "state patch does not apply" in (result["content"])
    )
    assert got[-1]["type"] == "RUN_FINISHED"
    assert again.status_code == 200 and frames(again.text)[-1]["type"] == "RUN_FINISHED"


async def test_forwarded_props_reach_the_run() -> None:
    asks = shop(
        ScriptedTurn(tool_calls=[ScriptedCall("props", {}, id="c1")]),
        ScriptedTurn("told"),
    )
    forwarded = {"locale": "de", "nested": {"x": [1, 2]}}
    async with serving(asks) as served:
        response = await served.client.post(
            "/ag-ui", json=agui_body(state={"k": 1}, forwardedProps=forwarded)
        )
    (result,) = [f for f in frames(response.text) if f["type"] == "TOOL_CALL_RESULT"]
    assert json.loads(result["content"]) == {"props": forwarded, "state": {"k": 1}}


@pytest.mark.parametrize(
    ("more", "status", "field"),
    [
        ({"state": [1, 2]}, 422, "state"),
        ({"state": "x"}, 422, "state"),
        ({"state": 3}, 422, "state"),
        ({"state": {"a": "x" * MAX_STATE}}, 413, "state"),
        ({"state": {"a": 1}, "config": {"state": {"b": 2}}}, 422, "state"),
        ({"forwardedProps": {"a": "x" * MAX_CONFIG}}, 413, "forwardedProps"),
    ],
)
async def test_a_wrong_state_is_refused_naming_it(
    more: dict[str, Any], status: int, field: str
) -> None:
    async with serving(shop(), max_body=4 << 20) as served:
        response = await served.client.post("/ag-ui", json=agui_body(**more))
        listed = (await served.client.get("/runs")).json()["runs"]
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert listed == []  # nothing left behind


async def test_config_state_is_checked_as_config() -> None:
    async with serving(shop()) as served:
        response = await served.client.post(
            "/runs/wait", json={"input": "x", "config": {"state": [1]}}
        )
    assert response.status_code == 422 and response.json()["field"] == "config"


async def test_on_a_thread_the_client_sends_its_state_each_turn(tmp_path: Path) -> None:
    # AG-UI's client is the state's source of truth: a thread keeps the conversation,
    # and each turn's state is the one the client sends
    turns = (
        ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="c1")]),
        ScriptedTurn("added"),
        ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "tea"}, id="c2")]),
        ScriptedTurn("added"),
    )
    async with serving(shop(*turns), store=f"sqlite:///{tmp_path}/runs.db") as served:
        state: dict[str, Any] = {"items": []}
        messages: list[dict[str, Any]] = [USER]
        for run_id in ("r1", "r2"):
            response = await served.client.post(
                "/ag-ui",
                json={"threadId": "t9", "runId": run_id, "messages": messages, "state": state},
            )
            got = frames(response.text)
            assert got[1] == {"type": "STATE_SNAPSHOT", "snapshot": state}
            for delta in [f["delta"] for f in got if f["type"] == "STATE_DELTA"]:
                state = jsonpatch.apply_patch(state, delta)
            messages = [{"id": f"u-{run_id}", "role": "user", "content": "more"}]
        record = (await served.client.get("/runs/r2")).json()
    assert state == {"items": ["milk", "tea"]}
    assert record["status"] == "ok"


async def test_the_docs_state_tool_works_as_written() -> None:
    import re

    page = (Path(__file__).parent.parent / "docs" / "serving.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", page, re.S) if "SharedState" in b)
    space: dict[str, Any] = {}
    exec(block, space)  # the page's own code
    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="c1")]),
            ScriptedTurn("added"),
        ]
    )
    agent = Agent(model=model, tools=[space["add_item"]], name="shop")
    async with serving(agent) as served:
        response = await served.client.post("/ag-ui", json=agui_body(state={"items": []}))
    (delta,) = [f["delta"] for f in frames(response.text) if f["type"] == "STATE_DELTA"]
    assert jsonpatch.apply_patch({"items": []}, delta) == {"items": ["milk"]}


async def test_a_waiting_client_gets_the_state_as_the_tools_left_it() -> None:
    marks = shop(
        ScriptedTurn(tool_calls=[ScriptedCall("mark", {"note": "hi"}, id="m1")]),
        ScriptedTurn("marked"),
    )
    performers = {"shop": shop(), "marks": marks, "quiet": shop(ScriptedTurn("nothing to do"))}
    async with serving(performers) as served:

        async def wait(performer: str, **more: Any) -> dict[str, Any]:
            body = {"performer": performer, "input": "add milk", **more}
            answer: dict[str, Any] = (await served.client.post("/runs/wait", json=body)).json()
            return answer

        given = await wait("shop", state={"items": ["tea"]})
        unstated = await wait("marks")
        quiet = await wait("quiet")
        kept = await wait("quiet", state={"k": 1})
    assert given["state"] == {"items": ["tea", "milk"]} and given["status"] == "ok"
    assert unstated["state"] == {"note": "hi"}  # changed from the empty state
    assert "state" not in quiet  # no state given, none changed
    assert kept["state"] == {"k": 1}


async def test_a_resumed_wait_answers_the_state_only_when_it_knows_it(tmp_path: Path) -> None:
    # a resume that brings the client's state answers the state it ends with; one that
    # brings none was rebuilt on the server from the paused run's journal, and the
    # waiting client, who did not send it, is not given a partial one
    @tool(needs_approval=True)
    async def pay(amount: int, state: SharedState) -> str:
        """Pay (a person approves first)."""
        await state.update({"paid": amount})
        return "paid"

    def payer() -> Agent:
        agent = shop(
            ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="a1")]),
            ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
            ScriptedTurn("paid"),
        )
        return Agent(model=agent.model, tools=[*agent.tools, pay], name="payer")

    async with serving(payer(), store=f"sqlite:///{tmp_path}/runs.db") as served:
        answers = []
        for run_id, resume in (("r1", {}), ("r2", {"state": {"items": ["milk", "jam"]}})):
            paused = await served.client.post(
                "/runs/wait", json={"input": "pay", "run_id": run_id, "state": {"items": []}}
            )
            assert paused.json()["status"] == "paused"
            assert paused.json()["state"] == {"items": ["milk"]}
            resumed = await served.client.post(
                f"/runs/{run_id}/resume",
                json={"decisions": {"p1": True}, "stream": False, **resume},
            )
            assert resumed.json()["status"] == "ok", resumed.text
            answers.append(resumed.json())
    assert "state" not in answers[0]
    assert answers[1]["state"] == {"items": ["milk", "jam"], "paid": 5}
