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


def main(argv: Sequence[str]) -> dict[str, Any]:
    """The figures, on a throwaway cluster (or why they were skipped)."""
    quick = "--quick" in argv
    return on_postgres(lambda new_database: trio.run(_measure, new_database(), quick), argv)


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2))
