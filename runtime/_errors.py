"""Exceptions the runtime raises itself, and how it picks the one to raise."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

import trio

from protocol import PendingRequest


class TroupeError(Exception):
    """Base class of the errors Troupe raises itself."""


class WrongEventLoopError(TroupeError, RuntimeError):
    """Troupe was called outside trio: from asyncio (``asyncio.run``, a notebook's
    default loop) or from no event loop at all."""


class RunCancelledError(TroupeError):
    """The run was cancelled before it produced a result (e.g. its runtime closed)."""


class RuntimeClosedError(RunCancelledError):
    """A request was sent to a runtime that is closed or closing: refused at once,
    as a cancelled run (``except RunCancelledError`` catches it too)."""


class NoRuntimeError(TroupeError):
    """A call needs a current runtime (``open_runtime()``) and there is none."""


class RunTimeoutError(TroupeError):
    """A run did not finish within its ``timeout``; its whole tree was cancelled."""


class StreamUsageError(TroupeError):
    """A stream was used outside its ``async with`` block."""


class PerformerError(TroupeError, RuntimeError):
    """A performer raised what a run cannot end with as it is: ``StopIteration`` or
    ``StopAsyncIteration`` (which would silently end the consumer's ``async for``, as
    PEP 479 explains for generators), or ``trio.Cancelled`` raised by hand outside any
    cancelled scope. The run fails with this; ``__cause__`` is what was raised."""


class ActorCrash(TroupeError):
    """Raise from a performer to say its actor is broken (say, a lost connection): the
    request fails, the actor's other requests are cancelled, and its supervisor
    restarts it (``open_actor`` runs again), up to the performer's restart limit."""


class ActorFailedError(TroupeError):
    """An actor crashed more often than its restart limit allows; it refuses all work."""


class ActorCrashedError(TroupeError):
    """An actor's own machinery failed (a bug, not a tool's or a model's error).

    Errors of tools and models never crash an actor: they end the run with an error
    event and are raised by the run's stream. This is raised by ``open_runtime`` when
    an actor loop itself failed; ``__cause__`` is the original exception.
    """


class NoStoreError(TroupeError):
    """The runtime has no store: threads, joins and resuming paused runs need
    ``open_runtime(store=...)``."""


class RunNotPausedError(TroupeError):
    """A resume named a run that is not paused, or that another run resumed already."""


class JournaledError(TroupeError):
    """A request answered from the journal (a replay) had failed: raised again with
    the error the journal holds; :func:`describe_error` gives it back as it was.

    Attributes:
        described: the error as its event said it (``"TypeName: message"``).
        type_name: the original exception's type, ``module.QualifiedName``, where the
            journal holds it (``None`` for a journal written before it did): what
            tells one journaled error from another.
        message: the original exception's message.
    """

    def __init__(self, described: str, type_name: str | None = None) -> None:
        # Everything in args: an exception rebuilt from its args (a Ray host's, on the
        # driver) is whole.
        super().__init__(described, type_name)

    @property
    def described(self) -> str:
        return str(self.args[0])

    @property
    def type_name(self) -> str | None:
        named = self.args[1] if len(self.args) > 1 else None
        return named if isinstance(named, str) else None

    @property
    def message(self) -> str:
        name, colon, text = self.described.partition(": ")
        return text if colon and " " not in name else ""

    def __str__(self) -> str:
        """``module.QualifiedName: message``, or as described without a type name."""
        if self.type_name is None:
            return self.described
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


class ReplayDivergenceError(TroupeError):
    """A run replayed from its journal asked for something else than it did the first
    time (its performer is not deterministic): the message names the first
    difference."""


class RunPaused(TroupeError):  # it is what happened, not an error
    """A run paused: it waits for a person's decisions (``pending``: the requests it
    waits for). It ended, with a terminal event of status ``paused``; resume it with
    ``rt.resume(performer, run_id, decisions)``, a new run that replays it.

    Raised by ``ainvoke`` of a run that paused, and inside a run by the request of a
    child that paused (a performer that catches exceptions must let it through).
    """

    def __init__(self, pending: Sequence[PendingRequest], run_id: str | None = None) -> None:
        names = ", ".join(f"{p.kind} {p.id} ({p.name})" for p in pending)
        super().__init__(f"run {run_id!r} paused, waiting for: {names}")
        self.pending = tuple(pending)
        self.run_id = run_id


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``, the form errors take on events.

    Never raises: an exception whose ``__str__`` fails is described by its type.
    """
    if isinstance(exc, JournaledError):
        return exc.described
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as failure:  # a broken __str__ must not break the run's report
        return f"{name}: <str() failed: {type(failure).__name__}>"
    return f"{name}: {text}" if text else name


NOTED_BESIDE: Final = 5
"""How many of the exceptions raised beside an exit its note names."""


def is_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is an exit: a ``BaseException`` that is not an ``Exception``
    (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``, a user's own), nor a
    group of them, nor trio's ``Cancelled``. An exit is no error a run can keep: it is
    raised, as itself, to whoever waits on the run."""
    return not isinstance(exc, Exception | BaseExceptionGroup | trio.Cancelled)


def find_exit(*errors: BaseException | None) -> BaseException | None:
    """The exit to raise, as itself, in place of ``errors`` (and of what any group among
    them holds): a ``KeyboardInterrupt`` first (Ctrl-C), then a ``SystemExit``, then the
    first other one; ``None`` if there is none.

    A note on it names the other exceptions raised beside it (trio's cancellations
    aside), which the group that held them would have shown.
    """
    leaves: list[BaseException] = []
    for error in errors:
        if error is not None:
            for leaf in _leaves(error):
                if not any(leaf is seen for seen in leaves):
                    leaves.append(leaf)
    exits = [leaf for leaf in leaves if is_exit(leaf)]
    if not exits:
        return None
    chosen = next(
        (e for kind in (KeyboardInterrupt, SystemExit) for e in exits if isinstance(e, kind)),
        exits[0],
    )
    beside = [
        leaf for leaf in leaves if leaf is not chosen and not isinstance(leaf, trio.Cancelled)
    ]
    if beside:
        named = "; ".join(describe_error(e) for e in beside[:NOTED_BESIDE])
        more = f" and {len(beside) - NOTED_BESIDE} more" if len(beside) > NOTED_BESIDE else ""
        chosen.add_note(f"raised beside it: {named}{more}")
    return chosen


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error
