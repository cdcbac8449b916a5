"""Paused runs: what a run waits for, and what a person decided."""

from __future__ import annotations

from typing import Any, Literal

from attrs import frozen

PendingKind = Literal["approval", "interrupt"]


@frozen
class PendingRequest:
    """Something a paused run waits for.

    Attributes:
        id: what a decision names: a tool call's id (``approval``), or an interrupt's
            (``interrupt``: the interrupting run's id and the interrupt's number).
        kind: ``approval`` (a tool call that needs a person's yes) or ``interrupt``
            (code that called ``interrupt(payload)``).
        name: the tool's name, or the name of the run that interrupted.
        arguments: the tool call's arguments, or the interrupt's payload.
    """

    id: str
    kind: PendingKind
    name: str
    arguments: Any = None


@frozen
class Paused:
    """A paused run's output: the requests it waits for (its terminal event, status
    ``paused``, carries this)."""

    pending: tuple[PendingRequest, ...]


@frozen
class Decision:
    """A person's answer to a pending request.

    Attributes:
        approve: for an approval, whether the call may run.
        reason: for a denial, told to the model.
        arguments: for an approval, the arguments to run the call with instead.
        value: for an interrupt, what ``interrupt()`` returns.
        request: the pending request it answers (the runtime fills it in): a decision
            applies to that request only (the same tool, with the same arguments).
    """

    approve: bool = True
    reason: str | None = None
    arguments: dict[str, Any] | None = None
    value: Any = None
    request: PendingRequest | None = None
