"""The protocol: JSON round trips of every class, chunk merging, the dict view."""

from __future__ import annotations

import json
import typing
from decimal import Decimal
from typing import Any

import attrs
import pytest
from cattrs.gen import make_dict_structure_fn, override
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    TAGGED_CLASSES,
    AssistantMessage,
    AssistantMessageChunk,
    EventData,
    InvalidToolCall,
    RunInfo,
    SerializationError,
    StreamEvent,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
    Usage,
    UserMessage,
    converter,
    from_json,
    frozen_json,
    identity_vouches,
    matches_known,
    merge_chunks,
    same_json,
    structure_any,
    to_json,
    unstructure_any,
    unstructure_known,
)
from protocol._convert import _dict_as_given
from protocol._fast import checks
from protocol._lifecycle import IN_PROCESS_ONLY

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    if tp is Any:
        return json_values
    if tp == tuple[Any, ...]:
        return st.lists(json_values, max_size=4).map(tuple)
    return st.from_type(tp)


ALL_CLASSES = (*TAGGED_CLASSES, EventData, RunInfo, StreamEvent)


def _register() -> None:
    st.register_type_strategy(dict, st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    for cls in ALL_CLASSES:
        hints = typing.get_type_hints(cls)
        fields = attrs.fields(cls)
        st.register_type_strategy(
            cls,
            st.builds(cls, **{f.alias: _strategy_for(hints[f.name]) for f in fields if f.init}),
        )


_register()


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_class_round_trips_through_json(cls: type, data: st.DataObject) -> None:
    obj = data.draw(st.from_type(cls))
    text = to_json(obj)
    back: Any = from_json(text, cls)
    assert to_json(back) == text  # JSON -> object -> JSON is the identity
    assert json.loads(to_json(from_json(text, cls))) == json.loads(text)


@pytest.mark.parametrize("cls", TAGGED_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_unstructure_known_is_the_converters_json(cls: type, data: st.DataObject) -> None:
    obj = data.draw(st.from_type(cls))
    known: dict[int, tuple[Any, Any]] = {}
    assert unstructure_known(obj, known) == converter.unstructure(obj, cls)
    # a second time (every protocol object inside is known now), and inside a list
    assert unstructure_known([obj, {"k": obj}], known) == unstructure_any([obj, {"k": obj}])


def test_unstructure_known_reuses_the_json_it_is_given() -> None:
    message = AssistantMessage("hi", (ToolCall("c1", "f", {"a": 1}),))
    told = {"$type": "AssistantMessage", "content": "as journaled"}
    known: dict[int, tuple[Any, Any]] = {id(message): (message, told)}
    assert unstructure_known((message, UserMessage("q")), known) == [
        told,
        {"$type": "UserMessage", "content": "q"},
    ]
    other = AssistantMessage("hi")  # an id reused by another object vouches for nothing
    known[id(other)] = (message, told)
    assert unstructure_known(other, known) == converter.unstructure(other, AssistantMessage)


def test_unstructure_known_refuses_what_has_no_json() -> None:
    with pytest.raises(SerializationError):
        unstructure_known(ToolCall("c1", "f", {"a": object()}), {})
    with pytest.raises(SerializationError):
        unstructure_known({1: "not a string key"}, {})


@pytest.mark.parametrize("cls", TAGGED_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_matches_known_says_whether_the_json_is_equal(cls: type, data: st.DataObject) -> None:
    obj = data.draw(st.from_type(cls))
    journaled = json.loads(json.dumps(converter.unstructure(obj, cls)))  # as read back
    known: dict[int, tuple[Any, Any]] = {}
    equal = same_json(unstructure_known(obj, {}), journaled)  # (a NaN is NaN's JSON)
    assert matches_known(obj, journaled, known) is equal
    if equal and identity_vouches(obj):  # found equal: known by the JSON compared with
        assert known[id(obj)] == (obj, journaled)
        assert known[id(obj)][1] is journaled
    elif equal:  # (it may change in place: walked again each time, stop 47)
        assert id(obj) not in known
    assert matches_known([obj, {"k": obj}], [journaled, {"k": journaled}], known) is equal
    other = data.draw(st.from_type(cls))
    said = matches_known(other, journaled, {})
    assert not said or same_json(unstructure_known(other, {}), journaled)  # never falsely


def test_matches_known_tells_every_difference() -> None:
    message = AssistantMessage("hi", (ToolCall("c1", "f", {"a": [1, 2]}),))
    journaled = unstructure_any(message)
    assert matches_known(message, journaled, {})
    assert matches_known((message, "x", 1), [journaled, "x", 1], {})
    changed = json.loads(json.dumps(journaled))
    changed["tool_calls"][0]["args"]["a"][1] = 3
    assert not matches_known(message, changed, {})
    for wrong in (
        {**journaled, "$type": "UserMessage"},  # another class
        {k: v for k, v in journaled.items() if k != "content"},  # a field missing
        {**journaled, "extra": 1},  # one more
        [journaled],  # not an object
    ):
        assert not matches_known(message, wrong, {})
    assert not matches_known((1, 2), [1], {})  # lengths
    assert not matches_known((1, 2), (1, 2), {})  # JSON has lists, not tuples
    assert not matches_known({"a": 1}, {"b": 1}, {})  # keys
    assert not matches_known({1: "x"}, {"1": "x"}, {})  # no JSON form: not told equal
    assert not matches_known(object(), "x", {})
    # equal by ==, but not the same JSON: told apart (the JSON is made to compare)
    assert not matches_known(
        ToolCall("c1", "f", {"a": True}), unstructure_any(ToolCall("c1", "f", {"a": 1})), {}
    )
    assert not matches_known([1], [1.0], {})
    assert not matches_known(True, 1, {})
    assert matches_known(Decimal(1), 1, {}) is False  # neither JSON nor protocol


def test_matches_known_compares_known_objects_by_their_json() -> None:
    message = AssistantMessage("hi")
    told = {"$type": "AssistantMessage", "content": "as journaled"}
    known: dict[int, tuple[Any, Any]] = {id(message): (message, told)}
    assert matches_known(message, told, known)  # the very JSON: not walked
    assert matches_known([message], [dict(told)], known)  # an equal one
    assert not matches_known(message, unstructure_any(message), known)
    other = AssistantMessage("hi")  # an id reused by another object vouches for nothing
    known[id(other)] = (message, told)
    assert matches_known(other, unstructure_any(other), known)


def test_payload_objects_come_back_as_objects() -> None:
    message = AssistantMessage("hi", (ToolCall("c1", "f", {"a": [1, 2]}),))
    event = StreamEvent(
        "on_chat_model_end",
        RunInfo("r1", "m", "chat_model", ("r0",), ("t",), {"k": 1}, 1.0),
        4,
        EventData(input={"messages": [UserMessage("q")]}, output=message),
        "ok",
        2.0,
    )
    back = from_json(to_json(event), StreamEvent)
    assert back == event
    assert back.data.output == message
    assert back.data.input["messages"][0] == UserMessage("q")


def test_events_serialize_in_langchain_shape() -> None:
    event = StreamEvent(
        "on_chat_model_stream",
        RunInfo("r1", "m", "chat_model"),
        1,
        EventData(chunk=AssistantMessageChunk("The")),
    )
    data = converter.unstructure(event)
    assert list(data) == [
        "event",
        "name",
        "run_id",
        "parent_ids",
        "tags",
        "metadata",
        "data",
        "kind",
        "seq",
        "status",
        "start_time",
        "end_time",
    ]
    assert data["event"] == "on_chat_model_stream" and data["name"] == "m"
    assert data["data"] == {"chunk": converter.unstructure(AssistantMessageChunk("The"))}
    assert data["data"]["chunk"]["content"] == "The"


def test_unserializable_payloads_fail_clearly() -> None:
    with pytest.raises(SerializationError, match=r"cannot serialize a builtins\.object"):
        to_json(EventData(output=object()))
    with pytest.raises(SerializationError, match="keys must be strings"):
        to_json({1: "x"})


def test_bad_json_fails_clearly() -> None:
    with pytest.raises(Exception, match="UserMessage"):
        from_json('{"$type": "ToolMessage", "content": "x"}', UserMessage)
    with pytest.raises(SerializationError, match="unknown event data keys"):
        converter.structure({"bogus": 1}, EventData)


def test_dict_view() -> None:
    data = EventData(input={"a": 1})
    assert data["input"] == {"a": 1}
    assert data.get("output") is None
    assert "output" not in data and "input" in data
    assert data.keys() == ["input"]
    assert dict(data) == {"input": {"a": 1}}
    with pytest.raises(KeyError):
        data["output"]
    with pytest.raises(KeyError):
        data["not_a_key"]


@pytest.mark.parametrize("present", range(64))
def test_event_data_items_are_the_keys_present_in_order(present: int) -> None:
    # (its items and keys read the fields straight, not through the general view)
    names = ("input", "output", "chunk", "error", "tool_call_id")
    values = {name: f"{name}!" for i, name in enumerate(names) if present >> i & 1}
    data = EventData(**values, ended=bool(present & 32))
    expected = [name for name in names if name in values or (name == "output" and data.ended)]
    assert data.keys() == expected
    assert list(data.items()) == [(name, data[name]) for name in expected]
    assert [name for name in names if name in data] == expected
    assert dict(data) == data.as_dict() == {name: values.get(name) for name in expected}


def test_merge_chunks_sets_ids_and_names_and_concatenates_arguments() -> None:
    chunks = [
        AssistantMessageChunk("Hel"),
        AssistantMessageChunk("lo"),
        # a server that repeats id and name in every delta
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(0, "c0", "f", '{"a"'),)),
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(0, "c0", "f", ": 1}"),)),
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(1, "c1", "g", "{nope"),)),
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(2, "c2", "h", "[1]"),)),
        AssistantMessageChunk(tool_call_chunks=(ToolCallChunk(3, "c3", "k", ""),)),
        AssistantMessageChunk(finish_reason="tool_calls"),
    ]
    message = merge_chunks(chunks)
    assert message.content == "Hello"
    assert message.tool_calls == (ToolCall("c0", "f", {"a": 1}), ToolCall("c3", "k", {}))
    assert [c.id for c in message.invalid_tool_calls] == ["c1", "c2"]
    assert isinstance(message.invalid_tool_calls[0], InvalidToolCall)
    assert "not valid JSON" in message.invalid_tool_calls[0].error
    assert "must be a JSON object" in message.invalid_tool_calls[1].error
    assert message.finish_reason == "tool_calls"


@given(st.lists(st.text(max_size=5), max_size=30))
def test_merged_text_is_the_concatenation(pieces: list[str]) -> None:
    merged = merge_chunks(AssistantMessageChunk(p) for p in pieces)
    assert merged.content == "".join(pieces)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
# Frozen and slotted is the class's, whatever its values: an eighth of the profile's
# examples (5 of troupe-dev's 40, 7 of troupe-ci's 60; 1,250 of troupe-long's) rather than
# 40 deep objects drawn for each of 33 classes (about 16 s of the suite's CPU).
@settings(max_examples=max(1, settings().max_examples // 8))
@given(data=st.data())
def test_messages_are_frozen_and_slotted(cls: type, data: st.DataObject) -> None:
    assert "__slots__" in cls.__dict__
    instance = data.draw(st.from_type(cls))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(instance, attrs.fields(cls)[0].name, None)


def test_events_of_a_run_share_its_identity() -> None:
    info = RunInfo("r", "n", "tool", ("p",), ("t",), {"k": 1}, 5.0)
    event = StreamEvent("on_tool_start", info, 0, EventData(input={}))
    assert (event.name, event.run_id, event.parent_ids, event.tags) == ("n", "r", ("p",), ("t",))
    assert (event.metadata, event.kind, event.start_time, event.parent_id) == (
        {"k": 1},
        "tool",
        5.0,
        "p",
    )
    assert event["name"] == "n" and event["data"]["input"] == {}


def test_an_event_missing_a_key_fails_clearly() -> None:
    with pytest.raises(SerializationError, match="needs the key 'seq'"):
        converter.structure(
            {"event": "x", "name": "n", "run_id": "r", "kind": "k", "data": {}}, StreamEvent
        )


def test_a_stream_event_made_from_its_chunk_is_the_same_event() -> None:
    info = RunInfo("r1", "m", "chat_model")
    chunk = AssistantMessageChunk("The")
    lazy = StreamEvent("on_chat_model_stream", info, 1, chunk=chunk)
    full = StreamEvent("on_chat_model_stream", info, 1, EventData(chunk=chunk))
    assert lazy == full
    assert lazy != StreamEvent("on_chat_model_end", info, 1, chunk=chunk)
    assert lazy.chunk is chunk and full.chunk is chunk
    assert lazy.data is lazy.data  # built once, on first use
    assert lazy["data"]["chunk"] is chunk and lazy.data == EventData(chunk=chunk)
    assert repr(lazy) == repr(full) and "data=EventData(" in repr(lazy)
    assert to_json(lazy) == to_json(full)
    assert from_json(to_json(lazy), StreamEvent) == full
    assert lazy != StreamEvent("on_chat_model_stream", info, 2, chunk=chunk)
    assert lazy != StreamEvent("on_chat_model_stream", info, 1, chunk=AssistantMessageChunk("A"))
    assert lazy.__eq__("not an event") is NotImplemented
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        lazy.seq = 3  # type: ignore[misc]


_ODD_VALUES: tuple[Any, ...] = (None, 0, 1, True, 1.5, "", "7", [], ["x"], {}, {"$type": "Usage"})
"""Values put in a field in place of its own: each either coerced by cattrs (``1``
for a ``str`` is ``"1"``, ``True`` for an ``int`` is ``1``; not for a message's text,
which its check refuses) or refused."""


def _outcome(structure: Any, data: Any) -> tuple[str, str]:
    try:
        made = structure(data)
    except Exception as exc:  # the same error, whichever way it was made
        return "error", f"{type(exc).__name__}: {exc} {getattr(exc, 'exceptions', '')!r}"
    # repr tells 1 from 1.0 and True, and a tuple from a list, where == would not
    return "made", repr(made)


@pytest.mark.parametrize("cls", TAGGED_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_the_quick_structuring_makes_what_cattrs_makes(cls: type, data: st.DataObject) -> None:
    # The converter's structure hooks take the JSON as it is where it is exactly of
    # its fields' types; cattrs' own generated function is the reference, for JSON
    # as written, with a field changed to an odd value, left out, or one added. (A
    # field whose converter checks its value, a message's text, is given the JSON
    # value as it is, which the check refuses: cattrs' hook for ``str`` made ``["x"]``
    # the text "['x']".)
    overrides: dict[str, Any] = {
        f.name: override(omit=True) for f in attrs.fields(cls) if f.metadata.get(IN_PROCESS_ONLY)
    }
    for f in attrs.fields(cls):
        if checks(f.converter):
            overrides[f.name] = override(struct_hook=lambda value, _: value)
        elif f.converter is frozen_json and typing.get_origin(f.type) is dict:
            # JSON data read back as it is (a tool call's args): a JSON object, whole
            overrides[f.name] = override(struct_hook=_dict_as_given)
    cattrs_own: Any = make_dict_structure_fn(cls, converter, **overrides)
    obj = data.draw(st.from_type(cls))
    written = converter.unstructure(obj, cls)
    names = [name for name in written if name != "$type"]
    changed = dict(written)
    if names:
        name = data.draw(st.sampled_from(names))
        how = data.draw(st.sampled_from(["odd", "left out"]))
        if how == "odd":
            changed[name] = data.draw(st.sampled_from(_ODD_VALUES))
        else:
            del changed[name]
    changed[data.draw(st.sampled_from(["extra", "$type"]))] = "x" if names else cls.__name__
    for json_data in (written, changed):
        expected = _outcome(lambda d: cattrs_own(d, cls), json_data)
        if json_data.get("$type", cls.__name__) != cls.__name__:
            assert _outcome(lambda d: converter.structure(d, cls), json_data)[0] == "error"
            continue
        assert _outcome(lambda d: converter.structure(d, cls), json_data) == expected
        assert _outcome(structure_any, json_data) == expected


def test_a_thread_of_messages_structures_quickly_and_the_same() -> None:
    messages = [
        UserMessage("q"),
        AssistantMessage(
            "a",
            (ToolCall("c1", "f", {"a": [1, {"b": None}]}),),
            (InvalidToolCall("c2", "g", "{", "bad"),),
            Usage(3, 4, 7),
            "tool_calls",
            "id-1",
            "model",
        ),
        ToolMessage("r", "c1", "f", is_error=True),
        SystemMessage("s"),
    ]
    written = [converter.unstructure(m, type(m)) for m in messages]
    back = [structure_any(w) for w in written]
    assert back == messages
    assert [type(m) for m in back] == [type(m) for m in messages]
    assert [to_json(m) for m in back] == [to_json(m) for m in messages]
