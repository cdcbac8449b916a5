"""AG-UI's frontend tools over HTTP: offered to the model beside the agent's own; a call
of one streams as TOOL_CALL_START/ARGS/END and the run finishes without a result the
server made up; the next request brings the result and the conversation goes on."""

from __future__ import annotations

from typing import Any

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool

from .sse_client import serving

CONFIRM = {
    "name": "confirm",
    "description": "Ask the user to confirm.",
    "parameters": {"type": "object", "properties": {"question": {"type": "string"}}},
}


def agent() -> Agent:
    @tool
    async def lookup(x: int) -> str:
        """Look up."""
        return f"found {x}"

    model = ScriptedChatModel(
        [
            ScriptedTurn(tool_calls=[ScriptedCall("confirm", {"question": "sure?"}, id="c1")]),
            ScriptedTurn("confirmed"),
        ]
    )
    return Agent(model=model, tools=[lookup], name="helper")


def frames(text: str) -> list[dict[str, Any]]:
    import json

    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_a_frontend_tool_is_called_by_the_frontend_and_the_conversation_goes_on() -> None:
    user = {"id": "u1", "role": "user", "content": "do it"}
    async with serving({"helper": agent()}) as served:
        first = await served.client.post(
            "/ag-ui",
            json={"threadId": "t", "runId": "r1", "messages": [user], "tools": [CONFIRM]},
        )
        assert first.status_code == 200, first.text
        got = frames(first.text)
        types = [f["type"] for f in got]
        assert "TOOL_CALL_START" in types and "TOOL_CALL_END" in types
        assert "TOOL_CALL_RESULT" not in types  # the server made up no result
        assert types[-1] == "RUN_FINISHED"
        start = next(f for f in got if f["type"] == "TOOL_CALL_START")
        assert start["toolCallName"] == "confirm" and start["toolCallId"] == "c1"
        history = [
            user,
            {
                "id": "a1",
                "role": "assistant",
                "toolCalls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "confirm", "arguments": '{"question": "sure?"}'},
                    }
                ],
            },
            {"id": "t1", "role": "tool", "toolCallId": "c1", "content": "yes"},
        ]
        second = await served.client.post(
            "/ag-ui",
            json={"threadId": "t", "runId": "r2", "messages": history, "tools": [CONFIRM]},
        )
        assert second.status_code == 200, second.text
        text = "".join(f.get("delta", "") for f in frames(second.text))
        assert "confirmed" in text


async def test_frontend_tools_that_are_wrong_are_a_422_naming_tools() -> None:
    user = {"id": "u1", "role": "user", "content": "do it"}
    clash = {**CONFIRM, "name": "lookup"}
    async with serving({"helper": agent()}) as served:
        for tools in ("confirm", [clash], [{"name": ""}]):
            got = await served.client.post(
                "/ag-ui", json={"threadId": "t", "runId": "r", "messages": [user], "tools": tools}
            )
            assert got.status_code == 422, got.text
            assert got.json()["field"] == "tools", got.json()
