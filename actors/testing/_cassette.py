"""Record a real model's turns to a cassette file and replay them offline.

A cassette is JSON written through the protocol's converter: the model's identity (name,
model name, provider, its runs' ``ls_*`` metadata) and each turn's request, chunks
(text, tool-call deltas, usage, finish reason) and error. It is stable across runs, so it
can live in a repository: tool-call ids are renamed ``call_1``, ``call_2``, ... in order
of appearance in each conversation (the recording model hands the renamed ids to the
agent, so the recorded run and its replay show the same events), and nothing records
when or how fast the model answered.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from attrs import field, frozen

from protocol import (
    AssistantMessage,
    AssistantMessageChunk,
    ChatRequest,
    ToolMessage,
    converter,
)
from runtime import Run, describe_error

from .._chat_model import ChatModel, ChunkSink
from .._errors import ModelError
from .._fields import metadata_dict, tag_tuple

CASSETTE_FORMAT: Final = "troupe-cassette/1"


class CassetteMismatchError(ModelError):
    """A replayed model was asked for a turn its cassette does not hold; the message
    names the first difference from the recorded request it was compared with."""


# -- tool-call ids -----------------------------------------------------------------------


def _request_ids(request: ChatRequest) -> dict[str, str]:
    """Each tool-call id of the conversation, renamed in order of first appearance."""
    names: dict[str, str] = {}
    for message in request.messages:
        ids: list[str] = []
        if isinstance(message, AssistantMessage):
            ids = [c.id for c in message.tool_calls] + [c.id for c in message.invalid_tool_calls]
        elif isinstance(message, ToolMessage):
            ids = [message.tool_call_id]
        for value in ids:
            names.setdefault(value, f"call_{len(names) + 1}")
    return names


def normalise_request(request: ChatRequest) -> ChatRequest:
    """``request`` with its tool-call ids renamed ``call_1``, ``call_2``, ... and its
    answers' ids ``msg_1``, ``msg_2``, ... in order of appearance."""
    names = _request_ids(request)
    messages = []
    answers = 0
    for message in request.messages:
        if isinstance(message, AssistantMessage):
            answers += 1
            message = attrs.evolve(
                message,
                id=f"msg_{answers}",
                tool_calls=tuple(attrs.evolve(c, id=names[c.id]) for c in message.tool_calls),
                invalid_tool_calls=tuple(
                    attrs.evolve(c, id=names[c.id]) for c in message.invalid_tool_calls
                ),
            )
        elif isinstance(message, ToolMessage):
            message = attrs.evolve(message, tool_call_id=names[message.tool_call_id])
        messages.append(message)
    return attrs.evolve(request, messages=tuple(messages))


class _ChunkIds:
    """Renames the ids a turn streams: tool calls continue the request's numbering, the
    answer's own id becomes ``msg_{n}`` for the conversation's n-th answer."""

    def __init__(self, request: ChatRequest) -> None:
        self.next = len(_request_ids(request)) + 1
        self.names: dict[str, str] = {}
        answers = sum(1 for m in request.messages if isinstance(m, AssistantMessage))
        self.message_id = f"msg_{answers + 1}"

    def rename(self, chunk: AssistantMessageChunk) -> AssistantMessageChunk:
        if chunk.id != self.message_id:  # every chunk, so the answer's id is replayed
            chunk = attrs.evolve(chunk, id=self.message_id)
        if not any(c.id for c in chunk.tool_call_chunks):
            return chunk
        renamed = []
        for piece in chunk.tool_call_chunks:
            if piece.id:
                if piece.id not in self.names:
                    self.names[piece.id] = f"call_{self.next}"
                    self.next += 1
                piece = attrs.evolve(piece, id=self.names[piece.id])
            renamed.append(piece)
        return attrs.evolve(chunk, tool_call_chunks=tuple(renamed))


# -- the file ----------------------------------------------------------------------------


@frozen
class RecordedTurn:
    """One turn of a cassette: the request (ids normalised), what the model streamed,
    and the error it ended with, if any."""

    request: ChatRequest
    chunks: tuple[AssistantMessageChunk, ...]
    error: str | None = None


@frozen
class ModelIdentity:
    """What the recorded model's runs showed of it, so a replay's events are the same."""

    name: str
    model_name: str
    provider: str
    metadata: dict[str, Any] = field(factory=dict)
    """The model runs' own ``ls_*`` metadata."""
    tags: tuple[str, ...] = ()
    performer_metadata: dict[str, Any] = field(factory=dict)


def _dumps(identity: ModelIdentity, turns: Sequence[RecordedTurn]) -> str:
    data = {
        "format": CASSETTE_FORMAT,
        "model": converter.unstructure(identity),
        "turns": [
            {
                "request": converter.unstructure(t.request),
                "chunks": [converter.unstructure(c) for c in t.chunks],
                "error": t.error,
            }
            for t in turns
        ],
    }
    return json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def load_cassette(path: str | os.PathLike[str]) -> tuple[ModelIdentity, list[RecordedTurn]]:
    """Read a cassette file.

    Raises:
        FileNotFoundError: there is none at ``path`` (the message says how to record one).
        ValueError: the file is not a cassette this version reads.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no cassette at {path}: record one with RecordingChatModel(model, {str(path)!r}) "
            "(or cassette_model(..., record=True))"
        ) from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != CASSETTE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"format is {found!r}, not {CASSETTE_FORMAT!r}")
        identity = converter.structure(data["model"], ModelIdentity)
        turns = [
            RecordedTurn(
                converter.structure(t["request"], ChatRequest),
                tuple(converter.structure(c, AssistantMessageChunk) for c in t["chunks"]),
                t.get("error"),
            )
            for t in data["turns"]
        ]
    except Exception as exc:  # bad JSON, missing keys, cattrs' structure errors (groups)
        problem = describe_error(exc)
        raise ValueError(f"{path} is not a cassette Troupe can read: {problem}") from exc
    return identity, turns


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# -- recording ---------------------------------------------------------------------------


class _RecordingSink(ChunkSink):
    """A sink that renames tool-call ids and keeps every chunk it streams."""

    __slots__ = ("_ids", "recorded")

    def __init__(self, run: Run, ids: _ChunkIds) -> None:
        super().__init__(run)
        self._ids = ids
        self.recorded: list[AssistantMessageChunk] = []

    async def send(self, chunk: AssistantMessageChunk) -> None:
        chunk = self._ids.rename(chunk)
        self.recorded.append(chunk)
        await super().send(chunk)

    async def send_many(self, chunks: Sequence[AssistantMessageChunk]) -> None:
        renamed = [self._ids.rename(c) for c in chunks]
        self.recorded.extend(renamed)
        await super().send_many(renamed)


@attrs.define
class _Tape:
    turns: list[RecordedTurn | None] = attrs.Factory(list)
    identity: ModelIdentity | None = None


def _chat_model(value: ChatModel) -> ChatModel:
    if not isinstance(value, ChatModel):
        raise TypeError(f"RecordingChatModel records a ChatModel, got {value!r:.80}")
    return value


def _default_name(self: RecordingChatModel) -> str:
    return self.model.name


@frozen(eq=False)
class RecordingChatModel(ChatModel):
    """``model``, recording each turn it plays into the cassette at ``path``.

    The file is rewritten (atomically) after every turn, so an interrupted test keeps
    what was recorded. Runs show the wrapped model's name, tags, metadata and ``ls_*``
    metadata, and its actor state (an HTTP client) is the wrapped model's.
    """

    model: ChatModel = field(converter=_chat_model)
    path: Path = field(converter=Path)
    name: str = field(default=attrs.Factory(_default_name, takes_self=True))
    tags: tuple[str, ...] = field(
        default=attrs.Factory(lambda self: self.model.tags, takes_self=True), converter=tag_tuple
    )
    metadata: dict[str, Any] = field(
        default=attrs.Factory(lambda self: self.model.metadata, takes_self=True),
        converter=metadata_dict,
    )
    _tape: _Tape = field(factory=_Tape, init=False, repr=False)

    @property
    def provider(self) -> str:  # type: ignore[override]  # the wrapped model's
        return self.model.provider

    @property
    def model_name(self) -> str:
        return self.model.model_name

    @property
    def max_concurrency(self) -> int | None:  # type: ignore[override]  # the wrapped model's
        return self.model.max_concurrency

    def local_metadata(self, message: ChatRequest) -> dict[str, Any]:
        return self.model.local_metadata(message)

    def open_actor(self) -> Any:
        return self.model.open_actor()

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        raise NotImplementedError("a RecordingChatModel plays its model through perform")

    async def perform(self, message: ChatRequest, run: Run) -> AssistantMessage:
        request = normalise_request(message)
        tape = self._tape
        slot = len(tape.turns)
        tape.turns.append(None)  # turns keep the order they began in
        sink = _RecordingSink(run, _ChunkIds(request))
        try:
            await self.model.generate(request, sink)
        except ModelError as exc:
            self._keep(slot, RecordedTurn(request, tuple(sink.recorded), _message_of(exc)))
            raise
        self._keep(slot, RecordedTurn(request, tuple(sink.recorded)))
        return sink.message(self.model_name)

    def _keep(self, slot: int, turn: RecordedTurn) -> None:
        tape = self._tape
        tape.turns[slot] = turn
        if tape.identity is None:
            tape.identity = ModelIdentity(
                self.name,
                self.model_name,
                self.provider,
                dict(self.local_metadata(turn.request)),
                self.tags,
                self.metadata,
            )
        done = [t for t in tape.turns if t is not None]
        _write_atomically(self.path, _dumps(tape.identity, done))


# -- replaying ---------------------------------------------------------------------------


@attrs.define
class _Reel:
    turns: list[RecordedTurn]
    used: list[bool]


def _load(path: Path) -> tuple[ModelIdentity, _Reel]:
    identity, turns = load_cassette(path)
    return identity, _Reel(turns, [False] * len(turns))


@frozen(eq=False)
class ReplayChatModel(ChatModel):
    """Replays the cassette at ``path`` offline: the same chunks, in the same order, and
    the same error where the recorded model failed.

    Each request is matched against the recorded ones with ids normalised: the first
    unplayed identical turn plays (an identical turn plays again once all are played,
    so the same conversation can run many times).

    Raises:
        FileNotFoundError, ValueError: no readable cassette at ``path``.
    """

    path: Path = field(converter=Path)
    _loaded: tuple[ModelIdentity, _Reel] = field(
        init=False,
        repr=False,
        default=attrs.Factory(lambda self: _load(self.path), takes_self=True),
    )
    name: str = field(default=attrs.Factory(lambda self: self._loaded[0].name, takes_self=True))
    token_delay: float = 0.0
    tags: tuple[str, ...] = field(
        default=attrs.Factory(lambda self: self._loaded[0].tags, takes_self=True),
        converter=tag_tuple,
    )
    metadata: dict[str, Any] = field(
        default=attrs.Factory(lambda self: self._loaded[0].performer_metadata, takes_self=True),
        converter=metadata_dict,
    )

    @property
    def provider(self) -> str:  # type: ignore[override]  # the recorded model's
        return self._loaded[0].provider

    @property
    def model_name(self) -> str:
        return self._loaded[0].model_name

    @property
    def turns(self) -> Sequence[RecordedTurn]:
        """The cassette's turns."""
        return tuple(self._loaded[1].turns)

    def local_metadata(self, message: ChatRequest) -> dict[str, Any]:
        return self._loaded[0].metadata

    async def generate(self, request: ChatRequest, sink: ChunkSink) -> None:
        import trio

        turn = self._take(normalise_request(request))
        for chunk in turn.chunks:
            if self.token_delay:
                await trio.sleep(self.token_delay)
            await sink.send(chunk)
        if turn.error is not None:
            raise ModelError(turn.error)

    def _take(self, request: ChatRequest) -> RecordedTurn:
        reel = self._loaded[1]
        matches = [i for i, t in enumerate(reel.turns) if t.request == request]
        unplayed = [i for i in matches if not reel.used[i]]
        if matches:
            index = (unplayed or matches)[0]
            reel.used[index] = True
            return reel.turns[index]
        raise CassetteMismatchError(self._mismatch(request))

    def _mismatch(self, request: ChatRequest) -> str:
        reel = self._loaded[1]
        if not reel.turns:
            return f"the cassette {self.path} holds no turns"
        unplayed = [i for i, used in enumerate(reel.used) if not used]
        index = unplayed[0] if unplayed else len(reel.turns) - 1
        which = "the next unplayed" if unplayed else "the last"
        difference = first_difference(
            converter.unstructure(reel.turns[index].request), converter.unstructure(request)
        )
        return (
            f"the request was not recorded in the cassette {self.path}: compared with "
            f"{which} recorded request (turn {index + 1} of {len(reel.turns)}), {difference}. "
            "Record the cassette again if the conversation changed on purpose."
        )


def first_difference(recorded: Any, got: Any, path: str = "") -> str:
    """Where two JSON values first differ, as ``at messages[2].content: recorded 'a', got 'b'``."""
    where = path or "the top"
    if isinstance(recorded, dict) and isinstance(got, dict):
        for key in sorted(set(recorded) | set(got), key=str):
            if key not in got:
                return f"at {path}.{key}: recorded {_short(recorded[key])}, got nothing".replace(
                    "at .", "at "
                )
            if key not in recorded:
                return f"at {path}.{key}: got {_short(got[key])}, not recorded".replace(
                    "at .", "at "
                )
            if recorded[key] != got[key]:
                return first_difference(recorded[key], got[key], f"{path}.{key}".lstrip("."))
        return f"no difference at {where}"
    if isinstance(recorded, list) and isinstance(got, list):
        for index, (a, b) in enumerate(zip(recorded, got, strict=False)):
            if a != b:
                return first_difference(a, b, f"{path}[{index}]")
        if len(recorded) != len(got):
            return f"at {where}: recorded {len(recorded)} items, got {len(got)}"
        return f"no difference at {where}"
    return f"at {where}: recorded {_short(recorded)}, got {_short(got)}"


def _message_of(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__: its type, at least
        return describe_error(exc)


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def cassette_model(
    path: str | os.PathLike[str], model: ChatModel | None = None, *, record: bool = False
) -> ChatModel:
    """The model for a test: replay the cassette at ``path`` if it exists, otherwise
    (or with ``record=True``) record ``model`` into it.

    Raises:
        ValueError: recording was asked for, or there is no cassette yet, and no
            ``model`` was given.
    """
    path = Path(path)
    if path.exists() and not record:
        return ReplayChatModel(path)
    if model is None:
        raise ValueError(
            f"no cassette at {path} to replay and no model to record it with: "
            "pass cassette_model(path, OpenAIChatModel(...))"
        )
    return RecordingChatModel(model, path)
