"""A run tree's shared state: given to the root (``RunConfig.state``), read by every run
of the tree, changed by tools through an injected ``SharedState``; each change a
``state`` custom event holding a ``StateDelta`` (RFC 6902), in order, journaled, and
never made twice when a run is replayed from its journal."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import jsonpatch
import jsonpointer
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from actors import Agent, ScriptedCall, ScriptedChatModel, ScriptedTurn, tool
from actors.testing import check_events
from protocol import STATE_EVENT, StateDelta
from runtime import (
    NoRuntimeError,
    Performer,
    Resume,
    Run,
    SharedState,
    StateError,
    current_state,
    make_config,
    open_runtime,
)
from runtime._state import StateCell


def basket_tools(seen: list[Any], *, approvals: bool = False) -> list[Any]:
    @tool
    async def add_item(item: str, state: SharedState) -> str:
        """Put an item in the basket."""
        if state.get("items") is None:
            await state.update({"items": []})
        await state.patch([{"op": "add", "path": "/items/-", "value": item}])
        seen.append(("add", item))
        return f"{len(state.get('items'))} items"

    @tool
    async def basket(state: SharedState) -> list[Any]:
        """What the basket holds."""
        seen.append(("basket", state.get("items")))
        return list(state.get("items", []))

    @tool
    async def remove(path: str, state: SharedState) -> str:
        """Remove what is at a path of the state."""
        await state.patch([{"op": "remove", "path": path}])
        return "removed"

    @tool(needs_approval=True)
    async def pay(amount: int, state: SharedState) -> str:
        """Pay (a person approves first)."""
        await state.update({"paid": amount})
        return f"paid {amount}"

    return [add_item, basket, remove, *([pay] if approvals else [])]


def shopper(seen: list[Any], *turns: ScriptedTurn, approvals: bool = False) -> Agent:
    tools = basket_tools(seen, approvals=approvals)
    return Agent(model=ScriptedChatModel(list(turns)), tools=tools, name="shop")


def deltas(events: Sequence[Any]) -> list[StateDelta]:
    return [e.data.chunk for e in events if e.event == "on_custom_event" and e.name == STATE_EVENT]


def applied(state: dict[str, Any], events: Sequence[Any]) -> dict[str, Any]:
    for delta in deltas(events):
        state = jsonpatch.apply_patch(state, list(delta.patch))
    return state


class Code(Performer[str, Any]):
    """A performer of the test's own code (its ``perform``)."""

    name = "code"
    tags = ()
    metadata: dict[str, Any] = {}  # noqa: RUF012

    def coerce_input(self, value: Any) -> str:
        return str(value)


ADD_TWO = (
    ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="a1")]),
    ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "tea"}, id="a2")]),
    ScriptedTurn(tool_calls=[ScriptedCall("basket", {}, id="b1")]),
    ScriptedTurn("done"),
)


async def test_tools_read_and_change_the_state_and_each_change_is_an_event() -> None:
    seen: list[Any] = []
    agent = shopper(seen, *ADD_TWO)
    # the parameter is the run's, hidden from the model
    assert "state" not in agent.tools[0].parameters["properties"]
    start = {"owner": "Ann"}
    async with open_runtime() as rt, rt.astream_events(agent, "shop", state=start) as stream:
        events = [e async for e in stream]
    check_events(events)
    assert seen == [("add", "milk"), ("add", "tea"), ("basket", ["milk", "tea"])]
    assert start == {"owner": "Ann"}  # the caller's object is not changed
    # the deltas, applied in order to the state the run was given, make its state
    assert applied(start, events) == {"owner": "Ann", "items": ["milk", "tea"]}
    # each delta is the tool run's custom event, inside it
    tool_runs = {e.run_id for e in events if e.event == "on_tool_start"}
    assert all(e.run_id in tool_runs for e in events if e.event == "on_custom_event")
    assert [next(iter(d.patch))["op"] for d in deltas(events)] == ["add", "add", "add"]


async def test_a_performer_reads_the_state_through_its_run() -> None:
    class Reader(Code):
        name = "reader"

        async def perform(self, message: str, run: Run) -> Any:
            return current_state().value

    async with open_runtime() as rt:
        assert await rt.ainvoke(Reader(), "x", state={"a": [1]}) == {"a": [1]}
        assert await rt.ainvoke(Reader(), "x") == {}


async def test_a_nested_run_shares_the_roots_state_and_ignores_its_own() -> None:
    seen: list[Any] = []
    inner = shopper(
        seen,
        ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "jam"}, id="i1")]),
        ScriptedTurn("inner done"),
    )

    @tool
    async def delegate(state: SharedState) -> str:
        """Ask the inner agent."""
        out = await inner.ainvoke("add jam", {"state": {"ignored": True}})
        assert "ignored" not in state.value
        return str(out)

    outer = Agent(
        model=ScriptedChatModel(
            [ScriptedTurn(tool_calls=[ScriptedCall("delegate", {}, id="d1")]), ScriptedTurn("ok")]
        ),
        tools=[delegate],
        name="outer",
    )
    async with (
        open_runtime() as rt,
        rt.astream_events(outer, "go", state={"items": ["bread"]}) as stream,
    ):
        events = [e async for e in stream]
    assert applied({"items": ["bread"]}, events) == {"items": ["bread", "jam"]}


async def test_a_patch_that_does_not_apply_fails_the_tool_call_clearly() -> None:
    seen: list[Any] = []
    agent = shopper(
        seen,
        ScriptedTurn(tool_calls=[ScriptedCall("remove", {"path": "/nothing/here"}, id="r1")]),
        ScriptedTurn("noted"),
    )
    async with open_runtime() as rt, rt.astream_events(agent, "x", state={"a": 1}) as stream:
        events = [e async for e in stream]
    check_events(events)
    assert deltas(events) == []  # nothing changed, nothing told
    error = next(e for e in events if e.event == "on_tool_error")
    assert "state patch does not apply" in error.data.error
    end = events[-1]
    assert end.status == "ok"  # the model was told, and the run went on


@pytest.mark.parametrize(
    ("ops", "says"),
    [
        ("not a list", "list of RFC 6902 operations"),
        ([{"path": "/a"}], "not an RFC 6902 operation"),
        ([{"op": "test", "path": "/a", "value": 2}], "does not apply"),
        ([{"op": "replace", "path": "", "value": [1]}], "must stay a JSON object"),
        ([{"op": "add", "path": "/a", "value": object()}], "must be JSON"),
        ([{"op": "frobnicate", "path": "/a"}], "state patch"),
    ],
)
async def test_bad_patches_raise_a_state_error_and_change_nothing(ops: Any, says: str) -> None:
    got: list[Any] = []

    class Patcher(Code):
        name = "patcher"

        async def perform(self, message: str, run: Run) -> Any:
            state = current_state()
            with pytest.raises(StateError, match=says):
                await state.patch(ops)
            got.append(state.value)
            return None

    async with open_runtime() as rt:
        await rt.ainvoke(Patcher(), "x", state={"a": 1})
    assert got == [{"a": 1}]


async def test_replace_sends_the_difference_and_concurrent_changes_stay_in_order() -> None:
    class Changer(Code):
        name = "changer"

        async def perform(self, message: str, run: Run) -> Any:
            state = current_state()
            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(state.patch, [{"op": "add", "path": "/log/-", "value": n}])
            await state.replace({"log": sorted(state.value["log"]), "done": True})
            return state.value

    async with (
        open_runtime() as rt,
        rt.astream_events(Changer(), "x", state={"log": []}) as stream,
    ):
        events = [e async for e in stream]
    final = stream.output
    assert final["done"] is True and sorted(final["log"]) == list(range(5))
    assert applied({"log": []}, events) == final  # every delta applies, in order


def test_state_in_config_is_checked() -> None:
    assert make_config(state={"a": 1}).state == {"a": 1}
    with pytest.raises(TypeError, match="state must be a JSON object"):
        make_config(state=[1])
    with pytest.raises(TypeError, match="state keys must be strings"):
        make_config(state={1: 2})
    with pytest.raises(TypeError, match="state"):
        make_config(state={"a": object()})


async def test_outside_a_run_there_is_no_state() -> None:
    with pytest.raises(NoRuntimeError):
        current_state()
    with pytest.raises(NoRuntimeError):
        await SharedState().patch([{"op": "add", "path": "/a", "value": 1}])


PAY_AFTER_ADDING = (
    ScriptedTurn(tool_calls=[ScriptedCall("add_item", {"item": "milk"}, id="a1")]),
    ScriptedTurn(tool_calls=[ScriptedCall("pay", {"amount": 5}, id="p1")]),
    ScriptedTurn(tool_calls=[ScriptedCall("basket", {}, id="b1")]),
    ScriptedTurn("paid"),
)


async def test_a_resumed_run_does_not_make_its_changes_twice_and_rebuilds_the_state(
    url: str,
) -> None:
    seen: list[Any] = []
    agent = shopper(seen, *PAY_AFTER_ADDING, approvals=True)
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "shop", run_id="r1", state={"who": "Ann"}) as stream:
            first = [e async for e in stream]
        assert first[-1].status == "paused"
        assert applied({"who": "Ann"}, first) == {"who": "Ann", "items": ["milk"]}
        assert (await rt.get_run("r1")).config["state"] == {"who": "Ann"}
        # resumed without a state: the paused run's is rebuilt from its journal
        async with rt.astream_events(
            agent, None, resume=Resume("r1", {"p1": True}), run_id="r2"
        ) as stream:
            second = [e async for e in stream]
    check_events(second)
    # add_item was answered from the journal: not run, and its delta not sent again
    assert seen == [("add", "milk"), ("basket", ["milk"])]
    assert len(deltas(second)) == 1  # pay's only
    # and the tools after it saw the state it had made
    assert applied({"who": "Ann", "items": ["milk"]}, second) == {
        "who": "Ann",
        "items": ["milk"],
        "paid": 5,
    }


async def test_a_resume_given_the_clients_state_starts_from_it(url: str) -> None:
    seen: list[Any] = []
    agent = shopper(seen, *PAY_AFTER_ADDING, approvals=True)
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(agent, "shop", run_id="r1", state={}) as stream:
            [e async for e in stream]
        # the client holds what it was told, and changed it meanwhile
        held = {"items": ["milk", "eggs"]}
        async with rt.astream_events(
            agent, None, resume=Resume("r1", {"p1": True}), run_id="r2", state=held
        ) as stream:
            second = [e async for e in stream]
    assert seen[-1] == ("basket", ["milk", "eggs"])
    assert applied(held, second) == {"items": ["milk", "eggs"], "paid": 5}


async def test_the_journal_keeps_each_delta_as_a_typed_event(url: str) -> None:
    seen: list[Any] = []
    async with open_runtime(store=url) as rt:
        async with rt.astream_events(shopper(seen, *ADD_TWO), "shop", run_id="j1") as stream:
            live = [e async for e in stream]
        async with rt.join("j1") as joined:
            read = [e async for e in joined]
    assert deltas(read) == deltas(live) and len(deltas(read)) == 3
    assert all(isinstance(d, StateDelta) for d in deltas(read))


async def test_a_sync_tool_reads_the_state_and_changes_it_through_trio() -> None:
    @tool
    def tick(state: SharedState) -> int:
        """Count (in a worker thread)."""
        count: int = state.get("count", 0) + 1
        trio.from_thread.run(state.update, {"count": count})
        return count

    agent = Agent(
        model=ScriptedChatModel(
            [
                ScriptedTurn(tool_calls=[ScriptedCall("tick", {}, id="t1")]),
                ScriptedTurn(tool_calls=[ScriptedCall("tick", {}, id="t2")]),
                ScriptedTurn("ticked"),
            ]
        ),
        tools=[tick],
        name="ticker",
    )
    async with open_runtime() as rt, rt.astream_events(agent, "x", state={"count": 5}) as stream:
        events = [e async for e in stream]
    assert applied({"count": 5}, events) == {"count": 7}
    assert [e.data.output for e in events if e.event == "on_tool_end"] == [6, 7]


def _pointers(doc: Any, prefix: str = "") -> list[str]:
    """Every JSON pointer into ``doc``."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _pointers(value, f"{prefix}/{jsonpointer.escape(key)}")
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _pointers(value, f"{prefix}/{index}")
    return found


LEAVES = st.none() | st.booleans() | st.integers(-5, 5) | st.text("ab/~", max_size=3)
DOCS = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("ab/~", max_size=2), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def doc_and_ops(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = draw(st.dictionaries(st.text("ab", max_size=2), DOCS, max_size=3))
    pointers = _pointers(doc)
    path = (
        st.sampled_from(pointers) | st.sampled_from([p + "/-" for p in pointers]) | st.just("/zz/q")
    )
    op = st.one_of(
        st.fixed_dictionaries(
            {"op": st.sampled_from(["add", "replace", "test"]), "path": path, "value": DOCS}
        ),
        st.fixed_dictionaries({"op": st.just("remove"), "path": path}),
        st.fixed_dictionaries(
            {"op": st.sampled_from(["move", "copy"]), "path": path, "from": path}
        ),
    )
    return doc, draw(st.lists(op, min_size=1, max_size=4))


@given(doc_and_ops())
def test_a_patch_that_shares_what_it_does_not_change_is_jsonpatchs_patch(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    # the cell copies only the containers on a patch's paths: the result is what
    # jsonpatch makes of a deep copy, and the state before is never changed
    doc, ops = case
    before = copy.deepcopy(doc)
    cell = StateCell(doc)
    try:
        expected: Any = jsonpatch.apply_patch(copy.deepcopy(doc), copy.deepcopy(ops))
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException):
        expected = StateError
    try:
        got: Any = cell.patched(ops)[1]
    except StateError:
        got = StateError
    if expected is not StateError and not isinstance(expected, dict):
        expected = StateError  # the state must stay an object
    assert got == expected
    assert doc == before and cell.value == before
