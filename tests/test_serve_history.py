"""A frontend's whole conversation reaches the performer (issue 32, its first part):
AG-UI messages and AI SDK UIMessages become Troupe's messages in order; what Troupe
cannot represent is a 422 naming it, never dropped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors.serve._errors import BadRequest
from actors.serve._history import conversation
from protocol import AssistantMessage, ChatMessage, ToolMessage

from .sse_client import serving


def _reporter_turn(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    """A model turn that answers with the conversation it was given, as JSON."""
    seen = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if isinstance(m, AssistantMessage) and m.tool_calls:
            item["calls"] = [[c.id, c.name, c.args] for c in m.tool_calls]
        if isinstance(m, ToolMessage):
            item["answers"] = [m.tool_call_id, m.name]
        seen.append(item)
    return ScriptedTurn(json.dumps(seen))


def _reporter() -> Agent:
    """An agent whose model answers with the conversation it was given, as JSON."""
    return Agent(ScriptedChatModel(_reporter_turn), name="Reporter")


AG_UI = [
    {"id": "m1", "role": "system", "content": "Be brief."},
    {"id": "m2", "role": "user", "content": "Where is the cat?"},
    {
        "id": "m3",
        "role": "assistant",
        "content": "",
        "toolCalls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "look", "arguments": '{"at": "bed"}'},
            }
        ],
    },
    {"id": "m4", "role": "tool", "content": "under the bed", "toolCallId": "c1"},
    {"id": "m5", "role": "assistant", "content": "Under the bed."},
    {"id": "m6", "role": "developer", "content": "Answer in French."},
    {"id": "m7", "role": "user", "content": [{"type": "text", "text": "And now?"}]},
]
UI_MESSAGES = [
    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Where is the cat?"}]},
    {
        "id": "a1",
        "role": "assistant",
        "parts": [
            {"type": "step-start"},
            {"type": "reasoning", "text": "I should look."},
            {
                "type": "tool-look",
                "toolCallId": "c1",
                "state": "output-available",
                "input": {"at": "bed"},
                "output": {"found": True},
            },
            {"type": "step-start"},
            {"type": "text", "text": "Under "},
            {"type": "text", "text": "the bed."},
        ],
    },
    {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "And now?"}]},
]


async def test_an_ag_ui_conversation_reaches_the_agent_whole() -> None:
    async with serving(_reporter()) as served:
        done = await served.client.post(
            "/runs/wait", json={"threadId": "t1", "runId": "r1", "messages": AG_UI}
        )
    seen = json.loads(done.json()["output"]["output"])
    assert [m["role"] for m in seen] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "system",
        "user",
    ]
    assert seen[2]["calls"] == [["c1", "look", {"at": "bed"}]]
    assert seen[3]["answers"] == ["c1", "look"] and seen[3]["content"] == "under the bed"
    assert seen[-1]["content"] == "And now?"


async def test_an_ai_sdk_conversation_reaches_the_agent_whole() -> None:
    async with serving(_reporter()) as served:
        done = await served.client.post(
            "/runs/wait", json={"id": "chat-1", "messages": UI_MESSAGES}
        )
    seen = json.loads(done.json()["output"]["output"])
    assert [m["role"] for m in seen] == ["user", "assistant", "tool", "assistant", "user"]
    assert seen[1]["calls"] == [["c1", "look", {"at": "bed"}]]
    assert json.loads(seen[2]["content"]) == {"found": True}
    assert seen[3]["content"] == "Under the bed."


BAD: list[tuple[Any, str]] = [
    ([], "non-empty"),
    ("hi", "non-empty"),
    ([{"role": "wizard", "content": "x"}], "'wizard'"),
    ([{"role": "tool", "content": "x", "toolCallId": "nope"}], "never happened"),
    (
        [{"id": "a", "role": "user", "content": "x"}, {"id": "a", "role": "user", "content": "y"}],
        "repeats",
    ),
    ([{"role": "user", "content": [{"type": "binary", "mimeType": "image/png"}]}], "'binary' part"),
    (
        [{"role": "user", "parts": [{"type": "file", "mediaType": "image/png", "url": "x"}]}],
        "'file' part",
    ),
    (
        [
            {
                "role": "assistant",
                "parts": [{"type": "tool-look", "toolCallId": "c", "state": "input-available"}],
            }
        ],
        "no result yet",
    ),
    ([{"role": "assistant", "parts": [{"type": "mystery"}]}], "'mystery' part"),
    ([{"role": "user", "parts": "hi"}], "must be a list"),
    ([5], "not an object"),
]


@pytest.mark.parametrize(("messages", "said"), BAD)
def test_what_troupe_cannot_represent_is_named(messages: Any, said: str) -> None:
    with pytest.raises(BadRequest, match=said) as refused:
        conversation(messages)
    assert refused.value.status == 422 and refused.value.field is not None


async def test_a_bad_history_is_a_422_over_http_naming_the_message() -> None:
    async with serving(_reporter()) as served:
        got = await served.client.post(
            "/runs/stream?protocol=ag-ui",
            json={
                "messages": [{"role": "user", "content": "x"}, {"role": "wizard", "content": "y"}]
            },
        )
    assert got.status_code == 422 and got.json()["field"] == "messages[1]"


async def test_a_frontend_finds_its_protocol_by_route_or_by_the_bodys_shape() -> None:
    ag_ui = {"threadId": "t1", "runId": "r1", "messages": AG_UI[1:2], "state": {"n": 1}}
    chat = {"id": "chat-1", "messages": UI_MESSAGES[:1]}
    async with serving(_reporter()) as served:
        frames = {}
        for name, path, body in [
            ("route-ag-ui", "/ag-ui", {**ag_ui, "runId": "r2"}),
            ("shape-ag-ui", "/runs/stream", {**ag_ui, "runId": "r3"}),
            ("route-chat", "/api/chat", chat),
            ("shape-chat", "/runs/stream", {**chat, "id": "chat-2"}),
        ]:
            got = await served.client.post(path, json=body)
            assert got.status_code == 200, (name, got.text)
            frames[name] = got.text
    for name in ("route-ag-ui", "shape-ag-ui"):
        assert '"type":"RUN_STARTED"' in frames[name]
        # the state the frontend sent comes back unchanged, and nothing else as state
        assert '"type":"STATE_SNAPSHOT","snapshot":{"n":1}' in frames[name]
        assert "STATE_DELTA" not in frames[name]
    for name in ("route-chat", "shape-chat"):
        assert '"type":"start"' in frames[name] and "data: [DONE]" in frames[name]


async def test_a_state_that_is_not_an_object_is_a_422() -> None:
    async with serving(_reporter()) as served:
        body = {"threadId": "t", "runId": "r", "messages": AG_UI[1:2], "state": [1]}
        got = await served.client.post("/ag-ui", json=body)
    assert got.status_code == 422 and got.json()["field"] == "state"


async def test_ag_ui_context_is_a_system_message_before_the_conversation() -> None:
    context = [{"description": "the page", "value": "/pets/cat"}]
    async with serving(_reporter()) as served:
        body = {"threadId": "t", "runId": "r", "messages": AG_UI[1:2], "context": context}
        done = await served.client.post("/runs/wait", json=body)
        bad = await served.client.post("/runs/wait", json={**body, "runId": "r2", "context": [5]})
    seen = json.loads(done.json()["output"]["output"])
    assert seen[0] == {"role": "system", "content": "Context from the app:\n- the page: /pets/cat"}
    assert bad.status_code == 422 and bad.json()["field"] == "context"
