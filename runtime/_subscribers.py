"""Subscriber actors: objects with ``async on_event(event)``, each served by a task of
its own, reading its own bounded channel of events.

A subscriber whose ``stream_events`` attribute is ``"first"`` gets of the stream events
only each run's first (an exporter that times the first token need not pay a task
switch for every other one). One with ``batch_events = n`` is woken once ``n`` events
wait for it, or a root run has ended, rather than for each event. One with
``wake_interval = s`` (seconds) is woken at most once every ``s`` seconds while events
keep coming, and takes all that wait; the first event after a quiet spell, a root run's
end, and the runtime's closing come at once. A live view that repaints a few times a
second need not be woken for every token of every run. A runtime-wide subscriber may
change its mind (:meth:`Attachment.stream_events`): a live view that nobody is looking
at takes each run's first stream event only, and every one again once someone looks.

A subscriber that raises does not break the run or the other subscribers: whatever
error it raises (any ``Exception``, or a ``trio.Cancelled`` raised by hand) is logged
(logger ``troupe``), recorded as a :class:`HandlerError`, and the subscriber goes on
getting events. An exit is no error: a ``KeyboardInterrupt`` (Ctrl-C), ``SystemExit``,
``GeneratorExit`` or other ``BaseException`` that is not an ``Exception`` ends the
subscriber and stops its runtime, which raises it as itself once it has closed. A
subscriber still busy when its runtime has closed and the grace has passed is
cancelled, and that too is recorded (``trio.TooSlowError``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal, Protocol, final

import trio
from attrs import frozen

from protocol import StreamEvent

from ._checks import EventSubscriber as EventSubscriber
from ._checks import check_subscribers as check_subscribers
from ._checks import positive_int
from ._dropping import DroppingChannel
from ._errors import find_exit
from ._event_channel import EventChannel
from ._tracer import Subscription

DEFAULT_SUBSCRIBER_CAPACITY: Final = 1024
logger = logging.getLogger("troupe")


class ServiceHost(Protocol):
    """Where subscriber tasks run (the runtime)."""

    def start_service(self, fn: Any, *args: Any, name: str | None = None) -> None:
        """Start a task that lives until the runtime has closed."""


@frozen
class HandlerError:
    """A subscriber raised while handling an event."""

    handler: Any
    event: StreamEvent | None
    error: BaseException


@final
class Attachment:
    """The subscriber tasks watching one run (or a whole runtime).

    Args:
        resubscribe: how the host routes a runtime-wide subscription afresh (its tracer
            is sent it again), for :meth:`stream_events`; ``None``: a host that gives
            its watchers every event whatever they ask (a Ray runtime's driver).
    """

    def __init__(
        self, resubscribe: Callable[[Subscription], Awaitable[None]] | None = None
    ) -> None:
        self._resubscribe = resubscribe
        self._done: list[trio.Event] = []
        self._dropping: list[DroppingChannel] = []
        self._subscriptions: list[Subscription] = []
        self.errors: list[HandlerError] = []
        """What the handlers raised, in order."""

    @property
    def dropped(self) -> int:
        """Events dropped for handlers attached with ``drop_oldest`` (0 otherwise)."""
        return sum(channel.dropped for channel in self._dropping)

    def close(self) -> None:
        """Stop watching: no more events are delivered, and each handler's task ends
        once it has handled those already on their way."""
        for subscription in self._subscriptions:
            subscription.close()

    async def stream_events(self, which: Literal["all", "first"]) -> None:
        """From now on give the handlers every stream event (``"all"``), or of each run
        only its first (``"first"``, as a handler whose ``stream_events`` is
        ``"first"`` gets them). Runs already open are routed afresh: after ``"first"``
        one that has streamed gives the handlers no more stream events, after ``"all"``
        a run's events go on from the next (a handler sees its sequence numbers jump);
        the other subscribers' routes are as they were (one that takes each run's first
        stream event is not given another). A checkpoint.

        Raises:
            ValueError: ``which`` is neither, or the attachment watches one run (a
                run's subscribers are routed once, as it starts).
        """
        if which != "all" and which != "first":
            raise ValueError(f"stream_events must be 'all' or 'first', got {which!r}")
        if any(subscription.run_id is not None for subscription in self._subscriptions):
            raise ValueError("only an attachment to every run can change what it is given")
        await trio.lowlevel.checkpoint()
        first_only = which == "first"
        changed = [s for s in self._subscriptions if s.first_chunk_only != first_only]
        for subscription in changed:
            subscription.first_chunk_only = first_only
        if self._resubscribe is not None:
            # Shielded: a flag changed must reach the tracer (its mailbox drains, or
            # closes with the runtime).
            with trio.CancelScope(shield=True):
                for subscription in changed:
                    if not subscription.closed:
                        await self._resubscribe(subscription)

    async def wait(self) -> None:
        """Wait until every handler has handled the watched run's last event."""
        for done in self._done:
            await done.wait()

    def watch(
        self,
        host: ServiceHost,
        run_id: str | None,
        handlers: Iterable[Any],
        capacity: int = DEFAULT_SUBSCRIBER_CAPACITY,
        *,
        drop_oldest: bool = False,
    ) -> list[Subscription]:
        """Start a task for each handler, reading the subscription returned for it: of
        ``run_id``'s tree (it goes with the run's request), or of every run (``None``;
        the caller sends it to the tracer).

        With ``drop_oldest`` a slow handler never slows the runs: the oldest
        non-terminal events are dropped instead (counted in :attr:`dropped`).
        """
        subscriptions = []
        for handler in handlers:
            receive: EventChannel
            if drop_oldest:
                dropping = DroppingChannel(capacity)
                self._dropping.append(dropping)
                receive = dropping
            else:
                receive = EventChannel(capacity)
            first_only = getattr(handler, "stream_events", "all") == "first"
            receive.wake_at = _batch_size(handler)
            interval = _wake_interval(handler)
            subscription = Subscription(receive, run_id=run_id, first_chunk_only=first_only)
            subscriptions.append(subscription)
            self._subscriptions.append(subscription)
            done = trio.Event()
            self._done.append(done)
            host.start_service(
                self._serve,
                handler,
                receive,
                done,
                interval,
                name=f"troupe subscriber {_name(handler)}",
            )
        return subscriptions

    async def _serve(
        self, handler: Any, receive: EventChannel, done: trio.Event, interval: float | None
    ) -> None:
        event: StreamEvent | None = None
        try:
            while True:
                try:
                    handled = event is not None
                    event = receive.take()
                    if event is None and interval is not None and handled:
                        await receive.pause(interval)
                        event = receive.take()
                    if event is None:
                        event = await receive.receive()
                except trio.EndOfChannel:
                    return
                stop: BaseException | None = None
                try:
                    await handler.on_event(event)
                except BaseException as exc:
                    if isinstance(exc, trio.Cancelled) and _cancelled_here():
                        raise
                    stop = find_exit(exc)
                    if stop is None:
                        self._record(handler, event, exc)
                if stop is not None:
                    raise stop  # no handler's error: it stops the runtime (see Runtime)
        except trio.Cancelled:
            # Only the runtime cancels a subscriber: it was still busy after the grace.
            self._record(
                handler,
                event,
                trio.TooSlowError("the runtime closed and the handler did not finish in time"),
            )
            raise
        finally:
            receive.close_receiver()
            done.set()

    def _record(self, handler: Any, event: StreamEvent | None, exc: BaseException) -> None:
        logger.error(
            "callback handler %s failed on %s of %r",
            _name(handler),
            event.event if event is not None else "no event",
            event.name if event is not None else None,
            exc_info=exc,
        )
        self.errors.append(HandlerError(handler, event, exc))


def _batch_size(handler: Any) -> int:
    size = getattr(handler, "batch_events", 1)
    positive_int(size, f"{_name(handler)}.batch_events")
    return size


def _wake_interval(handler: Any) -> float | None:
    interval = getattr(handler, "wake_interval", None)
    if interval is None:
        return None
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not 0 < interval < math.inf
    ):
        raise ValueError(
            f"{_name(handler)}.wake_interval must be a positive number of seconds, got {interval!r}"
        )
    return float(interval)


def _cancelled_here() -> bool:
    return trio.current_effective_deadline() == -math.inf


def _name(handler: Any) -> str:
    """The handler's type, and its repr when that works (a repr may raise)."""
    try:
        return f"{handler!r:.60}"
    except Exception:
        return f"<{type(handler).__name__}>"
