"""The benchmark workload: the cat agent on the scripted instant model, K answer tokens."""

from __future__ import annotations

from collections.abc import Sequence

import trio
from attrs import frozen

from actors import Agent, ChunkSink, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import (
    AssistantMessageChunk,
    ChatMessage,
    ChatRequest,
    StreamEvent,
    ToolMessage,
    Usage,
)

_WORDS = ("The", " cat", " is", " on", " the", " shelf", ",", " near", " the", " books", ".")


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding right now?"""
    return "on the shelf"


@tool
async def get_items(place: str) -> str:
    """Use this tool to look up which items are in the given place."""
    return "books, penciles and pictures" if "shelf" in place else "cat snacks"


def answer_tokens(k: int) -> tuple[str, ...]:
    """``k`` tokens of an answer."""
    return tuple(_WORDS[i % len(_WORDS)] for i in range(k))


def cat_agent(k: int, *, token_delay: float = 0.0, network_like: bool = False) -> Agent:
    """The cat agent: two tool turns, then an answer of ``k`` tokens (streamed as a
    network would with ``network_like``)."""
    tokens = answer_tokens(k)

    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        done = {m.name for m in messages if isinstance(m, ToolMessage)}
        if "where_cat_is_hiding" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
        if "get_items" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": "shelf"})])
        return ScriptedTurn(tokens=tokens)

    kind = NetworkLikeModel if network_like else ScriptedChatModel
    model = kind(script, token_delay=token_delay).with_config(tags=["agent_llm"])
    return Agent(model, [where_cat_is_hiding, get_items], name="Agent")


QUESTION = "where is the cat hiding? what items are in that location?"


@frozen(eq=False)
class NetworkLikeModel(ScriptedChatModel):
    """The scripted model shaped like one read off a socket: for a turn of text, a new
    chunk object per token and a pass through trio's scheduler between tokens (as each
    read from a network does). Tool-call turns stream as the scripted model's do."""

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        turn = self.turn_for(request.messages)
        if turn.tool_calls or turn.error is not None:
            await super().generate(request, sink)
            return
        checkpoint = trio.lowlevel.checkpoint
        tokens = turn.token_list()
        for token in tokens:
            await checkpoint()
            await sink.send(AssistantMessageChunk(token))
        await sink.send(
            AssistantMessageChunk(
                finish_reason="stop", usage=Usage(1, len(tokens), 1 + len(tokens))
            )
        )


def read_events(event: StreamEvent) -> int:
    """What a consumer does with an event (the seed's loop): 1 if it carried text."""
    if event["event"] == "on_chat_model_stream" and event["name"]:
        return 1 if event["data"]["chunk"].content else 0
    return 0
