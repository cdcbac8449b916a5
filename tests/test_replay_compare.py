"""A replay's comparison of what a run asks and streams again with its journal is as
strict as :func:`protocol.same_json` (generated tests): the walk without JSON
(``matches_known``, each tagged class by code of its own), the JSON of known objects
reused, and a conversation compared by its new messages alone where the others are the
very objects of the turn before. A change anywhere in an earlier message is a
divergence; a tuple is the list the journal holds; ``True`` is not ``1``, nor ``1``
``1.0``; a NaN is the NaN the journal holds."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    ActionsChunk,
    AgentAction,
    AssistantMessage,
    EventData,
    FrozenDict,
    RunInfo,
    StreamEvent,
    ToolCall,
    ToolMessage,
    UserMessage,
    matches_known,
    same_json,
    unstructure_any,
)
from runtime import ReplayDivergenceError
from runtime._journal import journal_encoder
from runtime._replay import Replay, comparable, first_difference, read_journal

from .test_compact import model_turn
from .test_json_text import as_stored


class Shade(enum.StrEnum):
    DARK = "a"


class Level(enum.IntEnum):
    ONE = 1


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, 1.0, -1.5, math.nan, math.inf]),
    st.sampled_from(["", "a", "b"]),
    st.sampled_from([Shade.DARK, Level.ONE]),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["a", "b", "c"])
    return st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(keys, inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3).map(FrozenDict),
    )


_JSONISH = st.recursive(_SCALARS, _containers, max_leaves=8)
_ARGS = st.dictionaries(st.sampled_from(["a", "b"]), _JSONISH, max_size=2)
_TEXT = st.sampled_from(["", "x", "y"])
_CALL = st.builds(ToolCall, id=_TEXT, name=_TEXT, args=_ARGS)
_MESSAGES = st.one_of(
    st.builds(UserMessage, content=_TEXT),
    st.builds(ToolMessage, content=_TEXT, tool_call_id=_TEXT, name=_TEXT, is_error=st.booleans()),
    st.builds(
        AssistantMessage,
        content=_TEXT,
        tool_calls=st.lists(_CALL, max_size=2).map(tuple),
    ),
    st.builds(AgentAction, tool=_TEXT, tool_input=_ARGS, tool_call_id=_TEXT, log=_TEXT),
)
_VALUES = st.one_of(
    _JSONISH,
    _MESSAGES,
    st.lists(st.one_of(_MESSAGES, _JSONISH), max_size=3).map(tuple),
    st.builds(
        ActionsChunk,
        actions=st.lists(
            st.builds(AgentAction, tool=_TEXT, tool_input=_ARGS, tool_call_id=_TEXT), max_size=2
        ).map(tuple),
        messages=st.lists(_MESSAGES, max_size=2).map(tuple),
    ),
    st.dictionaries(st.sampled_from(["messages", "k"]), st.one_of(_MESSAGES, _JSONISH), max_size=2),
)


def _twins(value: Any) -> list[Any]:
    """What a JSON value may be changed into: values equal to it by Python's ``==`` or
    close to it (``True`` for ``1``, ``1.0`` for ``1``, another NaN), and others."""
    kind = type(value)
    if kind is bool:
        return [int(value), float(value), not value, str(value).lower()]
    if kind is int:
        return [bool(value) if value in (0, 1) else value + 1, float(value), value + 1, str(value)]
    if kind is float:
        if math.isnan(value):
            return [math.nan, None, 0.0, "NaN"]
        return [int(value) if value.is_integer() else value + 1, math.nan, -value or 1.0]
    if kind is str:
        return [value + "!", None, [value]] if value else [None, 0, False]
    if value is None:
        return [0, False, "", [], {}]
    if kind is list:
        return [[*value, None], value[:-1] if value else [None], {"0": value}]
    return [{**value, "extra": 1}, dict(list(value.items())[:-1]), [value]]


def _changed(journaled: Any, data: st.DataObject) -> Any:
    """``journaled`` (JSON, as read back) with one value somewhere in it changed (or
    kept: the test says what ``same_json`` says of it)."""
    copy = json.loads(json.dumps(journaled))
    places: list[tuple[Any, Any]] = [(None, None)]  # (the container, the key) of each value

    def walk(value: Any) -> None:
        items = value.items() if type(value) is dict else enumerate(value)
        for key, item in items:
            places.append((value, key))
            if type(item) in (dict, list):
                walk(item)

    if type(copy) in (dict, list):
        walk(copy)
    container, key = data.draw(st.sampled_from(places))
    old = copy if container is None else container[key]
    new = data.draw(st.sampled_from([old, *_twins(old)]))
    if container is None:
        return new
    if type(container) is dict and type(key) is str and data.draw(st.booleans()):
        del container[key]  # a key missing
        return copy
    container[key] = new
    return copy


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(value=_VALUES, data=st.data())
def test_the_walk_is_as_strict_as_same_json(value: Any, data: st.DataObject) -> None:
    """``matches_known`` says "equal" only where ``same_json`` does (also where the
    objects are known: by the journal's JSON, as a replay knows its answers), and a
    replay's comparison (``Replay._equal``) says what ``same_json`` says."""
    journaled = json.loads(json.dumps(unstructure_any(value)))  # (NaN: written as NaN)
    other = _changed(journaled, data)
    truth = same_json(comparable(value), other)
    assert not matches_known(value, other, {}) or truth
    known: dict[int, tuple[Any, Any]] = {}
    if matches_known(value, journaled, known):  # as a replay comes to know its objects
        assert not matches_known(value, other, known) or truth
        assert not matches_known([value], [other], known) or truth
    assert Replay("r")._equal(value, other) is truth
    replay = Replay("r")
    replay._emits = [("chunk", other)]
    if truth:
        assert replay.replays_emit("chunk", value)
    else:
        with pytest.raises(ReplayDivergenceError, match="streamed chunk"):
            replay.replays_emit("chunk", value)


def test_the_json_of_a_known_object_is_compared_as_json() -> None:
    """An object known by its JSON (an answer, as journaled) that holds ``true`` is not
    the same as a journal's ``1`` (Python's ``==`` says they are)."""
    answer = AssistantMessage(tool_calls=(ToolCall("c", "f", {"a": True}),))
    journaled = json.loads(json.dumps(unstructure_any(answer)))
    known = {id(answer): (answer, journaled)}
    other = json.loads(json.dumps(journaled))
    other["tool_calls"][0]["args"]["a"] = 1
    assert other == journaled and not same_json(other, journaled)
    assert not matches_known(answer, other, known)
    assert matches_known(answer, json.loads(json.dumps(journaled)), known)
    assert not matches_known((answer,), [other], known)


# A conversation journaled a turn at a time, each turn's input by reference to the last.

_ROOT = RunInfo(run_id="root", name="Agent", kind="chain")


def _turn(index: int) -> RunInfo:
    return RunInfo(run_id=f"m{index}", name="Model", kind="chat_model", parent_ids=("root",))


def _answer(index: int, args: dict[str, Any]) -> AssistantMessage:
    return AssistantMessage(f"said {index}", (ToolCall(f"c{index}", "f", args),))


def _journal(turns: int, args: dict[str, Any]) -> list[Any]:
    """The records of ``turns`` model turns, the conversation growing by the answer and
    a tool's message each turn, read back (JSON)."""
    encoder, records = journal_encoder(), list[Any]()
    encoder.encode(
        StreamEvent(event="on_chain_start", run=_ROOT, seq=0, data=EventData(input="go")), records
    )
    conversation: list[Any] = [UserMessage("go")]
    for index in range(turns):
        asked = {"messages": list(conversation)}
        answer = _answer(index, args)
        for event in model_turn(_turn(index), asked, answer):
            encoder.encode(event, records)
        conversation += [answer, ToolMessage(f"did {index}", f"c{index}", "f")]
    return as_stored(records)


_CHANGES = [
    "nothing",
    "content",
    "class",
    "a copy",
    "args true for 1",
    "args 1.0 for 1",
    "args a list for a tuple",
    "args nan",
    "a message more",
    "a message less",
]


def _change(message: Any, change: str) -> Any:
    if change == "content":
        return attrs.evolve(message, content=message.content + "!")
    if change == "class":
        return (
            UserMessage(message.content)
            if type(message) is not UserMessage
            else (AssistantMessage(message.content))
        )
    if change == "a copy":  # equal, another object: compared whole, and equal
        return attrs.evolve(message)
    if isinstance(message, AssistantMessage):
        (call,) = message.tool_calls
        args = {
            "args true for 1": {"a": True, "b": call.args["b"]},
            "args 1.0 for 1": {"a": 1.0, "b": call.args["b"]},
            "args a list for a tuple": {"a": call.args["a"], "b": list(call.args["b"])},
            "args nan": {"a": call.args["a"], "b": call.args["b"], "c": math.nan},
        }.get(change)
        if args is not None:
            return attrs.evolve(message, tool_calls=(attrs.evolve(call, args=args),))
    return message


@settings(max_examples=150, deadline=None)
@given(
    turns=st.integers(2, 6),
    data=st.data(),
    nan=st.booleans(),
)
def test_a_change_anywhere_in_an_earlier_message_is_a_divergence(
    turns: int, data: st.DataObject, nan: bool
) -> None:
    """A replay asks again turn by turn, with the very objects of its turns before (as
    an agent does); at one turn, one message of the conversation (an earlier one, or
    the newest) is changed: the turn is answered exactly where its JSON is the same as
    the journal's (``same_json``), else it is a divergence that names the first
    difference."""
    args: dict[str, Any] = {"a": 1, "b": (1, 2)}
    if nan:
        args["c"] = math.nan  # the journal's NaN is the replay's NaN
    records = _journal(turns, args)
    at = data.draw(st.integers(0, turns - 1), label="turn changed")
    change = data.draw(st.sampled_from(_CHANGES), label="change")
    replay = read_journal("root", records).replay
    conversation: list[Any] = [UserMessage("go")]
    for index in range(turns):
        asked = list(conversation)
        if index == at:
            where = data.draw(st.integers(0, len(asked) - 1), label="message changed")
            if change == "a message more":
                asked.insert(where, UserMessage("more"))
            elif change == "a message less":
                del asked[where]
            else:
                asked[where] = _change(asked[where], change)
        journaled = replay.steps[index].input
        same = same_json(comparable({"messages": asked}), journaled)
        step = replay.take("chat_model", "Model", {"messages": asked})
        if not same:
            assert step is None
            with pytest.raises(ReplayDivergenceError, match=r"the first difference: input\["):
                replay.check("chat_model", "Model", {"messages": asked})
            return
        assert step is replay.steps[index]
        answer = replay.answer(step)
        conversation += [answer, ToolMessage(f"did {index}", f"c{index}", "f")]


def test_the_first_difference_is_named() -> None:
    journaled = {"messages": [{"a": 1, "b": [1, 2]}, "x"]}
    assert first_difference({"messages": [{"a": True, "b": [1, 2]}, "x"]}, journaled) == (
        "input['messages'][0]['a'] is True where the journal has 1"
    )
    assert first_difference({"messages": [{"a": 1, "b": [1]}, "x"]}, journaled) == (
        "input['messages'][0]['b'] has 1 items where the journal's has 2"
    )
    assert first_difference({"messages": [{"a": 1}, "x"]}, journaled) == (
        "input['messages'][0]['b'] is missing (the journal's is [1, 2])"
    )
    assert first_difference({"messages": [{"a": 1, "b": [1, 2], "c": 0}, "x"]}, journaled) == (
        "input['messages'][0]['c'] is not in the journal's"
    )
    assert first_difference("y", "x") == "input is 'y' where the journal has 'x'"
