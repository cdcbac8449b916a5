"""Stream events as a type checker sees them: one class per event name, with the data
that event carries typed, so that

    async for event in events:
        if event.event == "on_chat_model_stream":
            print(event.data.chunk.content)   # checked: chunk is an AssistantMessageChunk

type-checks, and a misspelt event name (``"on_chat_model_strem"``) or field
(``chunk.contnet``) is reported by ``mypy --strict``. At run time every event is a
:class:`StreamEvent`, and each name here is :class:`StreamEvent` itself (so they can be
imported and used in annotations anywhere).

Runs of a kind of one's own (a performer with ``run_kind = "retriever"``) stream events
whose names are not among these; read them as :class:`StreamEvent`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ._events import EventData, StreamEvent

if TYPE_CHECKING:
    from ._chat import AssistantMessage, AssistantMessageChunk

    class StartData(EventData):
        @property
        def input(self) -> Any: ...

    class ChatModelStartData(EventData):
        @property
        def input(self) -> dict[str, Any]: ...

    class StreamData(EventData):
        @property
        def chunk(self) -> Any: ...

    class ChatModelStreamData(EventData):
        @property
        def chunk(self) -> AssistantMessageChunk: ...

    class EndData(EventData):
        @property
        def output(self) -> Any: ...

    class ChatModelEndData(EventData):
        @property
        def output(self) -> AssistantMessage: ...

    class ErrorData(EventData):
        @property
        def error(self) -> str: ...

    class ChainStartEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chain_start"]: ...
        @property
        def data(self) -> StartData: ...

    class ChainStreamEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chain_stream"]: ...
        @property
        def data(self) -> StreamData: ...

    class ChainEndEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chain_end"]: ...
        @property
        def data(self) -> EndData: ...

    class ChainErrorEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chain_error"]: ...
        @property
        def data(self) -> ErrorData: ...

    class ChatModelStartEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chat_model_start"]: ...
        @property
        def data(self) -> ChatModelStartData: ...

    class ChatModelStreamEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chat_model_stream"]: ...
        @property
        def data(self) -> ChatModelStreamData: ...

    class ChatModelEndEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chat_model_end"]: ...
        @property
        def data(self) -> ChatModelEndData: ...

    class ChatModelErrorEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_chat_model_error"]: ...
        @property
        def data(self) -> ErrorData: ...

    class ToolStartEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_tool_start"]: ...
        @property
        def data(self) -> StartData: ...

    class ToolStreamEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_tool_stream"]: ...
        @property
        def data(self) -> StreamData: ...

    class ToolEndEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_tool_end"]: ...
        @property
        def data(self) -> EndData: ...

    class ToolErrorEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_tool_error"]: ...
        @property
        def data(self) -> ErrorData: ...

    class CustomEvent(StreamEvent):
        @property
        def event(self) -> Literal["on_custom_event"]: ...
        @property
        def data(self) -> StreamData: ...

    TypedEvent: TypeAlias = (
        ChainStartEvent
        | ChainStreamEvent
        | ChainEndEvent
        | ChainErrorEvent
        | ChatModelStartEvent
        | ChatModelStreamEvent
        | ChatModelEndEvent
        | ChatModelErrorEvent
        | ToolStartEvent
        | ToolStreamEvent
        | ToolEndEvent
        | ToolErrorEvent
        | CustomEvent
    )
    """What event streams yield, for a type checker: compare ``event.event`` with a name
    to narrow it to that event's class (and its data's types)."""

else:
    # At run time every event is a StreamEvent, and so is each of these names.
    ChainStartEvent = ChainStreamEvent = ChainEndEvent = ChainErrorEvent = StreamEvent
    ChatModelStartEvent = ChatModelStreamEvent = StreamEvent
    ChatModelEndEvent = ChatModelErrorEvent = StreamEvent
    ToolStartEvent = ToolStreamEvent = ToolEndEvent = ToolErrorEvent = StreamEvent
    CustomEvent = StreamEvent
    TypedEvent = StreamEvent

EventName: TypeAlias = Literal[
    "on_chain_start",
    "on_chain_stream",
    "on_chain_end",
    "on_chain_error",
    "on_chat_model_start",
    "on_chat_model_stream",
    "on_chat_model_end",
    "on_chat_model_error",
    "on_tool_start",
    "on_tool_stream",
    "on_tool_end",
    "on_tool_error",
    "on_custom_event",
]
"""The names of the events of Troupe's own kinds of run."""
