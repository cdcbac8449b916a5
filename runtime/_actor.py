"""Actor cells: a performer's mailbox and the task that serves it.

Each request is served in a task of its own (up to the performer's
``max_concurrency``), with the request's run context made current, and reported to
the tracer as one run: a start, its chunks, exactly one terminal message.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import AsyncExitStack, suppress
from typing import TYPE_CHECKING, Any, Final, NoReturn, final

import trio

from protocol import LifecycleMessage, RunEnded, RunFailed, RunStarted

from ._context import RunConfig, RunContext, child_context, current_run_var
from ._errors import ActorCrash, ActorFailedError, RuntimeClosedError, RunTimeoutError
from ._performer import Performer, Run
from ._reply import Reply

if TYPE_CHECKING:
    from ._runtime import Runtime


@final
class Envelope:
    """A request in a mailbox: the message, who asks (the run context), how, and
    where the answer goes."""

    __slots__ = ("config", "message", "parent", "reply")

    def __init__(
        self, message: Any, parent: RunContext | None, config: RunConfig, reply: Reply
    ) -> None:
        self.message = message
        self.parent = parent
        self.config = config
        self.reply = reply


logger = logging.getLogger("troupe")

RESOURCE_CLOSE_SECONDS: Final = 5.0
"""How long a closing actor may take to close what it holds."""


def describe_error(exc: BaseException) -> str:
    """``"TypeName: message"``, the form errors take on events."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@final
class ActorCell:
    """One performer's actor inside a runtime."""

    def __init__(
        self,
        performer: Performer[Any, Any],
        tracer_mailbox: trio.MemorySendChannel[Any],
        runtime: Runtime,
    ) -> None:
        self.performer = performer
        self._tracer: trio.MemorySendChannel[LifecycleMessage] = tracer_mailbox
        self._runtime = runtime
        self._send, self._inbox = trio.open_memory_channel[Envelope](performer.mailbox_size)
        self._state: Any = None
        self._crash: BaseException | None = None
        self._handlers: trio.Nursery
        limit = performer.max_concurrency
        self._limit = trio.Semaphore(limit) if limit is not None else None
        # One name for all its request tasks (trio would build a string for each).
        self._request_task_name = f"troupe request to {performer.name}"

    async def deliver(self, envelope: Envelope) -> None:
        """Put a request in the mailbox (waits while it is full).

        Raises:
            RuntimeClosedError: the runtime is closing.
        """
        # (Never await inside an ``except`` block: the exception, its traceback and
        # frames would stay alive for as long as the wait.)
        try:
            try:
                self._send.send_nowait(envelope)
                return
            except trio.WouldBlock:
                pass
            await self._send.send(envelope)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise RuntimeClosedError(
                f"the runtime is closed: cannot send to {self.performer.name!r}"
            ) from None

    async def serve(self) -> None:
        """The supervisor: run the actor, restart it when it crashes, fail it when it
        crashes more often than its restart limit allows."""
        performer = self.performer
        crashes: deque[float] = deque()
        try:
            while True:
                crash = await self._run_until_crash()
                now = trio.current_time()
                crashes.append(now)
                while crashes[0] < now - performer.restart_window:
                    crashes.popleft()
                if len(crashes) > performer.restart_limit:
                    await self._refuse_all(
                        ActorFailedError(
                            f"{performer.run_kind} {performer.name!r} crashed {len(crashes)} "
                            f"time{'s' if len(crashes) != 1 else ''} within "
                            f"{performer.restart_window} s (restart limit "
                            f"{performer.restart_limit}); last: {describe_error(crash)}"
                        )
                    )
                logger.warning(
                    "restarting %s %r after a crash: %s",
                    performer.run_kind,
                    performer.name,
                    describe_error(crash),
                )
        finally:
            self._send.close()

    async def _run_until_crash(self) -> BaseException:
        """Open the actor's resources and serve requests until it crashes."""
        self._crash = None
        resources = AsyncExitStack()
        try:
            try:
                self._state = await resources.enter_async_context(self.performer.open_actor())
            except Exception as exc:
                return exc
            async with trio.open_nursery() as handlers:
                self._handlers = handlers
                await self._take_requests(handlers)
            return self._the_crash()
        finally:
            # Closing (we are cancelled) or restarting: close what the actor holds, e.g.
            # an HTTP client's sockets, within a bounded grace period.
            with trio.CancelScope(shield=True), trio.move_on_after(RESOURCE_CLOSE_SECONDS):
                await resources.aclose()

    def _the_crash(self) -> BaseException:
        # The request loop ends only when a crash cancels it (see _run).
        if self._crash is None:
            raise RuntimeError("the request loop ended without a crash")
        return self._crash

    async def _take_requests(self, handlers: trio.Nursery) -> None:
        inbox = self._inbox
        limit = self._limit
        while True:
            try:
                envelope = inbox.receive_nowait()
            except trio.WouldBlock:
                envelope = None
            if envelope is None:
                envelope = await inbox.receive()
            if limit is not None:
                await limit.acquire()
            handlers.start_soon(self._serve_one, envelope, name=self._request_task_name)

    async def _refuse_all(self, error: ActorFailedError) -> NoReturn:
        logger.error("%s", error)
        while True:
            envelope = await self._inbox.receive()
            envelope.reply.reject(error)

    async def _serve_one(self, envelope: Envelope) -> None:
        # One coroutine serves the whole request (no helper coroutine for the run):
        # the frames of the tasks waiting on each other are most of what an open run
        # costs, and thousands of runs may be open at once.
        reply = envelope.reply
        try:
            with trio.CancelScope() as scope:
                if not reply.attach(scope):
                    return
                performer = self.performer
                message = envelope.message
                context = child_context(
                    envelope.parent,
                    kind=performer.run_kind,
                    name=performer.name,
                    tags=performer.tags,
                    metadata=performer.metadata,
                    config=envelope.config,
                )
                run_id = context.run_id
                await self._report(
                    RunStarted(
                        run_id,
                        context.parent_ids,
                        context.kind,
                        context.name,
                        context.tags,
                        context.metadata,
                        performer.event_input(message),
                    )
                )
                token = current_run_var.set(context)
                run = Run(context, self._tracer, self._runtime, self._state)
                timeout = envelope.config.timeout
                try:
                    if timeout is None:
                        output = await performer.perform(message, run)
                    else:
                        output = await _perform_within(performer, message, run, timeout)
                    await run.flush()  # the chunks go before the end
                except trio.Cancelled:
                    await self._report(RunFailed(run_id, "cancelled", "cancelled"))
                    raise
                except Exception as exc:
                    await run.flush()
                    await self._report(RunFailed(run_id, describe_error(exc), "error"))
                    reply.reject(exc)
                    if isinstance(exc, ActorCrash) and self._crash is None:
                        self._crash = exc
                        self._handlers.cancel_scope.cancel()  # the supervisor restarts it
                except BaseException as exc:
                    if _only_cancelled(exc):
                        # A nursery in the performer (parallel tool calls) cancelled whole.
                        await self._report(RunFailed(run_id, "cancelled", "cancelled"))
                    else:
                        await self._report(RunFailed(run_id, describe_error(exc), "error"))
                        reply.reject(exc)
                    raise
                else:
                    await self._report(RunEnded(run_id, performer.event_output(output)))
                    reply.resolve(output)
                finally:
                    current_run_var.reset(token)
        finally:
            if self._limit is not None:
                self._limit.release()
            reply.settle_cancelled()

    async def _report(self, msg: LifecycleMessage) -> None:
        # Lifecycle reports must get through even from a cancelled task (a terminal
        # event is never lost), as if the wait were shielded: a report never raises
        # Cancelled, and the task sees its cancellation at its next checkpoint. A
        # send that is cancelled has sent nothing, so only then is it sent again,
        # shielded: the common wait for room in a busy tracer's mailbox needs no
        # cancel scope of its own (thousands may wait at once).
        try:
            self._tracer.send_nowait(msg)
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


def _only_cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is a group holding nothing but ``trio.Cancelled``."""
    return isinstance(exc, BaseExceptionGroup) and (
        exc.subgroup(lambda e: not isinstance(e, trio.Cancelled | BaseExceptionGroup)) is None
    )
