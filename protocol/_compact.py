"""The compact codec: one stream's events as small JSON-shaped records, for the edges
that carry many events (a cluster's hosts, a compact HTTP stream).

A run's identity (name, kind, parent ids, tags, metadata, start time) is sent once,
in an identity record, the first time one of its events is encoded; its events after
that name the run by a small number. Records are lists of JSON values, so that any
transport can carry them (JSON, msgpack, pickle of plain data):

- ``["i", n, run_id, name, kind, parent_ids, tags, metadata, start_time]``: run ``n``;
- ``[n, seq, chunk]``: a stream event of run ``n`` (the hot path: one per token); for a
  chat model's run, a chunk that is only text of the run's current message is just
  that text (a string), and the message's id travels once, with its first chunk;
- ``[n, seq, event, data, status, end_time]``: a start or terminal event of run ``n``;
  a terminal event retires ``n``; an error event made where the exception was at hand
  adds its type's qualified name (:func:`error_type_name`), read back by a replay;
- ``["e", event]``: any other event (a custom event), whole, as the converter writes it.

Payloads go through the protocol's converter, so they read back as the same protocol
objects; a payload with no JSON form is written as its ``repr`` (an odd tool output
must not break the stream).
"""

from __future__ import annotations

from typing import Any, Final, final

from cattrs.errors import BaseValidationError

from ._chat import AssistantMessageChunk
from ._convert import SerializationError, converter, structure_any, unstructure_any
from ._events import EventData, RunInfo, StreamEvent

IDENTITY: Final = "i"
WHOLE: Final = "e"


class CompactError(ValueError):
    """A record the decoder cannot read (malformed, or naming a run it was never told
    of)."""


def _payload(value: Any) -> Any:
    try:
        return unstructure_any(value)
    except SerializationError:
        return repr(value)


def _data(data: EventData) -> dict[str, Any]:
    out = {key: _payload(value) for key, value in data.items()}
    return out


def error_type_name(exc: BaseException) -> str:
    """``module.QualifiedName`` of ``exc``'s type; for an exception that stands for
    another (read back from a journal, or from a host), the one it stands for, as its
    ``type_name`` attribute says."""
    named = getattr(exc, "type_name", None)
    if isinstance(named, str):
        return named
    cls = type(exc)
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain_text(chunk: AssistantMessageChunk) -> bool:
    return not chunk.tool_call_chunks and chunk.usage is None and chunk.finish_reason is None


class _Sent:
    """What the encoder keeps of an open run."""

    __slots__ = ("chat", "message_id", "number")

    def __init__(self, number: int, chat: bool) -> None:
        self.number = number
        self.chat = chat
        self.message_id: str | None = None


@final
class CompactEncoder:
    """Turns one stream's events into compact records, in order."""

    __slots__ = ("_next", "_runs")

    def __init__(self, first_number: int = 0) -> None:
        """``first_number``: the number of the first run told of (a stream that goes on
        from an earlier one numbers its runs after that one's)."""
        self._runs: dict[str, _Sent] = {}
        self._next = first_number

    @property
    def open_runs(self) -> int:
        """Runs whose identity was sent and whose terminal event was not yet encoded."""
        return len(self._runs)

    def encode(self, event: StreamEvent, out: list[list[Any]]) -> None:
        """Append the records for ``event`` (its run's identity first, if new) to ``out``."""
        run = event.run
        if event.status is None and event.event.endswith("_stream"):
            sent = self._runs.get(run.run_id)
            if sent is None:
                sent = self._identify(run, out)
            chunk = event.chunk
            if not sent.chat:
                out.append([sent.number, event.seq, _payload(chunk)])
            elif type(chunk) is AssistantMessageChunk:
                if chunk.id == sent.message_id and _plain_text(chunk):
                    out.append([sent.number, event.seq, chunk.content])
                else:
                    sent.message_id = chunk.id
                    out.append([sent.number, event.seq, _payload(chunk)])
            else:  # not a message chunk, from a chat model: sent whole
                out.append([WHOLE, converter.unstructure(event, StreamEvent)])
            return
        if run.kind == "custom" or not event.event.startswith("on_"):
            out.append([WHOLE, converter.unstructure(event, StreamEvent)])
            return
        sent = self._runs.get(run.run_id)
        if sent is None:
            sent = self._identify(run, out)
        if event.status is not None:
            del self._runs[run.run_id]
        record = [
            sent.number,
            event.seq,
            event.event,
            _data(event.data),
            event.status,
            event.end_time,
        ]
        if event.status == "error" and event.exception is not None:
            record.append(error_type_name(event.exception))
        out.append(record)

    def _identify(self, run: RunInfo, out: list[list[Any]]) -> _Sent:
        sent = self._runs[run.run_id] = _Sent(self._next, run.kind == "chat_model")
        self._next += 1
        out.append(
            [
                IDENTITY,
                sent.number,
                run.run_id,
                run.name,
                run.kind,
                list(run.parent_ids),
                list(run.tags),
                _payload(run.metadata),
                run.start_time,
            ]
        )
        return sent


class _Open:
    """What the decoder keeps of an open run."""

    __slots__ = ("chat", "info", "input", "message_id", "number", "seq", "stream_event")

    def __init__(self, info: RunInfo, number: int) -> None:
        self.info = info
        self.number = number
        self.stream_event = f"on_{info.kind}_stream"
        self.chat = info.kind == "chat_model"
        self.message_id: str | None = None
        self.seq = -1
        self.input: Any = None


@final
class CompactDecoder:
    """Turns the records of one stream back into events, in order."""

    __slots__ = ("_by_id", "_runs")

    def __init__(self) -> None:
        self._runs: dict[int, _Open] = {}
        self._by_id: dict[str, _Open] = {}

    @property
    def open_runs(self) -> list[RunInfo]:
        """The runs told of whose terminal event has not come, in the order they were
        told of (parents before their children)."""
        return [run.info for run in self._runs.values()]

    def decode(self, record: Any) -> StreamEvent | None:
        """The event of ``record``; ``None`` for an identity record.

        Raises:
            CompactError: the record is malformed or names a run never told of.
        """
        try:
            head = record[0]
            if type(head) is int:
                run = self._runs[head]
                if len(record) == 3:
                    run.seq = seq = record[1]
                    payload = record[2]
                    if not run.chat:
                        chunk = structure_any(payload)
                    elif type(payload) is str:
                        chunk = AssistantMessageChunk(content=payload, id=run.message_id)
                    else:
                        chunk = converter.structure(payload, AssistantMessageChunk)
                        run.message_id = chunk.id
                    return StreamEvent(event=run.stream_event, run=run.info, seq=seq, chunk=chunk)
                _, seq, name, raw, status, end_time = record[:6]  # (an error's type aside)
                data = converter.structure(raw, EventData)
                if status is not None:
                    del self._runs[head]
                    self._by_id.pop(run.info.run_id, None)
                else:
                    run.seq = seq
                    run.input = data.input
                return StreamEvent(
                    event=name,
                    run=run.info,
                    seq=seq,
                    data=data,
                    status=status,
                    end_time=end_time,
                )
            if head == IDENTITY:
                _, number, run_id, name, kind, parents, tags, metadata, start = record
                earlier = self._by_id.get(run_id)
                if earlier is not None:  # told again (a journal that goes on): one run
                    if self._runs.get(earlier.number) is earlier:
                        del self._runs[earlier.number]
                    self._runs[number] = earlier
                    earlier.number = number
                    return None
                self._runs[number] = self._by_id[run_id] = _Open(
                    RunInfo(
                        run_id=run_id,
                        name=name,
                        kind=kind,
                        parent_ids=tuple(parents),
                        tags=tuple(tags),
                        metadata=structure_any(metadata),
                        start_time=start,
                    ),
                    number,
                )
                return None
            if head == WHOLE:
                event = converter.structure(record[1], StreamEvent)
                known = self._by_id.get(event.run.run_id)
                if known is not None:  # custom events take their run's next seq too
                    known.seq = event.seq
                    if event.status is not None:  # an end written whole (a journal's)
                        del self._by_id[event.run.run_id]
                        del self._runs[known.number]
                return event
        except CompactError:
            raise
        except KeyError as exc:
            raise CompactError(f"a record names run {exc.args[0]!r}, never told of") from None
        except (TypeError, ValueError, IndexError, SerializationError, BaseValidationError) as exc:
            raise CompactError(f"malformed record {record!r:.200}: {exc}") from None
        raise CompactError(f"unknown record {record!r:.200}")

    def abandon(self, error: str, end_time: float) -> list[StreamEvent]:
        """The stream broke off (its source died): an error event for every open run,
        children before their parents, each saying ``error``. The decoder forgets them."""
        events = [
            StreamEvent(
                event=f"on_{run.info.kind}_error",
                run=run.info,
                seq=run.seq + 1,
                data=EventData(input=run.input, error=error),
                status="error",
                end_time=end_time,
            )
            for run in reversed(self._runs.values())
        ]
        self._runs.clear()
        self._by_id.clear()
        return events
