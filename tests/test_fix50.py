"""Three known problems (stop 46): a str subclass as a dict key over HTTP, a message's
text fields structured from a list, and a run followed from another runtime."""

from __future__ import annotations

import enum
from typing import Any

from runtime import Run

from .sse_client import read_sse, serving
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
