"""Handoffs on the wire (issue 35): the AG-UI and UI-message-stream edges say which
agent a message comes from, and when the conversation was handed on. AG-UI events are
validated by the ``ag-ui-protocol`` package's own types."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from ag_ui.core import Event, EventType
from pydantic import TypeAdapter

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn

from .sse_client import read_sse, serving

AG_UI_EVENT: TypeAdapter[Any] = TypeAdapter(Event)


def triage() -> Agent:
    billing = Agent(ScriptedChatModel([ScriptedTurn("Paid.")], name="billing_llm"), name="Billing")
    research = Agent(
        ScriptedChatModel([ScriptedTurn("Inner words.")], name="inner_llm"), name="Researcher"
    )
    model = ScriptedChatModel(
        [
            ScriptedTurn("Let me see.", tool_calls=[ScriptedCall("ask", {"input": "?"})]),
            ScriptedTurn(tool_calls=[ScriptedCall("transfer_to_billing")]),
        ],
        name="triage_llm",
    )
    return Agent(model, [research.as_tool("ask")], name="Triage", handoffs=[billing])


async def _stream(served: Any, protocol: str) -> list[Any]:
    async with served.client.stream(
        "POST", "/runs/stream", json={"input": "paid?"}, params={"protocol": protocol}
    ) as response:
        assert response.status_code == 200
        return await read_sse(response)


async def test_ag_ui_names_the_agent_of_each_message_and_the_handoff() -> None:
    async with serving(triage()) as served:
        events = await _stream(served, "ag-ui")
    parsed = [AG_UI_EVENT.validate_python(e.json()) for e in events]  # raises if invalid
    starts = [p for p in parsed if p.type == EventType.TEXT_MESSAGE_START]
    assert [s.name for s in starts] == ["Triage", "Billing"]  # not the inner agent's
    text = "".join(p.delta for p in parsed if p.type == EventType.TEXT_MESSAGE_CONTENT)
    assert text == "Let me see.Paid."
    handoffs = [p for p in parsed if p.type == EventType.CUSTOM and p.name == "handoff"]
    assert [(h.value["from"], h.value["to"]) for h in handoffs] == [("Triage", "Billing")]
    assert parsed[-1].type == EventType.RUN_FINISHED and parsed[-1].result["output"] == "Paid."


async def test_the_ui_message_stream_names_the_agent_of_each_text_and_the_handoff() -> None:
    async with serving(triage()) as served:
        events = await _stream(served, "ui-message-stream")
    parts = [e.json() for e in events[:-1]]
    texts = [p for p in parts if p["type"] == "text-start"]
    assert [t["providerMetadata"]["troupe"]["agent"] for t in texts] == ["Triage", "Billing"]
    handoff = next(p for p in parts if p["type"] == "data-handoff")
    assert handoff["data"]["from"] == "Triage" and handoff["data"]["to"] == "Billing"
    outputs = [p["output"] for p in parts if p["type"] == "tool-output-available"]
    assert outputs == ["Inner words.", "Transferred: transfer_to_billing."]
    deltas = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert deltas == "Let me see.Paid."


NODE_DIR = Path(__file__).parent / "node"
NO_NODE = shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir()
needs_node = pytest.mark.skipif(
    NO_NODE, reason="needs Node.js and the protocol clients (`npm ci` in tests/node)"
)


async def _node(script: str, url: str) -> Any:
    done = await trio.run_process(
        ["node", str(NODE_DIR / script), url, "paid?"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.node
@needs_node
async def test_ag_uis_http_agent_keeps_the_speaking_agent_on_each_message() -> None:
    async with serving(triage()) as served:
        got = await _node("agui_client.mjs", f"{served.base_url}/runs/stream?protocol=ag-ui")
    texts = [m for m in got["messages"] if m["role"] == "assistant" and m.get("content")]
    said = [(m.get("name"), m["content"]) for m in texts]
    assert said == [("Triage", "Let me see."), ("Billing", "Paid.")]
    results = [m["content"] for m in got["messages"] if m["role"] == "tool"]
    assert results == ["Inner words.", "Transferred: transfer_to_billing."]
    assert "CUSTOM" in got["types"]


@pytest.mark.node
@needs_node
async def test_the_ai_sdk_keeps_the_speaking_agent_and_the_handoff() -> None:
    async with serving(triage()) as served:
        message = await _node(
            "ui_message_stream.mjs", f"{served.base_url}/runs/stream?protocol=ui-message-stream"
        )
    texts = [p for p in message["parts"] if p["type"] == "text"]
    assert [(t["providerMetadata"]["troupe"]["agent"], t["text"]) for t in texts] == [
        ("Triage", "Let me see."),
        ("Billing", "Paid."),
    ]
    handoff = next(p for p in message["parts"] if p["type"] == "data-handoff")
    assert handoff["data"]["to"] == "Billing"


async def test_a_call_no_tool_run_answered_gets_its_result_on_the_wire() -> None:
    model = ScriptedChatModel(
        [ScriptedTurn(tool_calls=[ScriptedCall("no_such_tool")]), ScriptedTurn("Sorry.")]
    )
    async with serving(Agent(model)) as served:
        ag_ui = [AG_UI_EVENT.validate_python(e.json()) for e in await _stream(served, "ag-ui")]
        ui = [e.json() for e in (await _stream(served, "ui-message-stream"))[:-1]]
    started = [p.tool_call_id for p in ag_ui if p.type == EventType.TOOL_CALL_START]
    results = [p for p in ag_ui if p.type == EventType.TOOL_CALL_RESULT]
    assert [r.tool_call_id for r in results] == started  # no call left waiting for an answer
    assert "no tool named 'no_such_tool'" in results[0].content
    error = next(p for p in ui if p["type"] == "tool-output-error")
    assert error["toolCallId"] == started[0] and "no_such_tool" in error["errorText"]
