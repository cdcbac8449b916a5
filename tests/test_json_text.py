"""The journal's records made as JSON text (protocol/_json_text.py): each tagged class's
writer makes the very text the converter and the encoder made, and a journal encoder's
text records decode to the events they were made of."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    AgentAction,
    AgentOutput,
    AssistantMessage,
    CompactDecoder,
    CompactEncoder,
    EventData,
    FinishChunk,
    InvalidToolCall,
    RunInfo,
    StreamEvent,
    ToolCall,
    ToolMessage,
    Usage,
    UserMessage,
    converter,
    unstructure_any,
)
from protocol._convert import TAGGED_CLASSES
from protocol._json_text import dump, flat, text_of, value_text
from tests.test_compact import _agent_turns, _turns
from tests.test_protocol import json_values

from .test_protocol import ALL_CLASSES  # (registers each class's strategy)

assert ALL_CLASSES


def as_stored(records: list[Any]) -> list[Any]:
    """A journal encoder's ``records`` (their JSON text, or bare texts' tuples) as a
    store writes them and reads them back."""
    return list(
        json.loads(f"[{','.join(r if type(r) is str else json.dumps(r) for r in records)}]")
    )


def _old(value: Any, cls: type) -> str:
    """What the journal wrote before: the converter's JSON, then the encoder's text."""
    return json.dumps(converter.unstructure(value, cls), ensure_ascii=False, separators=(",", ":"))


@pytest.mark.parametrize("cls", TAGGED_CLASSES, ids=lambda c: c.__name__)
@given(data=st.data())
@settings(max_examples=40)
def test_each_class_is_written_as_the_converter_and_the_encoder_wrote_it(
    cls: type, data: st.DataObject
) -> None:
    obj = data.draw(st.from_type(cls))
    assert text_of(obj) == _old(obj, cls)
    assert value_text(obj) == _old(obj, cls)


def test_a_field_that_holds_what_its_type_does_not_say_is_written_as_the_converter_does() -> None:
    usage = Usage(1, 2, 3)
    odd: list[Any] = [
        AssistantMessage("hi", usage=usage),
        ToolMessage("seen", tool_call_id="c", name="look"),
        ToolCall(id="c", name="look", args={"deep": [1, {"x": None}]}),
    ]
    # Past the converters (as a subclass or a hand-made object could be): an int where
    # text is typed, a bool where an int is, a list where a tuple is, a dict in a tuple.
    object.__setattr__(odd[0], "content", 7)
    object.__setattr__(usage, "total_tokens", True)
    object.__setattr__(odd[1], "is_error", 1)
    listed = AssistantMessage(tool_calls=(ToolCall(id="c", name="n"),))
    object.__setattr__(listed, "tool_calls", list(listed.tool_calls))
    other = AssistantMessage(tool_calls=(ToolCall(id="c", name="n"),))  # (another class)
    object.__setattr__(other, "tool_calls", (InvalidToolCall("c", "n", "{", "bad"),))
    odd.append(listed)
    for obj in odd:
        assert text_of(obj) == _old(obj, type(obj)), obj
    with pytest.raises(AttributeError):  # (as the converter fails on it)
        _old(other, AssistantMessage)
    with pytest.raises(AttributeError):
        text_of(other)


@given(json_values)
def test_json_values_are_written_as_the_encoder_wrote_them(value: Any) -> None:
    expected = json.dumps(unstructure_any(value), ensure_ascii=False, separators=(",", ":"))
    assert value_text(value) == expected
    if isinstance(value, dict):
        assert flat(value) == all(
            type(v) in (str, int, float, bool, type(None)) for v in value.values()
        )


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, -0.0, 1e300, 2**70, '\ud800 é "q"\n', True]
)
def test_values_the_encoder_writes_its_own_way(value: Any) -> None:
    assert value_text(value) == dump(value) == json.dumps(value, ensure_ascii=False)


def _text_round_trip(events: list[StreamEvent]) -> list[StreamEvent]:
    encoder, records = CompactEncoder(delta=True, text=True), list[Any]()
    for event in events:
        encoder.encode(event, records)
    assert all(type(r) is str or type(r) is tuple for r in records)
    decoder = CompactDecoder()
    read = [json.loads(r) if type(r) is str else r for r in records]
    return [e for e in (decoder.decode(r) for r in read) if e is not None]


def _odd_run() -> list[StreamEvent]:
    """A run whose payloads hold what JSON writes its own way, or not at all."""
    root = RunInfo(run_id="r", name="odd", kind="chain", metadata={"k": [1, 2.5], "n": None})
    tool = RunInfo(run_id="t", name="look", kind="tool", parent_ids=("r",), tags=("x",))
    answer = AssistantMessage("x" * 150, tool_calls=(ToolCall(id="c", name="look"),))
    action = AgentAction("look", {"a": [1, {"b": math.inf}]}, "c", "log")
    return [
        StreamEvent(event="on_chain_start", run=root, seq=0, data=EventData(input={"q": 2**70})),
        StreamEvent(
            event="on_tool_start", run=tool, seq=0, data=EventData(input={"where": [math.nan]})
        ),
        StreamEvent(
            event="on_tool_end",
            run=tool,
            seq=1,
            data=EventData(input={"where": [math.nan]}, output=object()),
            status="ok",
            end_time=2.0,
        ),
        StreamEvent(event="on_chain_stream", run=root, seq=1, chunk=answer),
        StreamEvent(event="on_chain_stream", run=root, seq=2, chunk={"action": action}),
        StreamEvent(
            event="on_chain_stream",
            run=root,
            seq=3,
            chunk=FinishChunk(output=answer.content, messages=(UserMessage("\ud800"), answer)),
        ),
        StreamEvent(
            event="on_chain_end",
            run=root,
            seq=4,
            data=EventData(
                input={"q": 2**70},
                output=AgentOutput(input="q", output=answer.content, messages=(answer,)),
            ),
            status="ok",
            end_time=3.5,
        ),
    ]


@pytest.mark.parametrize(
    "events", [_turns(4), _agent_turns(), _odd_run()], ids=["turns", "agent", "odd"]
)
def test_a_journal_encoders_text_records_decode_to_their_events(events: list[StreamEvent]) -> None:
    decoded = _text_round_trip(events)
    plain = CompactEncoder(delta=True)  # (its records: the text read back)
    records: list[Any] = []
    for event in events:
        plain.encode(event, records)
    decoder = CompactDecoder()
    assert decoded == [e for e in (decoder.decode(r) for r in records) if e is not None]
    assert len(decoded) == len(events)
    for got, sent in zip(decoded, events, strict=True):
        assert got.event == sent.event and got.run == sent.run and got.seq == sent.seq
        if type(sent.data.output) is object:  # (an output of no JSON form: its repr)
            assert got.data.output.startswith("<object object at")
            continue
        same = json.dumps(unstructure_any(dict(got.data)), sort_keys=True)
        assert same == json.dumps(unstructure_any(dict(sent.data)), sort_keys=True)
        if sent.chunk is not None and not isinstance(sent.chunk, dict):
            assert got.chunk == sent.chunk
