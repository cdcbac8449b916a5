"""The benchmark workload: the cat agent on the scripted instant model, K answer tokens."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

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


def cat_agent(
    k: int, *, token_delay: float = 0.0, network_like: bool = False, yield_every: int = 1
) -> Agent:
    """The cat agent: two tool turns, then an answer of ``k`` tokens (streamed as a
    network would with ``network_like``: a new chunk per token, a scheduler pass every
    ``yield_every`` tokens)."""
    tokens = answer_tokens(k)

    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        done = {m.name for m in messages if isinstance(m, ToolMessage)}
        if "where_cat_is_hiding" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
        if "get_items" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": "shelf"})])
        return ScriptedTurn(tokens=tokens)

    model: ScriptedChatModel = (
        NetworkLikeModel(script, token_delay=token_delay, yield_every=yield_every)
        if network_like
        else ScriptedChatModel(script, token_delay=token_delay)
    )
    return Agent(
        model.with_config(tags=["agent_llm"]), [where_cat_is_hiding, get_items], name="Agent"
    )


QUESTION = "where is the cat hiding? what items are in that location?"


@frozen(eq=False)
class NetworkLikeModel(ScriptedChatModel):
    """The scripted model shaped like one read off a socket: for a turn of text, a new
    chunk object per token and a pass through trio's scheduler between tokens (as each
    read from a network does; ``yield_every=64`` passes less often, as a model with a
    run of tokens ready would). Tool-call turns stream as the scripted model's do."""

    yield_every: int = 1

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        turn = self.turn_for(request.messages)
        if turn.tool_calls or turn.error is not None:
            await super().generate(request, sink)
            return
        checkpoint = trio.lowlevel.checkpoint
        every = self.yield_every
        for index, token in enumerate(turn.token_list()):
            if index % every == 0:
                await checkpoint()
            await sink.send(AssistantMessageChunk(token))
        tokens = turn.token_list()
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


async def read_run(agent: Agent) -> int:
    """One run of ``agent`` read as the seed's loop reads it; the events that carried text."""
    seen = 0
    async with agent.astream_events(QUESTION) as events:
        async for event in events:
            seen += read_events(event)
    return seen


async def seconds_per_read_run(agent: Agent, runs: int, runtime: Any = None) -> float:
    """The mean time of ``runs`` runs of ``agent`` (after one warm-up), each read as the
    seed's loop reads it: in the current trio runtime, or in ``runtime`` (an asyncio
    program's ``AsyncioRuntime``, whose streams are read the same way)."""
    invoke = agent.ainvoke if runtime is None else functools.partial(runtime.ainvoke, agent)
    stream = (
        agent.astream_events
        if runtime is None
        else functools.partial(runtime.astream_events, agent)
    )
    await invoke(QUESTION)  # warm-up
    start = time.perf_counter()
    for _ in range(runs):
        async with stream(QUESTION) as events:
            async for event in events:
                read_events(event)
    return (time.perf_counter() - start) / runs
