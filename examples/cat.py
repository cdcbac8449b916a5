"""The seed's cat agent, offline: tools, a scripted model, and the agent.

``agent``: the model tagged "agent_llm" calls ``where_cat_is_hiding`` and
``get_items(place)`` and answers. ``nested_agent``: the same, but ``get_items`` asks a
model of its own (run name "Get Items LLM", tag "tool_llm"). Set ``CAT_SEED`` to fix
where the cat hides.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from protocol import ChatMessage, ToolMessage, UserMessage

chooser = random.Random(os.environ.get("CAT_SEED"))


@tool
async def where_cat_is_hiding() -> str:
    """Where is the cat hiding right now?"""
    return chooser.choice(["under the bed", "on the shelf"])


@tool
async def get_items(place: str) -> str:
    """Use this tool to look up which items are in the given place."""
    if "bed" in place:  # For under the bed
        return "socks, shoes and dust bunnies"
    if "shelf" in place:  # For 'shelf'
        return "books, penciles and pictures"
    return "cat snacks"  # if the agent decides to ask about a different place


def agent_script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    """The agent model: find the cat, look up the items there, answer."""
    seen = {m.name: m.content for m in messages if isinstance(m, ToolMessage)}
    if "where_cat_is_hiding" not in seen:
        return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
    place = seen["where_cat_is_hiding"]
    if "get_items" not in seen:
        spot = place.rsplit(" ", 1)[-1]
        return ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": spot})])
    return ScriptedTurn(
        f"The cat is currently hiding {place}. In that location, you can find {seen['get_items']}."
    )


def items_script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    """The tool's own model: three items of the place, each with a description."""
    asked = next(m.content for m in messages if isinstance(m, UserMessage))
    if "bed" in asked:
        return ScriptedTurn("socks (soft foot coverings), shoes (for walking), dust bunnies")
    return ScriptedTurn("books (to read), pencils (to write), pictures (of the family)")


model = ScriptedChatModel(agent_script).with_config(tags=["agent_llm"])
agent = Agent(model, [where_cat_is_hiding, get_items], name="Agent")

items_model = ScriptedChatModel(items_script).with_config(
    run_name="Get Items LLM", tags=["tool_llm"]
)


@tool(name="get_items")
async def get_items_from_a_model(place: str) -> str:
    """Use this tool to look up which items are in the given place."""
    prompt = (
        "Can you tell me what kind of items i might find in the following place: "
        f"'{place}'. List at least 3 such items separating them by a comma. "
        "And include a brief description of each item."
    )
    async with items_model.astream(prompt) as chunks:
        return "".join([chunk.content async for chunk in chunks])


nested_agent = Agent(model, [where_cat_is_hiding, get_items_from_a_model], name="Agent")
QUESTION = {"input": "where is the cat hiding? what items are in that location?"}
