"""@tool: schemas from type hints, validation before the call, context injection."""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Tool, ToolArgumentsError, ToolDefinitionError, ToolOutputError, tool
from actors._tool import _plain_types, _plainly_valid, render_output
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


@tool
async def plain(place: str, count: int, share: float = 0.5, loud: bool = False) -> str:
    """A tool of the plainest schema: validated without jsonschema when it is valid."""
    return place


_PLAIN_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, width=32),
    st.sampled_from([1.0, 2.5, float("inf")]),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["place", "count", "share", "loud", "other"]), _PLAIN_VALUES, max_size=5
    )
)
def test_plain_schemas_are_judged_as_jsonschema_judges_them(args: dict[str, Any]) -> None:
    # The quick check only ever accepts what jsonschema accepts; what it does not accept
    # goes to jsonschema, so validate() agrees with jsonschema on every argument set.
    assert plain._plain is not None  # the quick check applies to this schema
    expected = not list(plain._validator.iter_errors(args))
    if _plainly_valid(args, plain._plain, plain._required):
        assert expected
    try:
        plain.validate(args)
    except ToolArgumentsError:
        assert not expected
    else:
        assert expected


def test_schemas_beyond_the_plainest_are_left_to_jsonschema() -> None:
    assert plain._plain == {"place": str, "count": int, "share": (int, float), "loud": bool}
    assert plain._required == {"place", "count"}
    assert lookup._plain is None  # lists, enums, dicts: jsonschema's
    base = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert _plain_types(base) == {"a": str}
    for other in (
        {**base, "minProperties": 1},
        {**base, "additionalProperties": True},
        {**base, "type": "array"},
        {**base, "properties": {"a": {"type": "string", "maxLength": 2}}},
        {**base, "properties": {"a": {"type": ["string", "null"]}}},
        {**base, "properties": {"a": {"type": "null"}}},
        {**base, "required": ["b"]},
    ):
        assert _plain_types(other) is None, other
    # a whole float as an integer: jsonschema says yes; the quick check leaves it to it
    assert not _plainly_valid({"place": "x", "count": 2.0}, plain._plain, plain._required)
    plain.validate({"place": "x", "count": 2.0})
    with pytest.raises(ToolArgumentsError, match="at 'count': True is not of type 'integer'"):
        plain.validate({"place": "x", "count": True})
