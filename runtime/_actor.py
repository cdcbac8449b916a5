"""Actor cells: a performer's mailbox and the task that serves it.

Each request is served in a task of its own (up to the performer's
``max_concurrency``), in its requester's context variables with the request's run
context and the runtime made current, and reported to the tracer as one run: a start,
its chunks, exactly one terminal message. While the actor takes requests, a requester
starts that task itself; the actor's own task takes the rest from the mailbox.
"""

from __future__ import annotations

import contextvars
import logging
import math
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import AsyncExitStack, suppress
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

import trio

from protocol import RunEnded, RunFailed, RunStarted

from ._context import (
    RunConfig,
    RunContext,
    child_context,
    current_run_var,
    current_runtime_var,
)
from ._errors import (
    ActorCrash,
    ActorFailedError,
    PerformerError,
    RuntimeClosedError,
    RunTimeoutError,
    describe_error,
    find_exit,
)
from ._performer import Performer, Run
from ._reply import Reply
from ._tracer import Subscribe, Subscription, TracerMail
from ._tracer_mailbox import TracerMailbox

if TYPE_CHECKING:
    from ._runtime import Runtime


@final
class Envelope:
    """A request in a mailbox: what to run, the message, who asks (the run context),
    how, where the answer goes, and the subscribers of the run it starts."""

    __slots__ = ("config", "context", "message", "parent", "performer", "reply", "subscriptions")

    def __init__(
        self,
        performer: Performer[Any, Any],
        message: Any,
        parent: RunContext | None,
        config: RunConfig,
        reply: Reply,
        subscriptions: tuple[Subscription, ...] = (),
    ) -> None:
        self.performer = performer
        self.message = message
        self.parent = parent
        self.config = config
        self.reply = reply
        self.subscriptions = subscriptions
        self.context: contextvars.Context | None = None
        """The requester's context, for a request that waits in the mailbox: its task
        is started in it, as a request started at once is in the requester's own."""

    def refuse(self, error: BaseException) -> None:
        """Settle a request that will never be served: its run never starts."""
        self.close_subscriptions()
        self.reply.reject(error)

    def close_subscriptions(self) -> None:
        """End the streams of a run that never started (their readers see the end)."""
        for sub in self.subscriptions:
            sub.close()


logger = logging.getLogger("troupe")

RESOURCE_CLOSE_SECONDS: Final = 5.0
"""How long a closing actor may take to close what it holds."""


@final
class ActorCell:
    """One performer's actor inside a runtime.

    The cell holds its performer weakly when it can: once nothing else refers to the
    performer (a fresh ``Agent`` per request is common), no request can name it any
    more, so the actor stops and the runtime forgets it (``on_release``). Requests in
    the mailbox or in progress hold the performer, so it stays while it has work.
    """

    def __init__(
        self,
        performer: Performer[Any, Any],
        tracer_mailbox: TracerMailbox,
        runtime: Runtime,
        on_release: Callable[[ActorCell], None],
    ) -> None:
        self.name = performer.name
        self._kind = performer.run_kind
        self._restart_limit = performer.restart_limit
        self._restart_window = performer.restart_window
        self._tracer = tracer_mailbox
        self._runtime = runtime
        self._send, self._inbox = trio.open_memory_channel[Envelope](performer.mailbox_size)
        self._state: Any = None
        self._crash: BaseException | None = None
        self._handlers: trio.Nursery
        # While the actor takes requests (no limit, not crashed, not closing): the
        # nursery where a requester starts its request's task itself. Saves the actor's
        # task a wake-up per request; the mailbox is for the rest (a limit to wait on,
        # a restart under way).
        self._direct: trio.Nursery | None = None
        # A request taken from the mailbox whose wait for the limit a crash cut off:
        # the restarted actor serves it first.
        self._carried: Envelope | None = None
        limit = performer.max_concurrency
        self._limit = trio.Semaphore(limit) if limit is not None else None
        # One name for all its request tasks (trio would build a string for each).
        self._request_task_name = f"troupe request to {performer.name}"
        self._on_release = on_release
        self.key = id(performer)
        """Where the runtime files this cell."""
        self._token = trio.lowlevel.current_trio_token()
        self._strong: Performer[Any, Any] | None = None
        try:
            self._ref: Callable[[], Performer[Any, Any] | None] = weakref.ref(
                performer, self._performer_gone
            )
        except TypeError:  # a performer class without __weakref__: kept for good
            self._strong = performer
            self._ref = lambda: self._strong

    def holds(self, performer: Performer[Any, Any]) -> bool:
        """Whether this is ``performer``'s actor (ids of dead objects are reused)."""
        return self._ref() is performer

    def _performer_gone(self, _: object) -> None:
        # Called by the garbage collector, maybe in another thread: forget the cell at
        # once (a dict pop is atomic), and let the actor's task stop from trio's thread.
        self._direct = None
        self._on_release(self)
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._send.close)

    async def deliver(self, envelope: Envelope) -> None:
        """Hand a request to the actor: while it takes requests, start the request's
        task in its nursery at once; else put the request in the mailbox (waits while
        it is full).

        Raises:
            RuntimeClosedError: the runtime is closing (or the actor has stopped).
        """
        # (Never await inside an ``except`` block: the exception, its traceback and
        # frames would stay alive for as long as the wait.)
        direct = self._direct
        if direct is not None and not self._runtime.closed:
            self._spawn(direct, envelope)  # the task gets this (the requester's) context
            return
        envelope.context = contextvars.copy_context()
        try:
            try:
                self._send.send_nowait(envelope)
                return
            except trio.WouldBlock:
                pass
            await self._send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError(
                f"the runtime is closed: cannot send to {self.name!r}"
            ) from None

    def _start(self, handlers: trio.Nursery, envelope: Envelope) -> None:
        # A request from the mailbox: its task runs in its requester's context.
        context = envelope.context
        if context is None:
            self._spawn(handlers, envelope)
        else:
            envelope.context = None
            context.run(self._spawn, handlers, envelope)

    def _spawn(self, handlers: trio.Nursery, envelope: Envelope) -> None:
        handlers.start_soon(self._serve_one, envelope, name=self._request_task_name)

    async def serve(self) -> None:
        """The supervisor: run the actor, restart it when it crashes, fail it when it
        crashes more often than its restart limit allows. When the runtime closes (or
        the performer is gone), every request still in the mailbox is refused."""
        crashes: deque[float] = deque()
        try:
            while True:
                crash = await self._run_until_crash()
                if crash is None:
                    return  # the performer is gone and the mailbox is empty
                now = trio.current_time()
                crashes.append(now)
                while crashes[0] < now - self._restart_window:
                    crashes.popleft()
                if len(crashes) > self._restart_limit:
                    await self._refuse_all(
                        ActorFailedError(
                            f"{self._kind} {self.name!r} crashed {len(crashes)} "
                            f"time{'s' if len(crashes) != 1 else ''} within "
                            f"{self._restart_window} s (restart limit "
                            f"{self._restart_limit}); last: {describe_error(crash)}"
                        )
                    )
                logger.warning(
                    "restarting %s %r after a crash: %s",
                    self._kind,
                    self.name,
                    describe_error(crash),
                )
        finally:
            self._send.close()
            self._on_release(self)
            # Nobody will take these up: refuse them, so no requester waits forever.
            carried, self._carried = self._carried, None
            if carried is not None:
                carried.refuse(RuntimeClosedError(f"the runtime closed before {self.name!r} ran"))
            while True:
                try:
                    envelope = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                envelope.refuse(RuntimeClosedError(f"the runtime closed before {self.name!r} ran"))
            self._inbox.close()

    async def _run_until_crash(self) -> BaseException | None:
        """Open the actor's resources and serve requests until it crashes (the crash)
        or its performer is gone (``None``)."""
        self._crash = None
        resources = AsyncExitStack()
        try:
            performer = self._ref()
            if performer is None:
                return None
            try:
                opener = performer.open_actor()
                del performer  # the cell must not keep its performer alive
                self._state = await resources.enter_async_context(opener)
            except Exception as exc:
                return exc
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                await self._take_requests(handlers)
            return self._crash
        finally:
            # Closing (we are cancelled) or restarting: close what the actor holds, e.g.
            # an HTTP client's sockets, within a bounded grace period.
            with trio.CancelScope(shield=True), trio.move_on_after(RESOURCE_CLOSE_SECONDS):
                await resources.aclose()

    async def _take_requests(self, handlers: trio.Nursery) -> None:
        """Start a task for each request, until a crash cancels this (see _serve_one)
        or the mailbox is closed and empty."""
        if self._limit is None:
            self._direct = handlers
        try:
            await self._take_all(handlers)
        finally:
            self._direct = None

    async def _take_all(self, handlers: trio.Nursery) -> None:
        inbox = self._inbox
        limit = self._limit
        while True:
            envelope, self._carried = self._carried, None
            if envelope is None:
                try:
                    envelope = inbox.receive_nowait()
                except trio.WouldBlock:
                    envelope = None
                except trio.EndOfChannel:
                    return
            if envelope is None:
                try:
                    envelope = await inbox.receive()
                except trio.EndOfChannel:
                    return
            if limit is not None:
                try:
                    await limit.acquire()
                except BaseException:
                    if self._crash is not None and not self._runtime.closed:
                        self._carried = envelope  # for the restarted actor
                    else:
                        envelope.refuse(
                            RuntimeClosedError(f"the runtime closed before {self.name!r} ran")
                        )
                    raise
            self._start(handlers, envelope)

    async def _refuse_all(self, error: ActorFailedError) -> NoReturn:
        logger.error("%s", error)
        carried, self._carried = self._carried, None
        if carried is not None:
            carried.refuse(error)
        while True:
            envelope = await self._inbox.receive()
            envelope.refuse(error)

    async def _serve_one(self, envelope: Envelope) -> None:
        # One coroutine serves the whole request (no helper coroutine for the run):
        # the frames of the tasks waiting on each other are most of what an open run
        # costs, and thousands of runs may be open at once.
        reply = envelope.reply
        try:
            with trio.CancelScope() as scope:
                if not reply.attach(scope):
                    envelope.close_subscriptions()
                    return
                performer = envelope.performer
                message = envelope.message
                try:
                    context = child_context(
                        envelope.parent,
                        kind=performer.run_kind,
                        name=performer.name,
                        tags=performer.tags,
                        metadata=performer.metadata,
                        config=envelope.config,
                    )
                    event_input = performer.event_input(message)
                    local = performer.local_metadata(message)
                except Exception as exc:  # refused before it started
                    envelope.refuse(exc)
                    return
                run_id = context.run_id
                for sub in envelope.subscriptions:
                    sub.tx.gate = context.gate
                    await self._report(Subscribe(sub))
                await self._report(
                    RunStarted(
                        run_id,
                        context.parent_ids,
                        context.kind,
                        context.name,
                        context.tags,
                        _with_local(context.metadata, local),
                        event_input,
                    )
                )
                token = current_run_var.set(context)
                if current_runtime_var.get() is not self._runtime:
                    # The requester's context (a task outside the runtime's block, an
                    # HTTP server's request task): the runtime is current in every run.
                    current_runtime_var.set(self._runtime)
                run = Run(context, self._tracer, self._runtime, self._state)
                timeout = envelope.config.timeout
                try:
                    if timeout is None:
                        output = await performer.perform(message, run)
                    else:
                        output = await _perform_within(performer, message, run, timeout)
                    end = RunEnded(run_id, performer.event_output(output))
                except BaseException as exc:
                    await self._end_failed(run, exc, reply)
                    if _is_cancellation(exc):
                        raise
                else:
                    await self._report_held(run)  # the chunks go before the end
                    await self._report(end)
                    reply.resolve(output)
                finally:
                    current_run_var.reset(token)
        finally:
            if self._limit is not None:
                self._limit.release()
            reply.settle_cancelled()

    async def _end_failed(self, run: Run, exc: BaseException, reply: Reply) -> None:
        """Report the failed run's end and settle its reply. Whatever the performer
        raised stays in this run: only a real cancellation goes on up (re-raised by the
        caller); everything else ends the run as an error. An exit (``KeyboardInterrupt``
        and the like) is settled as itself, also when a nursery of the performer's (an
        agent's parallel tool calls) holds it in a group."""
        if isinstance(exc, ActorCrash):
            self._direct = None  # before any wait: later requests go to the restarted actor
        await self._report_held(run)
        run_id = run.context.run_id
        if _is_cancellation(exc):
            await self._report(RunFailed(run_id, "cancelled", "cancelled"))
            return
        error: BaseException = find_exit(exc) or exc
        if isinstance(exc, StopIteration | StopAsyncIteration):
            error = PerformerError(
                f"{run.context.kind} {run.context.name!r} raised {type(exc).__name__}"
            )
            error.__cause__ = exc
        elif _only_cancelled(exc) or isinstance(exc, trio.Cancelled):
            error = PerformerError(
                f"{run.context.kind} {run.context.name!r} raised trio.Cancelled outside "
                "any cancelled scope (raised by hand?)"
            )
            error.__cause__ = exc
        await self._report(RunFailed(run_id, describe_error(error), "error", exception=error))
        reply.reject(error)
        if isinstance(exc, ActorCrash) and self._crash is None:
            self._crash = exc
            self._handlers.cancel_scope.cancel()  # the supervisor restarts it

    async def _report_held(self, run: Run) -> None:
        held = run.take_held()
        if held is not None:
            await self._report(held)

    async def _report(self, msg: TracerMail) -> None:
        # Lifecycle reports must get through even from a cancelled task (a terminal
        # event is never lost), as if the wait were shielded: a report never raises
        # Cancelled, and the task sees its cancellation at its next checkpoint. A
        # send that is cancelled has sent nothing, so only then is it sent again,
        # shielded: the common wait for room in a busy tracer's mailbox needs no
        # cancel scope of its own (thousands may wait at once).
        tracer = self._tracer
        if (
            tracer.idle  # tracer.is_idle(), inline
            and tracer.sent == tracer.taken
            and not tracer.sending
            and tracer.handle_now(msg)
        ):
            return  # the tracer had nothing to do: handled as it would have
        try:
            tracer.send_nowait(msg)
            return
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        try:
            await self._tracer.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        except trio.Cancelled:
            with (
                trio.CancelScope(shield=True),
                suppress(trio.ClosedResourceError, trio.BrokenResourceError),
            ):
                await self._tracer.send(msg)


async def _perform_within(
    performer: Performer[Any, Any], message: Any, run: Run, seconds: float
) -> Any:
    with trio.move_on_after(seconds):
        return await performer.perform(message, run)
    raise RunTimeoutError(
        f"run {run.context.name!r} did not finish within {seconds} s (its timeout)"
    )


def _with_local(metadata: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    # Merged only when both have keys: metadata dicts are read-only and shared, and a
    # new one for each of thousands of open runs would be most of what they cost.
    if not local:
        return metadata
    if not metadata:
        return local
    return {**metadata, **local}


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is trio cancelling this task (not a ``Cancelled`` raised by hand
    where nothing is cancelled)."""
    cancelled = isinstance(exc, trio.Cancelled) or _only_cancelled(exc)
    return cancelled and trio.current_effective_deadline() == -math.inf


def _only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is a group holding nothing but ``trio.Cancelled``."""
    return isinstance(exc, BaseExceptionGroup) and (
        exc.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup)) is None
    )
