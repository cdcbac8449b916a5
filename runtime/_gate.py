"""The backpressure gate of one run tree.

A stream (or callback handler) watching one run must be able to slow that run down
without the tracer, which serves every run, ever waiting on it. So the channel of a
per-run subscriber never refuses the tracer: when it holds more than its capacity it
*closes its run tree's gate*, and the producers of that tree (chunks, custom events,
child requests) wait at the gate before producing more. When the reader has caught up
(or left), the channel opens the gate again.

What a stalled reader can hold is therefore bounded by its capacity plus what its
run's producers had already sent when the gate closed; the tracer and every other run
go on at full speed.
"""

from __future__ import annotations

from typing import final

import trio


@final
class Gate:
    """Open unless some subscriber of the run tree is over its capacity."""

    __slots__ = ("_lot", "closed", "closers")

    def __init__(self) -> None:
        self.closers = 0
        """How many subscriber channels hold the gate closed."""
        self.closed = False
        """Whether producers must wait (read on the hot path: a plain attribute)."""
        # Made when a producer first waits: every root run has a gate, few ever close.
        self._lot: trio.lowlevel.ParkingLot | None = None

    def close(self) -> None:
        """A subscriber channel went over its capacity."""
        self.closers += 1
        self.closed = True

    def open(self) -> None:
        """A subscriber channel that held the gate closed caught up (or went away)."""
        self.closers -= 1
        if self.closers <= 0:
            self.closers = 0
            self.closed = False
            if self._lot is not None:
                self._lot.unpark_all()

    async def wait_open(self) -> None:
        """Wait until the gate is open (at once if it is). Cancellable."""
        if not self.closed:
            return
        if self._lot is None:
            self._lot = trio.lowlevel.ParkingLot()
        await self._lot.park()
