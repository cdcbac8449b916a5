"""Chat vocabulary: messages, tool calls, streamed chunks, usage, tool specs.

Shapes follow OpenAI's chat completions API, so translating to and from the wire is
one field at a time, and LangChain's names (``content``, ``tool_calls``,
``tool_call_chunks``) so that ported code reads the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from attrs import field, frozen

from ._fast import fast_new, passes
from ._frozen import FrozenDict, frozen_json
from ._view import DictView


@fast_new
@frozen
class Usage:
    """Token counts of one model call, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _text(where: str, optional: bool = False) -> Callable[[Any], Any]:
    """The converter of the message's text field ``where`` (``"UserMessage.content"``):
    a ``str`` (or a subclass; ``None`` too if ``optional``) is kept as it is, anything
    else refused. A :func:`fast_new` class calls it only for what is not exactly a
    ``str`` (or ``None``): see :func:`passes`.

    A message's identity vouches for its JSON (see protocol/_compact.py), so it holds
    nothing that changes in place: a list of content parts (OpenAI's and LangChain's
    multimodal shape, which Troupe's text-only messages do not take) kept in one, and
    changed after it was journaled, read back as it first was.

    (mypy's attrs plugin reads only a converter that is a named function, so each
    field that uses one says ``type: ignore[misc]``: its parameter would be typed
    ``Any`` either way.)"""
    hint = " (messages are text: join its text parts)" if where.endswith(".content") else ""

    def text(value: Any) -> Any:
        """Raises: TypeError: ``value`` is not text, naming the field."""
        if isinstance(value, str) or (optional and value is None):
            return value
        told = hint if type(value) is list else ""
        raise TypeError(f"{where} must be a str, got {type(value).__name__}{told}")

    passes((str, type(None)) if optional else (str,), text)
    return text


@fast_new
@frozen
class ToolCall(DictView):
    """A complete tool call requested by the model; ``args`` is parsed JSON, read-only
    (a :class:`~protocol.FrozenDict`: :func:`~protocol.thawed` makes a copy to change).

    Reads as LangChain's tool-call dicts too: ``call["name"]``, ``call["args"]``.
    """

    type: ClassVar[str] = "tool_call"
    _view_keys = ("name", "args", "id", "type")
    # (text: the message that holds it vouches for its JSON; each ``type: ignore[misc]``
    # here and below: see _text)
    id: str = field(converter=_text("ToolCall.id"))  # type: ignore[misc]
    name: str = field(converter=_text("ToolCall.name"))  # type: ignore[misc]
    # read-only (see protocol/_frozen.py): the message's identity vouches for its JSON
    args: dict[str, Any] = field(factory=FrozenDict, converter=frozen_json)


@frozen
class InvalidToolCall(DictView):
    """A tool call whose arguments could not be parsed as a JSON object."""

    type: ClassVar[str] = "invalid_tool_call"
    _view_keys = ("name", "args", "id", "error", "type")
    id: str = field(converter=_text("InvalidToolCall.id"))  # type: ignore[misc]
    name: str = field(converter=_text("InvalidToolCall.name"))  # type: ignore[misc]
    args: str = field(converter=_text("InvalidToolCall.args"))  # type: ignore[misc]
    error: str = field(converter=_text("InvalidToolCall.error"))  # type: ignore[misc]


@frozen
class ToolCallChunk(DictView):
    """One streamed piece of a tool call, as OpenAI sends deltas.

    ``id`` and ``name`` come whole (some servers repeat them in every delta, so they are
    set, never concatenated); ``args`` fragments concatenate, per ``index``.
    """

    type: ClassVar[str] = "tool_call_chunk"
    _view_keys = ("name", "args", "id", "index", "type")
    index: int
    id: str | None = None
    name: str | None = None
    args: str | None = None


# (Each ``type: ignore[misc]`` below: see _text.)
_answer = _text("AssistantMessage.content")
_answer_id = _text("AssistantMessage.id", optional=True)
_finish_reason = _text("AssistantMessage.finish_reason", optional=True)
_model_name = _text("AssistantMessage.model_name", optional=True)


@fast_new
@frozen
class SystemMessage(DictView):
    """Instructions for the model."""

    role: ClassVar[str] = "system"
    type: ClassVar[str] = "system"
    _view_keys = ("content",)
    content: str = field(converter=_text("SystemMessage.content"))  # type: ignore[misc]


@fast_new
@frozen
class UserMessage(DictView):
    """What the user said."""

    role: ClassVar[str] = "user"
    type: ClassVar[str] = "human"
    _view_keys = ("content",)
    content: str = field(converter=_text("UserMessage.content"))  # type: ignore[misc]


def _usage_metadata(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _response_metadata(finish_reason: str | None, model_name: str | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    if finish_reason is not None:
        metadata["finish_reason"] = finish_reason
    if model_name is not None:
        metadata["model_name"] = model_name
    return metadata


def _calls(calls: Iterable[ToolCall]) -> tuple[ToolCall, ...]:
    made = calls if type(calls) is tuple else tuple(calls)
    for call in made:
        if not isinstance(call, ToolCall):
            _refuse_call("tool_calls", "a ToolCall", call)
    return made


def _invalid_calls(calls: Iterable[InvalidToolCall]) -> tuple[InvalidToolCall, ...]:
    made = calls if type(calls) is tuple else tuple(calls)
    for call in made:
        if not isinstance(call, InvalidToolCall):
            _refuse_call("invalid_tool_calls", "an InvalidToolCall", call)
    return made


def _refuse_call(where: str, kind: str, call: object) -> None:
    """Raises: TypeError: an item of ``AssistantMessage.<where>`` is not ``kind``
    (a LangChain tool-call dict was kept as it was, and the message could not be
    written: "'dict' object has no attribute 'id'" where it was journaled or sent)."""
    told = " (protocol.coerce_message takes LangChain's dicts)" if isinstance(call, dict) else ""
    raise TypeError(f"AssistantMessage.{where} holds a {type(call).__name__}, not {kind}{told}")


@fast_new
@frozen
class AssistantMessage(DictView):
    """A complete model turn: text and/or tool calls, with usage and finish reason.

    ``id`` is the server's id of the answer (``run-{run_id}`` when it gave none) and
    ``model_name`` the model that answered. LangChain's names read the same:
    ``usage_metadata`` (``input_tokens``, ``output_tokens``, ``total_tokens``) and
    ``response_metadata`` (``finish_reason``, ``model_name``).
    """

    role: ClassVar[str] = "assistant"
    type: ClassVar[str] = "ai"
    _view_keys = (
        "content",
        "tool_calls",
        "invalid_tool_calls",
        "usage",
        "finish_reason",
        "id",
        "usage_metadata",
        "response_metadata",
    )
    # Text, and tuples however given (a list is LangChain's habit): the message's
    # identity vouches for its JSON (see protocol/_compact.py), so nothing in it
    # changes in place.
    content: str = field(default="", converter=_answer)  # type: ignore[misc]
    tool_calls: tuple[ToolCall, ...] = field(default=(), converter=_calls)
    invalid_tool_calls: tuple[InvalidToolCall, ...] = field(default=(), converter=_invalid_calls)
    usage: Usage | None = None
    finish_reason: str | None = field(default=None, converter=_finish_reason)  # type: ignore[misc]
    id: str | None = field(default=None, converter=_answer_id)  # type: ignore[misc]
    model_name: str | None = field(default=None, converter=_model_name)  # type: ignore[misc]

    @property
    def usage_metadata(self) -> dict[str, int] | None:
        """LangChain's token counts: ``input_tokens``, ``output_tokens``, ``total_tokens``."""
        return _usage_metadata(self.usage)

    @property
    def response_metadata(self) -> dict[str, Any]:
        """LangChain's ``finish_reason`` and ``model_name``, those known."""
        return _response_metadata(self.finish_reason, self.model_name)


@fast_new
@frozen
class ToolMessage(DictView):
    """A tool's answer to one tool call, as the model will read it."""

    role: ClassVar[str] = "tool"
    type: ClassVar[str] = "tool"
    _view_keys = ("content", "tool_call_id", "name", "is_error")
    content: str = field(converter=_text("ToolMessage.content"))  # type: ignore[misc]
    tool_call_id: str = field(converter=_text("ToolMessage.tool_call_id"))  # type: ignore[misc]
    name: str = field(converter=_text("ToolMessage.name"))  # type: ignore[misc]
    is_error: bool = False


ChatMessage = SystemMessage | UserMessage | AssistantMessage | ToolMessage
"""Any message of a conversation."""


@fast_new
@frozen
class AssistantMessageChunk(DictView):
    """One streamed piece of a model turn: a token of text and/or tool-call pieces.

    ``id`` is the server's id of the answer it belongs to, when the server sends one.
    """

    type: ClassVar[str] = "AIMessageChunk"
    _view_keys = (
        "content",
        "tool_call_chunks",
        "usage",
        "finish_reason",
        "id",
        "usage_metadata",
        "response_metadata",
    )
    content: str = ""
    tool_call_chunks: tuple[ToolCallChunk, ...] = ()
    usage: Usage | None = None
    finish_reason: str | None = None
    id: str | None = None

    @property
    def usage_metadata(self) -> dict[str, int] | None:
        """LangChain's token counts, on the chunk that reports usage."""
        return _usage_metadata(self.usage)

    @property
    def response_metadata(self) -> dict[str, Any]:
        """LangChain's ``finish_reason``, on the chunk that ends the turn."""
        return _response_metadata(self.finish_reason, None)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The tool calls its pieces parse to so far, as LangChain's
        ``AIMessageChunk.tool_calls``: each piece's arguments read as partial JSON (an
        open string or object is closed), ``{}`` for none. A sum of chunks
        (``chunk + chunk``) gives the calls as they stand; :func:`merge_chunks` gives
        the complete message."""
        return self._parsed()[0]

    @property
    def invalid_tool_calls(self) -> list[dict[str, Any]]:
        """The pieces whose arguments are not (yet) a JSON object, as LangChain's."""
        return self._parsed()[1]

    def _parsed(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        calls: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for piece in _joined(self.tool_call_chunks):
            args = parse_partial_json(piece.args) if piece.args else {}
            if isinstance(args, dict):
                calls.append(
                    {"name": piece.name or "", "args": args, "id": piece.id, "type": "tool_call"}
                )
            else:
                invalid.append(
                    {
                        "name": piece.name,
                        "args": piece.args,
                        "id": piece.id,
                        "error": None,
                        "type": "invalid_tool_call",
                    }
                )
        return calls, invalid

    def __add__(self, other: AssistantMessageChunk) -> AssistantMessageChunk:
        """Two chunks as one, as LangChain's ``chunk + chunk``: text and tool-call pieces
        concatenate (:func:`merge_chunks` assembles the pieces); usage and finish reason
        are the later ones given."""
        if not isinstance(other, AssistantMessageChunk):
            return NotImplemented
        return AssistantMessageChunk(
            self.content + other.content,
            self.tool_call_chunks + other.tool_call_chunks,
            other.usage if other.usage is not None else self.usage,
            other.finish_reason if other.finish_reason is not None else self.finish_reason,
            self.id if self.id is not None else other.id,
        )


@frozen
class ToolSpec:
    """What the model is told about a tool: name, description, JSON schema of its args."""

    name: str
    description: str
    parameters: dict[str, Any] = field(factory=dict)


def merge_chunks(chunks: Iterable[AssistantMessageChunk]) -> AssistantMessage:
    """Assemble streamed chunks into the complete message.

    Text concatenates. Tool-call pieces group by ``index``: ``id`` and ``name`` are set
    by the latest piece that carries one, ``args`` fragments concatenate and are then
    parsed; arguments that are not a JSON object become an :class:`InvalidToolCall`.
    Usage and finish reason are the last ones reported.
    """
    text: list[str] = []
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    args: dict[int, list[str]] = {}
    usage: Usage | None = None
    finish_reason: str | None = None
    message_id: str | None = None
    for chunk in chunks:
        text.append(chunk.content)
        if message_id is None:
            message_id = chunk.id
        for piece in chunk.tool_call_chunks:
            fragments = args.setdefault(piece.index, [])
            if piece.id:
                ids[piece.index] = piece.id
            if piece.name:
                names[piece.index] = piece.name
            if piece.args:
                fragments.append(piece.args)
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.finish_reason is not None:
            finish_reason = chunk.finish_reason
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    for index in sorted(args):
        call_id = ids.get(index, f"call_{index}")
        name = names.get(index, "")
        raw = "".join(args[index])
        parsed, error = _parse_arguments(raw)
        if parsed is None:
            invalid.append(InvalidToolCall(id=call_id, name=name, args=raw, error=error))
        else:
            calls.append(ToolCall(id=call_id, name=name, args=parsed))
    return AssistantMessage(
        content="".join(text),
        tool_calls=tuple(calls),
        invalid_tool_calls=tuple(invalid),
        usage=usage,
        finish_reason=finish_reason,
        id=message_id,
    )


def _joined(pieces: tuple[ToolCallChunk, ...]) -> list[ToolCallChunk]:
    """Pieces of the same ``index`` joined (as LangChain's chunk sum does), in order."""
    if len(pieces) < 2:
        return list(pieces)
    by_index: dict[int, ToolCallChunk] = {}
    for piece in pieces:
        seen = by_index.get(piece.index)
        if seen is None:
            by_index[piece.index] = piece
        else:
            by_index[piece.index] = ToolCallChunk(
                piece.index,
                piece.id or seen.id,
                piece.name or seen.name,
                (seen.args or "") + (piece.args or "") or None,
            )
    return list(by_index.values())


def parse_partial_json(text: str) -> Any:
    """``text`` as JSON, or as the JSON it begins (a streamed tool call's arguments so
    far): an open string, array or object is closed, and a dangling piece at the end
    (a key without its value, a half-written literal) is dropped. ``None`` when not
    even that reads."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    kept: list[str] = []
    closers: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            elif char == "\n":
                char = "\\n"  # a raw newline inside a string
        elif char == '"':
            in_string = True
        elif char in "[{":
            closers.append("]" if char == "[" else "}")
        elif char in "]}":
            if not closers or closers[-1] != char:
                return None  # closes what was never opened: not JSON at all
            closers.pop()
        kept.append(char)
    if in_string:
        if escaped:
            kept.pop()  # a lone backslash at the end
        kept.append('"')
    ending = "".join(reversed(closers))
    while kept:
        try:
            return json.loads("".join(kept) + ending)
        except json.JSONDecodeError:
            kept.pop()  # drop the dangling end and try again
    return None


def _parse_arguments(raw: str) -> tuple[dict[str, Any] | None, str]:
    if not raw.strip():
        return {}, ""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON ({exc.msg}, at character {exc.pos})"
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, ""
