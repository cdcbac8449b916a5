"""Three known problems (stop 46): a str subclass as a dict key over HTTP, a message's
text fields structured from a list, and a run followed from another runtime."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
from cattrs.errors import ClassValidationError

from protocol import (
    AssistantMessage,
    SystemMessage,
    ToolMessage,
    UserMessage,
    converter,
    from_json,
    structure_any,
    to_json,
)
from runtime import Run

from .sse_client import read_sse, serving
from .test_fix49 import TEXT_FIELDS
from .test_review_journal4 import _Taking

# 1. A StrEnum dict key on the wire ------------------------------------------------------


class Colour(enum.StrEnum):
    RED = "red"


class Shade(str):
    """A str subclass whose ``str()`` is not its text: the key is written as its text."""

    def __str__(self) -> str:
        return "not the text"


class Keyed(_Taking[Any]):
    """Ends with dicts keyed by str subclasses (and, apart, by an int)."""

    name = "keyed"

    async def perform(self, message: Any, run: Run) -> Any:
        if message == "int":
            return {1: "one"}
        return {"by": {Colour.RED: 1, Shade("dark"): [Colour.RED]}, "plain": {"k": 2}}


KEYED_OUTPUT = {"by": {"red": 1, "dark": ["red"]}, "plain": {"k": 2}}


async def test_a_str_subclass_key_is_written_as_its_text_over_http() -> None:
    async with serving({"keyed": Keyed()}) as served:
        waited = await served.client.post("/runs/wait", json={"performer": "keyed", "input": "x"})
        body = {"performer": "keyed", "input": "x"}
        async with served.client.stream("POST", "/runs/stream", json=body) as response:
            events = [e.json() for e in await read_sse(response)]
    assert waited.status_code == 200 and waited.json()["output"] == KEYED_OUTPUT
    end = events[-1]
    assert end["event"] == "on_chain_end" and end["data"]["output"] == KEYED_OUTPUT


async def test_an_int_key_is_still_written_as_the_outputs_repr() -> None:
    # (orjson refuses int keys; the edge writes the repr, as before: a str subclass key
    # is the only one taken as text)
    async with serving({"keyed": Keyed()}) as served:
        waited = await served.client.post("/runs/wait", json={"performer": "keyed", "input": "int"})
    assert waited.json()["output"] == "{1: 'one'}"


# 2. A message's text fields structured from JSON that is not text -----------------------


def _refusal(info: pytest.ExceptionInfo[ClassValidationError]) -> str:
    (refused,) = info.value.exceptions
    assert isinstance(refused, TypeError)
    return str(refused)


@pytest.mark.parametrize(
    ("cls", "name", "others"), TEXT_FIELDS, ids=[f"{c.__name__}.{n}" for c, n, _ in TEXT_FIELDS]
)
@pytest.mark.parametrize("given", [["a"], {"text": "hi"}, 5, 1.5, True], ids=repr)
def test_structuring_refuses_a_text_field_that_is_not_text(
    cls: Any, name: str, others: dict[str, Any], given: Any
) -> None:
    """cattrs' hook for ``str`` made the list ``["a"]`` the text "['a']", which the
    message's check then took: the converter, ``from_json`` and ``structure_any`` refuse
    it as the constructor does, naming the field."""
    refused = f"{cls.__name__}.{name} must be a str, got {type(given).__name__}"
    data = {**others, name: given}
    tagged = {"$type": cls.__name__, **data}
    with pytest.raises(ClassValidationError) as info:
        converter.structure(data, cls)
    assert _refusal(info).startswith(refused)
    with pytest.raises(ClassValidationError) as info:
        from_json(json.dumps(tagged), cls)
    assert _refusal(info).startswith(refused)
    with pytest.raises(ClassValidationError) as info:
        structure_any(tagged)
    assert _refusal(info).startswith(refused)


def test_a_required_text_field_structured_from_null_is_refused() -> None:
    with pytest.raises(ClassValidationError) as info:
        converter.structure({"content": None}, UserMessage)
    assert _refusal(info) == "UserMessage.content must be a str, got NoneType"


@pytest.mark.parametrize(
    "message",
    [
        SystemMessage("be brief"),
        UserMessage("hi"),
        AssistantMessage("yes", id="m1", finish_reason="stop", model_name="scripted"),
        AssistantMessage("", id=None),
        ToolMessage("seen", tool_call_id="c1", name="look", is_error=True),
    ],
    ids=repr,
)
def test_a_message_with_text_still_round_trips(message: Any) -> None:
    cls = type(message)
    assert converter.structure(converter.unstructure(message), cls) == message
    assert from_json(to_json(message), cls) == message
    assert structure_any(json.loads(to_json(message))) == message
