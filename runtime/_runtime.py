"""The runtime: a supervisor nursery that owns every actor, and the tracer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, final

import attrs
import trio

from ._actor import ActorCell, Envelope
from ._context import RunConfig, current_run_var
from ._errors import ActorCrashedError, RuntimeClosedError
from ._ids import new_run_id
from ._performer import Performer, Runnable
from ._reply import Reply
from ._subscribers import DEFAULT_SUBSCRIBER_CAPACITY, Attachment, check_subscribers
from ._tracer import DEFAULT_TRACER_CAPACITY, Tracer, TracerMail

if TYPE_CHECKING:
    from ._api import WatchStream
    from ._options import WatchOptions

OutT = TypeVar("OutT")

_current_runtime: ContextVar[Runtime | None] = ContextVar("troupe_current_runtime", default=None)


def current_runtime() -> Runtime | None:
    """The runtime the calling code runs in (``open_runtime()`` body or an actor)."""
    return _current_runtime.get()


@final
class Runtime:
    """A running set of actors. Get one from :func:`open_runtime`.

    Many runs may go on at once; each performer gets one actor, started the first time
    it is asked for something.
    """

    def __init__(
        self,
        actor_nursery: trio.Nursery,
        service_nursery: trio.Nursery,
        tracer: Tracer,
    ) -> None:
        self._actors = actor_nursery
        self._services = service_nursery
        self._tracer = tracer
        self._cells: dict[int, ActorCell] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether the runtime has begun to close."""
        return self._closed

    @property
    def open_runs(self) -> int:
        """Runs whose start the tracer has seen and whose end it has not yet."""
        return self._tracer.open_runs

    @property
    def protocol_violations(self) -> int:
        """Lifecycle messages the tracer had to reject (should stay 0)."""
        return self._tracer.protocol_violations

    def cell(self, performer: Performer[Any, Any]) -> ActorCell:
        """The actor of ``performer``, started on first use.

        Raises:
            RuntimeClosedError: the runtime is closing.
        """
        cell = self._cells.get(id(performer))
        if cell is None:
            if self._closed:
                raise RuntimeClosedError("the runtime is closed")
            cell = ActorCell(performer, self._tracer.mailbox, self)
            self._cells[id(performer)] = cell
            self._actors.start_soon(cell.serve, name=f"troupe actor {performer.name}")
        return cell

    async def request(
        self, target: Runnable[OutT], message: Any, config: RunConfig | None = None
    ) -> OutT:
        """Ask ``target``'s actor to serve ``message`` and wait for the result.

        The new run is a child of the caller's current run, if any. If the caller is
        cancelled, the run is cancelled and this returns only once it has ended.

        Raises:
            RuntimeClosedError: the runtime is closing.
            Exception: whatever the performer raised.
        """
        performer, bound = target.bind()
        config = bound.merged(config) if config else bound
        attachment = None
        if config.callbacks:
            config = attrs.evolve(config, run_id=config.run_id or new_run_id())
            attachment = Attachment()
            await attachment.attach(self, config.run_id, config.callbacks)
        reply = Reply()
        await self.cell(performer).deliver(Envelope(message, current_run_var.get(), config, reply))
        try:
            result: OutT = await reply.result()
        except Exception:
            if attachment is not None:
                await attachment.wait()  # the handlers have seen the run's end
            raise
        if attachment is not None:
            await attachment.wait()
        return result

    async def subscribe(
        self,
        *handlers: Any,
        drop_oldest: bool = False,
        capacity: int = DEFAULT_SUBSCRIBER_CAPACITY,
    ) -> Attachment:
        """Attach handlers (objects with ``async on_event(event)``) to every run of this
        runtime from now on, until it closes.

        By default a slow handler slows the runs (backpressure). With ``drop_oldest``
        it never does: its oldest non-terminal events are dropped instead, counted in
        the returned attachment's ``dropped``. ``capacity`` bounds each handler's queue.

        Raises:
            TypeError: a handler has no ``on_event``.
            ValueError: ``capacity`` is not a positive integer.
        """
        if not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        attachment = Attachment()
        await attachment.attach(
            self, None, check_subscribers(handlers), capacity, drop_oldest=drop_oldest
        )
        return attachment

    async def send_to_tracer(self, mail: TracerMail) -> None:
        """Post mail to the tracer (subscriptions, lifecycle)."""
        try:
            try:
                self._tracer.mailbox.send_nowait(mail)
                return
            except trio.WouldBlock:
                pass
            await self._tracer.mailbox.send(mail)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError("the runtime is closed") from None

    def watch(self, **options: Unpack[WatchOptions]) -> WatchStream:
        """Watch every run of this runtime: ``async with rt.watch() as events:``.

        Takes the same ``include_*``/``exclude_*`` filters and ``capacity`` as
        :func:`stream_events`. Events of runs that started before the subscription are
        delivered from the subscription on (their starts are not replayed).
        """
        from ._api import watch

        return watch(self, **options)

    def post_to_tracer(self, mail: TracerMail) -> bool:
        """Post mail to the tracer without waiting; ``False`` if it could not be posted."""
        try:
            self._tracer.mailbox.send_nowait(mail)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def start_service(self, fn: Any, *args: Any, name: str | None = None) -> None:
        """Start a task that lives as long as the tracer (a subscriber actor)."""
        self._services.start_soon(fn, *args, name=name)


@asynccontextmanager
async def open_runtime(
    *, tracer_capacity: int = DEFAULT_TRACER_CAPACITY, callbacks: Iterable[Any] = ()
) -> AsyncIterator[Runtime]:
    """Open a runtime for the ``async with`` block: ``async with open_runtime() as rt:``.

    Inside the block (and inside every actor) the runtime is current, so
    ``agent.ainvoke(...)`` and the streams use it. On exit every actor is cancelled,
    every started run gets its terminal event, then the tracer drains and closes every
    stream.

    Errors: the block's own exception propagates unchanged (not wrapped in an
    ExceptionGroup). Tool and model errors never escape through here: they end their
    run with an error event and are raised by that run's stream or call. Only a
    failure of Troupe's own machinery is raised here, as :class:`ActorCrashedError`.

    Args:
        tracer_capacity: the bound of the tracer's mailbox.
        callbacks: handlers that watch every run of the runtime.

    Raises:
        ValueError: ``tracer_capacity`` is not a positive integer.
        TypeError: a callback has no ``on_event``.
        ActorCrashedError: an actor loop failed.
    """
    if not isinstance(tracer_capacity, int) or tracer_capacity < 1:
        raise ValueError(f"tracer_capacity must be a positive integer, got {tracer_capacity!r}")
    handlers = check_subscribers(callbacks)
    tracer = Tracer(tracer_capacity)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as services:
            services.start_soon(tracer.serve, name="troupe tracer")
            try:
                async with trio.open_nursery() as actors:
                    runtime = Runtime(actors, services, tracer)
                    token = _current_runtime.set(runtime)
                    try:
                        if handlers:
                            await runtime.subscribe(*handlers)
                        yield runtime
                    except BaseException as exc:
                        body_error = exc
                    finally:
                        _current_runtime.reset(token)
                        runtime._closed = True
                        actors.cancel_scope.cancel()
            finally:
                tracer.begin_closing()
                tracer.mailbox.close()
    except BaseExceptionGroup as group:
        raise _crash_error(group) from group
    if body_error is not None:
        raise body_error


def _crash_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise for failures of the runtime's own tasks."""
    leaves = list(_leaves(group))
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    for exc in real:
        if not isinstance(exc, Exception):
            return exc  # KeyboardInterrupt, SystemExit: not ours to rename
    if not real:
        return leaves[0]
    first = real[0]
    return ActorCrashedError(f"an actor of the runtime failed: {type(first).__name__}: {first}")


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
