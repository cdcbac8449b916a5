"""Stream events: what subscribers receive, complete and self-describing.

Field names are those of LangChain's ``astream_events(version="v2")`` dicts, so
``event["event"]``, ``event["name"]``, ``event["data"]["chunk"].content`` and
``event["data"]["output"]`` work; the typed attributes say the same.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from attrs import frozen

from ._view import DictView

RunStatus = Literal["ok", "error", "cancelled"]
Phase = Literal["start", "stream", "end", "error", "custom"]

CUSTOM_EVENT = "on_custom_event"


@frozen
class EventData(DictView):
    """An event's payload; a key is present only when it has a value."""

    _view_keys = ("input", "output", "chunk", "error")
    _view_skips_none = True
    input: Any = None
    output: Any = None
    chunk: Any = None
    error: str | None = None


@frozen
class StreamEvent(DictView):
    """One step of a run, carrying the run's complete identity.

    Attributes:
        event: ``on_{kind}_{start|stream|end|error}`` or ``on_custom_event``.
        name: the run's name (for a custom event: the event's name).
        run_id: the run's id; ids sort by start time.
        parent_ids: the ids of the run's ancestors, root first.
        tags: the run's tags, inherited ones included.
        metadata: the run's metadata, inherited entries included.
        data: ``input`` (start and terminal events), ``chunk`` (stream and custom
            events), ``output`` (end), ``error`` (error).
        kind: the run's kind (``chain``, ``chat_model``, ``tool``, ...) or ``custom``.
        seq: the event's position in its run: 0 for the start, then 1, 2, ...
        status: on terminal events ``ok``, ``error`` or ``cancelled``; else ``None``.
        start_time: when the run started (seconds since the epoch).
        end_time: when the run ended, on terminal events.
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
    event: str
    name: str
    run_id: str
    parent_ids: tuple[str, ...]
    tags: tuple[str, ...]
    metadata: dict[str, Any]
    data: EventData
    kind: str
    seq: int
    status: RunStatus | None = None
    start_time: float = 0.0
    end_time: float | None = None

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
        return self.parent_ids[-1] if self.parent_ids else None


def event_names(kind: str) -> tuple[str, str, str, str]:
    """The start, stream, end and error event names of runs of ``kind``."""
    return (f"on_{kind}_start", f"on_{kind}_stream", f"on_{kind}_end", f"on_{kind}_error")
