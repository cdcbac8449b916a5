"""The benchmark workload: the cat agent on the scripted instant model, K answer tokens."""

from __future__ import annotations

from collections.abc import Sequence

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, ToolMessage

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


def cat_agent(k: int, *, token_delay: float = 0.0) -> Agent:
    """The cat agent: two tool turns, then an answer of ``k`` tokens."""
    tokens = answer_tokens(k)

    def script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
        done = {m.name for m in messages if isinstance(m, ToolMessage)}
        if "where_cat_is_hiding" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
        if "get_items" not in done:
            return ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": "shelf"})])
        return ScriptedTurn(tokens=tokens)

    model = ScriptedChatModel(script, token_delay=token_delay).with_config(tags=["agent_llm"])
    return Agent(model, [where_cat_is_hiding, get_items], name="Agent")


QUESTION = "where is the cat hiding? what items are in that location?"
