"""How a stream's frames are grouped into the server's writes (each write costs the
server far more than encoding does), read at the ASGI boundary itself."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest
import trio

from actors import Agent, ScriptedChatModel, ScriptedTurn
from actors.serve import asgi_app
from runtime import open_runtime

from .sse_client import asgi_scope

WORDS = ("one ", "two ", "three ")


async def _bodies(protocol: str) -> list[bytes]:
    """The body of each ``http.response.body`` message of one streamed run."""
    model = ScriptedChatModel([ScriptedTurn(tokens=WORDS)], token_delay=0.05)
    sent: list[MutableMapping[str, Any]] = []
    done = trio.Event()
    body = json.dumps({"input": "?", "protocol": protocol}).encode()
    scope = asgi_scope("POST", "/runs/stream", [(b"content-type", b"application/json")])
    requests = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    async with open_runtime() as rt:
        app = asgi_app(Agent(model, name="Talker"), runtime=rt)
        with trio.fail_after(10):
            await app(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    return [m["body"] for m in sent if m["type"] == "http.response.body"]


def _names(body: bytes) -> list[str]:
    return [line[7:] for line in body.decode().split("\n") if line.startswith("event: ")]


async def test_a_runs_start_events_go_out_in_one_write(autojump_clock: trio.abc.Clock) -> None:
    bodies = await _bodies("events")
    writes = [_names(b) for b in bodies]
    # The agent's start and its model's, which follows a few scheduler passes behind,
    # share a write; each token (50 ms apart) is written as it comes; the last may go
    # with the finishing chunk and the ends that follow it at once (trio shuffles the
    # order of each scheduler pass); then the body's end.
    assert writes[0] == ["on_chain_start", "on_chat_model_start"], writes
    with_tokens = [i for i, names in enumerate(writes) if "on_chat_model_stream" in names]
    assert with_tokens[:3] == [1, 2, 3], writes
    ends = [name for names in writes[with_tokens[-1] :] for name in names]
    assert ends[-3:] == ["on_chat_model_end", "on_chain_stream", "on_chain_end"], writes
    # (the agent's own end can be more passes behind its output than a stream waits)
    assert len(writes) <= 7 and bodies[-1] == b"", writes


@pytest.mark.parametrize("protocol", ["ag-ui", "ui-message-stream"])
async def test_a_protocols_opening_frames_go_with_the_first_events(
    protocol: str, autojump_clock: trio.abc.Clock
) -> None:
    bodies = await _bodies(protocol)
    kinds = [
        [json.loads(line[6:])["type"] for line in b.decode().split("\n") if line[6:7] == "{"]
        for b in bodies
    ]
    # What the protocol says before any event (AG-UI's RUN_STARTED, the UI message
    # stream's start) goes out with the run's first events, not in a write of its own;
    # events it says nothing of make no write; the first token opens the message.
    assert kinds[0][0] in ("RUN_STARTED", "start"), kinds
    assert kinds[1][0] in ("TEXT_MESSAGE_START", "text-start"), kinds
    assert all(kinds[:-1]) and bodies[-1] == b"", kinds
    assert len(bodies) <= 8, kinds  # open, the three tokens, the ends, the body's end
