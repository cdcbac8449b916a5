"""A plain dict that has a ``"$type"`` key itself (a tool that returns ``{"$type":
"UserMessage", "content": "hi"}``) is escaped where it is written for an ``Any``
position (protocol/_convert.py's docstring) and read back as exactly that dict on every
path: the converter, the compact codec (a journal's delta records too, and its text),
a replay's comparison, a journal read back (join, resume, crash recovery: see
tests/test_type_key_dicts_runs.py), the wire. Everything else is written as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol
from protocol import (
    DICT_TAG,
    TAGGED_CLASSES,
    AgentAction,
    AgentOutput,
    AgentStep,
    AssistantMessage,
    AssistantMessageChunk,
    CustomEventDispatched,
    Decision,
    EventData,
    PendingRequest,
    RunEnded,
    RunInfo,
    SerializationError,
    StateDelta,
    StreamEvent,
    ToolCall,
    ToolSpec,
    UserMessage,
    converter,
    from_json,
    matches_known,
    same_json,
    structure_any,
    to_json,
    unstructure_any,
    unstructure_known,
)
from protocol._json_text import dump, flat, text_of, value_text
from tests.test_json_text import as_stored

from .test_protocol import ALL_CLASSES, json_scalars

assert ALL_CLASSES  # (registers each class's strategy)

FITS = {"$type": "UserMessage", "content": "hi"}
"""A dict that fits the class its tag names: it read back as a UserMessage."""
FITS_NOT = {"$type": "UserMessage", "text": "hi"}
"""One that does not: its journal could not be read."""
ODD = [
    FITS,
    FITS_NOT,
    {"$type": 5},
    {"$type": None, "x": 1},
    {"$type": "NoSuchClass"},
    {"$type": DICT_TAG, "value": {"a": 1}},  # one that looks escaped
    {"$type": DICT_TAG},
    {"$type": ["UserMessage"], "content": "hi"},
]

keys = st.sampled_from(["$type", "value", "content", "a"]) | st.text(max_size=6)
tags = st.sampled_from([c.__name__ for c in TAGGED_CLASSES] + [DICT_TAG, "x"])
json_with_tags = st.recursive(
    json_scalars | tags,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(keys, inner, max_size=4)
        | st.builds(lambda d, t: {"$type": t, **d}, st.dictionaries(keys, inner, max_size=3), tags)
    ),
    max_leaves=14,
)
"""JSON values whose dicts often have a ``"$type"`` key, naming a class or not."""


def _via_text(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _escaped_all_through(value: Any) -> bool:
    """Whether no dict in the JSON ``value`` has a ``"$type"`` key but escapes (and
    tagged objects' JSON, which these values do not hold)."""
    if isinstance(value, dict):
        if "$type" in value:
            return (
                value["$type"] == DICT_TAG
                and set(value) == {"$type", "value"}
                and all(map(_escaped_all_through, value["value"].values()))
            )
        return all(map(_escaped_all_through, value.values()))
    if isinstance(value, list):
        return all(map(_escaped_all_through, value))
    return True


@given(json_with_tags)
@settings(max_examples=300)
def test_json_is_json_again_through_every_writer(value: Any) -> None:
    written = unstructure_any(value)
    assert _escaped_all_through(written)
    assert structure_any(_via_text(written)) == value
    assert same_json(structure_any(written), value)
    assert unstructure_known(value, {}) == written
    assert matches_known(value, written, {})
    assert value_text(value) == dump(written)
    assert structure_any(json.loads(to_json(value))) == value


@given(json_with_tags)
@settings(max_examples=100)
def test_a_dict_without_a_type_key_is_written_as_before(value: Any) -> None:
    # As the converter wrote JSON before: a value with no "$type" key is its own JSON
    def plain(v: Any) -> bool:
        if isinstance(v, dict):
            return "$type" not in v and all(map(plain, v.values()))
        return all(map(plain, v)) if isinstance(v, list) else True

    if plain(value):
        assert unstructure_any(value) == value and dump(unstructure_any(value)) == dump(value)


@pytest.mark.parametrize("odd", ODD, ids=repr)
def test_each_odd_dict_is_escaped_and_read_back_as_itself(odd: dict[str, Any]) -> None:
    written = unstructure_any(odd)
    assert written == {"$type": DICT_TAG, "value": odd}
    assert structure_any(_via_text(written)) == odd
    assert type(structure_any(written)) is dict
    nested = {"k": [odd, {"deeper": odd}], "$type": odd}
    assert structure_any(_via_text(unstructure_any(nested))) == nested
    assert not flat(odd)  # (the journal writes a flat dict as it is: not this one)


@pytest.mark.parametrize(
    "bad",
    [
        {"$type": DICT_TAG},
        {"$type": DICT_TAG, "value": [1]},
        {"$type": DICT_TAG, "value": {}, "more": 1},
        {"$type": DICT_TAG, "dict": {}},
    ],
    ids=repr,
)
def test_a_malformed_escape_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(SerializationError, match="escaped dict"):
        structure_any(bad)
    run = RunInfo(run_id="r", name="n", kind="tool")
    event = StreamEvent(event="on_tool_start", run=run, seq=0, data=EventData(input=1))
    shown = converter.unstructure(event, StreamEvent)
    shown["data"]["input"] = bad
    with pytest.raises(SerializationError):
        from_json(json.dumps(shown), StreamEvent)


def test_protocol_objects_still_read_back_as_themselves() -> None:
    for obj in (UserMessage("hi"), AssistantMessage("a"), StateDelta(({"op": "add"},))):
        written = unstructure_any(obj)
        assert written["$type"] == type(obj).__name__
        assert structure_any(_via_text(written)) == obj
    mixed = [UserMessage("hi"), FITS, {"m": UserMessage("x"), "d": FITS}]
    back = structure_any(_via_text(unstructure_any(mixed)))
    assert back == mixed
    assert type(back[0]) is UserMessage and type(back[1]) is dict
    assert type(back[2]["m"]) is UserMessage and type(back[2]["d"]) is dict


OBJECTS: list[Any] = [
    AgentOutput(input="q", output="x", structured=FITS),
    PendingRequest(id="p", kind="approval", name="pay", arguments=FITS),
    Decision(approve=True, arguments=FITS, value=FITS_NOT),
    RunEnded(run_id="r", output=[FITS, {"x": FITS_NOT}]),
    CustomEventDispatched(name="n", data=FITS, run_id="r"),
    StateDelta(({"op": "add", "path": "/a", "value": FITS},)),
    AgentAction(tool="t", tool_input={"$type": "x", "n": FITS}, tool_call_id="c"),
    AgentStep(AgentAction(tool="t", tool_input={"n": FITS}, tool_call_id="c"), observation="seen"),
    ToolSpec(name="t", description="d", parameters={"$type": "object", "properties": FITS}),
    ToolCall(id="c", name="t", args={"$type": "UserMessage", "content": "hi", "n": FITS}),
    AssistantMessage("", tool_calls=(ToolCall(id="c", name="t", args=FITS),)),
]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
def test_objects_holding_such_dicts_read_back_equal_on_every_path(obj: Any) -> None:
    cls = type(obj)
    written = unstructure_any(obj)
    assert written == converter.unstructure(obj, cls)
    assert structure_any(_via_text(written)) == obj
    assert converter.structure(_via_text(written), cls) == obj
    assert text_of(obj) == dump(written)  # the journal's writer: the same text
    assert unstructure_known(obj, {}) == written
    assert matches_known(obj, _via_text(written), {})


def test_a_dict_typed_field_is_written_as_it_is_its_values_escaped() -> None:
    # A field typed dict[str, Any] is no Any position: read back by its type, its own
    # "$type" key is never taken for a tag (a JSON schema's, a run's metadata).
    spec = ToolSpec(name="t", description="d", parameters={"$type": "object", "p": FITS})
    assert unstructure_any(spec)["parameters"] == {
        "$type": "object",
        "p": {"$type": DICT_TAG, "value": FITS},
    }
    # A tool call's arguments are the model's JSON, read back as they are: all as is.
    call = ToolCall(id="c", name="t", args={"$type": "x", "n": FITS})
    assert unstructure_any(call)["args"] == {"$type": "x", "n": FITS}
    run = RunInfo(run_id="r", name="n", kind="tool", metadata={"$type": "m", "n": FITS})
    event = StreamEvent(event="on_tool_start", run=run, seq=0, data=EventData(input=FITS))
    shown = converter.unstructure(event, StreamEvent)
    assert shown["metadata"] == {"$type": "m", "n": {"$type": DICT_TAG, "value": FITS}}
    assert shown["data"] == {"input": {"$type": DICT_TAG, "value": FITS}}
    back = from_json(to_json(event), StreamEvent)
    assert back == event and type(back.data.input) is dict


def test_a_replay_tells_a_changed_dict_from_the_journaled_one() -> None:
    # matches_known walks without making JSON: it says True only where they are the same
    written = unstructure_any({"out": FITS})
    assert matches_known({"out": FITS}, written, {})
    assert not matches_known({"out": dict(FITS, content="other")}, written, {})
    assert not matches_known({"out": UserMessage("hi")}, written, {})
    assert not matches_known({"out": FITS}, {"out": FITS}, {})  # (the unescaped form)
    end = RunEnded(run_id="r", output=FITS)
    assert matches_known(end, unstructure_any(end), {})
    assert not matches_known(end, {**unstructure_any(end), "output": FITS}, {})
    call = ToolCall(id="c", name="t", args={"n": FITS})
    assert matches_known(call, unstructure_any(call), {})
    assert not matches_known(call, unstructure_any(ToolCall(id="c", name="t", args={"n": 1})), {})


def _at(event: str, run: RunInfo, seq: int, **data: Any) -> StreamEvent:
    return StreamEvent(event=event, run=run, seq=seq, data=EventData(**data))


def _end(run: RunInfo, seq: int, asked: Any, output: Any) -> StreamEvent:
    """Run ``run``'s end, asked ``asked``."""
    data = EventData(input=asked, output=output, ended=True)
    return StreamEvent(
        event=f"on_{run.kind}_end", run=run, seq=seq, data=data, status="ok", end_time=2.0
    )


def _events(payload: Any) -> list[StreamEvent]:
    """A root agent run and a tool run under it whose input, output, stream chunk and
    custom event hold ``payload``; a chat model under it streams ``payload`` as a chunk
    that is no message chunk."""
    root = RunInfo(run_id="a", name="agent", kind="chain", metadata=dict(FITS))
    tool = RunInfo(
        run_id="t", name="fetch", kind="tool", parent_ids=("a",), metadata={"n": payload}
    )
    model = RunInfo(run_id="m", name="model", kind="chat_model", parent_ids=("a",))
    custom = RunInfo(run_id="c", name="note", kind="custom", parent_ids=("a", "t"))
    by_parts = {"$type": "x", "messages": [UserMessage("q"), payload]}  # (by parts, else)
    return [
        _at("on_chain_start", root, 0, input=by_parts),
        _at("on_tool_start", tool, 0, input=payload),
        _at("on_tool_stream", tool, 1, chunk=payload),
        _at("on_custom_event", custom, 2, chunk=payload),
        _end(tool, 3, payload, [payload, UserMessage("u")]),
        _at("on_chat_model_start", model, 0, input="q"),
        _at("on_chat_model_stream", model, 1, chunk=payload),
        _at("on_chat_model_stream", model, 2, chunk=AssistantMessageChunk("x")),
        _end(model, 3, "q", AssistantMessage("x")),
        _end(root, 4, by_parts, payload),
    ]


def _coded(events: list[StreamEvent], how: str) -> list[StreamEvent]:
    """``events`` encoded (``how``: without delta, with, with its records as text),
    stored and decoded."""
    encoder = protocol.CompactEncoder(delta=how != "plain", text=how == "delta text")
    records: list[Any] = []
    for event in events:
        encoder.encode(event, records)
    stored = as_stored(records) if how == "delta text" else _via_text(records)
    decoder = protocol.CompactDecoder()
    return [e for e in map(decoder.decode, stored) if e is not None]


@pytest.mark.parametrize("payload", [*ODD, [FITS], {"n": FITS}], ids=repr)
@pytest.mark.parametrize("how", ["plain", "delta", "delta text"])
def test_the_compact_codec_reads_every_such_payload_back(payload: Any, how: str) -> None:
    events = _events(payload)
    decoded = _coded(events, how)
    assert decoded == events
    assert [converter.unstructure(e, StreamEvent) for e in decoded] == [
        converter.unstructure(e, StreamEvent) for e in events
    ]
    found = [e.data.output for e in decoded if e.event == "on_tool_end"]
    assert found == [[payload, UserMessage("u")]] and type(found[0][1]) is UserMessage


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
@pytest.mark.parametrize("how", ["plain", "delta", "delta text"])
def test_the_compact_codec_reads_objects_holding_such_dicts_back(obj: Any, how: str) -> None:
    # (a delta encoder walks a payload's fields for messages to link: a field typed to
    # hold a dict is written as the converter writes it)
    events = _events(obj)
    assert _coded(events, how) == events


FIRST_USE = """
import json
from protocol import AgentAction, AgentStep, ToolCall, ToolSpec
from protocol._convert import converter, matches_known, unstructure_known
from protocol._json_text import text_of

fits = {"$type": "UserMessage", "content": "hi"}
objects = [
    AgentAction(tool="t", tool_input={"$type": "x", "n": fits}, tool_call_id="c"),
    AgentStep(AgentAction(tool="t", tool_input={"n": fits}, tool_call_id="c"), observation="s"),
    ToolSpec(name="t", description="d", parameters={"$type": "object", "properties": fits}),
    ToolCall(id="c", name="t", args={"$type": "UserMessage", "content": "hi", "n": fits}),
]
# before the converter is asked for any of these classes' hooks
known = [unstructure_known(o, {}) for o in objects]
texts = [text_of(o) for o in objects]
written = [converter.unstructure(o, type(o)) for o in objects]
assert known == written, (known, written)
assert [json.loads(t) for t in texts] == written, texts
assert all(matches_known(o, w, {}) for o, w in zip(objects, written))
print("ok")
"""


def test_every_writer_agrees_before_the_converter_made_a_class_hooks() -> None:
    # The converter makes a class's hooks when first asked for them: the writers that
    # do not ask it (the journal's unstructure_known and text, the replay's
    # matches_known) must write a dict-typed field as it does even before then (a
    # fresh process, these classes never used).
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", FIRST_USE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
