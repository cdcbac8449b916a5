"""Lifecycle messages: what actors tell the tracer about the runs they perform.

An actor reports only what it knows. The start says everything about the run; every
later message names only the ``run_id``: the tracer fills in the rest.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from attrs import field, frozen

from ._fast import fast_new

FailureStatus = Literal["error", "cancelled"]

IN_PROCESS_ONLY: Final = "troupe_in_process_only"
"""Field metadata key: the field lives in the process only; the converter leaves it out."""


@fast_new
@frozen
class RunStarted:
    """A run began. ``tags`` and ``metadata`` are the full, inherited ones."""

    run_id: str
    parent_ids: tuple[str, ...]
    kind: str
    name: str
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(factory=dict)
    input: Any = None
    resumed_seq: int | None = None
    """For a run resumed under its own id (its process died): the seq of its last
    journaled event. No start event is made; its events go on from there."""
    resumed_start: float | None = None
    """For a resumed run: when it first started."""


@fast_new
@frozen
class RunStreamed:
    """A run produced one chunk of output."""

    run_id: str
    chunk: Any


@fast_new
@frozen
class RunStreamedMany:
    """A run produced several chunks, in order: a producer that had them ready at once
    (``Run.emit_many``), chunks held back while the tracer was busy, or chunks that
    joined the run's last message while it waited, untaken, at the end of the tracer's
    mailbox. (In that last case ``chunks`` is a list its producer adds to until the
    tracer takes the message; trio runs one task at a time, so the tracer never sees it
    change.)"""

    run_id: str
    chunks: tuple[Any, ...]


@fast_new
@frozen
class RunEnded:
    """A run finished with ``output``; a paused one (``paused``) with a ``Paused``
    saying what it waits for."""

    run_id: str
    output: Any = None
    paused: bool = False


@fast_new
@frozen
class RunFailed:
    """A run failed (``status="error"``) or was cancelled (``status="cancelled"``).

    ``exception`` is what the run raised, for handlers in the same process; it is never
    serialized.
    """

    run_id: str
    error: str
    status: FailureStatus = "error"
    exception: BaseException | None = field(
        default=None, eq=False, repr=False, metadata={IN_PROCESS_ONLY: True}
    )


@frozen
class CustomEventDispatched:
    """Code working for a run dispatched a named custom event."""

    run_id: str
    name: str
    data: Any = None


LifecycleMessage = (
    RunStarted | RunStreamed | RunStreamedMany | RunEnded | RunFailed | CustomEventDispatched
)
"""Anything an actor sends the tracer."""
