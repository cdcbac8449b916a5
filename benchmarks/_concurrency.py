"""N concurrent runs in one runtime, each with its event stream consumed.

Run in a fresh process per N (``python -m benchmarks._concurrency N K``) so that the
peak resident memory belongs to that N alone. Prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from typing import Any

import trio

from runtime import open_runtime

from ._workload import QUESTION, cat_agent


def current_rss_kib() -> int:
    """Resident memory now, in KiB (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() // 1024


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS count from now (Linux >= 4.0); ``False`` if not."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_rss_kib() -> int:
    """The peak resident memory (since the last reset), in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


async def concurrent_runs(n: int, k: int) -> dict[str, Any]:
    agent = cat_agent(k)
    counts: list[int] = []

    async def one() -> None:
        count = 0
        async with agent.astream_events(QUESTION) as events:
            async for _ in events:
                count += 1
        counts.append(count)

    async with open_runtime() as runtime:
        await one()  # warm-up: actors started, code paths hot
        counts.clear()
        gc.collect()
        reset_peak_rss()
        before = current_rss_kib()
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
        elapsed = time.perf_counter() - start
        violations = runtime.protocol_violations
    peak = peak_rss_kib()
    return {
        "runs": n,
        "tokens": k,
        "completed": len(counts),
        "seconds": elapsed,
        "runs_per_second": n / elapsed,
        "events_per_second": sum(counts) / elapsed,
        "rss_before_kib": before,
        "peak_rss_kib": peak,
        "rss_per_run_kib": max(0, peak - before) / n,
        "protocol_violations": violations,
    }


if __name__ == "__main__":
    print(json.dumps(trio.run(concurrent_runs, int(sys.argv[1]), int(sys.argv[2]))))
