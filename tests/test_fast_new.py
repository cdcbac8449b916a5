"""The per-token messages (and the chat messages) are built by ``fast_new``'s generated
constructors; they must stay ordinary frozen attrs instances in every way a user can
tell."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import attrs
import pytest
from attrs import define, field, frozen

from protocol import (
    AssistantMessage,
    AssistantMessageChunk,
    EventData,
    RunInfo,
    RunStarted,
    RunStreamed,
    RunStreamedMany,
    StreamEvent,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
    ToolMessage,
    ToolSpec,
    Usage,
    UserMessage,
    converter,
    from_json,
    make_stream_event,
    to_json,
)
from protocol._fast import building, fast_new, maker, passes

INFO = RunInfo("run-1", "model", "chat_model", ("root",), ("t",), {"k": 1}, 1.5)
CHUNK = AssistantMessageChunk("hi", (ToolCallChunk(0, "c1", "f", "{"),), Usage(1, 2, 3), "stop")
EVENTS = [
    StreamEvent("on_chat_model_stream", INFO, 3, chunk=CHUNK),
    make_stream_event("on_chat_model_stream", INFO, 3, None, None, None, CHUNK),
    StreamEvent(
        "on_chat_model_end", INFO, 9, EventData(input="q", output=None, ended=True), "ok", 2.5
    ),
]


@pytest.mark.parametrize("event", EVENTS)
def test_an_event_made_fast_is_an_ordinary_frozen_instance(event: StreamEvent) -> None:
    assert type(event) is StreamEvent
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.seq = 4  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del event.seq
    assert attrs.evolve(event, seq=4).seq == 4
    assert type(attrs.evolve(event, seq=4)) is StreamEvent
    assert copy.copy(event) == event
    assert copy.deepcopy(event) == event
    assert pickle.loads(pickle.dumps(event)) == event
    assert from_json(to_json(event), StreamEvent) == event


def test_fast_and_plain_construction_agree_field_for_field() -> None:
    fast = make_stream_event("on_chat_model_stream", INFO, 3, None, None, None, CHUNK)
    plain = StreamEvent(event="on_chat_model_stream", run=INFO, seq=3, chunk=CHUNK)
    for f in attrs.fields(StreamEvent):
        assert getattr(fast, f.name) == getattr(plain, f.name), f.name
    assert fast["data"]["chunk"] is CHUNK
    assert fast.data == EventData(chunk=CHUNK)


def test_the_data_the_dict_face_builds_is_an_ordinary_event_data() -> None:
    """``event["data"]`` of a stream event made from its chunk builds its
    :class:`EventData` written out (past ``building``'s twin class): the same frozen
    instance ``event.data`` then gives, equal to one made the plain way."""
    event = make_stream_event("on_chat_model_stream", INFO, 3, None, None, None, CHUNK)
    data = event["data"]
    assert type(data) is EventData and data is event.data and event["data"] is data
    assert data == EventData(chunk=CHUNK) and repr(data) == repr(EventData(chunk=CHUNK))
    assert (data.input, data.output, data.error, data.tool_call_id, data.ended) == (
        None,
        None,
        None,
        None,
        False,
    )
    assert dict(data.items()) == {"chunk": CHUNK} and "output" not in data
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        data.chunk = None  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(event)) == event
    assert issubclass(building(EventData), EventData) and building(EventData) is not EventData


def test_a_building_twin_made_bare_in_c_becomes_its_class_once_filled() -> None:
    twin: Any = building(EventData)
    bare = twin()  # object's own __new__: no field set, no __init__ run, no argument
    assert type(bare) is twin and not hasattr(bare, "chunk")
    with pytest.raises(TypeError):
        twin(chunk=CHUNK)  # it takes none: its fields are stored one by one
    bare.input = bare.output = bare.error = bare.tool_call_id = None
    bare.chunk = CHUNK
    bare.ended = False
    bare.__class__ = EventData
    assert bare == EventData(chunk=CHUNK) and type(bare) is EventData
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        bare.chunk = None  # type: ignore[misc]
    # the class itself still makes its instances through its generated __new__
    assert type(EventData(chunk=CHUNK)) is EventData and EventData().chunk is None


def test_keyword_only_defaults_and_copies_survive() -> None:
    data = EventData(output=None, ended=True)
    assert data.ended and "output" in data
    assert pickle.loads(pickle.dumps(data)).ended
    assert copy.copy(data).ended
    assert EventData().ended is False
    assert AssistantMessageChunk() == AssistantMessageChunk("", (), None, None, None)
    assert converter.structure(converter.unstructure(CHUNK), AssistantMessageChunk) == CHUNK
    many = RunStreamedMany("r", (CHUNK, CHUNK))
    assert pickle.loads(pickle.dumps(many)) == many
    assert RunStreamed(run_id="r", chunk=1) == RunStreamed("r", 1)


def test_missing_and_unexpected_arguments_are_the_usual_type_errors() -> None:
    with pytest.raises(TypeError, match="seq"):
        StreamEvent("on_x_stream", INFO)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="colour"):
        AssistantMessageChunk(colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        EventData(None, None, None, None, None, True)  # type: ignore[call-arg]  # ended is keyword-only


def test_a_subclass_is_built_the_general_way() -> None:
    @frozen
    class Tagged(AssistantMessageChunk):
        tag: str = "x"

    chunk = Tagged("hi", tag="y")
    assert type(chunk) is Tagged
    assert (chunk.content, chunk.tag) == ("hi", "y")
    assert copy.copy(chunk).tag == "y"  # its own fields too
    assert attrs.evolve(chunk, content="ho") == Tagged("ho", tag="y")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        chunk.content = "no"  # type: ignore[misc]

    class Plain(AssistantMessageChunk):
        __slots__ = ()

    assert Plain("hey").content == "hey"
    assert type(Plain("hey")) is Plain


def _as_tuple(values: Any) -> tuple[Any, ...]:
    return values if type(values) is tuple else tuple(values)


def test_fast_new_runs_a_plain_function_converter_as_attrs_does() -> None:
    """A converter that is a plain function runs on the value given and on the default,
    through the class and through its maker (AssistantMessage's tool calls: a list kept
    inside a message would change under the journal, which trusts it by identity)."""

    @fast_new
    @frozen
    class Calls:
        calls: tuple[Any, ...] = field(default=[], converter=_as_tuple)

    given = [1, 2]
    for made in (Calls(given), maker(Calls)(given), Calls(calls=given)):
        assert type(made) is Calls and made.calls == (1, 2) and type(made.calls) is tuple
    assert Calls().calls == () and type(Calls().calls) is tuple
    kept = (3,)
    assert Calls(kept).calls is kept
    message = AssistantMessage("", tool_calls=[ToolCall(name="t", args={}, id="c")])
    assert type(message.tool_calls) is tuple


def test_fast_new_calls_a_passing_converter_only_for_the_types_it_does_not_pass() -> None:
    """A converter marked by ``passes(types, converter)`` (a message's text fields: a str kept,
    anything else refused) is not called for a value of exactly one of those types,
    in the class's constructor and its maker; a subclass of one, or another value, is
    converted, as attrs' own ``__init__`` (a subclass's) always does."""
    seen: list[Any] = []

    def to_text(value: Any) -> Any:
        seen.append(value)
        return value if isinstance(value, str) else f"<{type(value).__name__}>"

    passes((str, type(None)), to_text)

    @fast_new
    @frozen
    class Said:
        text: str | None = field(converter=to_text)
        more: str | None = field(default=None, converter=to_text)

    class Mine(Said):
        __slots__ = ()

    class Word(str):
        pass

    word = Word("hey")
    for make in (Said, maker(Said)):
        assert make("hi").text == "hi" and make(None).text is None and make("a").more is None
        assert seen == []
        made = make(word, 5)
        assert made.text is word and made.more == "<int>"
        assert seen == [word, 5]
        seen.clear()
    assert Mine("hi").text == "hi" and seen == ["hi", None]  # (attrs' __init__)


def test_fast_new_refuses_what_it_cannot_build() -> None:
    @define
    class Mutable:
        x: int

    @frozen
    class WithFactory:
        x: list[Any] = field(default=attrs.Factory(lambda self: [], takes_self=True))

    @frozen
    class WithConverter:
        x: int = field(converter=int)

    @frozen
    class WithHook:
        x: int

        def __attrs_post_init__(self) -> None:
            pass

    class Initialised:
        def __init__(self) -> None:
            self.ready = True

    @frozen
    class WithBaseInit(Initialised):
        x: int

    for cls, message in [
        (Mutable, "not a frozen"),
        (WithFactory, "plain fields"),
        (WithConverter, "plain fields"),
        (WithHook, "init hooks"),
        (WithBaseInit, "base class with an __init__"),
    ]:
        with pytest.raises(TypeError, match=message):
            fast_new(cls)


def test_fast_new_makes_a_factory_default_anew_for_each_instance() -> None:
    """A field with a factory (the lifecycle messages' and RunInfo's metadata) gets a new
    value from it whenever none is given, as attrs' own __init__ does: through the class,
    its maker and a subclass; a value given is kept as it is."""

    @fast_new
    @frozen
    class Held:
        name: str
        items: dict[str, Any] = field(factory=dict)
        more: tuple[Any, ...] = field(factory=list, converter=_as_tuple)

    class Plain(Held):
        __slots__ = ()

    first, second = Held("a"), maker(Held)("b")
    for made in (first, second, Plain("c")):
        assert made.items == {} and made.more == () and type(made.more) is tuple
    assert first.items is not second.items
    assert Plain("c").items is not Plain("d").items
    given = {"k": 1}
    assert Held("e", given).items is given
    assert Held("f", more=[1]).more == (1,)
    started = RunStarted("r", (), "chain", "n")
    assert started.metadata == {} and started.metadata is not RunStarted("s", (), "c", "n").metadata
    assert RunInfo("r", "n", "k").metadata == {}
    assert pickle.loads(pickle.dumps(started)) == started


def test_maker_builds_exactly_its_class() -> None:
    make = maker(RunStreamed)
    message = make("r", 5)
    assert type(message) is RunStreamed and message == RunStreamed("r", 5)
    with pytest.raises(KeyError):
        maker(ToolSpec)


MESSAGES = [
    SystemMessage("be brief"),
    UserMessage("hi"),
    AssistantMessage("", (ToolCall("c1", "f", {"a": [1]}),), (), Usage(1, 2, 3), "tool_calls"),
    ToolMessage("r", "c1", "f", is_error=True),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_a_chat_message_made_fast_is_an_ordinary_frozen_instance(message: Any) -> None:
    # The chat messages are fast_new classes too (a thread loads them by the thousand).
    cls = type(message)
    assert cls in (SystemMessage, UserMessage, AssistantMessage, ToolMessage)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        message.content = "changed"
    assert attrs.evolve(message, content="x").content == "x"
    assert type(attrs.evolve(message, content="x")) is cls
    assert copy.copy(message) == message and copy.deepcopy(message) == message
    assert pickle.loads(pickle.dumps(message)) == message
    assert from_json(to_json(message), cls) == message
    assert cls(**attrs.asdict(message, recurse=False)) == message
    with pytest.raises(TypeError, match="colour"):
        cls(colour="red")
