"""Troupe's vocabulary: chat messages, actor mail, lifecycle messages, stream events.

Pure data: frozen, slotted attrs classes and one cattrs converter for the edges.
Nothing here does I/O or knows about trio.
"""

from ._chat import AssistantMessage as AssistantMessage
from ._chat import AssistantMessageChunk as AssistantMessageChunk
from ._chat import ChatMessage as ChatMessage
from ._chat import InvalidToolCall as InvalidToolCall
from ._chat import SystemMessage as SystemMessage
from ._chat import ToolCall as ToolCall
from ._chat import ToolCallChunk as ToolCallChunk
from ._chat import ToolMessage as ToolMessage
from ._chat import ToolSpec as ToolSpec
from ._chat import Usage as Usage
from ._chat import UserMessage as UserMessage
from ._chat import merge_chunks as merge_chunks
from ._coerce import coerce_message as coerce_message
from ._coerce import coerce_messages as coerce_messages
from ._compact import IDENTITY as COMPACT_IDENTITY
from ._compact import SAME_AS_START as COMPACT_SAME_AS_START
from ._compact import WHOLE as COMPACT_WHOLE
from ._compact import CompactDecoder as CompactDecoder
from ._compact import CompactEncoder as CompactEncoder
from ._compact import CompactError as CompactError
from ._compact import CompactLinks as CompactLinks
from ._compact import CompactSlots as CompactSlots
from ._compact import bare_text as compact_bare_text
from ._compact import chunk_from_flat as compact_chunk_from_flat
from ._compact import error_type_name as error_type_name
from ._compact import extended_input as compact_extended_input
from ._convert import DICT_TAG as DICT_TAG
from ._convert import TAGGED_CLASSES as TAGGED_CLASSES
from ._convert import TYPE_KEY as TYPE_KEY
from ._convert import VOUCHING_CLASSES as VOUCHING_CLASSES
from ._convert import SerializationError as SerializationError
from ._convert import converter as converter
from ._convert import from_json as from_json
from ._convert import identity_vouches as identity_vouches
from ._convert import json_default as json_default
from ._convert import matches_known as matches_known
from ._convert import same_json as same_json
from ._convert import shown_repr as shown_repr
from ._convert import structure_any as structure_any
from ._convert import to_json as to_json
from ._convert import unstructure_any as unstructure_any
from ._convert import unstructure_known as unstructure_known
from ._events import CUSTOM_EVENT as CUSTOM_EVENT
from ._events import EventData as EventData
from ._events import Phase as Phase
from ._events import RunInfo as RunInfo
from ._events import RunStatus as RunStatus
from ._events import StreamEvent as StreamEvent
from ._events import event_names as event_names
from ._events import make_stream_event as make_stream_event
from ._frozen import FrozenDict as FrozenDict
from ._frozen import FrozenList as FrozenList
from ._frozen import frozen_json as frozen_json
from ._frozen import thawed as thawed
from ._json_text import dump as dump_json
from ._lifecycle import CustomEventDispatched as CustomEventDispatched
from ._lifecycle import FailureStatus as FailureStatus
from ._lifecycle import LifecycleMessage as LifecycleMessage
from ._lifecycle import RunEnded as RunEnded
from ._lifecycle import RunFailed as RunFailed
from ._lifecycle import RunStarted as RunStarted
from ._lifecycle import RunStreamed as RunStreamed
from ._lifecycle import RunStreamedMany as RunStreamedMany
from ._mail import ActionsChunk as ActionsChunk
from ._mail import AgentAction as AgentAction
from ._mail import AgentOutput as AgentOutput
from ._mail import AgentRequest as AgentRequest
from ._mail import AgentStep as AgentStep
from ._mail import ChatRequest as ChatRequest
from ._mail import FinishChunk as FinishChunk
from ._mail import ResponseFormat as ResponseFormat
from ._mail import StepChunk as StepChunk
from ._mail import StepsChunk as StepsChunk
from ._mail import ToolRequest as ToolRequest
from ._pause import Decision as Decision
from ._pause import Paused as Paused
from ._pause import PendingKind as PendingKind
from ._pause import PendingRequest as PendingRequest
from ._state import STATE_EVENT as STATE_EVENT
from ._state import StateDelta as StateDelta
from ._typed import ChainEndEvent as ChainEndEvent
from ._typed import ChainErrorEvent as ChainErrorEvent
from ._typed import ChainStartEvent as ChainStartEvent
from ._typed import ChainStreamEvent as ChainStreamEvent
from ._typed import ChatModelEndEvent as ChatModelEndEvent
from ._typed import ChatModelErrorEvent as ChatModelErrorEvent
from ._typed import ChatModelStartEvent as ChatModelStartEvent
from ._typed import ChatModelStreamEvent as ChatModelStreamEvent
from ._typed import CustomEvent as CustomEvent
from ._typed import EventName as EventName
from ._typed import ToolEndEvent as ToolEndEvent
from ._typed import ToolErrorEvent as ToolErrorEvent
from ._typed import ToolStartEvent as ToolStartEvent
from ._typed import ToolStreamEvent as ToolStreamEvent
from ._typed import TypedEvent as TypedEvent
from ._view import AddableDict as AddableDict
from ._view import AddableView as AddableView
from ._view import DictView as DictView

__all__ = [
    # chat
    "AssistantMessage",
    "AssistantMessageChunk",
    "ChatMessage",
    "InvalidToolCall",
    "SystemMessage",
    "ToolCall",
    "ToolCallChunk",
    "ToolMessage",
    "ToolSpec",
    "Usage",
    "FrozenDict",
    "FrozenList",
    "frozen_json",
    "thawed",
    "UserMessage",
    "merge_chunks",
    "coerce_message",
    "coerce_messages",
    # actor mail and step chunks
    "ActionsChunk",
    "AgentAction",
    "AgentOutput",
    "AgentRequest",
    "AgentStep",
    "ChatRequest",
    "FinishChunk",
    "ResponseFormat",
    "StepChunk",
    "StepsChunk",
    "ToolRequest",
    # lifecycle
    "CustomEventDispatched",
    "FailureStatus",
    "Decision",
    "Paused",
    "PendingKind",
    "PendingRequest",
    "STATE_EVENT",
    "StateDelta",
    "LifecycleMessage",
    "RunEnded",
    "RunFailed",
    "RunStarted",
    "RunStreamed",
    "RunStreamedMany",
    # events
    "CUSTOM_EVENT",
    "EventData",
    "Phase",
    "RunInfo",
    "RunStatus",
    "StreamEvent",
    # typed events (for type checkers; each is StreamEvent at run time)
    "TypedEvent",
    "EventName",
    "ChainStartEvent",
    "ChainStreamEvent",
    "ChainEndEvent",
    "ChainErrorEvent",
    "ChatModelStartEvent",
    "ChatModelStreamEvent",
    "ChatModelEndEvent",
    "ChatModelErrorEvent",
    "ToolStartEvent",
    "ToolStreamEvent",
    "ToolEndEvent",
    "ToolErrorEvent",
    "CustomEvent",
    "event_names",
    "make_stream_event",
    # serialization
    "TAGGED_CLASSES",
    "DICT_TAG",
    "TYPE_KEY",
    "VOUCHING_CLASSES",
    "AddableDict",
    "AddableView",
    "COMPACT_IDENTITY",
    "COMPACT_SAME_AS_START",
    "COMPACT_WHOLE",
    "CompactDecoder",
    "CompactEncoder",
    "CompactError",
    "CompactLinks",
    "CompactSlots",
    "error_type_name",
    "DictView",
    "SerializationError",
    "compact_bare_text",
    "compact_chunk_from_flat",
    "compact_extended_input",
    "converter",
    "from_json",
    "json_default",
    "identity_vouches",
    "matches_known",
    "same_json",
    "shown_repr",
    "structure_any",
    "to_json",
    "dump_json",
    "unstructure_any",
    "unstructure_known",
]
