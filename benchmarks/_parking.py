"""What a wait-and-wake costs on each of trio's ways to park a task.

Two tasks pass the turn ``N`` times: one parks, the other wakes it and yields. Compared:
``wait_task_rescheduled`` with the one waiting task kept in a slot (what ``Reply`` and
``EventChannel`` do), a ``ParkingLot`` (what ``Gate`` uses), and a fresh ``trio.Event``
per wait. The comments in ``runtime/_reply.py`` and ``runtime/_event_channel.py`` quote
these figures. ``python -m benchmarks._parking`` prints µs per round trip, best of 5.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

N = 100_000
_yield = trio.lowlevel.cancel_shielded_checkpoint


async def slot() -> None:
    """The one waiting task in a slot, parked with ``wait_task_rescheduled``."""
    waiting: list[trio.lowlevel.Task] = []

    def abort(_: object) -> trio.lowlevel.Abort:
        waiting.clear()
        return trio.lowlevel.Abort.SUCCEEDED

    async def waiter() -> None:
        for _ in range(N):
            waiting.append(trio.lowlevel.current_task())
            await trio.lowlevel.wait_task_rescheduled(abort)

    async def waker() -> None:
        for _ in range(N):
            while not waiting:
                await _yield()
            trio.lowlevel.reschedule(waiting.pop())
            await _yield()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waker)


async def parking_lot() -> None:
    """A ``ParkingLot``."""
    lot = trio.lowlevel.ParkingLot()
    parked: list[bool] = []

    async def waiter() -> None:
        for _ in range(N):
            parked.append(True)
            await lot.park()

    async def waker() -> None:
        for _ in range(N):
            while not parked:
                await _yield()
            parked.pop()
            lot.unpark()
            await _yield()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waker)


async def event() -> None:
    """A fresh ``trio.Event`` per wait."""
    events: list[trio.Event] = []

    async def waiter() -> None:
        for _ in range(N):
            done = trio.Event()
            events.append(done)
            await done.wait()

    async def waker() -> None:
        for _ in range(N):
            while not events:
                await _yield()
            events.pop().set()
            await _yield()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waker)


WAYS: dict[str, Callable[[], Awaitable[None]]] = {
    "wait_task_rescheduled": slot,
    "ParkingLot": parking_lot,
    "Event": event,
}


def main() -> dict[str, float]:
    """µs per round trip of each way, the best of 5 runs."""
    best: dict[str, float] = {}
    for _ in range(5):
        for name, way in WAYS.items():
            start = time.perf_counter()
            trio.run(way)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / N * 1e6)
    return best


if __name__ == "__main__":
    for name, us in main().items():
        print(f"{name}: {us:.2f} µs per round trip")
