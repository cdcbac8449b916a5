"""The wire protocols: a run's events as server-sent events in the shapes frontends
speak. Each encoder turns one stream's events into SSE frames (bytes), in order.

- ``events``: LangChain's ``astream_events`` v2 dicts as JSON; SSE ``event:`` is the
  event's name and ``id:`` its position in the stream.
- ``ag-ui``: the AG-UI protocol's events.
- ``ui-message-stream``: the Vercel AI SDK's UI message stream (v1).
- ``compact``: Troupe's compact records (``protocol.CompactEncoder``, the codec the
  cluster's hosts use too): a run's identity once, then small records per event.

JSON is written by orjson (several times faster than the standard library on these
small objects); protocol objects inside (chunks, messages) go through the protocol's
converter, so they read back losslessly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar, Final, NamedTuple, Protocol

import attrs
import orjson
from starlette.responses import JSONResponse

from actors import HANDOFF_FROM
from protocol import (
    AssistantMessageChunk,
    CompactEncoder,
    Paused,
    PendingRequest,
    StateDelta,
    StepsChunk,
    StreamEvent,
    converter,
    shown_repr,
)
from runtime import RunCancelledError, describe_error

DONE: Final = b"data: [DONE]\n\n"
PENDING_SEPARATOR: Final = "/"
"""Between a paused run's id and a pending request's id, in the id a protocol's client
answers (an AG-UI interrupt's, an AI SDK approval's): no run id holds it."""


def pending_key(run_id: str, request: PendingRequest) -> str:
    """The id a client answers ``request`` of the paused run ``run_id`` by: it names the
    run as well, so the answer alone finds what it resumes."""
    return f"{run_id}{PENDING_SEPARATOR}{request.id}"


def paused_requests(event: StreamEvent, run_id: str) -> tuple[PendingRequest, ...]:
    """What the run ``run_id`` waits for, if ``event`` is its paused end."""
    if event.run_id != run_id or event.status != "paused":
        return ()
    output = event.data.output
    return output.pending if isinstance(output, Paused) else ()


def _default(value: Any) -> Any:
    if attrs.has(type(value)):
        return converter.unstructure(value)
    if isinstance(value, set | frozenset | tuple):  # (orjson refuses a named tuple)
        return list(value)
    if isinstance(value, float):  # a subclass (numpy.float64): json writes its number
        return float.__float__(value)  # (its own __float__ not asked, as json does not)
    raise TypeError(f"{type(value).__name__} has no JSON form")


def wire_json(value: Any) -> bytes:
    """``value`` as JSON bytes for the wire, never raising: protocol objects as the
    converter writes them (untagged), what json writes as json writes it, and a value
    with no JSON form as its repr, in its place (a tool's odd output must not break
    the stream, nor the event around it). (``protocol.to_json`` is strict: it refuses
    what has no JSON form, and tags protocol objects to read them back.)"""
    try:
        return orjson.dumps(value, default=_default)
    except (TypeError, orjson.JSONEncodeError):
        pass
    try:
        return orjson.dumps(_writable(value), default=_default)
    except (TypeError, orjson.JSONEncodeError, RecursionError):  # (nested too deeply)
        # (json's, escaped: a repr may hold a lone surrogate, which orjson refuses)
        return json.dumps(shown_repr(value)).encode()


class WireJSONResponse(JSONResponse):
    """A JSON response written by :func:`wire_json`: a text holding a lone surrogate
    (half an emoji a model streamed, a file's name os.fsdecode made) as its escape, as
    json writes it. Starlette's own (``json.dumps(ensure_ascii=False)``, then UTF-8)
    made text that no UTF-8 holds of it: the request failed with a 500."""

    def render(self, content: Any) -> bytes:
        return wire_json(content)


_ORJSON_LEAST: Final = -(2**63)
_ORJSON_PAST: Final = 2**64
"""The ints orjson writes: from ``_ORJSON_LEAST`` up to ``_ORJSON_PAST`` (json writes
any of up to 4,300 digits). (Not a ``range``: ``in`` one walks it for an int subclass,
an IntEnum member, from its first number on.)"""


def _writable(value: Any) -> Any:
    """``value`` made what orjson writes as json would have it: a dict key that is a
    subclass of str (a StrEnum member) its text, an int past 64 bits its digits, and
    each value with no JSON form (a dict with keys that are not text included: json
    writes them, the edge never did) its repr, in its place; through lists, tuples,
    sets and protocol objects (as the converter writes them)."""
    if isinstance(value, dict | list | tuple | set | frozenset) or attrs.has(type(value)):
        try:
            return _walked(value)
        except RecursionError:  # (nested too deeply: wire_json writes the whole repr)
            raise
        except Exception:  # a subclass's own __iter__ or items() raising: its repr
            return _shown(value)
    if isinstance(value, int) and not isinstance(value, bool):
        number = int.__int__(value)  # (an exact int: a subclass's own __lt__ not asked)
        if not _ORJSON_LEAST <= number < _ORJSON_PAST:
            try:
                return orjson.Fragment(int.__repr__(number))
            except ValueError:  # more digits than Python writes
                return _shown(value)
    try:
        orjson.dumps(value, default=_default)
    except (TypeError, orjson.JSONEncodeError):
        if isinstance(value, str):  # a lone surrogate (half an emoji, os.fsdecode's)
            # as json writes it (the journal's): its \udXXX escape, which a client's
            # JSON.parse reads as that code unit (two halves joined make the emoji)
            return orjson.Fragment(json.dumps(str.__str__(value)))
        return _shown(value)
    return value


def _shown(value: Any) -> Any:
    """``value``'s repr, in its place, as :func:`_writable` writes a text: one holding a
    lone surrogate (a ``__repr__`` showing a file's name os.fsdecode made) made orjson
    raise, and wire_json with it."""
    shown = shown_repr(value)
    try:
        shown.encode()
    except UnicodeEncodeError:
        return orjson.Fragment(json.dumps(shown))
    return shown


def _walked(value: Any) -> Any:
    """:func:`_writable` of a container or a protocol object: its items' each."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return _shown(value)
        written = {k if type(k) is str else str.__str__(k): _writable(v) for k, v in value.items()}
        try:
            "".join(written).encode()
        except UnicodeEncodeError:  # a key holding a lone surrogate (a file's name)
            # as json writes it, its escape; orjson refused it, and the whole value
            # (the event around it) was written as its repr, a string
            return orjson.Fragment(
                b"{"
                + b",".join(
                    json.dumps(k).encode() + b":" + orjson.dumps(v, default=_default)
                    for k, v in written.items()
                )
                + b"}"
            )
        return written
    if isinstance(value, list | tuple | set | frozenset):
        return [_writable(v) for v in value]
    return _writable(converter.unstructure(value))


def _text_chunk_parts() -> tuple[bytes, bytes]:
    """The JSON of a chunk of text alone, either side of its content, as the converter
    writes it."""
    marker = "\ue000troupe\ue000"
    whole = wire_json(AssistantMessageChunk(marker))
    head, _, tail = whole.partition(orjson.dumps(marker))
    return head, tail


_TEXT_HEAD, _TEXT_TAIL = _text_chunk_parts()


def chunk_json(chunk: Any) -> bytes:
    """``wire_json(chunk)``; a chunk of text alone (a token, the common case) without
    the converter's general path, which costs it about 15 times more."""
    if (
        chunk.__class__ is AssistantMessageChunk
        and chunk.content.__class__ is str
        and chunk.usage is None
        and chunk.finish_reason is None
        and chunk.id is None
        and not chunk.tool_call_chunks
    ):
        try:
            return _TEXT_HEAD + orjson.dumps(chunk.content) + _TEXT_TAIL
        except orjson.JSONEncodeError:  # a lone surrogate: wire_json writes its repr
            pass
    return wire_json(chunk)


def frame(data: bytes, *, event: str | None = None, id: int | None = None) -> bytes:
    """One server-sent event."""
    if event is None:
        if id is None:
            return b"data: " + data + b"\n\n"
        return b"id: %d\ndata: %b\n\n" % (id, data)
    if id is None:
        return b"event: %b\ndata: %b\n\n" % (event.encode(), data)
    return b"id: %d\nevent: %b\ndata: %b\n\n" % (id, event.encode(), data)


class WireEncoder(Protocol):
    """Turns one stream's events into SSE frames."""

    media_headers: ClassVar[dict[str, str]]

    def begin(self) -> list[bytes]:
        """Frames before the first event."""

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        """Frames for one event (``position`` counts from 1)."""

    def end(self, error: BaseException | None) -> list[bytes]:
        """Frames after the last event; ``error`` is how the run failed, if it did."""


class EventsEncoder:
    """``astream_events`` v2 dicts. The run's identity of a stream event is written once
    per run and reused for each of its tokens."""

    media_headers: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._prefixes: dict[str, bytes] = {}

    def begin(self) -> list[bytes]:
        return []

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        if event.status is None and event.event.endswith("_stream"):
            # the frame up to the chunk: its event line, and the run's identity
            run_id = event.run.run_id  # (event.run_id, a call less per token)
            prefix = self._prefixes.get(run_id)
            if prefix is None:
                identity = wire_json(_v2(event, {}))[: -len(b"{}}")] + b'{"chunk":'
                prefix = frame(identity, event=event.event)[: -len(b"\n\n")]
                self._prefixes[run_id] = prefix
            return [b"id: %d\n%b%b}}\n\n" % (position, prefix, chunk_json(event.chunk))]
        if event.status is not None:
            self._prefixes.pop(event.run_id, None)
        body = wire_json(_v2(event, dict(event.data.items())))
        return [frame(body, event=event.event, id=position)]

    def end(self, error: BaseException | None) -> list[bytes]:
        if error is None:
            return []
        return [frame(wire_json({"error": describe_error(error)}), event="error")]


class CompactWireEncoder:
    """Troupe's compact records (see :class:`protocol.CompactEncoder`): each frame's data
    is the JSON array of one event's records (its run's identity first, the first time
    this connection meets the run); ``id:`` is the event's position. Read them back with
    :class:`protocol.CompactDecoder`."""

    media_headers: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._encoder = CompactEncoder()

    def begin(self) -> list[bytes]:
        return []

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        records: list[list[Any]] = []
        self._encoder.encode(event, records)
        return [frame(wire_json(records), id=position)]

    def end(self, error: BaseException | None) -> list[bytes]:
        if error is None:
            return []
        return [frame(wire_json({"error": describe_error(error)}), event="error")]


def _v2(event: StreamEvent, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "event": event.event,
        "name": event.name,
        "run_id": event.run_id,
        "parent_ids": list(event.parent_ids),
        "tags": list(event.tags),
        "metadata": event.metadata,
        "data": data,
    }


def _tool_result_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    return wire_json(output).decode()


class Step(NamedTuple):
    """``step-start``, ``step-end`` (``name``: the model run's), ``text-start``,
    ``text``, ``text-end`` (``key``: the model run), or ``call-start``, ``call-args``,
    ``call-end`` (``key``: the call's id; ``name``: the tool's; ``value`` of
    ``call-end``: the call's whole arguments)."""

    what: str
    key: str
    value: str = ""
    name: str = ""


class _Speakers:
    """Who speaks in the conversation: the root's run, and every agent run the
    conversation was handed to from one of them (``handoff_from`` in its metadata),
    by run id. A model called inside a tool (an agent used as a tool, say) is not one:
    its messages are not the conversation's."""

    def __init__(self, root_id: str) -> None:
        self._root_id = root_id
        self._names: dict[str, str] = {}

    def see(self, event: StreamEvent) -> str | None:
        """Note a run that joins the conversation; the name of the agent that handed
        it on when ``event`` is the start of a handoff."""
        if event.phase != "start":
            return None
        if event.run_id == self._root_id:
            self._names[event.run_id] = event.name
            return None
        handed = event.metadata.get(HANDOFF_FROM)
        if event.kind == "chain" and handed is not None and self.speaker(event) is not None:
            self._names[event.run_id] = event.name
            return str(handed)
        return None

    def speaker(self, event: StreamEvent) -> str | None:
        """The agent of the conversation ``event``'s run works for directly, if any."""
        parents = event.parent_ids
        return self._names.get(parents[-1]) if parents else None

    def speaks(self, run_id: str) -> bool:
        """Whether ``run_id`` is an agent run of the conversation."""
        return run_id in self._names


class _Unanswered:
    """The tool calls of the conversation no tool run answered: a handoff, an unknown
    tool, arguments that are not JSON. The agent told its model (its step chunk holds
    the tool messages), and a frontend must hear it too, or it takes the call for one of
    its own that waits for an answer."""

    def __init__(self) -> None:
        self._started: set[str] = set()
        self._answered: set[str] = set()

    def seen(self, steps: list[Step]) -> list[Step]:
        """Note the calls whose start this stream sent (``steps``, returned as they are):
        only those are answered here. A call started in an earlier stream (a paused
        run's, which a resumed one replays) is not this stream's to answer."""
        for step in steps:
            if step.what == "call-start":
                self._started.add(step.key)
        return steps

    def answered(self, event: StreamEvent) -> None:
        """Note the call a tool run of the conversation answered (at its end)."""
        call_id = event.metadata.get("tool_call_id")
        if isinstance(call_id, str):
            self._answered.add(call_id)

    def told(self, event: StreamEvent) -> list[Any]:
        """The tool messages of a conversation agent's steps that no tool run gave."""
        chunk = event.chunk
        if not isinstance(chunk, StepsChunk):
            return []
        return [
            m
            for m in chunk.messages
            if m.tool_call_id in self._started and m.tool_call_id not in self._answered
        ]


class _ModelTurns:
    """How the root's model calls unfold, as the conversation-shaped protocols need
    it: when each text message and each tool call begins, grows and ends, as
    :class:`Step` s."""

    def __init__(self) -> None:
        self._texts: set[str] = set()  # model runs whose text message is open
        self._calls: dict[tuple[str, int], list[str]] = {}  # -> [call id, name, arguments]

    def steps(self, event: StreamEvent, speaker: str = "") -> list[Step]:
        """The steps of one event of a model run: a step starts, grows, or ends
        (``speaker``: the agent whose model it is, named by ``text-start``)."""
        phase = event.phase
        if phase == "start":
            return [Step("step-start", event.run_id, name=event.name)]
        if phase == "stream":
            return self.stream(event.run_id, event.chunk, speaker)
        return [*self.end(event.run_id), Step("step-end", event.run_id, name=event.name)]

    def stream(self, run_id: str, chunk: Any, speaker: str = "") -> list[Step]:
        if not isinstance(chunk, AssistantMessageChunk):
            return []
        out: list[Step] = []
        if chunk.content:
            if run_id not in self._texts:
                self._texts.add(run_id)
                out.append(Step("text-start", run_id, name=speaker))
            out.append(Step("text", run_id, chunk.content))
        for piece in chunk.tool_call_chunks:
            call = self._calls.get((run_id, piece.index))
            if call is None and piece.id:
                call = self._calls[(run_id, piece.index)] = [piece.id, piece.name or "", ""]
                out.append(Step("call-start", piece.id, name=call[1]))
            if call is not None and piece.args:
                call[2] += piece.args
                out.append(Step("call-args", call[0], piece.args))
        return out

    def end(self, run_id: str) -> list[Step]:
        out: list[Step] = []
        if run_id in self._texts:
            self._texts.discard(run_id)
            out.append(Step("text-end", run_id))
        for key in [k for k in self._calls if k[0] == run_id]:
            call_id, name, arguments = self._calls.pop(key)
            out.append(Step("call-end", call_id, arguments, name))
        return out


class AGUIEncoder:
    """AG-UI events: ``RUN_STARTED``; per model call of the root run ``STEP_STARTED`` /
    ``STEP_FINISHED`` around ``TEXT_MESSAGE_*`` and ``TOOL_CALL_START/ARGS/END``; per
    tool run of the root ``TOOL_CALL_RESULT``; custom events as ``CUSTOM``;
    ``RUN_FINISHED`` or ``RUN_ERROR``.

    AG-UI's state is the agent's shared state (the run's ``RunConfig.state``), never
    Troupe's run log (which it was: ``HttpAgent`` then sent 7.6 KB of run log back as
    ``state`` on the next turn, and a frontend's own state was overwritten): the state
    the client sent is the ``STATE_SNAPSHOT`` after ``RUN_STARTED``, and each change a
    tool of the tree makes (a ``state`` custom event holding a ``StateDelta``) is a
    ``STATE_DELTA`` of its RFC 6902 operations, in order with the tool events."""

    media_headers: ClassVar[dict[str, str]] = {}

    def __init__(self, thread_id: str, run_id: str, state: dict[str, Any] | None = None) -> None:
        self._thread_id = thread_id
        self._run_id = run_id
        self._state = state
        self._turns = _ModelTurns()
        self._speakers = _Speakers(run_id)
        self._unanswered = _Unanswered()
        self._result: Any = None
        self._pending: tuple[PendingRequest, ...] = ()

    def begin(self) -> list[bytes]:
        return []

    def _out(self, **fields: Any) -> bytes:
        return frame(wire_json({k: v for k, v in fields.items() if v is not None}))

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        out: list[bytes] = []
        kind, phase, run_id = event.kind, event.phase, event.run_id
        if run_id == self._run_id and phase == "start":
            out.append(self._out(type="RUN_STARTED", threadId=self._thread_id, runId=run_id))
            if self._state is not None:
                out.append(self._out(type="STATE_SNAPSHOT", snapshot=self._state))
        # The conversation is the root's and its handoffs': their own model calls and
        # tool calls (a model called inside a tool is not a message of the conversation).
        handed = self._speakers.see(event)
        if handed is not None:
            value = {"from": handed, "to": event.name, "runId": run_id}
            out.append(self._out(type="CUSTOM", name="handoff", value=value))
        speaker = self._speakers.speaker(event)
        own = speaker is not None
        if kind == "chat_model" and own:
            steps = self._unanswered.seen(self._turns.steps(event, speaker or ""))
            out += [self._frame(step) for step in steps]
        elif kind == "tool" and own and event.status is not None:
            self._unanswered.answered(event)
            out.append(self._tool_result(event))
        elif phase == "stream" and self._speakers.speaks(run_id):
            for told in self._unanswered.told(event):
                out.append(
                    self._out(
                        type="TOOL_CALL_RESULT",
                        messageId=f"{run_id}-{told.tool_call_id}",
                        toolCallId=told.tool_call_id,
                        content=told.content,
                        role="tool",
                    )
                )
        elif phase == "custom":
            chunk = event.data.chunk
            if isinstance(chunk, StateDelta):  # whichever run of the tree changed it
                out.append(self._out(type="STATE_DELTA", delta=list(chunk.patch)))
            else:
                out.append(self._out(type="CUSTOM", name=event.name, value=chunk))
        if run_id == self._run_id and event.status == "ok":
            self._result = event.data.output
        self._pending += paused_requests(event, self._run_id)
        return out

    def _interrupt(self, request: PendingRequest) -> dict[str, Any]:
        """A pending request as an AG-UI ``Interrupt`` (a tool call's: reason
        ``tool_call``; an ``interrupt()``'s: ``input_required``, its payload in
        ``metadata``)."""
        arguments = json.loads(wire_json(request.arguments))
        shown = {"kind": request.kind, "name": request.name, "arguments": arguments}
        if request.kind == "approval":
            return {
                "id": pending_key(self._run_id, request),
                "reason": "tool_call",
                "toolCallId": request.id,
                "message": f"approve {request.name}({wire_json(arguments).decode():.200})?",
                "metadata": {"troupe": shown},
            }
        message = arguments if isinstance(arguments, str) else f"{request.name} asks for input"
        return {
            "id": pending_key(self._run_id, request),
            "reason": "input_required",
            "message": message,
            "metadata": {"troupe": shown},
        }

    def _frame(self, step: Step) -> bytes:
        what, key = step.what, step.key
        if what == "step-start":
            return self._out(type="STEP_STARTED", stepName=step.name)
        if what == "step-end":
            return self._out(type="STEP_FINISHED", stepName=step.name)
        if what == "text-start":
            return self._out(
                type="TEXT_MESSAGE_START", messageId=key, role="assistant", name=step.name or None
            )
        if what == "text":
            return self._out(type="TEXT_MESSAGE_CONTENT", messageId=key, delta=step.value)
        if what == "text-end":
            return self._out(type="TEXT_MESSAGE_END", messageId=key)
        if what == "call-start":
            return self._out(type="TOOL_CALL_START", toolCallId=key, toolCallName=step.name)
        if what == "call-args":
            return self._out(type="TOOL_CALL_ARGS", toolCallId=key, delta=step.value)
        return self._out(type="TOOL_CALL_END", toolCallId=key)

    def _tool_result(self, event: StreamEvent) -> bytes:
        call_id = event.metadata.get("tool_call_id") or event.run_id
        if event.status == "ok":
            content = _tool_result_text(event.data.output)
        else:
            content = f"Error: {event.data.error}"
        return self._out(
            type="TOOL_CALL_RESULT",
            messageId=event.run_id,
            toolCallId=call_id,
            content=content,
            role="tool",
        )

    def end(self, error: BaseException | None) -> list[bytes]:
        if error is None and self._pending:
            # AG-UI's interrupt outcome: the next RunAgentInput's ``resume`` answers it
            interrupts = [self._interrupt(request) for request in self._pending]
            outcome = {"type": "interrupt", "interrupts": interrupts}
            return [
                self._out(
                    type="RUN_FINISHED",
                    threadId=self._thread_id,
                    runId=self._run_id,
                    outcome=outcome,
                )
            ]
        if error is None:
            return [
                self._out(
                    type="RUN_FINISHED",
                    threadId=self._thread_id,
                    runId=self._run_id,
                    result=json.loads(wire_json(self._result)),
                )
            ]
        code = "cancelled" if "Cancelled" in type(error).__name__ else "error"
        return [self._out(type="RUN_ERROR", message=describe_error(error), code=code)]


_FINISH_REASONS: Final = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content-filter",
    "tool_calls": "tool-calls",
    "client_tool_calls": "tool-calls",  # the client's tools are called: it goes on
}
"""A run's ``finish_reason`` as the AI SDK's ``finishReason`` (others are ``other``)."""


class UIMessageStreamEncoder:
    """The Vercel AI SDK's UI message stream: ``start``; per model call
    ``start-step``, ``text-start/delta/end`` and ``tool-input-start/delta/available``,
    ``finish-step``; per tool run ``tool-output-available`` (or ``-error``); custom
    events as ``data-{name}`` parts (a change of the shared state as ``data-state``,
    ``{"patch": [RFC 6902 operations]}``); ``finish`` with the run's ``finishReason``
    (``tool-calls`` when it ends on calls of the client's tools, or waits for an
    approval), after an ``error`` part if the run failed or an ``abort`` part if it
    was cancelled (the client stops as on its own ``stop()``, not in error); then
    ``[DONE]``."""

    media_headers: ClassVar[dict[str, str]] = {"x-vercel-ai-ui-message-stream": "v1"}

    def __init__(self, run_id: str) -> None:
        self._run_id = run_id
        self._turns = _ModelTurns()
        self._message_id = run_id
        self._denied: list[str] = []
        self._speakers = _Speakers(run_id)
        self._unanswered = _Unanswered()
        self._finish_reason = "other"

    def continues(self, message_id: str, denied: list[str]) -> None:
        """The run resumes a paused one: its parts join the client's assistant message
        ``message_id``, and the tool calls the person ``denied`` (by id) are told so."""
        self._message_id = message_id
        self._denied = denied

    def _out(self, **fields: Any) -> bytes:
        return frame(wire_json(fields))

    def begin(self) -> list[bytes]:
        return []

    def encode(self, position: int, event: StreamEvent) -> list[bytes]:
        kind, phase, run_id = event.kind, event.phase, event.run_id
        handed = self._speakers.see(event)
        if run_id == self._run_id and phase == "start":
            start = self._out(type="start", messageId=self._message_id)
            return [
                start,
                *(self._out(type="tool-output-denied", toolCallId=call) for call in self._denied),
            ]
        if handed is not None:
            data = {"from": handed, "to": event.name, "runId": run_id}
            return [self._out(type="data-handoff", data=data)]
        speaker = self._speakers.speaker(event)  # as in AGUIEncoder
        own = speaker is not None
        if kind == "chat_model" and own:
            steps = self._unanswered.seen(self._turns.steps(event, speaker or ""))
            return [self._frame(step) for step in steps]
        if phase == "stream" and self._speakers.speaks(run_id):
            return [
                self._out(type="tool-output-error", toolCallId=m.tool_call_id, errorText=m.content)
                if m.is_error
                else self._out(
                    type="tool-output-available", toolCallId=m.tool_call_id, output=m.content
                )
                for m in self._unanswered.told(event)
            ]
        if kind == "tool" and own and event.status is not None:
            self._unanswered.answered(event)
            call_id = event.metadata.get("tool_call_id") or run_id
            if event.status == "ok":
                output = json.loads(wire_json(event.data.output))
                return [self._out(type="tool-output-available", toolCallId=call_id, output=output)]
            return [
                self._out(type="tool-output-error", toolCallId=call_id, errorText=event.data.error)
            ]
        if phase == "custom":
            chunk = event.data.chunk
            if isinstance(chunk, StateDelta):
                return [self._out(type="data-state", data={"patch": list(chunk.patch)})]
            return [self._out(type=f"data-{event.name}", data=json.loads(wire_json(chunk)))]
        if run_id == self._run_id and event.status == "ok":
            reason = str(getattr(event.data.output, "finish_reason", ""))
            self._finish_reason = _FINISH_REASONS.get(reason, "other")
        pending = paused_requests(event, self._run_id)
        if pending:
            self._finish_reason = "tool-calls"
        return [self._pending(request) for request in pending]

    def _pending(self, request: PendingRequest) -> bytes:
        """A pending request: a tool call's approval (``tool-approval-request``; the
        next request's ``approval-responded`` tool part answers it), or an
        ``interrupt()``'s as a ``data-interrupt`` part (answered through
        ``POST /runs/{run_id}/resume``)."""
        key = pending_key(self._run_id, request)
        if request.kind == "approval":
            return self._out(type="tool-approval-request", approvalId=key, toolCallId=request.id)
        payload = json.loads(wire_json(request.arguments))
        return self._out(
            type="data-interrupt",
            id=key,
            data={"id": key, "name": request.name, "payload": payload},
        )

    def _frame(self, step: Step) -> bytes:
        what, key = step.what, step.key
        if what == "step-start":
            return self._out(type="start-step")
        if what == "step-end":
            return self._out(type="finish-step")
        if what == "text-start":
            if step.name:  # the agent speaking
                meta = {"troupe": {"agent": step.name}}
                return self._out(type="text-start", id=key, providerMetadata=meta)
            return self._out(type="text-start", id=key)
        if what == "text":
            return self._out(type="text-delta", id=key, delta=step.value)
        if what == "text-end":
            return self._out(type="text-end", id=key)
        if what == "call-start":
            return self._out(type="tool-input-start", toolCallId=key, toolName=step.name)
        if what == "call-args":
            return self._out(type="tool-input-delta", toolCallId=key, inputTextDelta=step.value)
        return self._out(
            type="tool-input-available",
            toolCallId=key,
            toolName=step.name,
            input=_arguments(step.value),
        )

    def end(self, error: BaseException | None) -> list[bytes]:
        out = []
        reason = self._finish_reason
        if isinstance(error, RunCancelledError):
            out.append(self._out(type="abort", reason=describe_error(error)))
            reason = "other"
        elif error is not None:
            out.append(self._out(type="error", errorText=describe_error(error)))
            reason = "error"
        out += [self._out(type="finish", finishReason=reason), DONE]
        return out


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return text


PROTOCOLS: Final[dict[str, Callable[[str, str], WireEncoder]]] = {
    "events": lambda thread_id, run_id: EventsEncoder(),
    "ag-ui": AGUIEncoder,
    "ui-message-stream": lambda thread_id, run_id: UIMessageStreamEncoder(run_id),
    "compact": lambda thread_id, run_id: CompactWireEncoder(),
}
"""Each wire protocol's encoder, made per stream from ``(thread_id, run_id)``."""
