"""Exceptions the runtime raises itself."""

from __future__ import annotations


class TroupeError(Exception):
    """Base class of the errors Troupe raises itself."""


class RuntimeClosedError(TroupeError):
    """A request was sent to a runtime that is closed or closing."""


class NoRuntimeError(TroupeError):
    """A call needs a current runtime (``open_runtime()``) and there is none."""


class RunCancelledError(TroupeError):
    """The run was cancelled before it produced a result (e.g. its runtime closed)."""


class RunTimeoutError(TroupeError):
    """A run did not finish within its ``timeout``; its whole tree was cancelled."""


class StreamUsageError(TroupeError):
    """A stream was used outside its ``async with`` block."""


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
