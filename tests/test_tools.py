"""@tool: schemas from type hints, validation before the call, context injection."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

import pytest
import trio

from actors import Tool, ToolArgumentsError, ToolDefinitionError, ToolOutputError, tool
from actors._tool import render_output
from protocol import ToolCall, ToolRequest
from runtime import RunContext, open_runtime


@tool
async def lookup(
    place: str,
    limit: int = 3,
    kinds: list[str] | None = None,
    mode: Literal["fast", "slow"] = "fast",
    note: Annotated[str, "free text"] = "",
    weights: dict[str, float] | None = None,
    context: RunContext | None = None,
) -> dict[str, Any]:
    """Look things up.

    Longer text is kept.
    """
    assert context is not None
    return {"place": place, "limit": limit, "run": context.name}


def test_schema_from_type_hints() -> None:
    assert lookup.name == "lookup"
    assert lookup.description == "Look things up.\n\nLonger text is kept."
    assert lookup.context_param == "context"
    assert lookup.parameters == {
        "type": "object",
        "properties": {
            "place": {"type": "string"},
            "limit": {"type": "integer", "default": 3},
            "kinds": {
                "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}],
                "default": None,
            },
            "mode": {"enum": ["fast", "slow"], "default": "fast"},
            "note": {"type": "string", "description": "free text", "default": ""},
            "weights": {
                "anyOf": [
                    {"type": "object", "additionalProperties": {"type": "number"}},
                    {"type": "null"},
                ],
                "default": None,
            },
        },
        "required": ["place"],
        "additionalProperties": False,
    }
    assert lookup.spec.name == "lookup"


def test_named_tool_with_description() -> None:
    @tool(name="renamed", description="Explicit.", tags=["t"], metadata={"m": 1})
    def plain(x: int) -> int:
        return x

    assert (plain.name, plain.description, plain.tags, plain.metadata) == (
        "renamed",
        "Explicit.",
        ("t",),
        {"m": 1},
    )
    assert not plain.is_async


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("async def f(x: int): return x", "needs a description"),
        ('async def f(x):\n    "doc"', "needs a type hint"),
        ('async def f(*xs: int):\n    "doc"', "named parameters only"),
        ('async def f(x: object):\n    "doc"', "no JSON schema for type"),
        ('async def f(x: dict[int, str]):\n    "doc"', "keys are strings"),
    ],
)
def test_bad_definitions_are_refused_clearly(source: str, match: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(ToolDefinitionError, match=match):
        tool(namespace["f"])


def test_bad_name_and_non_callables_are_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="identifier"):
        tool(name="has space", description="d")(lambda: None)
    with pytest.raises(ToolDefinitionError, match="needs a function"):
        tool(3)  # type: ignore[call-overload]  # wrong on purpose


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ({}, "'place' is a required property"),
        ({"place": 3}, "at 'place': 3 is not of type 'string'"),
        ({"place": 3, "limit": "x"}, "at 'limit': 'x' is not .*; at 'place': 3 is not"),
        ({"place": "x", "limit": "2"}, "at 'limit'"),
        ({"place": "x", "limit": True}, "at 'limit'"),
        ({"place": "x", "mode": "medium"}, "at 'mode'"),
        ({"place": "x", "extra": 1}, "'extra' was unexpected"),
    ],
)
def test_arguments_are_validated_before_the_call(args: dict[str, Any], match: str) -> None:
    with pytest.raises(ToolArgumentsError, match=match):
        lookup.validate(args)


async def test_a_tool_run_gets_its_context_and_validated_arguments() -> None:
    async with open_runtime():
        assert await lookup.ainvoke({"place": "shelf"}) == {
            "place": "shelf",
            "limit": 3,
            "run": "lookup",
        }
        assert (await lookup.ainvoke("bed"))["place"] == "bed"  # the lone required value
        with pytest.raises(ToolArgumentsError, match="invalid arguments for tool 'lookup'"):
            await lookup.ainvoke({"place": 1})


async def test_sync_tools_run_in_a_worker_thread() -> None:
    @tool
    def which_thread(tag: str) -> str:
        """Report the thread."""
        return f"{tag}:{threading.current_thread() is threading.main_thread()}"

    assert await which_thread.ainvoke({"tag": "t"}) == "t:False"


async def test_coerce_input_refuses_what_it_cannot_use() -> None:
    @tool
    async def two(a: int, b: int) -> int:
        """Add."""
        return a + b

    request = ToolRequest(ToolCall("c", "two", {"a": 1, "b": 2}))
    assert two.coerce_input(request) is request
    assert two.coerce_input(request.call).call is request.call
    with pytest.raises(TypeError, match=r"takes a dict of arguments \['a', 'b'\]"):
        two.coerce_input(5)
    assert await two.ainvoke(request) == 3


async def test_a_cancelled_tool_stops() -> None:
    @tool
    async def forever() -> str:
        """Never returns."""
        await trio.sleep_forever()

    with trio.move_on_after(0.01) as scope:
        await forever.ainvoke({})
    assert scope.cancelled_caught


def test_render_output() -> None:
    assert render_output("t", "text") == "text"
    assert render_output("t", {"a": [1, "é"]}) == '{"a": [1, "é"]}'
    with pytest.raises(ToolOutputError, match="returned a set"):
        render_output("t", {1, 2})


def test_tools_compare_by_identity() -> None:
    assert isinstance(lookup, Tool)
    assert lookup == lookup
    assert lookup != tool(name="lookup", description="d")(lookup.fn)
