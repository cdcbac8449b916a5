"""The cat agent: the seed example, offline on scripted models, and its printers.

Tools ``where_cat_is_hiding`` and ``get_items(place)``; the agent is named "Agent" and
its model is tagged "agent_llm". With ``nested=True``, ``get_items`` asks a model of
its own (run name "Get Items LLM", tag "tool_llm"), whose tokens stream inside the
tool run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Final, TextIO

from protocol import AssistantMessage, ChatMessage, ToolMessage, UserMessage, to_json
from runtime import Runnable

from ._agent import Agent
from ._callbacks import AsyncCallbackHandler
from ._scripted import ScriptedCall, ScriptedChatModel, ScriptedTurn
from ._tool import Tool, tool

DEFAULT_QUESTION: Final = "where is the cat hiding? what items are in that location?"
HIDING_PLACES: Final = ("under the bed", "on the shelf")
_ITEMS_PROMPT: Final = (
    "Can you tell me what kind of items i might find in the following place: '{place}'. "
    "List at least 3 such items separating them by a comma. "
    "And include a brief description of each item."
)
_NESTED_ITEMS: Final = {
    "bed": "socks (soft foot coverings), shoes (footwear for walking) "
    "and dust bunnies (clumps of dust that gather in corners)",
    "shelf": "books (bound pages to read), pencils (sticks for writing) "
    "and pictures (framed photos of the family)",
}


def items_at(place: str) -> str:
    """What ``get_items`` finds at ``place`` (the seed's answers)."""
    if "bed" in place:
        return "socks, shoes and dust bunnies"
    if "shelf" in place:
        return "books, penciles and pictures"
    return "cat snacks"


def _tool_result(messages: Sequence[ChatMessage], name: str) -> str | None:
    for message in messages:
        if isinstance(message, ToolMessage) and message.name == name and not message.is_error:
            return message.content
    return None


def cat_agent_script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    """The agent model's script: find the cat, look up the items there, answer."""
    place = _tool_result(messages, "where_cat_is_hiding")
    if place is None:
        return ScriptedTurn(tool_calls=[ScriptedCall("where_cat_is_hiding")])
    items = _tool_result(messages, "get_items")
    if items is None:
        spot = place.rsplit(" ", 1)[-1]
        return ScriptedTurn(tool_calls=[ScriptedCall("get_items", {"place": spot})])
    return ScriptedTurn(
        f"The cat is currently hiding {place}. In that location, you can find {items}."
    )


def items_model_script(messages: Sequence[ChatMessage]) -> ScriptedTurn:
    """The nested "Get Items LLM" script: describe the items of the place asked about."""
    asked = next((m.content for m in messages if isinstance(m, UserMessage)), "")
    key = "bed" if "bed" in asked else "shelf" if "shelf" in asked else ""
    return ScriptedTurn(_NESTED_ITEMS.get(key, "cat snacks (crunchy treats), a ball and a mouse"))


def make_cat_tools(
    rng: random.Random | None = None,
    *,
    nested: bool = False,
    token_delay: float = 0.0,
    model: Runnable[AssistantMessage] | None = None,
) -> list[Tool[Any]]:
    """The two tools; ``rng`` picks the hiding place; ``model`` (default: a scripted
    one) answers ``get_items`` when ``nested``."""
    chooser = rng or random.Random()

    @tool
    async def where_cat_is_hiding() -> str:
        """Where is the cat hiding right now?"""
        return chooser.choice(HIDING_PLACES)

    if not nested:

        @tool
        async def get_items(place: str) -> str:
            """Use this tool to look up which items are in the given place."""
            return items_at(place)

        return [where_cat_is_hiding, get_items]

    items_model = model or ScriptedChatModel(
        items_model_script, name="ItemsModel", token_delay=token_delay
    )
    items_llm = items_model.with_config(run_name="Get Items LLM", tags=["tool_llm"])

    @tool(name="get_items")
    async def get_items_nested(place: str) -> str:
        """Use this tool to look up which items are in the given place."""
        # Nothing is passed by hand: the model run becomes a child of this tool run.
        async with items_llm.astream(_ITEMS_PROMPT.format(place=place)) as stream:
            chunks = [chunk async for chunk in stream]
        return "".join(chunk.content for chunk in chunks)

    return [where_cat_is_hiding, get_items_nested]


def make_cat_agent(
    rng: random.Random | None = None,
    *,
    nested: bool = False,
    token_delay: float = 0.0,
    model: Runnable[AssistantMessage] | None = None,
) -> Agent:
    """The seed's agent, named "Agent", its model tagged "agent_llm".

    ``model`` (e.g. an :class:`OpenAIChatModel`) replaces the scripted models.
    """
    agent_model = model or ScriptedChatModel(cat_agent_script, token_delay=token_delay)
    tools = make_cat_tools(rng, nested=nested, token_delay=token_delay, model=model)
    return Agent(agent_model.with_config(tags=["agent_llm"]), tools, name="Agent")


async def print_events(agent: Agent, question: str, out: TextIO) -> None:
    """The seed's ``astream_events`` loop: agent start, tools, tokens with ``|``, done."""
    printer = _LinePrinter(out)
    async with agent.astream_events({"input": question}) as events:
        async for event in events:
            kind = event["event"]
            if kind == "on_chain_start":
                if event["name"] == "Agent":
                    printer.line(
                        f"Starting agent: {event['name']} with input: {event['data'].get('input')}"
                    )
            elif kind == "on_chain_end":
                if event["name"] == "Agent":
                    printer.line()
                    printer.line("--")
                    printer.line(
                        f"Done agent: {event['name']} with output: "
                        f"{event['data'].get('output')['output']}"
                    )
            if kind == "on_chat_model_stream":
                content = event["data"]["chunk"].content
                if content:
                    # Empty content means the model is asking for a tool: print only text.
                    printer.token(content)
            elif kind == "on_tool_start":
                printer.line("--")
                printer.line(
                    f"Starting tool: {event['name']} with inputs: {event['data'].get('input')}"
                )
            elif kind == "on_tool_end":
                printer.line(f"Done tool: {event['name']}")
                printer.line(f"Tool output was: {event['data'].get('output')}")
                printer.line("--")


class _LinePrinter:
    """Prints tokens as ``token|`` on one line and ends that line before any other."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._mid_line = False

    def token(self, text: str) -> None:
        print(text, end="|", file=self._out, flush=True)
        self._mid_line = True

    def line(self, text: str = "") -> None:
        if self._mid_line and text:
            print(file=self._out)
        self._mid_line = False
        print(text, file=self._out)


async def print_steps(agent: Agent, question: str, out: TextIO) -> None:
    """The seed's ``astream`` loop: Calling Tool / Tool Result / Final Output."""
    async with agent.astream({"input": question}) as chunks:
        async for chunk in chunks:
            if "actions" in chunk:
                for action in chunk["actions"]:
                    print(
                        f"Calling Tool: `{action.tool}` with input `{action.tool_input}`", file=out
                    )
            elif "steps" in chunk:
                for step in chunk["steps"]:
                    print(f"Tool Result: `{step.observation}`", file=out)
            elif "output" in chunk:
                print(f"Final Output: {chunk['output']}", file=out)
            else:
                raise ValueError(f"unexpected chunk {chunk!r}")
            print("---", file=out)


async def print_jsonl(agent: Agent, question: str, out: TextIO) -> None:
    """Every event as one JSON line (LangChain v2 dict shape, objects serialized)."""
    async with agent.astream_events({"input": question}) as events:
        async for event in events:
            print(to_json(event), file=out)


async def print_log(agent: Agent, question: str, out: TextIO) -> None:
    """The seed's ``astream_log`` loop: every patch of the run log."""
    async with agent.astream_log({"input": question}) as log:
        async for patch in log:
            print("----", file=out)
            print(patch, file=out)


class PrintingHandler(AsyncCallbackHandler):
    """Prints every callback call: which, for which run, with what."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._reader_gone = False

    def _print(self, call: str, payload: object, kw: dict[str, object]) -> None:
        if self._reader_gone:
            return
        parent = kw["parent_run_id"]
        try:
            print(
                f"{call}: {kw['name']} run={str(kw['run_id'])[-12:]} "
                f"parent={str(parent)[-12:] if parent else None} tags={kw['tags']} "
                f"metadata={kw['metadata']} | {payload!r:.160}",
                file=self._out,
            )
        except BrokenPipeError:
            self._reader_gone = True  # `troupe demo --view callbacks | head`: stop quietly

    async def on_chain_start(self, serialized: object, inputs: object, **kw: object) -> None:
        self._print("on_chain_start", inputs, kw)

    async def on_chain_end(self, outputs: object, **kw: object) -> None:
        self._print("on_chain_end", outputs, kw)

    async def on_chain_error(self, error: BaseException, **kw: object) -> None:
        self._print("on_chain_error", error, kw)

    async def on_chat_model_start(self, serialized: object, messages: object, **kw: object) -> None:
        self._print("on_chat_model_start", messages, kw)

    async def on_llm_new_token(self, token: str, **kw: object) -> None:
        self._print("on_llm_new_token", token, kw)

    async def on_llm_end(self, response: object, **kw: object) -> None:
        self._print("on_llm_end", response, kw)

    async def on_llm_error(self, error: BaseException, **kw: object) -> None:
        self._print("on_llm_error", error, kw)

    async def on_tool_start(self, serialized: object, input_str: str, **kw: object) -> None:
        self._print("on_tool_start", input_str, kw)

    async def on_tool_end(self, output: object, **kw: object) -> None:
        self._print("on_tool_end", output, kw)

    async def on_tool_error(self, error: BaseException, **kw: object) -> None:
        self._print("on_tool_error", error, kw)

    async def on_custom_event(self, name: str, data: object, **kw: object) -> None:
        self._print(f"on_custom_event {name}", data, kw)


async def print_callbacks(agent: Agent, question: str, out: TextIO) -> None:
    """Every callback handler call of one run, one line each."""
    await agent.ainvoke({"input": question}, {"callbacks": [PrintingHandler(out)]})
