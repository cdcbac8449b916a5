"""Stream events: what subscribers receive, complete and self-describing.

Field names are those of LangChain's ``astream_events(version="v2")`` dicts, so
``event["event"]``, ``event["name"]``, ``event["data"]["chunk"].content`` and
``event["data"]["output"]`` work; the typed attributes say the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Literal, cast

from attrs import field, frozen

from ._fast import building, fast_new, maker
from ._view import DictView

RunStatus = Literal["ok", "error", "cancelled", "paused"]
Phase = Literal["start", "stream", "end", "error", "custom"]

CUSTOM_EVENT = "on_custom_event"


@fast_new
@frozen
class EventData(DictView):
    """An event's payload; a key is present only when it has a value, except
    ``output`` on a run's end event (``ended``), which is there even when ``None``."""

    _view_keys = ("input", "output", "chunk", "error", "tool_call_id")
    _view_skips_none = True
    input: Any = None
    output: Any = None
    chunk: Any = None
    error: str | None = None
    tool_call_id: str | None = None
    """On a tool run's error event: the call it answered (as LangChain's
    ``on_tool_error`` has it), so a client pairs the failure with the model's call."""
    ended: bool = field(default=False, kw_only=True, eq=False, repr=False)
    """Whether this is an end event's payload (its ``output`` key is always present)."""

    def _has(self, key: str) -> bool:
        if key == "output" and self.ended:
            return True
        return super()._has(key)

    def keys(self) -> list[str]:
        """The keys present, in declaration order."""
        return [key for key, _ in self.items()]

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(key, value)`` pairs of the keys present (read straight from the fields:
        the journal's encoder reads every event's data)."""
        pairs = []
        if self.input is not None:
            pairs.append(("input", self.input))
        if self.output is not None or self.ended:
            pairs.append(("output", self.output))
        if self.chunk is not None:
            pairs.append(("chunk", self.chunk))
        if self.error is not None:
            pairs.append(("error", self.error))
        if self.tool_call_id is not None:
            pairs.append(("tool_call_id", self.tool_call_id))
        return iter(pairs)

    def __getitem__(self, key: str) -> Any:
        # The hot read of a consumer's loop (``event["data"]["chunk"]``) goes straight
        # to the attribute; every other key takes the general path.
        if key == "chunk":
            chunk = self.chunk
            if chunk is None:
                raise KeyError(key)
            return chunk
        return super().__getitem__(key)


@fast_new
@frozen
class RunInfo(DictView):
    """Who a run is: the part of every event that stays the same for the whole run.

    The tracer makes one per run and every event of the run shares it, so an event
    costs one small object, not a copy of the run's identity.

    Attributes:
        run_id: the run's id; ids sort by start time.
        name: the run's name.
        kind: the run's kind (``chain``, ``chat_model``, ``tool``, ...).
        parent_ids: the ids of the run's ancestors, root first.
        tags: the run's tags, inherited ones included.
        metadata: the run's metadata, inherited entries included (read it, don't change it).
        start_time: when the run started (seconds since the epoch).
    """

    _view_keys = ("run_id", "name", "kind", "parent_ids", "tags", "metadata", "start_time")
    _view_lists = frozenset({"parent_ids", "tags"})
    run_id: str
    name: str
    kind: str
    parent_ids: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    start_time: float = 0.0


@fast_new
@frozen(eq=False, repr=False)
class StreamEvent(DictView):
    """One step of a run, carrying the run's complete identity.

    The dict view and the attributes read the same fields, named as LangChain's v2
    event dicts name them:

    - ``event``: ``on_{kind}_{start|stream|end|error}`` or ``on_custom_event``;
    - ``name``, ``run_id``, ``parent_ids`` (root first), ``tags``, ``metadata``,
      ``kind``, ``start_time``: the run's identity (see :class:`RunInfo`); for a custom
      event, ``name`` is the event's name and ``kind`` is ``custom``;
    - ``data``: ``input`` (start and terminal events), ``chunk`` (stream and custom
      events), ``output`` (end), ``error`` (error). A custom event's ``event["data"]``
      (and its JSON) is the payload itself, as in LangChain; ``event.data.chunk`` too;
    - ``seq``: the event's position in its run: 0 for the start, then 1, 2, ...;
    - ``status``: on terminal events ``ok``, ``error``, ``cancelled`` or ``paused`` (an
      end event whose ``output`` is a :class:`Paused`), else ``None``;
    - ``end_time``: when the run ended, on terminal events.

    Make one with ``data=EventData(...)``, or, for a stream event, just ``chunk=``.
    """

    _view_keys = (
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
    )
    _view_lists = frozenset({"parent_ids", "tags"})
    event: str
    run: RunInfo
    seq: int
    _data: EventData | None = field(default=None, alias="data")
    status: RunStatus | None = None
    end_time: float | None = None
    _chunk: Any = field(default=None, alias="chunk")
    _exception: BaseException | None = field(default=None, alias="exception")

    @property
    def exception(self) -> BaseException | None:
        """On an error event made in this process: the exception the run raised (never
        serialized; ``None`` after a round trip through JSON, and on cancellations)."""
        return self._exception

    @property
    def data(self) -> EventData:
        """The payload: ``input``, ``output``, ``chunk``, ``error`` (those present).

        A stream event is made with just its ``chunk`` (the tracer's hot path makes one
        per token); its :class:`EventData` is built the first time it is asked for.
        """
        data = self._data
        if data is None:
            data = _make_data(None, None, self._chunk)
            _set_data(self, data)  # a memo: the event's value is unchanged
        return data

    def _view(self, key: str) -> Any:
        if key == "data" and self.event == CUSTOM_EVENT:
            return self.chunk  # LangChain's custom events: data is the payload itself
        return super()._view(key)

    def __getitem__(self, key: str) -> Any:
        # The keys a consumer's loop reads for every token (``event["event"]``,
        # ``event["name"]``, ``event["data"]``) go straight to their fields: the general
        # path costs several calls per key, and this one is paid per token.
        if key == "event":
            return self.event
        if key == "name":
            return self.run.name
        if key == "data":
            data = self._data
            if data is None:
                chunk = self._chunk
                if self.event == CUSTOM_EVENT:
                    return chunk
                # _make_data(chunk=chunk) written out, and no call to the ``data``
                # property: a call is a tenth of what reading a token's event costs
                # (see benchmarks/README.md, "The dict face")
                data = _BuildingData()
                data.input = data.output = data.error = data.tool_call_id = None
                data.chunk = chunk
                data.ended = False
                data.__class__ = EventData
                _set_data(self, data)
            elif self.event == CUSTOM_EVENT:
                return data.chunk
            return data
        return super().__getitem__(key)

    @property
    def chunk(self) -> Any:
        """``data.chunk`` without building ``data``: the streamed chunk, or ``None``."""
        data = self._data
        return self._chunk if data is None else data.chunk

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, StreamEvent)
        return (
            self.event == other.event
            and self.seq == other.seq
            and self.run == other.run
            and self.data == other.data
            and self.status == other.status
            and self.end_time == other.end_time
        )

    __hash__ = None  # type: ignore[assignment]  # it holds dicts (metadata, data)

    def __repr__(self) -> str:
        return (
            f"StreamEvent(event={self.event!r}, run={self.run!r}, seq={self.seq!r}, "
            f"data={self.data!r}, status={self.status!r}, end_time={self.end_time!r})"
        )

    @property
    def name(self) -> str:
        """The run's name (for a custom event: the event's name)."""
        return self.run.name

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    @property
    def parent_ids(self) -> tuple[str, ...]:
        """The ids of the run's ancestors, root first."""
        return self.run.parent_ids

    @property
    def tags(self) -> tuple[str, ...]:
        """The run's tags, inherited ones included."""
        return self.run.tags

    @property
    def metadata(self) -> dict[str, Any]:
        """The run's metadata, inherited entries included."""
        return self.run.metadata

    @property
    def kind(self) -> str:
        """The run's kind, or ``custom`` for a custom event."""
        return self.run.kind

    @property
    def start_time(self) -> float:
        """When the run started (seconds since the epoch)."""
        return self.run.start_time

    @property
    def phase(self) -> Phase:
        """``start``, ``stream``, ``end``, ``error`` or ``custom``."""
        if self.event == CUSTOM_EVENT:
            return "custom"
        return cast(Phase, self.event.rsplit("_", 1)[1])

    @property
    def is_terminal(self) -> bool:
        """Whether this is the run's end or error event."""
        return self.status is not None

    @property
    def parent_id(self) -> str | None:
        """The direct parent's run id, or ``None`` for a root run."""
        return self.run.parent_ids[-1] if self.run.parent_ids else None


if TYPE_CHECKING:

    def make_stream_event(
        event: str,
        run: RunInfo,
        seq: int,
        data: EventData | None = None,
        status: RunStatus | None = None,
        end_time: float | None = None,
        chunk: Any = None,
        exception: BaseException | None = None,
    ) -> StreamEvent:
        """``StreamEvent(...)`` made the cheapest way, for the per-token paths."""

    def _make_data(
        input: Any = None, output: Any = None, chunk: Any = None, error: str | None = None
    ) -> EventData: ...

    def _set_data(event: StreamEvent, data: EventData) -> None: ...

else:
    make_stream_event = maker(StreamEvent)
    _make_data = maker(EventData)
    _set_data = StreamEvent.__dict__["_data"].__set__

_BuildingData: Any = building(EventData)


def event_names(kind: str) -> tuple[str, str, str, str]:
    """The start, stream, end and error event names of runs of ``kind``."""
    return (f"on_{kind}_start", f"on_{kind}_stream", f"on_{kind}_end", f"on_{kind}_error")
