"""The quick structure functions' shortcuts for a tool call's arguments and a tuple of
tagged objects (stop 47): where the JSON is not what they take as it is, cattrs' own
hook decides, with its result or its error."""

from __future__ import annotations

from typing import Any

import pytest
from cattrs.gen import make_dict_structure_fn

from protocol import (
    AgentAction,
    AssistantMessage,
    FrozenDict,
    ToolCall,
    converter,
    structure_any,
    unstructure_any,
)


def _outcome(structure: Any, data: Any) -> tuple[str, str]:
    try:
        made = structure(data)
    except Exception as exc:
        return "error", f"{type(exc).__name__}"
    return "made", repr(made)


@pytest.mark.parametrize(
    "args",
    [{"n": 1}, {}, {"a": [1, {"b": None}]}, {1: "x"}, {"a": 1, 2: "b"}, [1], "text", None],
    ids=repr,
)
def test_a_calls_arguments_are_taken_as_cattrs_takes_them(args: Any) -> None:
    data = {"$type": "ToolCall", "id": "c", "name": "f", "args": args}
    cattrs_own: Any = make_dict_structure_fn(ToolCall, converter)
    expected = _outcome(lambda d: cattrs_own(d, ToolCall), data)
    assert _outcome(structure_any, data) == expected
    if expected[0] == "made":
        made = structure_any(data)
        assert type(made.args) is FrozenDict
        assert made.args is not args  # a copy: the JSON read back is not the call's


def test_a_calls_arguments_are_a_copy_of_the_json() -> None:
    inner = [1, 2]
    data = {"$type": "ToolCall", "id": "c", "name": "f", "args": {"xs": inner}}
    made = structure_any(data)
    inner.append(3)
    assert made.args == {"xs": [1, 2]}
    with pytest.raises(TypeError):
        made.args["xs"].append(4)


@pytest.mark.parametrize(
    "calls",
    [
        [],
        [{"$type": "ToolCall", "id": "c", "name": "f", "args": {}}],
        [{"$type": "ToolCall", "id": "c", "name": "f", "args": {}}, {"$type": "Usage"}],
        [{"$type": "ToolCall", "id": "c", "name": "f", "args": {}}, "x"],
        [{"$type": "ToolCall", "id": "c", "name": 3, "args": {}}],
        [{"id": "c", "name": "f", "args": {}}],
        ["x"],
        {"x": 1},
    ],
    ids=repr,
)
def test_a_tuple_of_tagged_objects_is_taken_as_cattrs_takes_it(calls: Any) -> None:
    data = unstructure_any(AssistantMessage("a"))
    data["tool_calls"] = calls
    cattrs_own: Any = make_dict_structure_fn(AssistantMessage, converter)
    expected = _outcome(lambda d: cattrs_own(d, AssistantMessage), data)
    assert _outcome(structure_any, data) == expected


def test_an_action_with_a_plain_dict_keeps_its_dict() -> None:
    # (no converter: the shortcut for a frozen argument dict is not taken, the value
    # is cattrs' copy as before)
    data = unstructure_any(AgentAction("f", {"n": 1}, "c", "log"))
    made = structure_any(data)
    assert type(made.tool_input) is dict
    assert made.tool_input is not data["tool_input"]
