"""How soon a join in one process sees what another process journals (issue 30): the
latency from a write committed by a writer (its own store, its own connections: another
process as far as PostgreSQL knows) to a ``JoinedStream`` of another runtime seeing its
first record, on PostgreSQL, with the journal's ``LISTEN``/``NOTIFY`` (``notify``) and
with it turned off (``poll``: the join looks every 0.1 s, as on SQLite). Rounds
alternate the two; p50 and p99 over every write of every round. The floor: the same
write's own commit time, measured in the same run.

Beside it, cancels across processes: a runtime asks (``rt.cancel``) for a run of
another runtime on the store (each with its own store and journal) to be cancelled; the
time from the request's commit to the run's stream ending cancelled, with the owner
hearing of it (``NOTIFY``) and looking every 0.25 s (``poll``, as on SQLite).

And what ``NOTIFY`` costs a process alone on the store (whose journal does not send it
then): the time of a journal write of one segment, with the process's own listener
hearing it and with nothing sent (``lone_write``), in bursts side by side, on a cluster
without fsync (with it, the disk's variance hides the difference); the floor is the
quiet write, the figure the ratio of each pair, its median.

``python -m benchmarks._joins`` prints one JSON object (``--quick``: fewer writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

from runtime import RunCancelledError, open_runtime, open_store
from runtime._store import Owner, RunRecord, Segment, WriteBatch

from ._stores import on_postgres


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round(url: str, writes: int, notify: bool) -> tuple[list[float], list[float]]:
    writer = open_store(url)
    writer.open()
    run_id = f"bench-{time.monotonic_ns()}"
    now = time.time()  # the writer, alive (as another live process on this machine)
    writer.heartbeat(Owner("w", socket.gethostname(), os.getppid(), now, now))
    writer.write(WriteBatch(runs=[RunRecord(run_id, "cat", "chain", owner="w")], owner="w"))
    latencies: list[float] = []
    commits: list[float] = []
    reader = open_store(url)
    if not notify:  # as a store that cannot tell (SQLite's): joins look every 0.1 s
        reader.changes = lambda: None  # type: ignore[method-assign]
    async with open_runtime(store=reader) as rt:
        journal = rt._journal
        assert journal is not None
        with trio.fail_after(10):
            while notify and not journal.hearing:  # noqa: ASYNC110
                await trio.sleep(0.01)
        seen = trio.Event()
        seen_at = [0.0]

        async def join() -> None:
            # read records as a join's task does (events need a start: records are enough)
            from runtime._stored import StoredRun

            source = StoredRun(journal, rt.start_service, run_id, 0)
            try:
                while True:
                    source._read += len(await source._poll())
                    seen_at[0] = time.monotonic()
                    seen.set()
            finally:
                source.unwatch()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(join)
            await trio.sleep(0.2)
            for i in range(writes):
                seen = trio.Event()
                batch = WriteBatch(segments=[Segment(run_id, i, [[0, i, "token"]])], owner="w")
                began = time.monotonic()
                await trio.to_thread.run_sync(writer.write, batch)
                committed = time.monotonic()
                commits.append(committed - began)
                with trio.fail_after(5):
                    await seen.wait()
                # (seen before the writer's thread came back: the commit was on its way)
                latencies.append(max(0.0, seen_at[0] - committed))
                await trio.sleep(random.uniform(0, 0.1))  # at any phase of the polling
            nursery.cancel_scope.cancel()
    writer.close()
    return latencies, commits


async def _cancels(url: str, n: int, notify: bool) -> list[float]:
    """Seconds from each cancel request's commit to its run's stream ending."""
    owner_store = open_store(url)
    if not notify:
        owner_store.changes = lambda: None  # type: ignore[method-assign]
    from tests.performers import Step

    waiting = Step(name="waiting", block=True)  # streams a word, then waits to be cancelled
    latencies: list[float] = []
    async with open_runtime(store=owner_store) as rt, open_runtime(store=url) as other:
        journal = rt.journal
        assert journal is not None
        with trio.fail_after(10):
            while notify and not journal.hearing:  # noqa: ASYNC110
                await trio.sleep(0.01)
        for _ in range(n):
            async with rt.astream_events(waiting, "started") as stream:
                async for event in stream:
                    if event.event.endswith("_stream"):
                        break
                await journal.recorded(stream.run_id)
                await trio.sleep(random.uniform(0, 0.25))  # at any phase of the polling
                assert await other.cancel(stream.run_id)
                asked = time.monotonic()
                with trio.fail_after(5), contextlib.suppress(RunCancelledError):
                    async for _ in stream:
                        pass
                latencies.append(time.monotonic() - asked)
    return latencies


async def _lone(url: str, pairs: int, writes: int = 50) -> dict[str, list[float]]:
    """Seconds per write of one segment by a process alone on the store, its own
    listener draining what it hears (as its journal's does): bursts of ``writes`` with
    ``NOTIFY`` and without, in ``pairs`` side by side (their order alternating), so
    that each pair shares the machine's load; each burst's median, and each pair's
    ratio."""
    store = open_store(url)
    store.open()
    changes = store.changes()
    assert changes is not None
    run_id = f"lone-{time.monotonic_ns()}"
    store.write(WriteBatch(runs=[RunRecord(run_id, "cat", "chain", owner="w")], owner="w"))
    position = [0]
    found: dict[str, list[float]] = {"notify": [], "quiet": [], "ratio": []}

    def burst(telling: bool) -> float:
        store.telling = telling
        times = []
        for _ in range(writes):
            n = position[0]
            batch = WriteBatch(segments=[Segment(run_id, n, [[0, n, "token"]])], owner="w")
            began = time.perf_counter()
            store.write(batch)
            times.append(time.perf_counter() - began)
            position[0] += 1
        return statistics.median(times)

    async def drain() -> None:
        while True:
            await trio.lowlevel.wait_readable(changes.fileno())
            changes.take()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            for i in range(pairs):
                got = {}
                for telling in (True, False) if i % 2 == 0 else (False, True):
                    got[telling] = await trio.to_thread.run_sync(burst, telling)
                found["notify"].append(got[True])
                found["quiet"].append(got[False])
                found["ratio"].append(got[True] / got[False])
            nursery.cancel_scope.cancel()
    finally:
        changes.close()
        store.close()
    return found


async def _measure(url: str, quick: bool) -> dict[str, Any]:
    writes = 20 if quick else 60
    found: dict[str, list[float]] = {
        "join_notify": [],
        "join_poll": [],
        "commit": [],
        "cancel_notify": [],
        "cancel_poll": [],
    }
    for _ in range(2 if quick else 4):
        for mode in ("notify", "poll"):
            latencies, commits = await _round(url, writes, mode == "notify")
            found[f"join_{mode}"] += latencies
            found["commit"] += commits
            found[f"cancel_{mode}"] += await _cancels(url, 5 if quick else 15, mode == "notify")
    return {
        name: {
            "p50_ms": round(_p(values, 0.5) * 1e3, 3),
            "p99_ms": round(_p(values, 0.99) * 1e3, 3),
            "mean_ms": round(statistics.fmean(values) * 1e3, 3),
            "n": len(values),
        }
        for name, values in found.items()
    }


def _lone_write(url: str, quick: bool) -> dict[str, Any]:
    lone = trio.run(_lone, url, 10 if quick else 40)
    return {
        "notify_p50_ms": round(statistics.median(lone["notify"]) * 1e3, 3),
        "quiet_p50_ms": round(statistics.median(lone["quiet"]) * 1e3, 3),
        "ratio_p50": round(statistics.median(lone["ratio"]), 3),
        "pairs": len(lone["ratio"]),
    }


def main(argv: Sequence[str]) -> dict[str, Any]:
    """The figures, on throwaway clusters (or why they were skipped): joins and cancels
    with ``fsync`` on; a lone process's writes with ``fsync`` off (the ``NOTIFY``'s own
    cost, not the disk's)."""
    quick = "--quick" in argv
    found = on_postgres(lambda new_database: trio.run(_measure, new_database(), quick), argv)
    if "skipped" in found:
        return found
    lone = on_postgres(lambda new_database: _lone_write(new_database(), quick), argv, fsync=False)
    return {**found, "lone_write": lone}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
