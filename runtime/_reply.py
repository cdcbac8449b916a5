"""A one-shot reply slot that links a request to the task serving it.

The requester waits on it; the serving task settles it. If the requester stops
waiting (it was cancelled), it abandons the reply, which cancels the serving task's
scope, and then waits for that task to settle: nothing works for a run that is over.
A reply that no task has taken up yet is settled (cancelled) by the abandon itself:
only a task that has taken the request owes it an answer, so the requester never
waits on a request still in a mailbox that nobody may ever read.
"""

from __future__ import annotations

from typing import Any, final

import trio

from ._errors import RunCancelledError, find_exit, is_exit


@final
class Reply:
    """The outcome of one request: a value, an exception, or cancelled."""

    __slots__ = (
        "_abandoned",
        "_error",
        "_failure",
        "_more_waiters",
        "_scope",
        "_settled",
        "_value",
        "_waiter",
    )

    def __init__(self) -> None:
        self._settled = False
        # The task waiting for the outcome, and any others (rare): not a trio.Event,
        # because every request has a reply and thousands may be open: an Event is
        # three objects (the Event, its ParkingLot, the lot's OrderedDict) for the
        # collector to trace per open run, against one slot here; and a wait-and-wake
        # took 7.4 µs with wait_task_rescheduled against 8.1-8.7 with an Event and
        # 8.7-9.1 with a ParkingLot (``python -m benchmarks._parking``, best of 5).
        self._waiter: trio.lowlevel.Task | None = None
        self._more_waiters: list[trio.lowlevel.Task] | None = None
        self._scope: trio.CancelScope | None = None
        self._abandoned = False
        self._failure: BaseException | None = None
        self._value: Any = None
        self._error: BaseException | None = None

    # -- serving side --------------------------------------------------------------

    def attach(self, scope: trio.CancelScope) -> bool:
        """Link the serving task's scope; ``False`` if the requester already left."""
        if self._abandoned:
            return False
        self._scope = scope
        return True

    def resolve(self, value: Any) -> None:
        """Settle with a value."""
        if not self._settled:
            self._value = value
            self._settle()

    def reject(self, error: BaseException) -> None:
        """Settle with an exception, raised to the requester."""
        if not self._settled:
            self._error = error
            self._settle()

    def settle_cancelled(self) -> None:
        """Settle as cancelled, unless already settled (the serving task is done)."""
        if not self._settled:
            self._error = RunCancelledError("the run was cancelled before it finished")
            self._settle()

    def _settle(self) -> None:
        self._settled = True
        if self._waiter is not None:
            trio.lowlevel.reschedule(self._waiter)
            self._waiter = None
        more = self._more_waiters
        if more:
            self._more_waiters = None
            for task in more:
                trio.lowlevel.reschedule(task)

    # -- requesting side -----------------------------------------------------------

    @property
    def taken(self) -> bool:
        """Whether a task took the request up (its run started, or will at once)."""
        return self._scope is not None

    @property
    def settled(self) -> bool:
        """Whether the serving task is done with this request."""
        return self._settled

    @property
    def error(self) -> BaseException | None:
        """The exception the request settled with, if any."""
        return self._error

    @property
    def value(self) -> Any:
        """The value the request settled with (``None`` until then)."""
        return self._value

    def abandon(self) -> bool:
        """The requester stops waiting: cancel the serving task, if there is one.

        Returns ``True`` when no task had taken the request up: it is settled now
        (cancelled), and its run never starts.
        """
        self._abandoned = True
        if self._scope is not None:
            self._scope.cancel()
            return False
        self.settle_cancelled()
        return True

    def fail(self, error: BaseException) -> None:
        """Stop the run from outside with ``error`` (its journal failed): the serving
        task is cancelled, and its run ends with ``error`` rather than as cancelled. A
        request not yet taken up is settled with ``error`` at once."""
        if self._settled or self._failure is not None:
            return
        self._failure = error
        if self._scope is not None:
            self._scope.cancel()
        else:
            self._abandoned = True
            self.reject(error)

    @property
    def failure(self) -> BaseException | None:
        """The error :meth:`fail` stopped the run with, if any."""
        return self._failure

    async def wait_settled(self) -> None:
        """Wait until the serving task is done with this request."""
        if self._settled:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        if self._waiter is None:
            self._waiter = task
            await trio.lowlevel.wait_task_rescheduled(self._forget_waiter)
            return
        if self._more_waiters is None:
            self._more_waiters = []
        self._more_waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            if self._more_waiters is not None:
                self._more_waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _forget_waiter(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _abandon_waiter(self, _: object) -> trio.lowlevel.Abort:
        # The requester is cancelled: the serving task is cancelled in the same step
        # (trio calls this as it delivers the cancellation), not when the requester runs
        # next. Else the child could make one more chunk in between: a guardrail's
        # tripwire cancelling the model's turn let a token out after it (issue 35). A
        # request no task has taken up yet is left to the requester's own abandon(), as
        # before: settling it here would let the requester go on before a task spawned
        # for it has seen that it may not start.
        self._waiter = None
        if self._scope is not None:
            self._scope.cancel()
        return trio.lowlevel.Abort.SUCCEEDED

    async def result(self) -> Any:
        """Wait for the outcome: the value, or raise the exception.

        If the caller is cancelled while waiting, the request is abandoned and this
        waits (shielded) until the serving task has finished, then re-raises; unless the
        run ended with an exit (``KeyboardInterrupt`` and the like), which is raised in
        place of the cancellation: an exit is never lost.
        """
        try:
            if self._waiter is None and not self._settled:
                # wait_settled() inline: one frame less for every run waiting on a child
                self._waiter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abandon_waiter)
            else:
                await self.wait_settled()
        except BaseException as exc:
            if not self._settled:
                self.abandon()
                with trio.CancelScope(shield=True):
                    await self.wait_settled()
            error = self._error
            if error is None or not is_exit(error) or find_exit(exc, error) is exc:
                raise
            # else the run's exit outranks what the wait raised: raised below, as itself
        if self._error is not None:
            raise self._error
        return self._value
