"""Subscriber actors: objects with ``async on_event(event)``, each served by a task of
its own, reading its own bounded channel of events.

A subscriber that raises does not break the run or the other subscribers: the error is
logged (logger ``troupe``), recorded as a :class:`HandlerError`, and the subscriber goes
on getting events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol, final, runtime_checkable

import trio
from attrs import frozen

from protocol import StreamEvent

from ._dropping import DroppingChannel
from ._event_channel import EventChannel
from ._tracer import Subscribe, Subscription

if TYPE_CHECKING:
    from ._runtime import Runtime

DEFAULT_SUBSCRIBER_CAPACITY: Final = 1024
logger = logging.getLogger("troupe")


@runtime_checkable
class EventSubscriber(Protocol):
    """Anything with ``async def on_event(self, event)``: a callback handler, an
    exporter. ``actors.AsyncCallbackHandler`` maps events to LangChain's ``on_*``."""

    async def on_event(self, event: StreamEvent) -> None:
        """Handle one event."""


@frozen
class HandlerError:
    """A subscriber raised while handling an event."""

    handler: Any
    event: StreamEvent
    error: BaseException


def check_subscribers(handlers: object) -> tuple[Any, ...]:
    """The handlers as a tuple, each checked to have ``on_event``.

    Raises:
        TypeError: naming the handler that cannot subscribe.
    """
    if isinstance(handlers, str) or not isinstance(handlers, Iterable):
        raise TypeError(f"callbacks must be a list of handlers, got {handlers!r}")
    checked = tuple(handlers)
    for handler in checked:
        if not isinstance(handler, EventSubscriber):
            raise TypeError(
                f"callbacks must have an async on_event(event) method (subclass "
                f"actors.AsyncCallbackHandler), got {type(handler).__name__}"
            )
    return checked


@final
class Attachment:
    """The subscriber tasks watching one run (or a whole runtime)."""

    def __init__(self) -> None:
        self._done: list[trio.Event] = []
        self._dropping: list[DroppingChannel] = []
        self.errors: list[HandlerError] = []
        """What the handlers raised, in order."""

    @property
    def dropped(self) -> int:
        """Events dropped for handlers attached with ``drop_oldest`` (0 otherwise)."""
        return sum(channel.dropped for channel in self._dropping)

    async def wait(self) -> None:
        """Wait until every handler has handled the watched run's last event."""
        for done in self._done:
            await done.wait()

    async def attach(
        self,
        runtime: Runtime,
        run_id: str | None,
        handlers: Iterable[Any],
        capacity: int = DEFAULT_SUBSCRIBER_CAPACITY,
        *,
        drop_oldest: bool = False,
    ) -> None:
        """Subscribe each handler to ``run_id``'s tree (``None``: every run).

        With ``drop_oldest`` a slow handler never slows the runs: the oldest
        non-terminal events are dropped instead (counted in :attr:`dropped`).
        """
        for handler in handlers:
            receive: EventChannel
            if drop_oldest:
                dropping = DroppingChannel(capacity)
                self._dropping.append(dropping)
                receive = dropping
            else:
                receive = EventChannel(capacity)
            subscription = Subscription(receive, run_id=run_id)
            await runtime.send_to_tracer(Subscribe(subscription))
            done = trio.Event()
            self._done.append(done)
            runtime.start_service(
                self._serve, handler, receive, done, name=f"troupe subscriber {handler!r:.60}"
            )

    async def _serve(self, handler: Any, receive: EventChannel, done: trio.Event) -> None:
        try:
            while True:
                try:
                    event = receive.take()
                    if event is None:
                        event = await receive.receive()
                except trio.EndOfChannel:
                    return
                try:
                    await handler.on_event(event)
                except Exception as exc:
                    logger.error(
                        "callback handler %r failed on %s of %r",
                        handler,
                        event.event,
                        event.name,
                        exc_info=exc,
                    )
                    self.errors.append(HandlerError(handler, event, exc))
        finally:
            receive.close_receiver()
            done.set()
