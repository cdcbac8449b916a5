"""Handoffs on the wire (issue 35): the AG-UI and UI-message-stream edges say which
agent a message comes from, and when the conversation was handed on. AG-UI events are
validated by the ``ag-ui-protocol`` package's own types."""

from __future__ import annotations

from typing import Any

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
    deltas = "".join(p["delta"] for p in parts if p["type"] == "text-delta")
    assert deltas == "Let me see.Paid."
