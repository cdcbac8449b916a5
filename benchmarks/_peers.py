"""Peers, when installed (``pip install ".[bench]"``): LangChain 1.x ``create_agent``
with ``astream_events(version="v2")``, on a fake tool-calling model that streams the
same workload as Troupe's scripted model: two tool turns, then K answer tokens."""

from __future__ import annotations

import asyncio
import importlib.util
import statistics
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from ._workload import QUESTION, answer_tokens


def langchain_available() -> bool:
    """Whether LangChain 1.x (with ``create_agent``) can be imported."""
    return importlib.util.find_spec("langchain") is not None and (
        importlib.util.find_spec("langchain.agents") is not None
    )


def _build_agent(k: int) -> Any:
    from langchain.agents import create_agent
    from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.tools import tool

    tokens = answer_tokens(k)

    @tool
    async def where_cat_is_hiding() -> str:
        """Where is the cat hiding right now?"""
        return "on the shelf"

    @tool
    async def get_items(place: str) -> str:
        """Use this tool to look up which items are in the given place."""
        return "books, penciles and pictures" if "shelf" in place else "cat snacks"

    def turn(messages: Sequence[BaseMessage]) -> AIMessage:
        done = {m.name for m in messages if isinstance(m, ToolMessage)}
        if "where_cat_is_hiding" not in done:
            call = {"name": "where_cat_is_hiding", "args": {}, "id": "call_0"}
            return AIMessage(content="", tool_calls=[call])
        if "get_items" not in done:
            call = {"name": "get_items", "args": {"place": "shelf"}, "id": "call_1"}
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content="".join(tokens))

    class ScriptedModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: list[BaseMessage], *args: Any, **kw: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=turn(messages))])

        def _stream(self, *args: Any, **kw: Any) -> Iterator[ChatGenerationChunk]:
            raise NotImplementedError("async only")

        async def _astream(
            self,
            messages: list[BaseMessage],
            stop: list[str] | None = None,
            run_manager: AsyncCallbackManagerForLLMRun | None = None,
            **kwargs: Any,
        ) -> AsyncIterator[ChatGenerationChunk]:
            message = turn(messages)
            if message.tool_calls:
                chunk = AIMessageChunk(
                    content="",
                    tool_call_chunks=[
                        {
                            "name": c["name"],
                            "args": "{}" if not c["args"] else '{"place": "shelf"}',
                            "id": c["id"],
                            "index": 0,
                        }
                        for c in message.tool_calls
                    ],
                )
                yield ChatGenerationChunk(message=chunk)
                return
            for token in tokens:
                piece = ChatGenerationChunk(message=AIMessageChunk(content=token))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(token, chunk=piece)
                yield piece

    return create_agent(ScriptedModel(), [where_cat_is_hiding, get_items], name="Agent")


async def _consume(agent: Any) -> int:
    count = 0
    payload = {"messages": [{"role": "user", "content": QUESTION}]}
    async for _ in agent.astream_events(payload, version="v2"):
        count += 1
    return count


async def _median(agent: Any, samples: int, batch: int) -> tuple[float, int]:
    events = await _consume(agent)
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        for _ in range(batch):
            await _consume(agent)
        times.append((time.perf_counter() - start) / batch)
    return statistics.median(times), events


def langchain_per_token(low: int, high: int, samples: int) -> dict[str, Any]:
    """LangChain's cost per token event with its full v2 event stream consumed."""
    import langchain

    seconds = {}
    events = {}
    for k in (low, high):
        agent = _build_agent(k)
        seconds[k], events[k] = asyncio.run(_median(agent, samples, max(1, 400 // k)))
    return {
        "peer": f"langchain {langchain.__version__} create_agent, astream_events v2",
        "tokens": [low, high],
        "seconds_per_run": [seconds[low], seconds[high]],
        "items_per_run": [events[low], events[high]],
        "us_per_token": (seconds[high] - seconds[low]) / (high - low) * 1e6,
        "items_per_second": events[high] / seconds[high],
    }
